"""From measurement rows to a verdict (pure; unit-tested without a lab).

Rows are randomized blocks (metrolab.harness.runner.engine): each carries its `block` and its `order` (the
index of the measurement in the run). Per (workload, point): the step time (median, IQR), the
efficiency and degradation paired with the baseline of the same block and the same swept workload
parameters, with intervals, quality figures (CV, trend, rank test), the model's prediction beside
it; per criterion and point a three-valued verdict with its reason (metrolab.harness.scenario.stats).

What a verdict rests on:
- every repetition: a point whose repetitions failed fails its criteria with the error (unless the
  scenario allows that many failures, `statistics.allowed_failures`);
- clean blocks: a block measured while other processes took the machine (the runner's block
  records, blocks.jsonl) and replaced is left out whole, for every point of that workload;
- the design's intervals (metrolab.harness.scenario.sequential), one method at every look;
- counts for rates (drops among packets): Clopper-Pearson on the sums, never a mean of zeros;
- what else can bound a performance metric (the host's capacity, the ranks' CPU, the offered load):
  a point bounded by one is inconclusive on every metric but the integrity checks;
- the family: a criterion over several points fails a point only where Holm's step-down over the
  criterion's points still rejects it (a claim that "does not hold" keeps its error at alpha
  however many points it spans); "every point passes" needs no correction.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field

from metrolab.harness.scenario import kpis
from metrolab.harness.scenario import stats as st
from metrolab.harness.scenario.criteria import Criterion
from metrolab.harness.scenario.sequential import Design, blocks_needed
from metrolab.workloads.registry import COUNT_RATES, INTEGRITY_METRICS

POINT_COLS = ("distance_km", "loss", "rate_bps", "convergence", "jitter_s", "policy")
STEP_METRICS = ("step_time_s", "efficiency", "efficiency_degradation")
MAX_INTERFERENCE = 0.1   # of the machine's CPU: a block beside more is left out (statistics.max_interference)
MAX_EXP = 700.0          # |log ratio| past which exp overflows a float: that bound is unbounded


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
    """How points are judged (a scenario's `statistics:` and `headroom:` blocks, and the run's design
    as recorded in meta.json)."""

    confidence: float = st.CONFIDENCE
    max_cv: float = st.MAX_CV
    trend_alpha: float = st.TREND_ALPHA
    max_utilization: float = 0.8
    max_cpu_load: float = 0.8
    design: Design | None = None
    allowed_failures: int = 0
    family: str = "holm"              # holm | per-point
    max_interference: float = MAX_INTERFERENCE

    @property
    def alpha(self) -> float:
        return 1 - self.confidence

    @property
    def the_design(self) -> Design:
        return self.design or Design("fixed", self.confidence)

    @classmethod
    def of(cls, spec, design: Design | None = None) -> Settings:
        s, h = getattr(spec, "statistics", None), getattr(spec, "headroom", None)
        return cls(s.confidence if s else st.CONFIDENCE, s.max_cv if s else st.MAX_CV,
                   s.trend_alpha if s else st.TREND_ALPHA, h.max_utilization if h else 0.8,
                   h.max_cpu_load if h else 0.8, design, s.allowed_failures if s else 0,
                   s.family if s else "holm", s.max_interference if s else MAX_INTERFERENCE)

    @classmethod
    def from_dict(cls, spec: dict, meta: dict | None = None) -> Settings:
        s, h = spec.get("statistics") or {}, spec.get("headroom") or {}
        conf = s.get("confidence", st.CONFIDENCE)
        d = (meta or {}).get("design")
        return cls(conf, s.get("max_cv", st.MAX_CV), s.get("trend_alpha", st.TREND_ALPHA),
                   h.get("max_utilization", 0.8), h.get("max_cpu_load", 0.8),
                   Design.from_dict(d, conf) if isinstance(d, dict) else None, s.get("allowed_failures", 0),
                   s.get("family", "holm"), s.get("max_interference", MAX_INTERFERENCE))


@dataclass(frozen=True)
class Sample:
    """What a metric's interval is taken from, at any level: block values on the scale where their
    mean is estimated (`log` for a positive quantity, `linear` otherwise, `ratio` for paired log
    ratios, read as degradation or efficiency), or counts (`counts`: events among trials)."""

    kind: str
    values: tuple[float, ...] = ()
    events: int = 0
    trials: int = 0

    @property
    def n(self) -> int:
        return len(self.values) if self.kind != "counts" else self.trials

    def interval(self, design: Design, alpha: float, blocks: int = 0, as_metric: str = "",
                 widen: float = 1.0) -> st.Interval:
        """At level 1 - alpha under the design; `widen` widens it on the scale it is taken on."""
        if self.kind == "counts":
            return st.rate_interval(self.events, self.trials, design.count_alpha(blocks, alpha))
        conf = 1 - alpha
        d = Design(design.kind, conf, design.n_min, design.n_max)
        if self.kind == "log":
            return st.positive_interval(self.values, conf, d, widen)
        iv = st.mean_interval(self.values, conf, d, widen)
        if self.kind != "ratio" or iv.n == 0:
            return iv

        # a bound past exp's range (an interval of two blocks at 99.9 %: t = 637) is unbounded there
        def deg(x: float) -> float:
            if not math.isfinite(x) or x < -MAX_EXP:
                return 1.0 if x > 0 else -math.inf
            return 1 - math.exp(-x)

        def eff(x: float) -> float:
            if not math.isfinite(x) or x < -MAX_EXP:
                return 0.0 if x > 0 else math.inf
            return math.exp(-x)
        if as_metric == "efficiency":
            return st.Interval(eff(iv.estimate), eff(iv.high), eff(iv.low), iv.n, iv.method)
        return st.Interval(deg(iv.estimate), deg(iv.low), deg(iv.high), iv.n, iv.method)

    def margin(self, value: float, threshold: float, metric: str) -> float | None:
        """The distance of the estimate from the threshold on the scale the interval is taken on."""
        try:
            if self.kind == "ratio":
                x = -math.log(1 - threshold) if metric == "efficiency_degradation" else -math.log(threshold)
                return abs(statistics.fmean(self.values) - x)
            if self.kind == "log":
                return abs(statistics.fmean(math.log(v) for v in self.values) - math.log(threshold))
            return abs(value - threshold)
        except (ValueError, ZeroDivisionError):
            return None

    def spread(self) -> float | None:
        if self.kind == "counts" or len(self.values) < 2:
            return None
        vals = [math.log(v) for v in self.values] if self.kind == "log" else list(self.values)
        return statistics.stdev(vals)


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
    repetitions: int = 0            # blocks measured and kept
    failed_repetitions: int = 0     # repetitions that failed (rank crash, hang, error)
    excluded_blocks: list[int] = field(default_factory=list)   # left out: measured under interference
    step_time_s: float | None = None
    step_time_iqr_s: float | None = None
    efficiency: float | None = None
    efficiency_degradation: float | None = None
    ci_low: float | None = None     # interval of efficiency_degradation
    ci_high: float | None = None
    efficiency_ci_low: float | None = None
    efficiency_ci_high: float | None = None
    jct_ratio: float | None = None  # the BMWG drafts' JCT ratio: the point's step over the ideal network's (1 / efficiency)
    jct_ratio_ci_low: float | None = None
    jct_ratio_ci_high: float | None = None
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
    intervals: dict = field(default_factory=dict)   # metric -> [low, high, method] at the design's level
    block_values: dict = field(default_factory=dict)  # metric -> values per block (for exact criteria)
    samples: dict = field(default_factory=dict, repr=False)  # metric -> Sample (intervals at any level)
    paired: dict = field(default_factory=dict, repr=False)   # block -> ln(point / its block's baseline)

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
    interval: bool = False            # judged on an interval (Holm's family applies)
    blocks_needed: int | None = None  # inconclusive: blocks the observed spread would need to decide

    @property
    def passed(self) -> bool:
        return self.verdict == st.PASS


@dataclass
class Verdict:
    points: list[PointSummary]
    results: list[CriterionResult]
    warnings: list[str] = field(default_factory=list)
    outliers: list[str] = field(default_factory=list)   # blocks that stand out (reported, kept)
    family: str = "holm"                                 # how a criterion's points share its error

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


def interfered_blocks(blocks: list[dict]) -> dict[str, set[int]]:
    """workload -> blocks measured under interference and replaced (the runner's records,
    blocks.jsonl); one kept once the replacements were spent is judged, and the report says so."""
    out: dict[str, set[int]] = {}
    for b in blocks:
        if b.get("replaced"):
            out.setdefault(b["workload"], set()).add(int(b["block"]))
    return out


def _sample(metric: str, ok: list[dict]) -> Sample | None:
    """A metric's sample over the kept rows: counts for a rate from counts, else its block values."""
    if metric in COUNT_RATES:
        ev, got = COUNT_RATES[metric]
        counted = [r for r in ok if r.get(ev) is not None and r.get(got) is not None
                   and not _nan(r.get(ev)) and not _nan(r.get(got))]
        if not counted:
            return None  # a rate without its counts (a run recorded before counts were): not judged as one
        events = sum(int(r[ev]) for r in counted)
        return Sample("counts", events=events, trials=events + sum(int(r[got]) for r in counted))
    vals = tuple(float(r[metric]) for r in ok if r.get(metric) is not None and not _nan(r.get(metric)))
    if not vals:
        return None
    return Sample("log" if all(v > 0 for v in vals) else "linear", vals)


