"""Soak: one sweep point repeated for a duration while the resources of everything involved are
tracked (the BMWG AI-fabric draft's stability test). A leak shows as a slope.

After every repetition: its step time, every rank's resident memory, open descriptors and threads
(each rank reports its own: metrolab.harness.runner.rank_agent `stats`), the runner's, and the lab's
objects (qdiscs, routes and rules over its namespaces) where the lab is this kernel's. At the
end each series gets a least-squares slope per hour with its 95 % interval and a verdict against
a tolerance over the run (from the series' median): `grows` (the whole interval above zero, the
change over the run past the tolerance, and each half of the run rising on its own), `stable` (even
the interval's top stays within it), else `inconclusive`. A leak keeps growing; a pool a library
starts lazily (Ray's driver took two threads more in the middle of one CI soak) steps up once and
stays: over the whole run both fit a rising line, but only the leak rises in both halves. Step
time drifts with the machine as well as with a leak: its `grows` says the job slowed, not why.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from metrolab.harness.runner.record import Record
from metrolab.netem import tree

MIN_SAMPLES = 3


@dataclass(frozen=True)
class Trend:
    series: str
    samples: int
    first: float
    last: float
    slope_per_h: float
    low_per_h: float
    high_per_h: float
    change: float          # slope x the run's duration
    tolerance: float       # the change over the run a verdict of `grows` must pass
    verdict: str           # grows | stable | inconclusive

    def as_dict(self) -> dict:
        return asdict(self)


def parse_duration(text: str) -> float:
    """Seconds from '45', '30s', '10m', '2h' (a soak's length, not a network delay)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration (45, 30s, 10m, 2h)")
    return float(m.group(1)) * {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]


def tolerance(series: str, typical: float) -> float:
    """What the series may change over a run without being a leak, from its median: memory 5 % (at
    least 8 MiB: the allocator's arenas), step time 10 %, counts (descriptors, threads, lab
    objects) one."""
    if series.endswith("_rss_mb"):
        return max(0.05 * abs(typical), 8.0)
    if series == "step_time_s":
        return 0.1 * abs(typical)
    return 1.0


def trend(series: str, t_s: list[float], values: list[float | None]) -> Trend | None:
    """The series' slope with its 95 % interval (scipy's linregress: t on n-2 degrees of freedom)."""
    from scipy import stats  # deferred: scipy.stats, 20 s under TCG
    pts = [(t, v) for t, v in zip(t_s, values) if v is not None and math.isfinite(v)]
    if len(pts) < MIN_SAMPLES:
        return None
    ts, vs = [p[0] for p in pts], [p[1] for p in pts]
    span = max(ts) - min(ts)
    tol = tolerance(series, statistics.median(vs))
    if span <= 0:
        return None
    if len(set(vs)) == 1:  # constant: no slope, exactly
        return Trend(series, len(vs), vs[0], vs[-1], 0.0, 0.0, 0.0, 0.0, tol, "stable")
    fit = stats.linregress(ts, vs)
    lo, hi = _interval(fit, len(vs))
    if lo > 0 and fit.slope * span > tol:
        # a leak goes on growing: a single step (a lazily started pool) leaves one half flat
        verdict = "grows" if all(_rises(ts, vs, part) for part in (0, 1)) else "inconclusive"
    elif hi * span <= tol:
        verdict = "stable"  # even the interval's top stays within the tolerance (falling is no leak)
    else:
        verdict = "inconclusive"
    return Trend(series, len(vs), vs[0], vs[-1], fit.slope * 3600, lo * 3600, hi * 3600, fit.slope * span, tol,
                 verdict)


def _interval(fit, n: int) -> tuple[float, float]:
    """The slope's 95 % interval (t on n-2 degrees of freedom)."""
    from scipy import stats  # deferred: scipy.stats, 20 s under TCG
    half = stats.t.ppf(0.975, n - 2) * fit.stderr
    return fit.slope - half, fit.slope + half


def _rises(ts: list[float], vs: list[float], part: int) -> bool:
    """Whether the first (0) or the later (1) half of the run rises on its own: its slope's interval
    above zero."""
    from scipy import stats  # deferred: scipy.stats, 20 s under TCG
    mid = min(ts) + (max(ts) - min(ts)) / 2
    pts = [(t, v) for t, v in zip(ts, vs) if (t < mid) == (part == 0)]
    if len(pts) < MIN_SAMPLES or len({v for _, v in pts}) == 1:
        return False
    fit = stats.linregress([t for t, _ in pts], [v for _, v in pts])
    return _interval(fit, len(pts))[0] > 0


def trends(rows: list[dict]) -> list[Trend]:
    """Every numeric series of the soak's rows (all but the time and the repetition index)."""
    if not rows:
        return []
    t0 = rows[0]["t"]
    names = sorted({k for r in rows for k, v in r.items()
                    if k not in ("t", "repetition") and isinstance(v, (int, float)) and not isinstance(v, bool)})
    out = []
    for name in names:
        tr = trend(name, [r["t"] - t0 for r in rows], [r.get(name) for r in rows])
        if tr is not None:
            out.append(tr)
    return out


def own_stats() -> dict:
    """This process: resident memory (MiB), open descriptors, threads (Linux /proc)."""
    rss_kb, threads = 0, 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return {"rss_mb": rss_kb / 1024, "fds": len(os.listdir("/proc/self/fd")), "threads": threads}


def lab_objects(lab) -> dict:
    """qdiscs, routes and policy rules over the lab's namespaces (netlink dumps)."""
    q = r = ru = 0
    for node in lab.topology.nodes:
        ipr = lab.handle(node)
        q += tree.qdisc_count(ipr)
        r += len(ipr.get_routes(family=2)) + len(ipr.get_routes(family=10))
        ru += len(ipr.get_rules(family=2))
    return {"lab_qdiscs": q, "lab_routes": r, "lab_rules": ru}


def sample(group, lab, local: bool) -> dict:
    row: dict = {"t": time.time()}
    # a failed repetition stopped the ranks (the next one starts them again): nothing to ask then
    for i, s in enumerate(group.stats() if group.started else []):
        row |= {f"rank{i}_rss_mb": s["rss_mb"], f"rank{i}_fds": s["fds"], f"rank{i}_threads": s["threads"]}
    me = own_stats()
    row |= {"runner_rss_mb": me["rss_mb"], "runner_fds": me["fds"], "runner_threads": me["threads"]}
    if local:
        row |= lab_objects(lab)
    return row


def write_summary(run_dir: Path, point: str, duration_s: float, rows: list[dict]) -> dict:
    ts = trends(rows)
    out = {"point": point, "duration_s": duration_s, "samples": len(rows),
           "wall_s": rows[-1]["t"] - rows[0]["t"] if rows else 0.0,
           "status": "fail" if any(t.verdict == "grows" for t in ts)
           else "inconclusive" if any(t.verdict == "inconclusive" for t in ts) or len(rows) < MIN_SAMPLES
           else "pass",
           "trends": [t.as_dict() for t in ts]}
    Record(run_dir).write_json("soak.json", out, indent=1)
    return out
