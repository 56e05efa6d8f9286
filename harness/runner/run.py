"""`metrolab run`: a scenario from lab up to verdict.

lab up -> headroom (the unshaped capacity between each workload's hosts; auto scale) -> Ray up ->
per workload: one rank per host (a Ray actor starts it in the host's namespace, the process group
comes up once) -> warm-up at the baseline until the step time is stationary, the model fitted on
it predicts every point -> warm-up passes through every point (discarded) until each point's step
time holds still from one pass to the next -> randomized blocks (metrolab.harness.runner.engine): the
baseline and every point in a shuffled order, each re-impairing the swept links and re-applying its
policy, one row per measurement appended as it is taken, with the CPU that went to other processes
meanwhile (metrolab.harness.kernel.interference; a block under interference is replaced) -> with
`until_conclusive`, the sequential design (metrolab.harness.scenario.sequential): a look after every block,
stopping when every criterion is conclusive or the budget is spent -> Ray down, lab down (always)
-> verdict.

A rank that crashes, errs or hangs fails its point (a row with the reason), the workload's ranks
are stopped and started afresh, and the sweep goes on. With `resume`, nothing already recorded
in the run directory is measured again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metrolab.harness import capabilities, settings
from metrolab.harness.errors import LabError, SpecError
from metrolab.harness.kernel.interference import Monitor, interference_summary
from metrolab.harness.kernel.zygote import Zygote, enabled, prestart
from metrolab.harness.lab.netns import NetnsLab
from metrolab.harness.policy.apply import PolicyApplier, marks_ecn, needs_flows
from metrolab.harness.policy.flows import policy_nodes
from metrolab.harness.policy.model import queue_links
from metrolab.harness.runner import headroom as hr
from metrolab.harness.runner import soak
from metrolab.harness.runner.agents import LocalAgents, RankFailed, RayCluster
from metrolab.harness.runner.engine import Budget, Engine, Experiment, new_seed
from metrolab.harness.runner.events import EventPlayer, links_of
from metrolab.harness.runner.group import RankGroup
from metrolab.harness.runner.linkseries import LinkSampler, utilization
from metrolab.harness.runner.results import ResultStore, run_metadata
from metrolab.harness.runner.transport_counts import rdma_counters, tcp_stack_counters
from metrolab.harness.runner.wan import WanCounters, backlog_drops
from metrolab.harness.scenario import kpis
from metrolab.harness.scenario.events import impact
from metrolab.harness.scenario.points import Point, baselines, grid, per_packet, point_impairment
from metrolab.harness.scenario.predict import make_predictor
from metrolab.harness.scenario.sequential import Design
from metrolab.harness.scenario.verdict import Settings, Verdict
from metrolab.harness.testbed.hosts import HostsLab
from metrolab.workloads.registry import WORKLOADS, workload_metrics

log = logging.getLogger(__name__)

WARMUP_SHARE_S = 0.1  # of a point's timeout: the longest a warm-up may take


@dataclass
class RunOutcome:
    """What one invocation did (meta.json's "outcome"); the verdict is the Judge's, from the Record."""

    run_dir: Path
    measured: int          # rows written by this invocation
    skipped: int           # (workload, point, block) already in the run directory
    ray_start_s: float
    wall_s: float
    orchestrator: str = "ray"
    blocks: dict = field(default_factory=dict)       # workload -> blocks measured
    headroom: dict = field(default_factory=dict)     # workload -> Headroom.to_dict()
    seed: int | None = None
    scale: float = 1.0

    @functools.cached_property
    def verdict(self) -> Verdict:  # the Judge's, from the Record; judged once, when first asked
        return ResultStore(self.run_dir).judge()

    def summary(self) -> dict:
        return {"measured": self.measured, "skipped": self.skipped, "ray_start_s": self.ray_start_s,
                "orchestrator": self.orchestrator, "wall_s": self.wall_s, "seed": self.seed, "blocks": self.blocks,
                "scale": self.scale, "headroom": self.headroom}


def swept_links(scn) -> list[str]:
    return scn.spec.sweep.links or [lk.name for lk in scn.topology.links if lk.name.startswith("wan")]


class Runner:
    """One run of a scenario in a run directory (what `run_scenario` drives)."""

    def __init__(self, scn, run_dir, *, resume: bool, ray_address: str | None, backend: str, progress,
                 testbed=None, soak: SoakPlan | None = None):
        self.scn, self.spec = scn, scn.spec
        self.soak = soak
        self.run_dir = Path(run_dir)
        self.resume, self.ray_address, self.backend = resume, ray_address, backend
        self.progress = progress or (lambda **kw: None)
        self.store = ResultStore(run_dir)
        self.settings = Settings.of(self.spec)
        self.links = swept_links(scn)
        self.testbed = testbed
        if testbed is not None:
            self.lab: Any = HostsLab(testbed)
        else:
            self.lab = NetnsLab(scn.topology)
        self.lab.tbf_links = queue_links(self.spec.policies)  # one rate stage at every point of theirs
        self.lab.wire_packets = per_packet(self.spec)  # one packet size at every point
        self.applier = PolicyApplier(self.lab)
        for policy in self.spec.policies:
            self.applier.check(policy)
        self.wan = WanCounters(self.lab, self.links, lambda: marks_ecn(self.applier.current))
        self.policies = {p.name: p for p in self.spec.policies}
        self.monitor = Monitor(enabled=testbed is None)  # a testbed's machines are not this one
        self.cluster: Any = None  # LocalAgents (in the guest) or a RayCluster
        self.t0 = time.monotonic()
        self.headroom: dict[str, hr.Headroom] = {}
        self.blocks: dict[str, int] = {}
        self.rate_divisor = 1.0
        self.measured = self.skipped = 0  # by this invocation, every workload
        self.order = 0                    # the next row's index in the run's measurement order

    # -- set-up ----------------------------------------------------------------------------
    def design(self) -> Design:
        """One look after the planned blocks, or (until_conclusive) a look after every block from
        them up to the block budget: decided before anything is measured, kept by a resumed run."""
        stats = self.spec.statistics
        if stats.until_conclusive and stats.max_repetitions > self.spec.repetitions:
            return Design("sequential", stats.confidence, self.spec.repetitions, stats.max_repetitions)
        return Design("fixed", stats.confidence, self.spec.repetitions, self.spec.repetitions)

    def _meta(self) -> dict:
        meta = run_metadata(self.scn, self.backend)
        seed = self.spec.statistics.seed
        meta |= {"seed": seed if seed is not None else new_seed(), "blocks": "randomized",
                 "design": self.design().to_dict(), "confidence": self.settings.confidence}
        guest = settings.get("METROLAB_RESULTS")
        if guest and settings.in_guest() and (Path(guest) / "guest.json").exists():
            meta["guest"] = json.loads((Path(guest) / "guest.json").read_text())
        meta = self.store.start(meta, self.resume)
        self.settings = Settings.of(self.spec, Design.from_dict(meta.get("design") if isinstance(
            meta.get("design"), dict) else None, self.settings.confidence))
        return meta

    def _rates(self) -> None:
        """Every link at its topology rate divided by the run's extra scale factor."""
        if self.rate_divisor == 1:
            return
        for lk in self.scn.topology.links:
            if lk.rate_bps:
                hr.restore(self.lab, lk, self.rate_divisor)

    def _check_headroom(self, meta: dict) -> None:
        """Capacity between each workload's hosts; with auto_scale the extra factor k' that keeps
        the emulated line rate under the limit (a resumed run keeps the one its rows were measured at)."""
        spec_h = self.spec.headroom
        recorded = meta.get("extra_scale")
        if not spec_h.check and recorded is None:
            return
        cache: dict = {}
        if enabled():  # its imports would take a CPU from the transfer being measured
            Zygote.get().wait_ready()
        for wspec in self.spec.workloads:
            kind = WORKLOADS[wspec.kind]
            hosts = kind.hosts(wspec, self.scn.topology)
            params = kind.resolve(dict(wspec.params), hosts, self.scn.topology)
            wname = wspec.name or wspec.kind
            self.progress(description=f"{wname}: measuring the unshaped capacity between its hosts")
            self.headroom[wname] = hr.measure(self.lab, wname, wspec.kind, params, hosts, spec_h, cache=cache)
        ratios = [h.capacity_ratio for h in self.headroom.values() if h.capacity_ratio]
        extra, why = hr.run_scale(ratios, spec_h.max_capacity_ratio, spec_h.auto_scale, recorded,
                                  rows_recorded=self.store.has_rows())
        self.rate_divisor = self.applier.rate_divisor = extra
        for h in self.headroom.values():
            if h.capacity_ratio is not None:
                h.capacity_ratio /= extra
                h.line_rate_bps = h.line_rate_bps / extra if h.line_rate_bps else None
            if extra != 1:
                h.notes.append(f"auto scale: rates and bytes divided by a further {extra:g}")
            if why:
                h.notes.append(why)
        self._rates()
        now = {w: h.to_dict() for w, h in self.headroom.items()}
        # each attempt's own: a resumed run's rows carry the headroom of the guest that measured them
        self.store.update_meta(extra_scale=extra, scale=self.spec.scale * extra, headroom=now,
                               headroom_attempts=[*(meta.get("headroom_attempts") or []), now])

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        prestart()  # in the guest: the ranks' imports overlap with building the lab
        meta = self._meta()
        self.store.record.write_json("scenario.json", {
            "spec": self.spec.model_dump(mode="json"),
            "metrics": list(workload_metrics([w.kind for w in self.spec.workloads]))})
        self.lab.up()
        try:
            self._check_headroom(meta)
            meta = {k: v for k, v in self.store.meta.items() if not isinstance(v, (dict, list))}  # flat, per row
            scale = self.spec.scale * self.rate_divisor
            self.points = baselines(self.spec.sweep) + grid(self.spec.sweep, scale)
            self.order = self.store.next_order()
            stats = self.spec.statistics
            self.engine = Engine(self.store.record, int(meta["seed"]), monitor=self.monitor,
                                 limits=(stats.max_interference, stats.max_guest_wait),
                                 # a soak's bar counts repetitions against the clock (_Soak), not points
                                 progress=self._progress if self.soak is None else lambda **kw: None)
            self.total = len(self.spec.workloads) * len(self.points) * self.spec.repetitions
            self.progress(advance=0, total=self.total)
            # Ray places and supervises the ranks on the host kernel and on clusters; in the guest
            # (TCG) Ray does not start, so the runner drives the same rank agents itself
            if self.testbed is not None:  # the lab's own Ray Client connection, ranks on their machines
                self.cluster = RayCluster(self.lab.ray.address, placement=dict(self.testbed.spec.map.nodes))
            elif settings.in_guest() and not self.ray_address:
                self.cluster = LocalAgents()
            else:
                self.cluster = RayCluster(self.ray_address)
            journal = self.lab.journal()
            journal.extra["ray_pids"] = self.cluster.pids()
            journal.save()
            if self.soak is not None:
                self._soak(self.spec.workloads[0], meta, scale, self.soak)
            else:
                for wi, wspec in enumerate(self.spec.workloads):
                    self._workload(wi, wspec, meta, scale, len(self.spec.workloads) - wi)
        finally:
            if self.cluster is not None:
                self.cluster.close()
            try:
                self.applier.close()  # a pause emulation's thread: it would hold the namespaces past down()
            finally:
                self.lab.down()  # policies go with the namespaces
        self.store.write_tables()
        out = RunOutcome(self.run_dir, self.measured, self.skipped,
                         self.cluster.start_s if self.cluster is not None else 0.0, time.monotonic() - self.t0,
                         self.cluster.kind if self.cluster is not None else "none", dict(self.blocks),
                         {w: h.to_dict() for w, h in self.headroom.items()}, int(meta["seed"]), scale)
        self.store.update_meta(outcome=out.summary())  # what this invocation did, for whoever judges the Record
        return out

    def verdict(self, workload: str | None = None) -> Verdict:
        return self.store.judge(workload)

    def _progress(self, advance: int = 0, grow: int = 0) -> None:
        """The Engine's progress on the run's one bar (every workload's points)."""
        if grow:
            self.total += grow
            self.progress(total=self.total)
        if advance:
            self.progress(advance=advance)

    def _soak(self, wspec, meta: dict, scale: float, plan: SoakPlan) -> None:
        """One point repeated for the plan's duration (a block each; the clock starts after the first,
        which starts and warms the ranks); after each repetition its step time and every rank's, the
        runner's and the lab's resources, appended to soak.jsonl as measured."""
        group = RankGroup(self.cluster, self.lab, self.scn, wspec, self.run_dir, port=29700, scale=scale)
        exp = _Soak(self, group, wspec.name or wspec.kind, meta, scale, plan, grid(self.spec.sweep, scale)[plan.index])
        try:
            # a failed repetition is a sample too (its step time missing): the soak measures on
            self._count(self.engine.run(exp, Budget(1, seconds=plan.duration_s, clock_after_planned=True,
                                                    allowed_failures=sys.maxsize)))
        finally:
            group.stop()
            soak.write_summary(self.run_dir, exp.point.label(), plan.duration_s, exp.samples)

    def _count(self, out) -> None:
        self.measured += out.measured
        self.skipped += out.skipped

    def _workload(self, wi: int, wspec, meta: dict, scale: float, workloads_left: int) -> None:
        spec, stats = self.spec, self.spec.statistics
        wname = wspec.name or wspec.kind
        group = RankGroup(self.cluster, self.lab, self.scn, wspec, self.run_dir, port=29700 + 50 * wi, scale=scale)
        share = max(0.0, self.t0 + stats.max_minutes * 60 - time.monotonic()) / max(1, workloads_left)
        ctx = _WorkloadRun(self, group, wname, meta, scale)
        sequential = self.settings.the_design.sequential
        budget = Budget(spec.repetitions, max_blocks=stats.max_repetitions if sequential else None,
                        seconds=share if sequential else None, max_replaced=stats.max_interfered_blocks,
                        allowed_failures=stats.allowed_failures)
        out = None
        try:
            out = self.engine.run(ctx, budget, look=lambda: bool(self.verdict(wname).inconclusive))
            self._count(out)
            if out.stopped == "blocks":
                ctx.undecided(self.verdict(wname), f"the block budget ({stats.max_repetitions}) is spent")
            elif out.stopped == "time":
                ctx.undecided(self.verdict(wname), f"the time budget is spent after {out.clean} blocks")
            elif out.stopped == "decided":
                ctx.note(f"every criterion decided after {out.clean} blocks")
            if out.replaced:
                ctx.note(f"{out.replaced} block(s) ran under interference: replaced")
        finally:
            group.stop()
            self.blocks[wname] = out.blocks if out is not None else 0
            mine = [b for b in self.store.blocks() if b["workload"] == wname]
            self.store.update_meta(**{f"blocks_{wname}": self.blocks[wname]},
                                   budget={**(self.store.meta.get("budget") or {}),
                                           wname: {"blocks": self.blocks[wname],
                                                   "clean_blocks": out.clean if out is not None else 0,
                                                   "replaced": out.replaced if out is not None else 0,
                                                   "minutes": round((time.monotonic() - self.t0) / 60, 2),
                                                   "notes": ctx.notes}},
                                   warm_passes={**(self.store.meta.get("warm_passes") or {}), wname: ctx.passes},
                                   interference={**(self.store.meta.get("interference") or {}),
                                                 wname: interference_summary(mine)})


class _WorkloadRun(Experiment):
    """One workload's sweep, an Experiment: its rank group, warm-ups, predictions, learned flows."""

    def __init__(self, runner: Runner, group: RankGroup, wname: str, meta: dict, scale: float):
        self.r, self.group, self.wname, self.meta, self.scale = runner, group, wname, meta, scale
        self.name, self.record, self.stream = wname, runner.store.record, "results.jsonl"
        self.flows: dict = {}              # (policy, params) -> learned flows, reused in later blocks
        self.predictions: dict[str, float] = {}
        self.paths: dict[str, float | None] = {}  # point key -> the model's bottleneck rate on its path
        self.steady: dict[str, float] = {}  # baseline key -> its step time at the end of the warm-up
        self.passes: list[float | None] = []  # each warm-up pass's median move from the one before
        self.combo: tuple | None = None    # the parameter combination the ranks hold
        self.notes: list[str] = []
        self.delay_line = capabilities.probe().has("netem")
        self.bases = {lk.name: lk.impairment(runner.scn.topology.group_index) for lk in runner.scn.topology.links}
        if runner.rate_divisor != 1:
            self.bases = {k: dataclasses.replace(v, rate_bps=v.rate_bps / runner.rate_divisor) if v.rate_bps else v
                          for k, v in self.bases.items()}

    def note(self, text: str) -> None:
        self.notes.append(text)

    def undecided(self, verdict: Verdict, why: str) -> None:
        """Why the run stopped with criteria undecided, and what the observed spread would need."""
        open_ = verdict.inconclusive
        if not open_:
            self.note(f"every criterion decided; {why}")
            return
        needs = [f"{r.label}: {r.metric} would need about {r.blocks_needed} blocks" for r in open_
                 if r.blocks_needed]
        self.note(f"{why} with {len(open_)} criterion result(s) undecided"
                  + (f" ({'; '.join(needs)} at the spread observed)" if needs else ""))

    # -- the Experiment (metrolab.harness.runner.engine) -----------------------------------------
    def points(self) -> list[Point]:
        return self.r.points

    def recorded(self, row: dict) -> tuple[str, int, bool] | None:
        if row.get("workload") != self.name:
            return None
        return row["point_key"], row["repetition"], row.get("status") == "ok"

    def prepare(self, engine: Engine) -> None:
        self.warm_passes(engine)

    def warm_passes(self, engine: Engine) -> None:
        """Discarded passes through every point, each in a shuffled order, until each point's step
        time holds still: at least `warm_blocks.min`, at most `warm_blocks.max`; the first pass is
        compared with the baseline's steady step from the warm-up. Each pass goes to warmups.jsonl."""
        r, wb = self.r, self.r.spec.warm_blocks
        prev: dict[str, float] = dict(self.steady)
        for k in range(wb.max):
            r.progress(description=f"{self.wname}: warming up every point (pass {k + 1})")
            steps: dict[str, float] = {}
            for point in engine.block(self, -(k + 1)):
                if engine.failed(self, point, r.spec.statistics.allowed_failures):
                    continue
                row = self.measure(point, 0, record=False)
                engine.account(self, row)
                if row["status"] == "ok":
                    steps[point.key] = row["step_time_s"]
            moved = [abs(math.log(steps[key] / prev[key])) for key in steps if key in prev and prev[key] > 0
                     and steps[key] > 0]
            held = sorted(moved)[len(moved) // 2] if moved else None
            r.store.record.append("warmups.jsonl", {"workload": self.wname, "pass": k + 1, "steps": steps,
                                                    "moved": held})
            self.passes.append(held)
            if k + 1 >= wb.min and held is not None and held <= wb.tolerance:
                return
            prev = steps

    def _impair(self, point: Point) -> None:
        spec = self.r.spec
        for link in self.r.links:
            imp = point_impairment(point, self.bases[link], spec.sweep, self.r.scn.topology.group_index,
                                   self.delay_line)
            self.r.lab.impair(link, imp)
            self.r.applier.base[link] = imp  # a policy on this link composes with the point's impairment

    def _ensure(self, point: Point) -> None:
        """Ranks up, holding the point's parameter combination; after a (re)build, a warm-up at
        the combination's baseline until stationary, which also fits the model."""
        g = self.group
        if not g.started:
            g.start()
            self.combo, self.flows = None, {}
        if self.combo == point.params:
            return
        base = next(p for p in self.r.points if p.baseline and p.params == point.params)
        self.r.applier.apply(None)  # first: a running pause emulation holds the links' qdiscs
        self._impair(base)
        self._setup(base)
        self.r.progress(description=f"{self.wname}: warming up{' ' + base.label() if point.params else ''}")
        w = g.warm_up(self.r.spec.warmups, WARMUP_SHARE_S * self.r.spec.timeout_s)
        self.combo = point.params
        if w.baseline_step_s:
            self.steady[base.key] = w.baseline_step_s
        self._predict(base, w)
        self._record_warmup(base, w)

    def _setup(self, point: Point) -> bool:
        """The point's workload on the ranks. A rebuild means new connections: the flows learned from
        the old ones (kept per policy and parameters) match nothing any more and are forgotten."""
        rebuilt = self.group.setup(point)
        if rebuilt:
            self.flows = {k: v for k, v in self.flows.items() if k[1] != point.params}
        return rebuilt

    def _predict(self, base: Point, w) -> None:
        pred = make_predictor(self.r.scn, self.group.wspec, self.group.hosts, self.group.params(base), self.r.links,
                              self.scale, self.r.rate_divisor)
        if pred is None or not w.baseline_step_s:
            return
        try:
            pred.fit(base, w.baseline_step_s, w.metrics)
            for p in self.r.points:
                if p.params == base.params:
                    self.predictions[p.key] = pred.predict(p)
                    self.paths[p.key] = pred.path(p).rate_bps
        except (ValueError, KeyError, ZeroDivisionError) as exc:
            self.note(f"no prediction: {exc}")

    def _record_warmup(self, base: Point, w) -> None:
        h = self.r.headroom.get(self.wname)
        if h is not None:
            h.cpu_load = w.metrics.get("cpu_load")
            if "utilization" in w.metrics:
                h.utilization = w.metrics["utilization"]
        self.r.store.record.append("warmups.jsonl", {
            "workload": self.wname, "params": dict(base.params), "steps": w.steps, "stationary": w.stationary,
            "wall_s": w.wall_s, "cpu_load": w.metrics.get("cpu_load"), "predictions": dict(self.predictions)})
        if h is not None:
            self.r.store.update_meta(headroom={k: v.to_dict() for k, v in self.r.headroom.items()})

    def _record_flows(self, point: Point, block: int, flows: list) -> None:
        """What the controller learned and where it put each flow (flows.jsonl in the run directory)."""
        plans = self.r.applier.plans
        self.r.store.record.append("flows.jsonl", {
            "workload": self.wname, "policy": point.policy, "params": dict(point.params), "block": block,
            "flows": [{"src": fl.src, "dst": fl.dst, "sport": fl.sport, "dport": fl.dport, "proto": fl.proto,
                       "bytes": fl.bytes, "links": {sw: a[fl.key] for sw, a in plans.items() if fl.key in a}}
                      for fl in flows]})

    def _steps(self, point: Point, block: int, policy, record: bool = True) -> dict:
        """The repetition's steps, with the point's events played on the lab while they run: what
        each did to the steps joins the metrics, the steps and the changes go to events.jsonl (not
        for a warm-up pass: it plays them, but records nothing)."""
        r, g = self.r, self.group
        events = [e for e in r.spec.events if e.applies_to(point)]
        if not events:
            return g.measure(0)
        held = set(policy.links or []) if policy is not None else set()
        for e in events:
            for link in set(links_of(e, r.scn.topology)) & held:
                raise LabError(f"event {e.kind} on {link}: policy {point.policy} holds that link's queues "
                               "(an event there would replace them)")
        base = {lk.name: r.applier.base.get(lk.name, self.bases[lk.name]) for lk in r.scn.topology.links}
        player = EventPlayer(r.lab, events, base, self.scale, r.scn.topology.group_index, on_links=r.applier.replan)
        metrics, applied = player.run(lambda: g.measure(0))
        effect = impact(g.last_steps, [(a.start, a.end) for a in applied])
        late = [a.start - a.t0 - a.window.start for a in applied] + \
            [a.end - a.t0 - a.window.end for a in applied if a.end is not None and a.window.end is not None]
        ours = effect.metrics() | {"replan_s": max((p["seconds"] for p in player.replans), default=None),
                                   "event_late_s": max(late, default=None)}
        if not record:
            return metrics | ours
        r.store.record.append("events.jsonl", {
            "workload": self.wname, "point_key": point.key, "label": point.label(), "block": block,
            "events": [e.model_dump(mode="json") for e in events], "applied": [a.to_dict() for a in applied],
            "replans": player.replans, "steps": g.last_steps, "per_step": effect.per_step, **ours})
        return metrics | ours

    def measure(self, point: Point, block: int, record: bool = True) -> dict:
        """One repetition of `point`, recorded (not with `record` off: a warm-up pass); its row, with
        status "failed" where it failed (recorded, a warm-up pass's failure too: the point failed)."""
        log.info("%s: block %d: %s%s", self.wname, block + 1, point.label(), "" if record else " (warm-up)")
        r, spec, g = self.r, self.r.spec, self.group
        wspec = g.wspec
        h = r.headroom.get(self.wname)
        base_row = {"workload": self.wname, "kind": wspec.kind, "point_key": point.key, "label": point.label(),
                    **point.fields(), "links": ",".join(r.links), **self.meta, "block": block}

        def failed(error: str) -> dict:
            row = base_row | {"repetition": -1, "order": r.order, "status": "failed", "error": error,
                              "measured_at": time.time(), "warm_up": not record}
            r.store.append(row)
            r.order += 1
            return row

        policy = None if point.baseline or point.policy == "none" else r.policies[point.policy]
        try:
            self._ensure(point)
            r.progress(description=f"{self.wname}: block {block + 1}: {point.label()}")
            r.applier.clear()  # the previous point's policy goes before the links are re-impaired
            self._impair(point)
            learned = self.flows.get((point.policy, point.params)) if needs_flows(policy) else None
            try:
                r.applier.apply(policy, flows=learned, learning=needs_flows(policy) and learned is None)
            except (LabError, ValueError) as exc:
                return failed(f"policy {point.policy}: {exc}")
            if self._setup(point):  # rebuilt (this point's fault): learn from the new connections
                learned = None
            if needs_flows(policy) and learned is None:
                try:  # a controller learns the flows once; later blocks reuse them
                    learned = self.flows[(point.policy, point.params)] = g.learn_flows(
                        max(1, spec.warmups), policy_nodes(self.r.lab, policy))
                    r.applier.apply(policy, flows=learned)
                    self._record_flows(point, block, learned)
                except (LabError, ValueError) as exc:
                    return failed(f"policy {point.policy}: {exc}")
            g.warm(spec.warmups)  # the network just changed under the ranks
            rdma = rdma_counters(r.lab, g.hosts if g.kind.needs_rdma_for(wspec) else [])
            tcp = tcp_stack_counters(r.lab, g.hosts)
            local = r.lab.backend != "hosts"  # the lab's hops are this kernel's
            try:
                pol = r.applier.counters()
                before, dev, stack = r.wan.read(), rdma.read(), tcp.read()
                backlog = backlog_drops() if local else 0
                if spec.link_samples and local:  # utilization over time: the links' bytes as the ranks run
                    with LinkSampler(r.lab, r.links, spec.link_samples) as sampler:
                        metrics = self._steps(point, block, policy, record)
                    metrics |= utilization(sampler.samples,
                                           {lk: r.applier.base[lk].rate_bps if lk in r.applier.base else None
                                            for lk in r.links})
                else:
                    metrics = self._steps(point, block, policy, record)
                # this repetition's own steps: the swept links, the policy's counters, the transports' (below)
                metrics |= r.wan.metrics(before, r.wan.read())
                metrics |= r.applier.metrics(pol, r.applier.counters())
            except RankFailed:
                raise  # a RankFailed is a LabError too: the ranks must be stopped (below), not kept
            except LabError as exc:  # e.g. the policy's own machinery (a pause controller) stopped
                return failed(str(exc))
            if local:
                metrics["backlog_drops"] = backlog_drops() - backlog
            metrics |= rdma.metrics(dev, rdma.read()) | tcp.metrics(stack, tcp.read())
        except RankFailed as exc:
            row = failed(str(exc))
            g.stop(kill=True)
            return row
        row = base_row | {"repetition": block, "order": r.order, "status": "ok", "error": None,
                          "measured_at": time.time(), "predicted_step_s": self.predictions.get(point.key),
                          "line_rate_bps": self.paths.get(point.key), "rate_stage": r.lab.rate_stage(r.links),
                          # a testbed's NICs segment TCP on the wire themselves: metrolab leaves them be
                          "wire_packets": r.lab.wire_packets if r.testbed is None else None,
                          **metrics}
        row |= kpis.derive(row)
        if h is not None:
            row |= {"capacity_ratio": h.capacity_ratio, "host_bound": h.host_bound}
        if not record:
            return row
        r.store.append(row)
        r.order += 1
        return row



class _Soak(_WorkloadRun):
    """A soak, an Experiment: one point, a repetition a block, each followed by the resources of
    everything involved (metrolab.harness.runner.soak)."""

    def __init__(self, runner: Runner, group: RankGroup, wname: str, meta: dict, scale: float, plan: SoakPlan,
                 point: Point):
        super().__init__(runner, group, wname, meta, scale)
        self.plan, self.point = plan, point
        self.samples: list[dict] = []
        self.local = runner.lab.backend != "hosts"  # lab objects are counted where the lab is this kernel's
        self.start = 0.0

    def points(self) -> list[Point]:
        return [self.point]

    def prepare(self, engine: Engine) -> None:
        self.r.progress(total=1, description=f"{self.wname}: soak {self.point.label()} for {self.plan.duration_s:g} s")

    def measure(self, point: Point, block: int, record: bool = True) -> dict:
        row = super().measure(point, block, record)
        if not self.samples:  # the clock starts after the first repetition (the ranks' start and warm-up)
            self.start = time.monotonic()
        self.samples.append(soak.sample(self.group, self.r.lab, self.local) | {
            "repetition": len(self.samples), "step_time_s": row.get("step_time_s")})
        self.r.store.record.append("soak.jsonl", self.samples[-1])
        left = max(0.0, self.start + self.plan.duration_s - time.monotonic())
        per = (time.monotonic() - self.start) / (len(self.samples) - 1) if len(self.samples) > 1 else 1.0
        self.r.progress(total=len(self.samples) + math.ceil(left / per),  # an estimate: the bar's ETA
                        description=f"{self.wname}: soak {point.label()}: {len(self.samples)} repetitions")
        return row


@dataclass(frozen=True)
class SoakPlan:
    index: int          # the point's index in the sweep's grid
    duration_s: float


def soak_plan(scn, duration_s: float, point: str | None) -> SoakPlan:
    """Which point a soak repeats (its label as `metrolab run` prints it; default: the sweep's
    first), checked before anything is built."""
    if duration_s <= 0:
        raise SpecError("metrolab run", "--soak", duration_s, "a duration above zero (30s, 10m, 2h)")
    if len(scn.spec.workloads) != 1:
        raise SpecError(scn.source, "workloads", len(scn.spec.workloads),
                        "a soak repeats one workload's point; this scenario has several (one scenario per workload)")
    labels = [p.label() for p in grid(scn.spec.sweep, scn.spec.scale)]
    if point is None:
        return SoakPlan(0, duration_s)
    if point not in labels:
        raise SpecError(scn.source, "--point", point, f"not a point of the sweep (points: {'; '.join(labels)})")
    return SoakPlan(labels.index(point), duration_s)


def run_scenario(scn, run_dir: str | Path, *, resume: bool = False, ray_address: str | None = None,
                 backend: str = "netns", progress=None, testbed=None, soak: SoakPlan | None = None) -> RunOutcome:
    return Runner(scn, run_dir, resume=resume, ray_address=ray_address, backend=backend, progress=progress,
                  testbed=testbed, soak=soak).run()