def summarize(rows: list[dict], metric_names: tuple[str, ...] = (), settings: Settings | None = None,
              blocks: list[dict] | None = None) -> list[PointSummary]:
    """One summary per (workload, point), in first-measured order; `blocks`: the run's block records
    (blocks measured under interference are left out whole)."""
    settings = settings or Settings()
    design = settings.the_design
    dropped = interfered_blocks(blocks or [])
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
        gone = dropped.get(k[0], set())
        kept = [r for r in rs if r.get("status") == "ok"]
        ok = sorted((r for r in kept if block_of(r) not in gone), key=lambda r: (r.get("order") or 0, block_of(r)))
        failed = [r for r in rs if r.get("status") != "ok"]
        too_many = len(failed) > settings.allowed_failures
        s = PointSummary(first["workload"], first["point_key"], first.get("label", ""),
                         {c: first.get(c) for c in POINT_COLS} | _swept_params(first), bool(first.get("baseline")),
                         "failed" if too_many else "ok", failed[0].get("error") if failed else None,
                         workloads.index(k[0]), len(ok), len(failed),
                         sorted({block_of(r) for r in kept if block_of(r) in gone}))
        if ok:
            steps = [r["step_time_s"] for r in ok]
            s.step_time_s = statistics.median(steps)
            s.step_time_iqr_s = iqr(steps)
            s.cv = st.cv(steps)
            s.block_values["step_time_s"] = steps
            s.samples["step_time_s"] = Sample("log", tuple(steps))
            for m in metric_names:
                vals = [r[m] for r in ok if r.get(m) is not None and not _nan(r.get(m))]
                sample = _sample(m, ok)
                if sample is None:
                    continue
                s.samples[m] = sample
                if sample.kind == "counts":  # the rate over every packet of the kept blocks
                    s.metrics[m] = sample.events / sample.trials if sample.trials else None
                else:
                    s.metrics[m] = statistics.median(vals)
                s.block_values[m] = vals
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
        pairs = st.paired_log_ratios(point, base)
        if not pairs:
            continue
        s.samples["efficiency"] = s.samples["efficiency_degradation"] = Sample("ratio", tuple(pairs.values()))
        s.paired = pairs
        deg = s.samples["efficiency_degradation"].interval(design, settings.alpha, as_metric="efficiency_degradation")
        eff = s.samples["efficiency"].interval(design, settings.alpha, as_metric="efficiency")
        s.efficiency, s.efficiency_degradation = eff.estimate, deg.estimate
        s.ci_low, s.ci_high, s.ci_method = deg.low, deg.high, deg.method
        s.efficiency_ci_low, s.efficiency_ci_high = eff.low, eff.high
        s.jct_ratio, s.jct_ratio_ci_low, s.jct_ratio_ci_high = kpis.jct_ratio(eff.estimate, eff.low, eff.high)
        s.paired_cv = st.paired_cv(list(pairs.values()))
        if not s.baseline:
            by_order = [pairs[block_of(r)] for r in rows_s if block_of(r) in pairs]
            tr = st.trend(by_order)
            s.trend_tau, s.trend_p = tr.tau, tr.p
            s.rank_p = st.rank_test(point, base)
        if s.predicted_step_s and b.predicted_step_s:
            s.predicted_degradation = 1 - b.predicted_step_s / s.predicted_step_s
            s.prediction_error = s.efficiency_degradation - s.predicted_degradation
        q = _quality(s, settings)
        s.quality = list(q.reasons)
    for s in out:
        for m, sample in s.samples.items():  # every metric's interval at the design's level, for reports
            iv = sample.interval(design, settings.alpha, s.repetitions, as_metric=m)
            s.intervals[m] = [iv.low, iv.high, iv.method]
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


