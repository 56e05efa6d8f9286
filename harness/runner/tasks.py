"""Plays a task schedule on a lab: committed windows become slices on the path's egress, reserved
when each window opens and released when its transfer completes (§4.2.1: "bandwidth resources are
automatically released after the task is complete"; a task that overruns its window keeps its
slice until done, and is reported missed); the path's own traffic follows its history; a tenant's
rate changes mid-transfer (elastic bandwidth, white paper §4.2.2).

The egress gets HTB with a class for the path's own traffic (DSCP `BACKGROUND_DSCP`, held to the
history's rate slot by slot), one per committed task (its own DSCP: reserved rate and ceiling set
when its window opens, returned to a trickle when its transfer is complete) and the default class. The senders are
real TCP flows in the lab's namespaces (metrolab.workloads.elephants, each waiting for its word once
connected, so a window's start is the word, not a process's start-up); each transfer is timed
by its receiver from its first byte to its last. The link's bytes are sampled all along: the
utilization of each slot beside what the schedule predicted for it.

Every class and process is gone when `play` returns, on success, error and Ctrl-C: the link gets
its own queue back. Repeated plays are an Experiment (`Plays`) on the one Engine: a play a block,
each written to the Record as it ends, a resumed run playing only what is missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import sh
from metrolab.harness.policy import qos
from metrolab.harness.runner.engine import Experiment
from metrolab.harness.runner.linkseries import LinkSampler
from metrolab.harness.runner.record import Record
from metrolab.harness.scenario.schedule import Commitment, History, Refusal, Request, finish_s, schedule, slot_s
from metrolab.netem.profile import Impairment
from metrolab.workloads import elephants

log = logging.getLogger(__name__)

BACKGROUND_DSCP = 8
FIRST_TASK_DSCP = 10
TRICKLE_BPS = 8_000  # a released slice: HTB wants some rate for every class
BASE_PORT = 47000


@dataclass(frozen=True)
class RateChange:
    """Elastic bandwidth: the task's slice gets `rate_bps` `after_s` into its window."""

    task: str
    after_s: float
    rate_bps: float


@dataclass
class Plan:
    link: str                   # the path's bottleneck link
    egress: str                 # the node whose egress onto `link` is shaped (the transfers' side)
    src: str                    # host the transfers (and the path's own traffic) leave from
    dst: str                    # host they go to
    capacity_bps: float
    history: History            # the path's own traffic; its next period is played live
    requests: list[Request]
    time_scale: float = 1 / 60  # a minute slot plays in a second
    changes: list[RateChange] = field(default_factory=list)
    guard_s: float = 0.0        # each window's start, not counted on (metrolab.harness.scenario.schedule.commit)
    lead_s: float = 1.0         # the timeline starts this long after the senders are ready


@dataclass
class TaskResult:
    name: str
    committed: bool
    reason: str = ""
    window_s: tuple[float, float] | None = None
    rate_bps: float | None = None
    bytes: int = 0
    received: int = 0
    start_s: float | None = None   # first byte, from the timeline's origin
    end_s: float | None = None     # last byte
    predicted_end_s: float | None = None
    met: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _class_minor(i: int) -> int:
    return 0x10 + i  # qos.install_classes: the classes in the order given


@dataclass(frozen=True, order=True)
class Action:
    at_s: float
    order: int                  # at the same time, a class's rate before a sender's word
    flow: int = -1              # "go": the sender to start (0: the path's own traffic, 1 + i: task i)
    minor: int = 0              # "rate": the class
    rate_bps: float = 0.0


@dataclass(frozen=True)
class _Play:
    key: str = "play"


