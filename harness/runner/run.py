"""`metrolab run`: a scenario from lab up to verdict.

lab up -> Ray up -> per workload: one rank per host (a Ray actor starts it in the host's namespace,
the process group comes up once) -> baseline, then every sweep point: impair the swept links,
measure each repetition, append its row -> Ray down, lab down (always) -> verdict.

A rank that crashes, errs or hangs fails its point (a row with the reason), the workload's ranks
are stopped and started afresh, and the sweep goes on. With `resume`, nothing already recorded
in the run directory is measured again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import LabError
from harness.lab.netns import NetnsLab
from harness.policy.apply import PolicyApplier, needs_flows
from harness.runner.agents import LocalAgents, RankFailed, RayCluster
from harness.runner.results import ResultStore, run_metadata
from harness.scenario.points import Point, baselines, grid, point_impairment
from harness.scenario.verdict import Verdict, evaluate, summarize
from workloads.registry import WORKLOADS, workload_metrics


FIRST_POINT_WARMUPS = 3  # times the scenario's warm-ups, on the first point after ranks (re)start


@dataclass
class RunOutcome:
    run_dir: Path
    verdict: Verdict
    measured: int          # rows written by this invocation
    skipped: int           # (workload, point, repetition) already in the run directory
    ray_start_s: float
    wall_s: float
    orchestrator: str = "ray"


def swept_links(scn) -> list[str]:
    return scn.spec.sweep.links or [lk.name for lk in scn.topology.links if lk.name.startswith("wan")]


def _matching_fault(scn, point: Point, rank_count: int):
    for f in scn.spec.faults:
        if point.baseline:
            continue
        if all(getattr(point, k, None) == v for k, v in f.point.items()) and f.rank < rank_count:
            return f
    return None


class RankGroup:
    """The ranks of one workload: Ray actors, each owning its rank process in a lab host."""

    def __init__(self, cluster: RayCluster, lab, scn, wspec, run_dir: Path, port: int):
        self.cluster, self.lab, self.scn, self.wspec, self.run_dir = cluster, lab, scn, wspec, run_dir
        self.kind = WORKLOADS[wspec.kind]
        self.hosts = self.kind.hosts(wspec, scn.topology)
        self.port = port
        self.actors: list = []
        self.generation = 0

    def start(self) -> float:
        from harness.dist.launch import rank_env
        self.generation += 1
        port = self.port + self.generation  # a fresh rendezvous after a restart
        logs = self.run_dir / "logs"
        logs.mkdir(exist_ok=True)
        name = self.wspec.name or self.wspec.kind
        self.actors = [self.cluster.actor(r, h, self.lab.ns(h), rank_env(self.lab, self.hosts, r, port),
                                          str(logs / f"{name}-rank{r}-{h}.log")) for r, h in enumerate(self.hosts)]
        backend = self.wspec.params.get("backend", "gloo")
        t0 = time.monotonic()
        self._call_all({"cmd": "init", "backend": backend, "timeout": self.scn.spec.timeout_s},
                       self.scn.spec.timeout_s)
        return time.monotonic() - t0

    def _call_all(self, msg: dict, timeout: float, per_rank: list[dict] | None = None) -> list[dict]:
        return self.cluster.call_all(self.actors, per_rank or [msg] * len(self.actors), timeout)

    def setup(self, point: Point) -> None:
        fault = _matching_fault(self.scn, point, len(self.hosts))
        sites = [self.scn.topology.nodes[h].site for h in self.hosts]
        params = self.kind.resolve({**self.wspec.params, **dict(point.params)}, self.hosts, self.scn.topology)
        msgs = [{"cmd": "setup", "workload": self.wspec.kind, "params": params,
                 "scale": self.scn.spec.scale, "sites": sites, "hosts": self.hosts,
                 "fault": fault.model_dump() if fault is not None and fault.rank == r else None}
                for r in range(len(self.hosts))]
        self._call_all(msgs[0], self.scn.spec.timeout_s, per_rank=msgs)

    def measure(self, warmups: int) -> dict:
        replies = self._call_all({"cmd": "measure", "warmups": warmups}, self.scn.spec.timeout_s)
        return replies[0]["metrics"]

    def learn_flows(self, warmups: int) -> list:
        """A pass of the workload (its result discarded), then the flows it made between its
        hosts, as a controller would learn them: 5-tuples and bytes."""
        from harness.policy.flows import learn, snapshot
        before = learn(self.lab, self.hosts)
        self.measure(warmups)
        return learn(self.lab, self.hosts, since=snapshot(before), min_bytes=1)

    def stop(self, kill: bool = False) -> None:
        for a in self.actors:
            self.cluster.stop_actor(a, kill)
        self.actors = []


def run_scenario(scn, run_dir: str | Path, *, resume: bool = False, ray_address: str | None = None,
                 backend: str = "netns", progress=None) -> RunOutcome:
    t_start = time.monotonic()
    store = ResultStore(run_dir)
    meta = store.start(run_metadata(scn, backend), resume)
    (Path(run_dir) / "scenario.json").write_text(json.dumps(
        {"spec": scn.spec.model_dump(mode="json"), "metrics": list(workload_metrics([w.kind for w in
                                                                                      scn.spec.workloads]))},
        indent=2))
    done = store.done()
    points = baselines(scn.spec.sweep) + grid(scn.spec.sweep, scn.spec.scale)
    workloads = scn.spec.workloads
    total = len(workloads) * len(points) * scn.spec.repetitions
    progress = progress or (lambda **kw: None)
    measured = skipped = 0
    lab = NetnsLab(scn.topology)
    cluster = None
    links = swept_links(scn)
    bases = {lk.name: lk.impairment(scn.topology.group_index) for lk in scn.topology.links}
    lab.up()

    def wan_counter() -> dict[str, tuple[int, int, int, int]]:
        """Per swept link (both directions): bytes sent, packets its queues dropped, packets they
        marked CE (read only under an ECN policy: it takes a `tc` per interface), packets sent."""
        from harness.policy.apply import marks_ecn
        from harness.policy.qos import ecn_marks, root_drops
        from harness.rdma.counters import if_counters
        out = {}
        ecn = marks_ecn(applier.current)
        for link in links:
            sent = dropped = marked = packets = 0
            for end in lab.plan.ends(link):
                h = lab.handle(end.node)
                c = if_counters(h, end.ifname)
                sent, packets = sent + c["tx_bytes"], packets + c["tx_packets"]
                dropped += root_drops(h, end.ifname)
                marked += ecn_marks(lab.ns(end.node), end.ifname) if ecn else 0
            out[link] = (sent, dropped, marked, packets)
        return out

    def wan_metrics(before: dict, after: dict) -> dict:
        sent = {lk: after[lk][0] - before[lk][0] for lk in links}
        drops, packets = (sum(after[lk][i] - before[lk][i] for lk in links) for i in (1, 3))
        m = {"wan_bytes": sum(sent.values()), "wan_drops": drops,
             "wan_loss": drops / (drops + packets) if drops + packets else 0.0,
             "ecn_marks": sum(after[lk][2] - before[lk][2] for lk in links)}
        if len(links) > 1:  # parallel paths: how evenly the traffic spread (max / min bytes)
            from harness.policy.planner import imbalance
            m["path_imbalance"] = imbalance(sent)
            m["path_bytes"] = json.dumps(sent, sort_keys=True)  # per link, for the record (not a metric)
        return m

    policies = {p.name: p for p in scn.spec.policies}
    applier = PolicyApplier(lab)
    try:
        # Ray places and supervises the ranks on the host kernel and on clusters; in the guest
        # (TCG) Ray does not start, so the runner drives the same rank agents itself
        cluster = LocalAgents() if os.environ.get("METROLAB_IN_GUEST") and not ray_address else RayCluster(ray_address)
        lab.state.extra["ray_pids"] = cluster.pids()
        lab.state.save()
        for wi, wspec in enumerate(workloads):
            wname = wspec.name or wspec.kind
            todo = [p for p in points
                    if not all((wname, p.key, rep) in done for rep in range(scn.spec.repetitions))
                    and (wname, p.key, -1) not in done]
            skipped += (len(points) - len(todo)) * scn.spec.repetitions
            progress(advance=(len(points) - len(todo)) * scn.spec.repetitions, total=total)
            if not todo:
                continue
            group = RankGroup(cluster, lab, scn, wspec, Path(run_dir), port=29700 + 50 * wi)
            try:
                started = fresh = False
                for point in todo:
                    progress(description=f"{wname}: {point.label()}")
                    for link in links:
                        imp = point_impairment(point, bases[link], scn.spec.sweep, scn.topology.group_index)
                        lab.impair(link, imp)
                        applier.base[link] = imp  # a policy on this link composes with the point's impairment
                    base_row = {"workload": wname, "kind": wspec.kind, "point_key": point.key, "label": point.label(),
                                **point.fields(), "links": ",".join(links), **meta}
                    # the point's policy replaces the previous one (the baseline runs without any);
                    # one that acts on flows goes in after a pass of the workload it learns them from
                    policy = None if point.baseline or point.policy == "none" else policies[point.policy]
                    learn = needs_flows(policy)

                    def policy_failed(exc: Exception) -> None:
                        nonlocal measured
                        store.append(base_row | {"repetition": -1, "status": "failed",
                                                 "error": f"policy {point.policy}: {exc}", "measured_at": time.time()})
                        measured += 1
                        progress(advance=scn.spec.repetitions)
                    try:
                        applier.apply(None if learn else policy)
                    except (LabError, ValueError) as exc:
                        policy_failed(exc)
                        continue
                    try:
                        if not started:
                            group.start()
                            started = fresh = True
                        group.setup(point)
                        if learn:
                            try:
                                applier.apply(policy, flows=group.learn_flows(max(1, scn.spec.warmups)))
                            except (LabError, ValueError) as exc:
                                policy_failed(exc)
                                continue
                        for rep in range(scn.spec.repetitions):
                            if (wname, point.key, rep) in done:
                                progress(advance=1)
                                skipped += 1
                                continue
                            warm = scn.spec.warmups if rep == 0 else 0
                            if rep == 0 and fresh:
                                # a group's first point also warms caches, connections and
                                # allocators: without more warm-up the baseline (measured
                                # first) reads slow and every later point looks better than ideal
                                warm = FIRST_POINT_WARMUPS * max(1, scn.spec.warmups)
                                fresh = False
                            before = wan_counter()
                            metrics = group.measure(warm)
                            if not warm:  # one repetition's own steps, warm-ups excluded
                                metrics |= wan_metrics(before, wan_counter())
                            store.append(base_row | {"repetition": rep, "status": "ok", "error": None,
                                                     "measured_at": time.time(), **metrics})
                            measured += 1
                            progress(advance=1)
                    except RankFailed as exc:
                        store.append(base_row | {"repetition": -1, "status": "failed", "error": str(exc),
                                                 "measured_at": time.time()})
                        measured += 1
                        progress(advance=scn.spec.repetitions)
                        group.stop(kill=True)
                        started = False
            finally:
                group.stop()
    finally:
        if cluster is not None:
            cluster.close()
        lab.down()  # policies go with the namespaces
    ray_start = cluster.start_s if cluster is not None else 0.0
    metrics = workload_metrics([w.kind for w in workloads])
    verdict = evaluate(summarize(store.rows(), metrics), scn.criteria)
    return RunOutcome(Path(run_dir), verdict, measured, skipped, ray_start, time.monotonic() - t_start,
                      cluster.kind if cluster is not None else "none")