def _judged(c: Criterion, points: list[PointSummary], settings: Settings
            ) -> list[tuple[Criterion, PointSummary, CriterionResult]]:
    """Criterion `c` at every point it applies to, each on its own interval (no family yet)."""
    out = []
    for p in points:
        if not c.applies(p.where_fields()):
            continue
        v = p.values().get(c.metric)
        if v is None and p.baseline and p.status == "ok":
            continue  # what the sweep adds (an event's recovery) is not the reference's to measure
        if p.status != "ok":
            res = CriterionResult(c.text, p.workload, p.point_key, p.label, c.metric, v, st.FAIL,
                                  f"{p.failed_repetitions} of {p.failed_repetitions + p.repetitions} repetitions "
                                  f"failed: {p.error}")
        else:
            res = _judge(c, p, v, settings)
        out.append((c, p, res))
    return out


def evaluate(points: list[PointSummary], criteria: list[Criterion], settings: Settings | None = None) -> Verdict:
    settings = settings or Settings()
    results = []
    rank = {st.PASS: 0, st.INCONCLUSIVE: 1, st.FAIL: 2}
    for c in criteria:
        judged = _judged(c, points, settings)
        if settings.family == "holm":
            _holm(judged, settings)
        results += [r for _, _, r in judged]
    found = contradictions(points)
    _unjudged_where_contradicted(results, found)
    by_point: dict[tuple[str, str], list[CriterionResult]] = {}
    for r in results:
        by_point.setdefault((r.workload, r.point_key), []).append(r)
    for p in points:
        for r in by_point.get((p.workload, p.point_key), []):
            if p.verdict is None or rank[r.verdict] > rank[p.verdict]:
                p.verdict, p.reason = r.verdict, r.message
    return Verdict(points, results, [msg for msg, _ in found],
                   outlier_blocks(points, {(p.workload, p.point_key): p.paired for p in points}), settings.family)


