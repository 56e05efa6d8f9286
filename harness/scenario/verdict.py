"""From measurement rows to a verdict (pure; unit-tested without a lab).

Rows are randomized blocks (harness.runner.sweep): each carries its `block` and its `order` (the
index of the measurement in the run). Per (workload, point): the step time (median, IQR), the
efficiency and degradation paired with the baseline of the same block and the same swept workload
parameters, with intervals, quality figures (CV, trend, rank test), the model's prediction beside
it; per criterion and point a three-valued verdict with its reason (harness.scenario.stats).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field

from harness.scenario import stats as st
from harness.scenario.criteria import Criterion

POINT_COLS = ("distance_km", "loss", "rate_bps", "convergence", "jitter_s", "policy")
STEP_METRICS = ("step_time_s", "efficiency", "efficiency_degradation")


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


@dataclass(frozen=True)
class Settings:
    """How points are judged (a scenario's `statistics:` block)."""

    confidence: float = st.CONFIDENCE
    max_cv: float = st.MAX_CV
    trend_alpha: float = st.TREND_ALPHA
    max_utilization: float = 0.8
    max_cpu_load: float = 0.8

    @classmethod
    def of(cls, spec) -> Settings:
        s, h = getattr(spec, "statistics", None), getattr(spec, "headroom", None)
        return cls(s.confidence if s else st.CONFIDENCE, s.max_cv if s else st.MAX_CV,
                   s.trend_alpha if s else st.TREND_ALPHA, h.max_utilization if h else 0.8,
                   h.max_cpu_load if h else 0.8)

    @classmethod
    def from_dict(cls, spec: dict) -> Settings:
        s, h = spec.get("statistics") or {}, spec.get("headroom") or {}
        return cls(s.get("confidence", st.CONFIDENCE), s.get("max_cv", st.MAX_CV),
                   s.get("trend_alpha", st.TREND_ALPHA), h.get("max_utilization", 0.8), h.get("max_cpu_load", 0.8))


@dataclass
class PointSummary:
    workload: str
    point_key: str
    label: str
    fields: dict
    baseline: bool
    status: str                     # ok | failed
    error: str | None = None
    workload_index: int = 0
    repetitions: int = 0            # blocks measured
    step_time_s: float | None = None
    step_time_iqr_s: float | None = None
    efficiency: float | None = None
    efficiency_degradation: float | None = None
    ci_low: float | None = None     # interval of efficiency_degradation
    ci_high: float | None = None
    efficiency_ci_low: float | None = None
    efficiency_ci_high: float | None = None
    ci_method: str | None = None
    cv: float | None = None         # of the step time across blocks
    paired_cv: float | None = None  # of the step time relative to its block's baseline
    trend_tau: float | None = None  # Kendall's tau of the paired ratio (raw step time for a baseline) vs order
    trend_p: float | None = None
    rank_p: float | None = None     # Wilcoxon signed-rank, point vs its baselines
    predicted_step_s: float | None = None
    predicted_degradation: float | None = None
    prediction_error: float | None = None   # measured - predicted degradation
    host_bound: bool = False        # the emulated line rate was too close to what the host can carry
    capacity_ratio: float | None = None
    # the ranks' CPU time over the machine's cores (median over blocks), the higher of the point's
    # and its baseline's: a CPU-bound baseline hides what the network adds as much as the point's
    cpu_load: float | None = None
    verdict: str | None = None      # the worst over the criteria that apply: fail > inconclusive > pass
    reason: str | None = None
    quality: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    intervals: dict = field(default_factory=dict)   # metric -> [low, high, method]
    block_values: dict = field(default_factory=dict)  # metric -> values per block (for exact criteria)

    def values(self) -> dict:
        return {"step_time_s": self.step_time_s, "step_time_iqr_s": self.step_time_iqr_s,
                "efficiency": self.efficiency, "efficiency_degradation": self.efficiency_degradation,
                **self.metrics}

    def params_key(self) -> str:
        return json.dumps({k: v for k, v in self.fields.items() if k not in POINT_COLS}, sort_keys=True)

    def where_fields(self) -> dict:
        return {**self.fields, "workload": self.workload}

    @property
    def is_null(self) -> bool:
        """A non-baseline point whose network is the ideal one (0 km, lossless, no cap): its
        degradation measures the noise floor."""
        f = self.fields
        return (not self.baseline and not f.get("distance_km") and not f.get("loss") and not f.get("rate_bps")
                and (f.get("convergence") or 1) == 1 and not f.get("jitter_s") and (f.get("policy") or "none") == "none")


@dataclass
class CriterionResult:
    criterion: str
    workload: str
    point_key: str
    label: str
    metric: str
    value: float | None
    verdict: str                     # pass | fail | inconclusive
    message: str
    low: float | None = None
    high: float | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == st.PASS


@dataclass
class Verdict:
    points: list[PointSummary]
    results: list[CriterionResult]
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """fail if a criterion fails or a point could not be measured; else inconclusive if any
        criterion is; else pass."""
        if any(r.verdict == st.FAIL for r in self.results) or self.failed_points:
            return st.FAIL
        if any(r.verdict == st.INCONCLUSIVE for r in self.results):
            return st.INCONCLUSIVE
        return st.PASS

    @property
    def passed(self) -> bool:
        return self.status == st.PASS

    @property
    def failed_points(self) -> list[PointSummary]:
        return [p for p in self.points if p.status != "ok"]

    @property
    def inconclusive(self) -> list[CriterionResult]:
        return [r for r in self.results if r.verdict == st.INCONCLUSIVE]


def _swept_params(row: dict) -> dict:
    raw = row.get("params")
    if not raw or not isinstance(raw, str):
        return {}
    return json.loads(raw)


def block_of(row: dict) -> int:
    b = row.get("block")
    return int(b if b is not None and not (isinstance(b, float) and math.isnan(b)) else row.get("repetition", 0))


def summarize(rows: list[dict], metric_names: tuple[str, ...] = (), settings: Settings | None = None
              ) -> list[PointSummary]:
    """One summary per (workload, point), in first-measured order."""
    settings = settings or Settings()
    order: list[tuple[str, str]] = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        k = (r["workload"], r["point_key"])
        if k not in groups:
            order.append(k)
            groups[k] = []
        groups[k].append(r)
    out = []
    workloads = list(dict.fromkeys(w for w, _ in order))
    for k in order:
        rs = groups[k]
        first = rs[0]
        ok = sorted((r for r in rs if r.get("status") == "ok"), key=lambda r: (r.get("order") or 0, block_of(r)))
        failed = [r for r in rs if r.get("status") != "ok"]
        s = PointSummary(first["workload"], first["point_key"], first.get("label", ""),
                         {c: first.get(c) for c in POINT_COLS} | _swept_params(first), bool(first.get("baseline")),
                         "failed" if failed else "ok", failed[0].get("error") if failed else None,
                         workloads.index(k[0]), len(ok))
        if ok:
            steps = [r["step_time_s"] for r in ok]
            s.step_time_s = statistics.median(steps)
            s.step_time_iqr_s = iqr(steps)
            s.cv = st.cv(steps)
            s.block_values["step_time_s"] = steps
            iv = st.positive_interval(steps, settings.confidence)
            s.intervals["step_time_s"] = [iv.low, iv.high, iv.method]
            for m in metric_names:
                vals = [r[m] for r in ok if r.get(m) is not None and not _nan(r.get(m))]
                if vals:
                    s.metrics[m] = statistics.median(vals)
                    s.block_values[m] = vals
                    # a quantity positive in every block (a bandwidth, a time) keeps a positive interval
                    miv = st.positive_interval(vals, settings.confidence) if all(v > 0 for v in vals) \
                        else st.mean_interval(vals, settings.confidence)
                    s.intervals[m] = [miv.low, miv.high, miv.method]
            s.host_bound = any(bool(r.get("host_bound")) for r in ok)
            ratios = [r["capacity_ratio"] for r in ok if r.get("capacity_ratio") is not None]
            s.capacity_ratio = max(ratios) if ratios else None
            loads = [r["cpu_load"] for r in ok if r.get("cpu_load") is not None and not _nan(r.get("cpu_load"))]
            s.cpu_load = statistics.median(loads) if loads else None
            preds = [r["predicted_step_s"] for r in ok if r.get("predicted_step_s")]
            s.predicted_step_s = statistics.median(preds) if preds else None
        s._rows = ok  # type: ignore[attr-defined]  # for pairing below
        out.append(s)
    # each point against the baseline of its own workload and swept parameters, block by block
    bases = {(s.workload, s.params_key()): s for s in out if s.baseline and s.step_time_s}
    for s in out:
        b = bases.get((s.workload, s.params_key()))
        rows_s = getattr(s, "_rows", [])
        if b is not None and b.cpu_load is not None:
            s.cpu_load = max(s.cpu_load or 0.0, b.cpu_load)
        if s.baseline and rows_s:
            tr = st.trend([r["step_time_s"] for r in rows_s])  # the machine's own drift
            s.trend_tau, s.trend_p = tr.tau, tr.p
        if b is None or not s.step_time_s:
            continue
        point = {block_of(r): r["step_time_s"] for r in rows_s}
        base = {block_of(r): r["step_time_s"] for r in getattr(b, "_rows", [])}
        d = st.degradation(point, base, settings.confidence)
        if d.n == 0:
            continue
        s.efficiency, s.efficiency_degradation = d.efficiency.estimate, d.degradation.estimate
        s.ci_low, s.ci_high, s.ci_method = d.degradation.low, d.degradation.high, d.degradation.method
        s.efficiency_ci_low, s.efficiency_ci_high = d.efficiency.low, d.efficiency.high
        s.intervals["efficiency"] = [d.efficiency.low, d.efficiency.high, d.efficiency.method]
        s.intervals["efficiency_degradation"] = [d.degradation.low, d.degradation.high, d.degradation.method]
        s.paired_cv = st.paired_cv(list(d.log_ratios.values()))
        if not s.baseline:
            by_order = [d.log_ratios[block_of(r)] for r in rows_s if block_of(r) in d.log_ratios]
            tr = st.trend(by_order)
            s.trend_tau, s.trend_p = tr.tau, tr.p
            s.rank_p = st.rank_test(point, base)
        if s.predicted_step_s and b.predicted_step_s:
            s.predicted_degradation = 1 - b.predicted_step_s / s.predicted_step_s
            s.prediction_error = s.efficiency_degradation - s.predicted_degradation
        q = _quality(s, settings)
        s.quality = list(q.reasons)
    for s in out:
        s.__dict__.pop("_rows", None)
    return sorted(out, key=_display_order)


def _display_order(s: PointSummary) -> tuple:
    """Workloads in the order measured, each's baseline first, then its points by the sweep's fields."""
    f = s.fields
    return (s.workload_index, s.params_key(), not s.baseline, f.get("distance_km") or 0, f.get("loss") or 0,
            f.get("rate_bps") or 0, f.get("convergence") or 1, f.get("jitter_s") or 0, str(f.get("policy")))


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _quality(s: PointSummary, settings: Settings) -> st.Quality:
    tr = st.Trend(s.trend_tau, s.trend_p, s.repetitions) if s.trend_p is not None else None
    return st.Quality.of(s.paired_cv if not s.baseline else s.cv, tr if not s.baseline else None,
                         settings.max_cv, settings.trend_alpha)


def evaluate(points: list[PointSummary], criteria: list[Criterion], settings: Settings | None = None) -> Verdict:
    settings = settings or Settings()
    results = []
    rank = {st.PASS: 0, st.INCONCLUSIVE: 1, st.FAIL: 2}
    for c in criteria:
        for p in points:
            if not c.applies(p.where_fields()):
                continue
            v = p.values().get(c.metric)
            if v is None and p.baseline and p.status == "ok":
                continue  # what the sweep adds (an event's recovery) is not the reference's to measure
            if p.status != "ok" and not p.repetitions:
                res = CriterionResult(c.text, p.workload, p.point_key, p.label, c.metric, None, st.FAIL,
                                      f"the point failed: {p.error}")
            else:
                res = _judge(c, p, v, settings)
            results.append(res)
            if p.verdict is None or rank[res.verdict] > rank[p.verdict]:
                p.verdict, p.reason = res.verdict, res.message
    return Verdict(points, results, warnings(points))


def _judge(c: Criterion, p: PointSummary, value, settings: Settings) -> CriterionResult:
    def result(verdict: str, msg: str, lo=None, hi=None) -> CriterionResult:
        return CriterionResult(c.text, p.workload, p.point_key, p.label, c.metric, value, verdict, msg, lo, hi)

    if value is None:
        return result(st.INCONCLUSIVE, f"{c.metric} was not measured")
    if c.op in ("==", "!="):  # exact: counts that must be zero, flags
        verdict, msg = st.all_values_judge(p.block_values.get(c.metric, [value]), c.op, c.threshold)
        return result(verdict, msg)
    ivl = p.intervals.get(c.metric)
    if c.metric == "step_time_iqr_s" or ivl is None:
        verdict, msg = st.all_values_judge([value], c.op, c.threshold)
        return result(verdict, msg + " (no interval)")
    iv = st.Interval(value, ivl[0], ivl[1], p.repetitions, ivl[2])
    if c.metric in STEP_METRICS:  # what the step time measured may not be the network at all
        if p.host_bound:
            return result(st.INCONCLUSIVE, f"host-bound: the emulated line rate is {p.capacity_ratio:.2f} of what "
                          "this host carries unshaped (headroom), so the host may set the step time; "
                          "use headroom.auto_scale or a lower rate", ivl[0], ivl[1])
        util = p.metrics.get("utilization")
        if util is not None and util > settings.max_utilization:
            return result(st.INCONCLUSIVE, f"overloaded: offered load is {util:.2f} of the service rate "
                          f"(> {settings.max_utilization:g}): the requests measure their own queue", ivl[0], ivl[1])
        if p.cpu_load is not None and p.cpu_load > settings.max_cpu_load:
            return result(st.INCONCLUSIVE, f"CPU-bound: the ranks used {p.cpu_load:.0%} of the machine's CPU at this "
                          f"point or its baseline (> {settings.max_cpu_load:.0%}), so the CPU, not the network, may "
                          "set the step time", ivl[0], ivl[1])
    # a baseline's efficiency is 1 by construction: only its raw step time has a quality to judge
    quality = _quality(p, settings) if c.metric in STEP_METRICS and (not p.baseline or c.metric == "step_time_s") \
        else None
    verdict, msg = st.judge(iv, c.op, c.threshold, quality)
    return result(verdict, f"{c.metric} = {value:.4g}: {msg}", ivl[0], ivl[1])


def warnings(points: list[PointSummary]) -> list[str]:
    """Results that contradict physics or the noise floor: a point measured faster than the ideal
    network beyond its interval, a longer link measured faster than a shorter one beyond both
    intervals (same workload, parameters and every other field). A point under a policy may beat the
    baseline (the network without one: planned paths against its hash, a deep buffer against its
    queue): that is the policy's effect, not a contradiction."""
    out = []
    for p in points:
        if p.fields.get("policy") not in (None, "none"):
            continue
        if not p.baseline and p.ci_high is not None and p.ci_high < 0 and not p.is_null:
            out.append(f"{p.workload} {p.label}: faster than the ideal network beyond its interval "
                       f"(degradation [{p.ci_low:.2%}, {p.ci_high:.2%}]): drift or a bug, not physics")
    series: dict[tuple, list[PointSummary]] = {}
    for p in points:
        if p.baseline or p.ci_low is None or p.fields.get("loss"):
            continue
        key = (p.workload, p.params_key(), p.fields.get("rate_bps"), p.fields.get("convergence"),
               p.fields.get("jitter_s"), p.fields.get("policy"))
        series.setdefault(key, []).append(p)
    for pts in series.values():
        pts = sorted(pts, key=lambda p: p.fields.get("distance_km") or 0)
        for i, a in enumerate(pts):
            for b in pts[i + 1:]:
                if b.ci_high is None or a.ci_low is None:
                    continue
                if (b.fields.get("distance_km") or 0) > (a.fields.get("distance_km") or 0) and b.ci_high < a.ci_low:
                    out.append(f"{a.workload}: {b.label} degrades less than {a.label} beyond both intervals "
                               f"([{b.ci_low:.2%}, {b.ci_high:.2%}] vs [{a.ci_low:.2%}, {a.ci_high:.2%}])")
    return out
