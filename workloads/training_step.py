"""Training-step emulator: data-parallel steps of a model profile, compute overlapped with
bucketed gradient synchronisation the way DDP does it.

Each step runs `micro_batches` forward+backward passes; during the last backward, as each layer's
gradients are ready they fill DDP-style buckets (backward order, `bucket_size` bytes), and every
full bucket is all-reduced on a communication thread while backward goes on. The step ends when
the last bucket is reduced and the optimizer has stepped.

Compute is either *modeled* (the profile's FLOPs on a named accelerator at a given MFU: the
duration an accelerator would take, spent sleeping so the CPU stays free for communication), or
*torch* (real forward/backward of an MLP with the profile's layer count and the scaled parameter
count, each layer's gradient copied into its bucket as autograd produces it, as DDP's reducer does).

Reported per repetition (the slowest rank): step time, compute time, exposed communication (step
minus compute), overlap efficiency (compute / step), gradient bytes and buckets per step.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from metrolab.workloads import models as wm
from metrolab.workloads import profiles as pf
from metrolab.workloads.base import Size, StepRank, Workload, _Params, site_groups, slowest
from metrolab.workloads.control import ControlChannel

if TYPE_CHECKING:
    from metrolab.workloads.models import Transport


class TrainingParams(_Params):
    backend: Literal["gloo", "verbs", "nccl"] = "gloo"
    model: str = Field(default="gpt2-small", description=f"profile: {', '.join(pf.PROFILES)}")
    params: float | None = Field(default=None, gt=0, description="parameter count (overrides the profile)")
    layers: int | None = Field(default=None, ge=1, description="layers (overrides the profile)")
    bytes_per_param: Literal[2, 4] = Field(default=2, description="gradient element size: 2 (bf16) or 4 (fp32)")
    bucket_size: Size = Field(default=25 << 20, description="DDP bucket, bytes at full scale")
    micro_batches: int = Field(default=1, ge=1)
    compute: Literal["modeled", "torch"] = "modeled"
    device: str = Field(default="h100", description=f"modeled accelerator: {', '.join(pf.DEVICES)}")
    mfu: float = Field(default=0.4, gt=0, le=1)
    compute_scale: float = Field(default=1.0, gt=0, description="multiplies the modeled compute time")
    torch_batch: int = Field(default=32, ge=1, description="rows per micro-batch of the real (torch) model")
    algo: Literal["flat", "hierarchical"] = "flat"
    control_dscp: int | None = Field(default=None, ge=0, le=63, description=(
        "a control handshake per bucket (64 B to rank 0 and back, started when the bucket is full; its "
        "reduction waits for it) on a TCP socket of its own marked with this DSCP (metrolab.workloads.control); "
        "unset: none"))
    iters: int = Field(default=3, ge=1, description="steps per repetition")

    @field_validator("model", "device")
    @classmethod
    def _known(cls, v, info):
        table, what, plural = {"model": (pf.PROFILES, "model profile", "profiles"),
                               "device": (pf.DEVICES, "device", "devices")}[info.field_name]
        if v not in table:
            raise ValueError(f"unknown {what} {v!r} ({plural}: {', '.join(table)})")
        return v

    @model_validator(mode="after")
    def _bucket_fits(self):
        total = self.gradient_bytes(1.0)
        if self.bucket_size > total:
            raise ValueError(f"bucket_size {self.bucket_size} B exceeds the model's gradients "
                             f"({total} B: {self.param_count():.3g} parameters x {self.bytes_per_param} B)")
        if total < self.layer_count():
            raise ValueError(f"{self.layer_count()} layers do not fit in {self.param_count():g} parameters")
        return self

    # -- derived, full scale unless scaled ----------------------------------------------------
    def profile(self) -> pf.ModelProfile:
        return pf.PROFILES[self.model]

    def param_count(self) -> float:
        return self.params or self.profile().params

    def layer_count(self) -> int:
        return self.layers or self.profile().layers

    def gradient_bytes(self, scale: float) -> int:
        return int(self.param_count() * self.bytes_per_param / scale)

    def modeled_compute_s(self) -> float:
        """Forward + backward of one micro-batch on the modeled accelerator."""
        flops = pf.training_flops(self.param_count(), self.profile().tokens_per_micro_batch)
        return pf.compute_time_s(flops, pf.DEVICES[self.device].tflops, self.mfu) * self.compute_scale


def training_shape(tp: TrainingParams, scale: float, ranks: int, sites: int, transport: Transport = "tcp",
                   compute_s: float | None = None):
    """The step as the model sees it (metrolab.workloads.models.TrainingShape) at `scale`: the buckets the
    ranks fill, in backward order, and the compute (`compute_s` where measured, else modelled)."""
    total = tp.gradient_bytes(scale)
    per_layer = pf.layer_bytes(total, tp.layer_count())
    plan = pf.bucket_plan(per_layer, max(tp.bytes_per_param, min(int(tp.bucket_size / scale), total)))
    compute = compute_s or tp.modeled_compute_s() * tp.micro_batches
    return wm.TrainingShape(compute, tp.micro_batches, tp.layer_count(),
                            tuple(float(sum(per_layer[i] for i in b)) for b in plan),
                            tuple(len(b) for b in plan), ranks, sites, tp.algo, transport,
                            control=tp.control_dscp is not None)


class TrainingStep(Workload):
    """Data-parallel training steps with DDP-style overlapped gradient buckets."""

    rank_side = "TrainingStepRank"
    kind = "training-step"
    params_model = TrainingParams
    metrics = ("compute_s", "exposed_comm_s", "overlap_efficiency", "gradient_bytes", "buckets")
    logs_steps = True


# -- rank side -------------------------------------------------------------------------------
class CommThread:
    """Runs the all-reduces of filled buckets in order, one at a time, beside the compute (DDP
    launches bucket reductions asynchronously; one thread keeps every rank's order identical)."""

    def __init__(self, reduce):
        self.reduce = reduce
        self.q: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._loop, name="metrolab-buckets", daemon=True)
        self.t.start()

    def _loop(self) -> None:
        while True:
            t = self.q.get()
            try:
                if t is None:
                    return
                if self.error is None:
                    self.reduce(t)
            except BaseException as exc:  # noqa: BLE001 — re-raised in the step that waits
                self.error = exc
            finally:
                self.q.task_done()

    def submit(self, tensor) -> None:
        self.q.put(tensor)

    def wait(self) -> None:
        self.q.join()
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def close(self) -> None:
        self.q.put(None)
        self.t.join(timeout=5)