def family_results(points: list[PointSummary], criteria: list[Criterion], settings: Settings,
                   where=lambda p: True) -> list[CriterionResult]:
    """Several criteria at the points `where` selects, as one family: a point fails only where
    Holm's step-down over all of them still rejects it (a claim over several criteria and points)."""
    chosen = [p for p in points if where(p)]
    judged = [t for c in criteria for t in _judged(c, chosen, settings)]
    _holm(judged, settings)
    results = [r for _, _, r in judged]
    _unjudged_where_contradicted(results, contradictions(chosen))
    return results


def _interval(c: Criterion, p: PointSummary, settings: Settings, alpha: float, widen: float = 1.0
              ) -> st.Interval | None:
    sample = p.samples.get(c.metric)
    if sample is None:
        return None
    return sample.interval(settings.the_design, alpha, p.repetitions, as_metric=c.metric, widen=widen)


def _holm(family: list[tuple[Criterion, PointSummary, CriterionResult]], settings: Settings) -> None:
    """Holm's step-down over a family of (criterion, point) results, on the side of failing: a
    point fails only where its interval at alpha / (members not yet rejected) violates the criterion
    (with the same widening for noisy data); one whose 95 % interval alone violates it is
    inconclusive. Passing needs no correction: "every member passes" keeps its level as it is."""
    tested = [(c, p, r) for c, p, r in family if r.interval]
    m = len(tested)
    if m <= 1:
        return
    rejected: set[int] = set()
    while len(rejected) < m:
        level = settings.alpha / (m - len(rejected))
        new = set()
        for i, (c, p, r) in enumerate(tested):
            if i in rejected or r.verdict != st.FAIL:
                continue
            iv = _interval(c, p, settings, level)
            if iv is not None and _side(c, p, iv, settings, _interval(c, p, settings, level, st.QUALITY_WIDEN)) == st.FAIL:
                new.add(i)
        if not new:
            break
        rejected |= new
    for i, (_, _, r) in enumerate(tested):
        if r.verdict == st.FAIL and i not in rejected:
            r.verdict = st.INCONCLUSIVE
            r.message += (f"; not after Holm's correction over the family's {m} members (a failure is judged at "
                          f"alpha/{m - len(rejected)})")