@dataclass
class Plays(Experiment):
    """The plan played once a block (metrolab.harness.runner.engine), each play a row of `stream`."""

    lab: Any
    plan: Plan
    record: Record
    stream: str
    say: Callable[[str], None] = lambda _m: None
    name: str = "tasks"

    def points(self) -> list[_Play]:
        return [_Play()]

    def rows(self) -> list[dict]:  # a play recorded before plays carried their block: its place
        return [{"key": "play", "block": i} | r for i, r in enumerate(self.record.lines(self.stream))]

    def measure(self, point: _Play, block: int) -> dict:
        self.say(f"repetition {block + 1}")
        row = {"key": point.key, "block": block} | play(self.lab, self.plan, progress=self.say)
        self.record.append(self.stream, row)  # written as measured: resume keeps it
        return row


def play(lab, plan: Plan, progress: Callable[[str], None] = lambda _m: None) -> dict:
    """Commit the requests, run the timeline on `lab`, and report each task and each slot."""
    got = schedule(plan.requests, plan.capacity_bps, plan.history, time_scale=plan.time_scale, guard_s=plan.guard_s)
    commits = [c for c in got if isinstance(c, Commitment)]
    slot = min((slot_s(r.service, plan.time_scale) for r in plan.requests), default=1.0)
    horizon = max([c.end_s for c in commits] + [slot]) + slot  # one quiet slot after the last window
    ends = lab.plan.ends(plan.link)
    side = next((k for k, e in enumerate(ends) if e.node == plan.egress), None)
    if side is None:
        raise LabError(f"tasks: {plan.egress} is not an end of link {plan.link}")
    end = ends[side]
    dst = str(lab.topology.nodes[plan.dst].address)
    shaper = lab.shaper(end.node)
    own = lab.topology.own_impairment(plan.link)
    imp = qos.classful(Impairment(rate_bps=plan.capacity_bps, delay_s=own.delay_s))
    # classes: the path's own traffic, then a slice per committed task (a trickle until its window)
    bg0 = max(plan.history.predicted_bps(0.0, slot, 0.5), TRICKLE_BPS)
    classes = [(bg0, bg0, [qos.dscp_key(BACKGROUND_DSCP)], True)]
    classes += [(TRICKLE_BPS, TRICKLE_BPS, [qos.dscp_key(FIRST_TASK_DSCP + i)], True) for i in range(len(commits))]
    procs: list[subprocess.Popen] = []
    sampler = LinkSampler(lab, [plan.link], interval_s=min(0.1, slot / 4))
    t0 = 0.0
    late = 0.0  # the latest a control action (a go, a slice raised or cut) took effect after its time
    try:
        lab.impair(plan.link, imp)
        major = qos.install_classes(shaper, end.ifname, imp, classes, netem=shaper.has_netem)
        drops0 = lab.link_counters(plan.link, ecn=False)[1]  # the new tree's, and the far end's
        rx, tx = _start_flows(lab, plan, commits, dst, horizon, procs)
        progress(f"{len(commits)} window(s) committed, {len(got) - len(commits)} refused; playing {horizon:g} s")
        held = set(range(len(commits)))  # slices not yet released

        def release_done() -> None:
            # the slice goes back once its transfer is complete (its receiver has all of it), whether
            # inside its window or after it (a missed commitment keeps its rate until it is done)
            for i in sorted(held):
                if rx[1 + i].poll() is not None:
                    qos.change_class(shaper, end.ifname, major, _class_minor(1 + i), TRICKLE_BPS, plan.capacity_bps)
                    held.discard(i)

        with sampler:
            t0 = time.time() + plan.lead_s
            mono0 = time.monotonic() + plan.lead_s
            for a in _timeline(plan, commits, slot, horizon):
                _sleep_until(t0 + a.at_s, release_done)
                if a.flow >= 0:
                    elephants.go(tx[a.flow])
                else:
                    qos.change_class(shaper, end.ifname, major, a.minor, a.rate_bps, plan.capacity_bps)
                late = max(late, time.time() - (t0 + a.at_s))
            _sleep_until(time.time() + max(60.0, horizon * 4), release_done, until=lambda: not held)
            outs = [p.communicate(timeout=max(60.0, horizon * 4)) for p in rx + tx]
        bad = [err[-500:] for p, (_, err) in zip(rx + tx, outs) if p.returncode != 0]
        if bad:
            raise LabError(f"tasks: a transfer failed: {bad}")
        flows = [next(iter(json.loads(out)["flows"].values())) for out, _ in outs[:len(rx)]]
        # a task that ends later than its rates say: was the controller late, or did the link drop?
        seen = {"control_late_s": late, "wan_drops": lab.link_counters(plan.link, ecn=False)[1] - drops0}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        with contextlib.suppress(Exception):
            shaper.clear(end.ifname)
        lab.impair(plan.link, own)
    series = [(t - mono0, tx_[plan.link][side]) for t, tx_ in sampler.samples]
    return _report(plan, got, commits, flows, t0, slot, horizon, series) | seen


