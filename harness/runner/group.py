"""The ranks of one workload: an agent per rank (a Ray actor, or a direct one in the guest), each
owning a long-lived rank process inside its lab host; the process group comes up once and serves
every measurement while the runner changes the network under it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from metrolab.harness.kernel.launch import rank_env
from metrolab.harness.policy.flows import learning
from metrolab.harness.scenario import stats as st
from metrolab.workloads.registry import WORKLOADS

WARMUP_WINDOW = 4          # steps that must show no trend before measuring
WARMUP_MAX_DRIFT = 0.03    # of the median over the window (Theil-Sen slope x window)
WARMUP_MAX_STEPS = 20


def matching_fault(scn, point, rank_count: int):
    for f in scn.spec.faults:
        if point.baseline:
            continue
        if all(getattr(point, k, None) == v for k, v in f.point.items()) and f.rank < rank_count:
            return f
    return None


def cpu_load(replies: list[dict]) -> float | None:
    """The ranks' CPU time over the wall time of their machine's cores, on the busiest machine
    (ranks on one machine share its cores; on a testbed each machine has its own); None without
    a wall time."""
    wall = max((r.get("wall_s") or 0.0) for r in replies) if replies else 0.0
    if wall <= 0:
        return None
    cpu: dict[str, float] = {}
    cores: dict[str, int] = {}
    for r in replies:
        machine = r.get("machine") or ""
        cpu[machine] = cpu.get(machine, 0.0) + (r.get("cpu_s") or 0.0)
        cores[machine] = r.get("cpus") or os.cpu_count() or 1
    return max(cpu[m] / wall / cores[m] for m in cpu)


@dataclass
class Warmup:
    """What a warm-up until stationary did: its step times, whether it got there, the last metrics."""

    steps: list[float] = field(default_factory=list)
    stationary: bool = False
    metrics: dict = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def baseline_step_s(self) -> float | None:
        """The step time once stationary: the median of the last window."""
        if not self.steps:
            return None
        w = sorted(self.steps[-WARMUP_WINDOW:])
        return w[len(w) // 2]


class RankGroup:
    def __init__(self, cluster, lab, scn, wspec, run_dir: Path, port: int, scale: float):
        self.cluster, self.lab, self.scn, self.wspec, self.run_dir = cluster, lab, scn, wspec, run_dir
        self.kind = WORKLOADS[wspec.kind]
        self.hosts = self.kind.hosts(wspec, scn.topology)
        self.port = port
        self.scale = scale
        self.actors: list = []
        self.generation = 0
        self.last_steps: list[tuple[float, float]] = []

    @property
    def started(self) -> bool:
        return bool(self.actors)

    def start(self) -> float:
        self.generation += 1
        port = self.port + self.generation  # a fresh rendezvous after a restart
        (self.run_dir / "logs").mkdir(exist_ok=True)
        name = self.wspec.name or self.wspec.kind
        # a rank's log is written where it runs (the run directory here, its machine on a testbed)
        self.actors = [self.cluster.actor(r, h, self.lab.ns(h), rank_env(self.lab, self.hosts, r, port),
                                          f"{self.lab.log_dir(h, self.run_dir)}/{name}-rank{r}-{h}.log")
                       for r, h in enumerate(self.hosts)]
        backend = self.wspec.params.get("backend", "gloo")
        t0 = time.monotonic()
        self._call_all({"cmd": "init", "backend": backend, "timeout": self.scn.spec.timeout_s})
        return time.monotonic() - t0

    def _call_all(self, msg: dict, per_rank: list[dict] | None = None) -> list[dict]:
        return self.cluster.call_all(self.actors, per_rank or [msg] * len(self.actors), self.scn.spec.timeout_s)

    def params(self, point) -> dict:
        return self.kind.resolve({**self.wspec.params, **dict(point.params)}, self.hosts, self.scn.topology)

    def setup(self, point) -> bool:
        """The point's workload on every rank; True when the ranks built it afresh (new parameters),
        False when they kept the one they had (only the network changed)."""
        fault = matching_fault(self.scn, point, len(self.hosts))
        sites = [self.scn.topology.nodes[h].site for h in self.hosts]
        params = self.params(point)
        msgs = [{"cmd": "setup", "workload": self.wspec.kind, "params": params, "scale": self.scale,
                 "sites": sites, "hosts": self.hosts, "base_dir": str(Path(self.scn.source).resolve().parent),
                 "fault": fault.model_dump() if fault is not None and fault.rank == r else None}
                for r in range(len(self.hosts))]
        replies = self._call_all(msgs[0], per_rank=msgs)
        return any(r.get("rebuilt", True) for r in replies)

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        """One repetition: the workload's metrics (rank 0's, which hold the slowest rank's step) and
        the CPU load of the ranks while it ran (`cpu_load`)."""
        replies = self._call_all({"cmd": "measure", "warmups": warmups, "iters": iters})
        m = dict(replies[0]["metrics"])
        # rank 0's steps, (start, end) on the wall clock, where the workload times each one: a
        # repetition's events are attributed to them (not a row's column)
        self.last_steps = [tuple(s) for s in m.pop("_steps", None) or []]
        load = cpu_load(replies)
        if load is not None:
            m["cpu_load"] = load
        return m

    def stats(self) -> list[dict]:
        """Each rank's resident memory (MiB), open descriptors and threads, in rank order."""
        return self._call_all({"cmd": "stats"})

    def warm(self, steps: int) -> None:
        """Unmeasured steps (after the network changed under the ranks)."""
        if steps > 0:
            self._call_all({"cmd": "warm", "steps": steps})

    def warm_up(self, minimum: int, max_s: float) -> Warmup:
        """Steps until the step time is stationary (no trend over the last WARMUP_WINDOW steps, or
        the workload's own window), at least `minimum`, at most WARMUP_MAX_STEPS or `max_s` seconds."""
        w = Warmup()
        t0 = time.monotonic()
        window = self.kind.warmup_window or WARMUP_WINDOW
        need = max(minimum, window)
        while True:
            w.metrics = self.measure(0, 1)
            w.steps.append(w.metrics["step_time_s"])
            if len(w.steps) >= need and st.is_stationary(w.steps, window, WARMUP_MAX_DRIFT):
                w.stationary = True
                break
            if len(w.steps) >= max(need, WARMUP_MAX_STEPS) or time.monotonic() - t0 > max_s:
                break
        w.wall_s = time.monotonic() - t0
        return w

    def learn_flows(self, warmups: int, nodes: list[str]) -> list:
        """A pass of the workload (its result discarded) while `nodes` (the policy's switches)
        count what they forward per 5-tuple: the flows between its hosts, as a controller learns
        them from the switches' telemetry, for any transport (metrolab.harness.policy.flows)."""
        with learning(self.lab, nodes, self.hosts) as flows:
            self.measure(warmups)
        return flows

    def stop(self, kill: bool = False) -> None:
        for a in self.actors:
            self.cluster.stop_actor(a, kill)
        self.actors = []