def _side(c: Criterion, p: PointSummary, iv: st.Interval, settings: Settings, wide: st.Interval | None) -> str:
    """The verdict an interval gives, taken wider (`wide`) where the data are noisy or trending."""
    v = st._side(iv, c.op, c.threshold)
    q = _metric_quality(c, p, settings)
    if v != st.INCONCLUSIVE and q is not None and not q.ok and wide is not None and \
            st._side(wide, c.op, c.threshold) != v:
        return st.INCONCLUSIVE
    return v


def _gate(c: Criterion, p: PointSummary, settings: Settings) -> str | None:
    """Why something other than the network may have set this performance metric at the point
    (None: nothing did, or the metric is an integrity check)."""
    if c.metric in INTEGRITY_METRICS:
        return None
    what = "the step time" if c.metric in STEP_METRICS else c.metric
    if p.host_bound:
        return (f"host-bound: the emulated line rate is {p.capacity_ratio:.2f} of what this host carries unshaped "
                f"(headroom), so the host may set {what}; use headroom.auto_scale or a lower rate")
    util = p.metrics.get("utilization")
    if util is not None and util > settings.max_utilization and c.metric != "utilization":
        return (f"overloaded: offered load is {util:.2f} of the service rate (> {settings.max_utilization:g}): "
                f"the requests measure their own queue")
    if p.cpu_load is not None and p.cpu_load > settings.max_cpu_load:
        return (f"CPU-bound: the ranks used {p.cpu_load:.0%} of the machine's CPU at this point or its baseline "
                f"(> {settings.max_cpu_load:.0%}), so the CPU, not the network, may set {what}")
    return None


def _metric_quality(c: Criterion, p: PointSummary, settings: Settings) -> st.Quality | None:
    """Noise and trend of what the criterion reads: the paired ratio for step metrics (the raw step
    time at a baseline), the metric's own CV across blocks otherwise; none for counts."""
    if c.metric in STEP_METRICS:
        if p.baseline and c.metric != "step_time_s":
            return None  # a baseline's efficiency is 1 by construction
        return _quality(p, settings)
    sample = p.samples.get(c.metric)
    if sample is None or sample.kind == "counts" or c.metric in INTEGRITY_METRICS:
        return None
    return st.Quality.of(st.cv(sample.values), None, settings.max_cv, settings.trend_alpha)


def _judge(c: Criterion, p: PointSummary, value, settings: Settings) -> CriterionResult:
    def result(verdict: str, msg: str, lo=None, hi=None, interval: bool = False) -> CriterionResult:
        return CriterionResult(c.text, p.workload, p.point_key, p.label, c.metric, value, verdict, msg, lo, hi,
                               interval)

    sample = p.samples.get(c.metric)
    if c.metric in COUNT_RATES and sample is None and value is None:
        return result(st.INCONCLUSIVE, f"{c.metric} was not measured (no packet counted)")
    if value is None:
        return result(st.INCONCLUSIVE, f"{c.metric} was not measured")
    if c.op in ("==", "!="):  # exact: counts that must be zero, flags
        verdict, msg = st.all_values_judge(p.block_values.get(c.metric, [value]), c.op, c.threshold)
        return result(verdict, msg)
    if c.metric == "step_time_iqr_s" or sample is None:
        verdict, msg = st.all_values_judge([value], c.op, c.threshold)
        return result(verdict, msg + " (no interval)")
    iv = _interval(c, p, settings, settings.alpha)
    assert iv is not None
    gate = _gate(c, p, settings)
    if gate is not None:
        return result(st.INCONCLUSIVE, gate, iv.low, iv.high)
    if sample.kind == "counts":
        return result(*_judge_counts(c, sample, iv, p, settings), iv.low, iv.high, interval=True)
    quality = _metric_quality(c, p, settings)
    verdict, msg = st.judge(iv, c.op, c.threshold, quality, _interval(c, p, settings, settings.alpha, st.QUALITY_WIDEN),
                            metric=c.metric)
    res = result(verdict, f"{c.metric} = {st.value_format(c.metric)(value)}: {msg}", iv.low, iv.high, interval=True)
    if verdict == st.INCONCLUSIVE and sample.spread() is not None:
        margin = sample.margin(value, c.threshold, c.metric)
        res.blocks_needed = blocks_needed(sample.spread() or 0.0, margin, settings.the_design) if margin else None
    return res


