"""Cloud–edge pipeline: pipeline-parallel training with its stages split across sites (the white
paper's cloud–edge collaboration, §V): stage i runs on the i-th host, and every micro-batch's
activations cross each stage boundary forward and its gradients backward, over the WAN where
consecutive stages sit in different sites.

Schedule: GPipe. Every stage runs the forward passes of all micro-batches, then their backward
passes in reverse order; a stage sends as it finishes (isend) and receives before it computes.
Compute is modeled (the profile's FLOPs on a named accelerator at an MFU, split evenly over the
stages, times a per-stage `stage_slowdown`: an edge accelerator slower than the cloud's), spent
sleeping so the CPU stays free for the transfers. The activation at a boundary is one micro-batch's
hidden states (tokens x hidden x 2 B, divided by the scale factor); every message carries its
micro-batch and stage, checked on arrival (`activations_wrong`).

Per repetition (the slowest rank): step time, compute time (the busiest stage's), bubble fraction
(the share of the step the busiest stage waits: 1 - compute / step; GPipe's ideal is
(p - 1) / (m + p - 1) with p stages and m micro-batches), the bytes crossing each boundary per
step, and the step's model (metrolab.workloads.models.pipeline_step_s).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field, field_validator

from metrolab.harness.errors import SpecError
from metrolab.workloads import profiles as pf
from metrolab.workloads.base import Size, StepRank, Workload, _Params, slowest
from metrolab.workloads.models import ideal_bubble

HEADER = 16  # bytes at the start of each message: micro-batch, stage, direction, step


class PipelineParams(_Params):
    backend: Literal["gloo", "verbs"] = "gloo"
    model: str = Field(default="gpt2-small", description=f"profile: {', '.join(pf.PROFILES)}")
    micro_batches: int = Field(default=8, ge=1, description="micro-batches per step (GPipe's m)")
    activation_bytes: Size | None = Field(default=None, description=(
        "bytes of one micro-batch's activations at a stage boundary, full scale (default: the profile's "
        "tokens per micro-batch x hidden x 2 B)"))
    device: str = Field(default="h100", description=f"modeled accelerator: {', '.join(pf.DEVICES)}")
    mfu: float = Field(default=0.4, gt=0, le=1)
    compute_scale: float = Field(default=1.0, gt=0, description="multiplies the modeled compute time")
    stage_slowdown: list[float] | None = Field(default=None, description=(
        "per stage, a multiplier of its compute time (e.g. [1, 1, 4, 4]: edge accelerators 4x slower); "
        "one per host"))
    iters: int = Field(default=3, ge=1, description="steps per repetition")

    @field_validator("model", "device")
    @classmethod
    def _known(cls, v, info):
        table = pf.PROFILES if info.field_name == "model" else pf.DEVICES
        if v not in table:
            raise ValueError(f"unknown {info.field_name} {v!r} ({', '.join(table)})")
        return v

    @field_validator("stage_slowdown")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(x <= 0 for x in v):
            raise ValueError("slowdowns are > 0")
        return v

    def boundary_bytes(self, scale: float) -> int:
        """One micro-batch's activations at a stage boundary (the gradients back are as large)."""
        prof = pf.PROFILES[self.model]
        full = self.activation_bytes or prof.tokens_per_micro_batch * prof.hidden * 2
        return max(HEADER + 1, int(full / scale))

    def stage_compute_s(self, stages: int) -> list[tuple[float, float]]:
        """(forward, backward) seconds of one micro-batch on each stage: the model's FLOPs split
        evenly over the stages, 1/3 forward and 2/3 backward, times the stage's slowdown."""
        prof = pf.PROFILES[self.model]
        micro = pf.compute_time_s(pf.training_flops(prof.params, prof.tokens_per_micro_batch),
                                  pf.DEVICES[self.device].tflops, self.mfu) * self.compute_scale / stages
        slow = self.stage_slowdown or [1.0] * stages
        return [(micro / 3 * s, micro * 2 / 3 * s) for s in slow]


class Pipeline(Workload):
    """Pipeline-parallel stages across sites (GPipe), activations and gradients per micro-batch."""

    rank_side = "PipelineRank"
    kind = "pipeline"
    params_model = PipelineParams
    metrics = ("compute_s", "bubble_fraction", "ideal_bubble_fraction", "boundary_bytes", "stages",
               "activations_wrong")
    logs_steps = True

    @classmethod
    def validate(cls, spec, topo, scale: float) -> None:
        super().validate(spec, topo, scale)
        p = cls.params(spec, scale)
        hosts = cls.hosts(spec, topo)
        if p.stage_slowdown is not None and len(p.stage_slowdown) != len(hosts):
            raise SpecError("", "params.stage_slowdown", p.stage_slowdown,
                            f"one per stage: {len(hosts)} hosts ({', '.join(hosts)})")


