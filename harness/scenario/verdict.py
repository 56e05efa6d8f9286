"""From measurement rows to a verdict: per point step time (median, IQR), efficiency against the
baseline, criteria evaluated per point (pure; unit-tested without a lab)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field

from harness.scenario.criteria import Criterion

POINT_COLS = ("distance_km", "loss", "rate_bps", "convergence", "jitter_s", "policy")


def efficiency(t_ideal: float, t_measured: float) -> float:
    """Computing efficiency: the ideal network's step time over the measured one."""
    if t_ideal <= 0 or t_measured <= 0:
        raise ValueError("step times must be > 0")
    return t_ideal / t_measured


def iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


@dataclass
class PointSummary:
    workload: str
    point_key: str
    label: str
    fields: dict
    baseline: bool
    status: str                     # ok | failed
    error: str | None = None
    repetitions: int = 0
    step_time_s: float | None = None
    step_time_iqr_s: float | None = None
    efficiency: float | None = None
    efficiency_degradation: float | None = None
    metrics: dict = field(default_factory=dict)

    def values(self) -> dict:
        return {"step_time_s": self.step_time_s, "step_time_iqr_s": self.step_time_iqr_s,
                "efficiency": self.efficiency, "efficiency_degradation": self.efficiency_degradation,
                **self.metrics}

    def params_key(self) -> str:
        return json.dumps({k: v for k, v in self.fields.items() if k not in POINT_COLS}, sort_keys=True)

    def where_fields(self) -> dict:
        return {**self.fields, "workload": self.workload}


@dataclass
class CriterionResult:
    criterion: str
    workload: str
    point_key: str
    label: str
    metric: str
    value: float | None
    passed: bool
    message: str


@dataclass
class Verdict:
    points: list[PointSummary]
    results: list[CriterionResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and all(p.status == "ok" for p in self.points)

    @property
    def failed_points(self) -> list[PointSummary]:
        return [p for p in self.points if p.status != "ok"]


def _swept_params(row: dict) -> dict:
    raw = row.get("params")
    if not raw or not isinstance(raw, str):
        return {}
    return json.loads(raw)


def summarize(rows: list[dict], metric_names: tuple[str, ...] = ()) -> list[PointSummary]:
    """One summary per (workload, point), in first-measured order; efficiency against the
    workload's baseline point."""
    order: list[tuple[str, str]] = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        k = (r["workload"], r["point_key"])
        if k not in groups:
            order.append(k)
            groups[k] = []
        groups[k].append(r)
    out = []
    for k in order:
        rs = groups[k]
        first = rs[0]
        ok = [r for r in rs if r.get("status") == "ok"]
        failed = [r for r in rs if r.get("status") != "ok"]
        swept = _swept_params(first)
        s = PointSummary(first["workload"], first["point_key"], first.get("label", ""),
                         {c: first.get(c) for c in POINT_COLS} | swept, bool(first.get("baseline")),
                         "failed" if failed else "ok", failed[0].get("error") if failed else None, len(ok))
        if ok:
            steps = [r["step_time_s"] for r in ok]
            s.step_time_s = statistics.median(steps)
            s.step_time_iqr_s = iqr(steps)
            for m in metric_names:
                vals = [r[m] for r in ok if r.get(m) is not None]
                if vals:
                    s.metrics[m] = statistics.median(vals)
        out.append(s)
    # each point against the baseline of its own workload and swept parameters
    base = {(s.workload, s.params_key()): s for s in out if s.baseline and s.step_time_s}
    for s in out:
        b = base.get((s.workload, s.params_key()))
        if b is not None and s.step_time_s:
            s.efficiency = efficiency(b.step_time_s, s.step_time_s)
            s.efficiency_degradation = 1 - s.efficiency
    return out


def evaluate(points: list[PointSummary], criteria: list[Criterion]) -> Verdict:
    results = []
    for c in criteria:
        for p in points:
            if not c.applies(p.where_fields()):
                continue
            v = p.values().get(c.metric)
            if p.status != "ok":
                results.append(CriterionResult(c.text, p.workload, p.point_key, p.label, c.metric, None, False,
                                               f"the point failed: {p.error}"))
                continue
            ok = c.check(v)
            msg = f"{c.metric} = {v:.6g} ({'meets' if ok else 'violates'} {c.op} {c.threshold:g})" if v is not None \
                else f"{c.metric} was not measured"
            results.append(CriterionResult(c.text, p.workload, p.point_key, p.label, c.metric, v, ok, msg))
    return Verdict(points, results)