class GradientBuckets:
    """One flat gradient buffer (what crosses the network), cut into per-layer views and buckets."""

    def __init__(self, torch, total_bytes: int, layers: int, bucket_bytes: int, elem: int):
        dtype = torch.bfloat16 if elem == 2 else torch.float32
        per_layer = [b // elem * elem for b in pf.layer_bytes(total_bytes, layers)]
        counts = [max(1, b // elem) for b in per_layer]
        self.flat = torch.zeros(sum(counts), dtype=dtype)
        self.layer_views, off = [], 0
        for c in counts:
            self.layer_views.append(self.flat[off:off + c])
            off += c
        self.plan = pf.bucket_plan([c * elem for c in counts], max(elem, min(bucket_bytes, sum(counts) * elem)))
        # layers of a bucket are adjacent in memory (backward order = reversed forward order)
        self.buckets = []
        for layer_ids in self.plan:
            lo, hi = min(layer_ids), max(layer_ids)
            start = sum(counts[:lo])
            self.buckets.append(self.flat[start:start + sum(counts[lo:hi + 1])])
        self.bucket_of = {lid: b for b, ids in enumerate(self.plan) for lid in ids}
        self.remaining = [len(ids) for ids in self.plan]

    def reset(self) -> None:
        self.remaining = [len(ids) for ids in self.plan]

    def layer_ready(self, layer: int):
        """Mark a layer's gradients ready; returns its bucket's tensor when the bucket is full."""
        b = self.bucket_of[layer]
        self.remaining[b] -= 1
        return self.buckets[b] if self.remaining[b] == 0 else None


class TrainingStepRank(StepRank):
    """Runs inside a rank process with the group up."""

    def __init__(self, params: dict[str, Any], scale: float, sites: list[str] | None, group=None,
                 world: int | None = None, sync: bool = True, **_):
        """`group`/`world`: reduce among a subgroup (e.g. the compute ranks of disaggregated
        training) instead of every rank; `sync=False` trains without synchronising gradients."""
        import torch  # deferred: torch (40 s under TCG) on the rank side only
        import torch.distributed as dist
        self.torch, self.dist = torch, dist
        self.p = p = TrainingParams.model_validate(params)
        self.group, self.sync = group, sync
        self.world = world or dist.get_world_size()
        self.groups = site_groups(sites or [], p.backend) if p.algo == "hierarchical" else None
        self.grads = GradientBuckets(torch, p.gradient_bytes(scale), p.layer_count(), int(p.bucket_size / scale),
                                     p.bytes_per_param)
        self.control = None
        if p.control_dscp is not None:
            if group is not None:
                raise ValueError("control_dscp: the control handshake spans every rank, not a subgroup")
            self.control = ControlChannel(dist, p.control_dscp, os.environ["MASTER_ADDR"])
        # a bucket's handshake starts when the bucket is full, while earlier buckets are still on
        # the wire (a transfer's control messages cross the links its predecessors' bulk fills)
        self.signals = CommThread(self._handshake) if self.control is not None else None
        self.comm = CommThread(self._reduce)
        self.model = _TorchModel(torch, p, scale, self.grads, self._layer_ready) if p.compute == "torch" else None
        self.micro_s = p.modeled_compute_s()

    def _handshake(self, done: threading.Event) -> None:
        assert self.control is not None  # only the control thread calls this
        try:
            self.control.handshake()
        finally:
            done.set()  # a failed handshake is raised by signals.wait(); the reduction must not hang

    def _reduce(self, item) -> None:
        from metrolab.harness.dist import algorithms as alg  # deferred: imports torch, rank side only
        bucket = item
        if self.signals is not None:
            bucket, done = item
            # after a failed handshake the control thread skips the rest: never set, never waited on
            while not done.wait(0.5):
                if self.signals.error is not None:
                    break
            if self.signals.error is not None:
                raise ConnectionError("a control handshake failed")
        if self.group is not None:
            self.dist.all_reduce(bucket, group=self.group)
        else:
            alg.all_reduce(bucket, algo=self.p.algo, groups=self.groups)
        bucket.div_(self.world)

    def _layer_ready(self, layer: int) -> None:
        full = self.grads.layer_ready(layer)
        if full is not None:
            if self.signals is not None:
                done = threading.Event()
                self.signals.submit(done)
                self.comm.submit((full, done))
            else:
                self.comm.submit(full)

    def _modeled_pass(self, sync: bool) -> None:
        """Forward (1/3 of the FLOPs), then backward layer by layer (2/3), last layer first."""
        L = self.p.layer_count()
        time.sleep(self.micro_s / 3)
        per_layer = self.micro_s * 2 / 3 / L
        for layer in reversed(range(L)):
            time.sleep(per_layer)
            if sync:
                self._layer_ready(layer)

    def step(self) -> float:
        """One training step; returns the compute time spent in it."""
        self.grads.reset()
        compute = 0.0
        if self.model is None:
            # modelled: the micro-batches that synchronise nothing (DDP's no_sync) are one sleep; a
            # sleep per layer each would add a timer's slack (~1 ms under the guest's TCG: 0.8 s a
            # step at 64 micro-batches of 12 layers, against 1 s of modelled compute)
            t0 = time.perf_counter()
            if self.p.micro_batches > 1:
                time.sleep(self.micro_s * (self.p.micro_batches - 1))
            self._modeled_pass(self.sync)
            compute = time.perf_counter() - t0
        else:
            for m in range(self.p.micro_batches):
                sync = self.sync and m == self.p.micro_batches - 1  # like DDP's no_sync() on all but the last
                t0 = time.perf_counter()
                self.model.pass_(sync)
                compute += time.perf_counter() - t0
        if self.signals is not None:
            self.signals.wait()
        self.comm.wait()
        if self.model is not None:
            t0 = time.perf_counter()
            self.model.optimizer_step()
            compute += time.perf_counter() - t0
        return compute

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        iters = iters or self.p.iters
        self.warm(warmups)
        wall, compute, steps = self.timed(iters)
        m = slowest({"step_time_s": wall / iters, "compute_s": sum(compute) / iters})
        return {**m, "exposed_comm_s": pf.exposed_comm(m["step_time_s"], m["compute_s"]),
                "overlap_efficiency": min(1.0, m["compute_s"] / m["step_time_s"]),
                "gradient_bytes": self.grads.flat.numel() * self.grads.flat.element_size(),
                "buckets": len(self.grads.buckets), "_steps": steps}

    def close(self, final: bool = False) -> None:
        self.comm.close()
        if self.signals is not None:
            self.signals.close()
        if self.control is not None:
            self.control.close()


class _TorchModel:
    """Real compute: `layers` square Linear layers holding the scaled parameter count; each weight's
    gradient is copied into its bucket and announced as soon as autograd has accumulated it."""

    def __init__(self, torch, p: TrainingParams, scale: float, grads: GradientBuckets, ready):
        self.torch = torch
        L = p.layer_count()
        width = max(1, int((p.param_count() / scale / L) ** 0.5))
        gen = torch.Generator().manual_seed(0)
        self.weights = []
        for _view in grads.layer_views:
            w = torch.randn(width, width, generator=gen) * width ** -0.5
            w.requires_grad_(True)
            self.weights.append(w)
        self.views = [v[:width * width] if v.numel() >= width * width else None for v in grads.layer_views]
        self.x = torch.randn(p.torch_batch, width, generator=gen)
        self.sync = False
        for i, w in enumerate(self.weights):
            w.register_post_accumulate_grad_hook(lambda _w, i=i: self._hook(i, ready))

    def _hook(self, i: int, ready) -> None:
        if self.sync:
            v = self.views[i]
            if v is not None:
                v.copy_(self.weights[i].grad.reshape(-1)[:v.numel()].to(v.dtype))
            ready(i)

    def pass_(self, sync: bool) -> None:
        self.sync = sync
        h = self.x
        for w in self.weights:
            h = self.torch.tanh(h @ w)
        h.square().mean().backward()

    def optimizer_step(self) -> None:
        with self.torch.no_grad():
            for w in self.weights:
                w.add_(w.grad, alpha=-1e-3)
                w.grad = None