# -- rank side -------------------------------------------------------------------------------
class PipelineRank(StepRank):
    """Stage `rank` of the pipeline, in a rank process with the group up."""

    def __init__(self, params: dict[str, Any], scale: float, sites=None, **_):
        import torch  # deferred: torch (40 s under TCG) on the rank side only
        import torch.distributed as dist
        self.torch, self.dist = torch, dist
        self.p = p = PipelineParams.model_validate(params)
        self.rank, self.n = dist.get_rank(), dist.get_world_size()
        self.nbytes = p.boundary_bytes(scale)
        self.fwd_s, self.bwd_s = p.stage_compute_s(self.n)[self.rank]
        m = p.micro_batches
        # one buffer per micro-batch and direction: an isend's tensor must stay untouched until it
        # completes, and a step's sends complete only at its end
        self.out = [torch.zeros(self.nbytes, dtype=torch.uint8) for _ in range(2 * m)]
        self.inb = [torch.empty(self.nbytes, dtype=torch.uint8) for _ in range(2 * m)]
        self.steps = 0
        self.wrong = 0

    def _stamp(self, buf, micro: int, direction: int) -> None:
        hdr = self.torch.tensor([micro, self.rank, direction, self.steps], dtype=self.torch.int32)
        buf[:HEADER] = hdr.view(self.torch.uint8)
        buf[-1] = (micro * 31 + self.rank * 7 + direction + self.steps) % 251  # the tail arrived too

    def _check(self, buf, micro: int, sender: int, direction: int) -> None:
        hdr = buf[:HEADER].view(self.torch.int32).tolist()
        if hdr != [micro, sender, direction, self.steps] or \
                int(buf[-1]) != (micro * 31 + sender * 7 + direction + self.steps) % 251:
            self.wrong += 1

    def _post(self, src: int, bufs: list) -> list:
        """Every receive of a phase posted at its start, as pipeline engines do: gloo sends a
        message only once its receiver has posted (a rendezvous), and a receive posted only when
        its stage is ready would add the notice's trip across the WAN to every micro-batch."""
        return [self.dist.irecv(b, src) for b in bufs]

    def step(self) -> float:
        """One GPipe step; returns the compute time this stage spent in it."""
        dist, m, last = self.dist, self.p.micro_batches, self.n - 1
        sends, compute = [], 0.0
        fwd_in = self._post(self.rank - 1, self.inb[:m]) if self.rank > 0 else []
        for j in range(m):  # forward, micro-batch order
            if fwd_in:
                fwd_in[j].wait()
                self._check(self.inb[j], j, self.rank - 1, 0)
            t0 = time.perf_counter()
            time.sleep(self.fwd_s)
            compute += time.perf_counter() - t0
            if self.rank < last:
                buf = self.out[j]
                self._stamp(buf, j, 0)
                sends.append(dist.isend(buf, self.rank + 1))
        # the gradients come back last micro-batch first
        bwd_in = self._post(self.rank + 1, self.inb[m:][::-1]) if self.rank < last else []
        for k, j in enumerate(reversed(range(m))):  # backward, the last micro-batch first
            if bwd_in:
                bwd_in[k].wait()
                self._check(self.inb[m + j], j, self.rank + 1, 1)
            t0 = time.perf_counter()
            time.sleep(self.bwd_s)
            compute += time.perf_counter() - t0
            if self.rank > 0:
                buf = self.out[m + j]
                self._stamp(buf, j, 1)
                sends.append(dist.isend(buf, self.rank - 1))
        for w in sends:
            w.wait()
        self.steps += 1
        return compute

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        iters = iters or self.p.iters
        self.warm(warmups)
        self.wrong = 0  # the measured steps' own
        wall, compute, steps = self.timed(iters)
        m = slowest({"step_time_s": wall / iters, "compute_s": sum(compute) / iters, "wrong": float(self.wrong)})
        p, mb = self.n, self.p.micro_batches
        return {"step_time_s": m["step_time_s"], "compute_s": m["compute_s"],
                "bubble_fraction": max(0.0, 1 - m["compute_s"] / m["step_time_s"]),
                "ideal_bubble_fraction": ideal_bubble(p, mb),
                "boundary_bytes": 2 * mb * self.nbytes, "stages": p, "activations_wrong": int(m["wrong"]),
                "_steps": steps}

    def close(self, final: bool = False) -> None:
        pass