def _start_flows(lab, plan: Plan, commits: list[Commitment], dst: str, horizon: float,
                 procs: list[subprocess.Popen]) -> tuple[list[subprocess.Popen], list[subprocess.Popen]]:
    """A receiver per flow on `dst`, a sender per flow on `src` waiting for its word: the path's own
    traffic (sends for the whole timeline) first, then each committed task (sends its bytes)."""
    py = [sys.executable, "-m", "metrolab.workloads.elephants"]
    jobs = [(BACKGROUND_DSCP, ["--seconds", f"{horizon:.3f}"])]
    jobs += [(FIRST_TASK_DSCP + i, ["--bytes", str(c.request.bytes)]) for i, c in enumerate(commits)]
    timeout = str(max(60.0, horizon * 4))
    rx: list[subprocess.Popen] = []
    tx: list[subprocess.Popen] = []
    for i in range(len(jobs)):
        rx.append(sh.popen([*py, "recv", "--port", str(BASE_PORT + i), "--flows", "1", "--timeout", timeout],
                           netns=lab.ns(plan.dst), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        procs.append(rx[-1])
    for i, (dscp, amount) in enumerate(jobs):
        tx.append(sh.popen([*py, "send", "--dst", dst, "--port", str(BASE_PORT + i), "--flows", "1", "--sport",
                            str(BASE_PORT + 100 + i), "--tos", str(dscp << 2), "--wait-go", *amount],
                           netns=lab.ns(plan.src), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True))
        procs.append(tx[-1])
    try:
        elephants.await_ready(tx)
    except RuntimeError as exc:
        raise LabError(f"tasks: {exc}") from exc
    return rx, tx


def _timeline(plan: Plan, commits: list[Commitment], slot: float, horizon: float) -> list[Action]:
    """The background's rate each slot (the history's median at that phase: what the path's own
    traffic carries, not the worst case the scheduler plans for), each window's reservation and
    word, each rate change; in time order."""
    acts = [Action(0.0, 1, flow=0)]
    k = 0
    while k * slot < horizon:
        t = k * slot
        acts.append(Action(t, 0, minor=_class_minor(0),
                           rate_bps=max(plan.history.predicted_bps(t, t + slot, 0.5), TRICKLE_BPS)))
        k += 1
    index = {c.request.name: i for i, c in enumerate(commits)}
    for i, c in enumerate(commits):  # released by `play` when the transfer completes
        acts += [Action(c.start_s, 0, minor=_class_minor(1 + i), rate_bps=c.rate_bps), Action(c.start_s, 1, flow=1 + i)]
    for ch in plan.changes:
        if ch.task in index:  # a refused task has no slice to change
            c = commits[index[ch.task]]
            acts.append(Action(c.start_s + ch.after_s, 0, minor=_class_minor(1 + index[ch.task]), rate_bps=ch.rate_bps))
    return sorted(acts)


def _sleep_until(t: float, tick: Callable[[], None] = lambda: None,
                 until: Callable[[], bool] = lambda: False) -> None:
    """Until wall time `t` (or `until()`), calling `tick` every few milliseconds."""
    while (left := t - time.time()) > 0 and not until():
        tick()
        time.sleep(min(left, 0.005))


def _report(plan: Plan, got: list, commits: list[Commitment], flows: list[dict], t0: float, slot: float,
            horizon: float, series: list[tuple[float, int]]) -> dict:
    """Each task (committed or refused; met or missed, beside the end the rates predict) and each
    slot's utilization beside the model's: the history's median at that phase and what each slice
    carries at its rates until the end its rates predict."""
    tasks: list[TaskResult] = []
    index = {c.request.name: i for i, c in enumerate(commits)}
    for g in got:
        if isinstance(g, Refusal):
            tasks.append(TaskResult(g.request.name, False, g.reason, bytes=g.request.bytes))
            continue
        i = index[g.request.name]
        c, fl = commits[i], flows[1 + i]
        rates = _rates(plan, c)
        start_s, end_s = fl["start"] - t0, fl["end"] - t0
        # the model's end: from the transfer's first byte (how late its sender started is measured,
        # not modeled), at the slice's rates in force from then on
        tasks.append(TaskResult(c.request.name, True, window_s=(c.start_s, c.end_s), rate_bps=c.rate_bps,
                                bytes=c.request.bytes, received=fl["bytes"], start_s=start_s, end_s=end_s,
                                predicted_end_s=finish_s(max(start_s, c.start_s), c.request.bytes, rates),
                                met=fl["bytes"] == c.request.bytes and end_s <= c.end_s))
    slots = []
    k = 0
    schedules = [(_rates(plan, c), t.predicted_end_s or c.end_s) for c, t in
                 zip(commits, [t for t in tasks if t.committed])]
    while series and (k + 1) * slot <= horizon + 1e-9:
        a, b = k * slot, (k + 1) * slot
        slices = sum(_carried(rates, a, b, end) for rates, end in schedules)
        used = (_bytes_at(series, b) - _bytes_at(series, a)) * 8 / slot
        slots.append({"start_s": a, "utilization": used / plan.capacity_bps,
                      "model": (plan.history.predicted_bps(a, b, 0.5) * slot + slices) / slot / plan.capacity_bps})
        k += 1
    met = [t.met for t in tasks if t.committed]
    return {"tasks": [t.to_dict() for t in tasks], "slots": slots, "slot_s": slot, "capacity_bps": plan.capacity_bps,
            "committed": len(met), "met": sum(bool(m) for m in met), "refused": len(tasks) - len(met),
            "utilization": sum(s["utilization"] for s in slots) / len(slots) if slots else None}


def _rates(plan: Plan, c: Commitment) -> list[tuple[float, float]]:
    """A task's slice rate over time: (from, bit/s), its reservation then each change."""
    return sorted([(c.start_s, c.rate_bps)] + [(c.start_s + ch.after_s, ch.rate_bps) for ch in plan.changes
                                               if ch.task == c.request.name])


def _carried(rates: list[tuple[float, float]], a: float, b: float, end: float) -> float:
    """The bits a slice carries over [a, b) at the rates in force until its transfer's `end`."""
    bits = 0.0
    for k, (at, rate) in enumerate(rates):
        until = min(rates[k + 1][0] if k + 1 < len(rates) else math.inf, end, b)
        bits += rate * max(0.0, until - max(at, a))
    return bits


def _bytes_at(series: list[tuple[float, int]], t: float) -> float:
    """The link's transmitted bytes at `t` (from the timeline's origin), interpolated."""
    prev = series[0]
    for cur in series:
        if cur[0] >= t:
            if cur[0] == prev[0]:
                return float(cur[1])
            f = (t - prev[0]) / (cur[0] - prev[0])
            return prev[1] + f * (cur[1] - prev[1])
        prev = cur
    return float(prev[1])
