"""`kind: trace` — a recorded training job replayed across the lab: each rank replays its own rank's
steps from a PyTorch Execution Trace (metrolab.workloads.exec_trace): the compute between its
collectives as recorded (slept, times `compute_scale`: 0.5 for an accelerator twice as fast, so
the CPU stays free for the network as an accelerator's would), and the collectives themselves, the
recorded sizes and types, issued asynchronously where the job issued them and waited for where the
job needed their result, over gloo or the verbs backend.

A trace replays on as many rank hosts as recorded it; any other count is refused with the reason
(its collectives' sizes and the compute between them belong to that world size).

Reported per repetition (the slowest rank): the replayed step, the recorded step it replays
(`recorded_step_s`) and their ratio (`replay_ratio`: at 0 km on the network that recorded it, the
replay's fidelity), the compute replayed, the communication it left exposed, the collective bytes
and count per step. The model (metrolab.workloads.models.trace_step_s) is built from the same
operations.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from metrolab.harness.errors import SpecError
from metrolab.workloads.base import StepRank, Workload, _Params, slowest
from metrolab.workloads.exec_trace import RankTrace, read_trace, trace_world


class TraceParams(_Params):
    trace: str = Field(description="folder of the ranks' traces: et_RANK.json and kineto_RANK.json "
                                   "(relative to the scenario file)")
    backend: Literal["gloo", "verbs"] = "gloo"
    compute_scale: float = Field(default=1.0, gt=0, description="multiplies the recorded compute")
    steps: int | None = Field(default=None, ge=1, description="steps per repetition, the recorded ones in "
                                                              "turn (default: each recorded step once)")


@functools.cache
def _read(folder: str, rank: int, mtime: float) -> RankTrace:
    return read_trace(folder, rank)


def load(folder: str) -> list[RankTrace]:
    """Every rank's trace (read once per file version), checked to be one job: as many steps on
    every rank and the same collectives in each."""
    world = trace_world(folder)
    out = [_read(folder, r, (Path(folder) / f"et_{r}.json").stat().st_mtime) for r in range(world)]
    for t in out[1:]:
        if len(t.steps) != len(out[0].steps):
            raise SpecError(t.source, "", len(t.steps), f"rank {t.rank} recorded {len(t.steps)} steps, "
                            f"rank 0 {len(out[0].steps)}: not one job's trace")
        for k, (a, b) in enumerate(zip(out[0].steps, t.steps)):
            if [(c.op, c.nbytes) for c in a.colls] != [(c.op, c.nbytes) for c in b.colls]:
                raise SpecError(t.source, f"step {k}", [c.op for c in b.colls], f"rank {t.rank}'s collectives differ "
                                f"from rank 0's ({[c.op for c in a.colls]}): not one job's trace")
    return out


def replayed(traces: list[RankTrace], steps: int | None) -> list[int]:
    """The recorded steps a repetition replays, in order."""
    n = len(traces[0].steps)
    return [k % n for k in range(steps or n)]


class TraceReplay(Workload):
    """A recorded job's steps, replayed on the lab's ranks."""

    rank_side = "TraceRank"
    kind = "trace"
    params_model = TraceParams
    metrics = ("recorded_step_s", "replay_ratio", "compute_s", "exposed_comm_s", "comm_bytes", "collectives")
    logs_steps = True
    path_params = ("trace",)

    @classmethod
    def validate(cls, spec, topo, scale: float) -> None:
        super().validate(spec, topo, scale)
        p = cls.params(spec, scale)
        hosts = cls.hosts(spec, topo)
        try:
            traces = load(p.trace)
        except SpecError as exc:  # located in the trace: its file, and where in it
            where = f"{exc.file}: {exc.path}" if exc.path and exc.file != p.trace else exc.path or exc.file
            raise SpecError("", "params.trace", p.trace, f"{where}: {exc.message}") from None
        if len(traces) != len(hosts):
            raise SpecError("", "params.trace", p.trace, f"recorded by {len(traces)} ranks and the workload has "
                            f"{len(hosts)} rank hosts: a trace replays on as many ranks as recorded it "
                            f"(name {len(traces)} hosts)")


# -- rank side -------------------------------------------------------------------------------
class TraceRank(StepRank):
    """One rank: its own steps of the trace, replayed."""

    def __init__(self, params: dict[str, Any], scale: float, sites=None, **_):
        import torch  # deferred: torch (40 s under TCG) on the rank side only
        import torch.distributed as dist
        self.p = TraceParams.model_validate(params)
        self.torch, self.dist = torch, dist
        self.rank, self.n = dist.get_rank(), dist.get_world_size()
        self.trace = read_trace(self.p.trace, self.rank)
        if self.trace.world and self.trace.world != self.n:
            raise RuntimeError(f"the trace was recorded by {self.trace.world} ranks, this group has {self.n}")
        self.scale = scale
        self.order = replayed([self.trace], self.p.steps)
        self.next = 0  # the next step() replays order[next % len(order)]
        self.buffers: dict[tuple, dict] = {}

    def _buffers(self, op: str, nbytes: int, dtype_name: str) -> dict:
        key = (op, nbytes, dtype_name)
        if key not in self.buffers:
            torch = self.torch
            dtype = getattr(torch, dtype_name)
            esize = torch.empty(0, dtype=dtype).element_size()
            count = max(self.n, int(nbytes / self.scale) // esize)
            count -= count % self.n  # the split collectives' buffers hold n equal parts
            self.buffers[key] = {"full": torch.zeros(count, dtype=dtype), "part": torch.zeros(count // self.n, dtype=dtype),
                                 "out": torch.zeros(count, dtype=dtype), "bytes": count * esize}
        return self.buffers[key]

    def _issue(self, op: str, nbytes: int, dtype_name: str):
        d = self.dist
        if op == "barrier":
            return d.barrier(async_op=True)
        b = self._buffers(op, nbytes, dtype_name)
        if op == "all_reduce":
            return d.all_reduce(b["full"], async_op=True)
        if op == "broadcast":
            return d.broadcast(b["full"], 0, async_op=True)
        if op == "all_gather":
            return d.all_gather_into_tensor(b["full"], b["part"], async_op=True)
        if op == "reduce_scatter":
            return d.reduce_scatter_tensor(b["part"], b["full"], async_op=True)
        if op == "all_to_all":
            return d.all_to_all_single(b["out"], b["full"], async_op=True)
        raise ValueError(f"no replay for collective {op!r}")

    def _step(self, k: int) -> tuple[float, float]:
        """Replay recorded step k: (its wall time, the compute slept)."""
        st = self.trace.steps[k]
        works: dict[int, Any] = {}
        t0 = time.perf_counter()
        due, compute = t0, 0.0
        for kind, v in st.actions:
            if kind == "compute":
                s = v * self.p.compute_scale
                due += s  # a deadline, not a sleep per segment: oversleeping one is made up in the next
                compute += s
                left = due - time.perf_counter()
                if left > 0:
                    time.sleep(left)
            elif kind == "issue":
                c = st.colls[v]
                works[v] = self._issue(c.op, c.nbytes, c.dtype)
            else:
                works.pop(v).wait()
                due = max(due, time.perf_counter())  # blocked: the compute after it starts now
        for w in works.values():
            w.wait()
        return time.perf_counter() - t0, compute

    def step(self) -> tuple[int, float, float]:
        """The next recorded step: (its key, its wall time, its compute time)."""
        k = self.order[self.next % len(self.order)]
        self.next += 1
        return (k, *self._step(k))

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        """A repetition replays the recorded steps from the first (`iters` of them, cycling, where given)."""
        n = iters or len(self.order)
        self.warm(warmups)
        self.next = 0
        _, done, spans = self.timed(n)
        order = [k for k, _, _ in done]
        wall, compute = sum(dt for _, dt, _ in done), sum(c for _, _, c in done)
        recorded = sum(self.trace.steps[k].recorded_s for k in order)
        m = slowest({"step_time_s": wall / n, "compute_s": compute / n, "recorded_step_s": recorded / n})
        steps = [self.trace.steps[k] for k in order]
        nbytes = sum(self._bytes(c) for st in steps for c in st.colls) / n
        return {**m, "replay_ratio": m["step_time_s"] / m["recorded_step_s"],
                "exposed_comm_s": max(0.0, m["step_time_s"] - m["compute_s"]), "comm_bytes": nbytes,
                "collectives": sum(len(st.colls) for st in steps) / n, "_steps": spans}

    def _bytes(self, c) -> int:
        return 0 if c.op == "barrier" else self._buffers(c.op, c.nbytes, c.dtype)["bytes"]

    def close(self, final: bool = False) -> None:
        self.buffers.clear()