def _judge_counts(c: Criterion, sample: Sample, iv: st.Interval, p: PointSummary,
                  settings: Settings) -> tuple[str, str]:
    """A rate from counts on its exact interval; the reason says how many packets a pass needs."""
    rate = f"{sample.events} of {sample.trials} packets ({sample.events / sample.trials:.3g})"
    side = st._side(iv, c.op, c.threshold)
    bound = f"Clopper-Pearson [{iv.low:.3g}, {iv.high:.3g}]"
    if side == st.INCONCLUSIVE and c.op in ("<", "<=") and 0 < c.threshold < 1:
        need = st.trials_for_rate_below(c.threshold, settings.the_design.count_alpha(p.repetitions,
                                                                                      settings.alpha))
        more = f"; a pass needs >= {need:,} packets without a drop" if sample.events == 0 else             f"; with {sample.events} drop(s) a pass needs far more packets than {sample.trials:,}"
        return side, f"{c.metric}: {rate}: {bound} straddles {c.op} {c.threshold:g}{more}"
    word = {st.PASS: "meets", st.FAIL: "violates"}.get(side, "straddles")
    return side, f"{c.metric}: {rate}: {bound} {word} {c.op} {c.threshold:g}"


OUTLIER_Z = 3.5       # robust z (median and MAD) past which a block's paired ratio is reported
OUTLIER_MIN_N = 5     # blocks a point needs before one of them can stand out


def outlier_blocks(points: list[PointSummary], rows_by_point: dict[tuple[str, str], dict[int, float]]) -> list[str]:
    """Blocks whose paired ratio stands out from the point's others (|robust z| > OUTLIER_Z):
    reported, not dropped (a block the machine disturbed shows as one, at several points at once)."""
    out = []
    for p in points:
        ratios = rows_by_point.get((p.workload, p.point_key)) or {}
        if p.baseline or len(ratios) < OUTLIER_MIN_N:
            continue
        vals = sorted(ratios.values())
        med = statistics.median(vals)
        mad = statistics.median(abs(v - med) for v in vals) * 1.4826
        if mad <= 0:
            continue
        for b, v in sorted(ratios.items()):
            z = (v - med) / mad
            if abs(z) > OUTLIER_Z:
                out.append(f"{p.workload} {p.label}: block {b + 1} is an outlier: ratio {math.exp(v) - 1:+.1%} "
                           f"against the point's median {math.exp(med) - 1:+.1%} (robust z {z:+.1f})")
    return out


def contradictions(points: list[PointSummary]) -> list[tuple[str, list[PointSummary]]]:
    """Results that contradict physics, each with the points it puts in doubt: a point measured
    faster than the ideal network beyond its interval, a longer link measured faster than a shorter
    one beyond both intervals (same workload, parameters and every other field). A point under a
    policy may beat the baseline (the network without one: planned paths against its hash, a deep
    buffer against its queue): that is the policy's effect, not a contradiction."""
    out = []
    for p in points:
        if p.fields.get("policy") not in (None, "none"):
            continue
        if not p.baseline and p.ci_high is not None and p.ci_high < 0 and not p.is_null:
            out.append((f"{p.workload} {p.label}: faster than the ideal network beyond its interval "
                        f"(degradation [{p.ci_low:.2%}, {p.ci_high:.2%}]): drift or a bug, not physics", [p]))
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
                    out.append((f"{a.workload}: {b.label} degrades less than {a.label} beyond both intervals "
                                f"([{b.ci_low:.2%}, {b.ci_high:.2%}] vs [{a.ci_low:.2%}, {a.ci_high:.2%}])", [a, b]))
    return out


def warnings(points: list[PointSummary]) -> list[str]:
    """The contradictions' messages: the verdict's warnings."""
    return [msg for msg, _ in contradictions(points)]


def _unjudged_where_contradicted(results: list[CriterionResult],
                                 found: list[tuple[str, list[PointSummary]]]) -> None:
    """A step-time verdict at a point whose measurement contradicts physics is not one the data
    support, whichever side it fell on: it becomes inconclusive, saying why."""
    doubt: dict[tuple[str, str], str] = {}
    for msg, pts in found:
        for p in pts:
            doubt.setdefault((p.workload, p.point_key), msg)
    for r in results:
        why = doubt.get((r.workload, r.point_key))
        if why is not None and r.metric in STEP_METRICS and r.verdict != st.INCONCLUSIVE:
            r.verdict = st.INCONCLUSIVE
            r.message += f"; not judged: the measurement contradicts physics ({why})"
