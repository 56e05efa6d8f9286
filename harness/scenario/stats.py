"""Statistics of a randomized-block run (pure; unit-tested on synthetic series, no lab).

A repetition is a block: the baseline and every sweep point measured once, in a freshly shuffled
order. A point is compared with the baseline *of its own block* (paired), so a machine that drifts
over minutes moves both alike and the drift cancels.

- Degradation is estimated from the paired log ratios r_b = ln(t_point_b / t_base_b): the
  geometric mean ratio R = exp(mean r) gives efficiency 1/R and degradation 1 - 1/R.
- Intervals: one method at every look, mean +- c s / sqrt(n) over blocks, where c is the design's
  (metrolab.harness.scenario.sequential): Student's t for a fixed number of blocks, the repeated confidence
  interval's boundary for a run that looks after every block. 95 % by default.
- Rates from counts (drops among packets) are judged on the summed counts with the exact
  Clopper-Pearson bound: no packet counted is "not measured", and zero drops among N packets bound
  the rate by 1 - (alpha/2)^(1/N), not by 0.
- Quality: the coefficient of variation of the step time (raw, across blocks) and of the paired
  ratio; Kendall's tau of the paired ratios against measurement order (a trend that pairing did
  not remove; only from TREND_MIN_N blocks, below which no ordering is significant at 5 %);
  Wilcoxon's signed-rank test of point against baseline.
- A verdict is pass when the whole interval meets the criterion, fail when the whole interval
  violates it, inconclusive when it straddles the threshold. Noisy (CV above the limit) or
  trending data is judged on an interval twice as wide, and a verdict that only the narrow
  interval supported is reported inconclusive with that reason.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np

from metrolab.harness.scenario.criteria import OPS
from metrolab.harness.scenario.sequential import Design

CONFIDENCE = 0.95
MAX_CV = 0.05               # a step time noisier than this is not judged at face value
TREND_ALPHA = 0.05          # Kendall's tau p-value under which a trend is declared
TREND_MIN_N = 5             # with 4 values the smallest two-sided p of Kendall's tau is 0.083
QUALITY_WIDEN = 2.0         # how much wider the interval of noisy or trending data is taken

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int
    method: str               # t | sequential | no-spread | clopper-pearson | range | none

    @property
    def halfwidth(self) -> float:
        return (self.high - self.low) / 2

    def widened(self, factor: float) -> Interval:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return self
        c, h = (self.low + self.high) / 2, self.halfwidth * factor
        return Interval(self.estimate, c - h, c + h, self.n, f"{self.method} x{factor:g}")


def _finite(values) -> np.ndarray:
    return np.asarray([float(v) for v in values if v is not None and not _isnan(v)], dtype=float)


def _isnan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def _t_halfwidth(x: np.ndarray, confidence: float, spread: float) -> float:
    """Student's t quantile on n - 1 degrees of freedom times `spread` (the standard error of the
    mean, or a single value's spread)."""
    from scipy import stats  # deferred: scipy.stats, 20 s under TCG
    return float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * spread


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    iv = mean_interval(values, confidence)
    return (iv.low, iv.high)


def prediction_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Where the next single value falls (not the mean): mean +- t * sd * sqrt(1 + 1/n), for a
    promise each repetition must keep. Fewer than two values: unbounded."""
    x = _finite(values)
    if len(x) < 2:
        return (-math.inf, math.inf)
    m = float(x.mean())
    h = _t_halfwidth(x, confidence, float(x.std(ddof=1)) * math.sqrt(1 + 1 / len(x)))
    return (m - h, m + h)


def mean_interval(values, confidence: float = CONFIDENCE, design: Design | None = None, widen: float = 1.0
                  ) -> Interval:
    """Interval of the mean of independent block values: mean +- c s / sqrt(n), c from the design
    (Student's t with one look; the look's repeated-CI boundary when the run looks after every
    block). Identical values have no spread to form an interval from (method `no-spread`: the
    value each block measured); non-finite ones (an imbalance with an empty path is infinite)
    give the range of the values."""
    raw = [float(v) for v in values if v is not None and not _isnan(v)]
    if not raw:
        return Interval(math.nan, math.nan, math.nan, 0, "none")
    if any(math.isinf(v) for v in raw):
        est = float(np.median(raw))
        return Interval(est, min(raw), max(raw), len(raw), "range")
    x = np.asarray(raw)
    m = float(x.mean())
    if len(x) == 1:
        return Interval(m, -math.inf, math.inf, 1, "none")
    if np.all(x == x[0]):
        return Interval(m, m, m, len(x), "no-spread")
    design = design or Design("fixed", confidence)
    c = design.critical(len(x))
    h = widen * c * float(x.std(ddof=1)) / math.sqrt(len(x))
    method = "sequential" if design.sequential else "t"
    return Interval(m, m - h, m + h, len(x), method if widen == 1 else f"{method} x{widen:g}")


def positive_interval(values, confidence: float = CONFIDENCE, design: Design | None = None, widen: float = 1.0
                      ) -> Interval:
    """Interval of a positive quantity (a step time): of the mean of its logarithms, mapped back, so
    it never reaches 0 or below however few and noisy the blocks (the geometric mean); `widen`
    widens it on that scale."""
    x = [float(v) for v in values if v is not None and not _isnan(v) and float(v) > 0]
    if any(math.isinf(v) for v in x):
        return mean_interval(x, confidence, design)  # the range
    iv = mean_interval([math.log(v) for v in x], confidence, design, widen)
    if iv.n == 0:
        return iv

    def back(v: float) -> float:
        # a wide interval on the log scale (few, noisy blocks under a sequential design's large
        # critical value) can end past the largest float: unbounded, not an error
        if math.isnan(v):
            return 0.0  # as before: no interval (one block)
        return math.exp(v) if v < math.log(sys.float_info.max) else math.inf
    return Interval(back(iv.estimate), back(iv.low), back(iv.high), iv.n, iv.method)


def rate_interval(events: int, trials: int, alpha: float = 1 - CONFIDENCE) -> Interval:
    """Clopper-Pearson (exact binomial) interval of a rate from counts: `events` among `trials`
    (drops among packets offered). Nothing counted: not measured."""
    if trials <= 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none")
    from scipy.stats import beta  # deferred: scipy.stats, 20 s under TCG
    lo = 0.0 if events == 0 else float(beta.ppf(alpha / 2, events, trials - events + 1))
    hi = 1.0 if events >= trials else float(beta.isf(alpha / 2, events + 1, trials - events))
    return Interval(events / trials, lo, hi, trials, "clopper-pearson")


def trials_for_rate_below(threshold: float, alpha: float = 1 - CONFIDENCE) -> int:
    """Trials without an event that bound a rate under `threshold` (Clopper-Pearson, two-sided
    alpha): 1 - (alpha/2)^(1/N) < threshold."""
    return math.floor(math.log(alpha / 2) / math.log1p(-threshold)) + 1


def paired_log_ratios(point: dict[int, float], base: dict[int, float]) -> dict[int, float]:
    """ln(t_point / t_base) per block measured at both (block -> step time)."""
    return {b: math.log(point[b] / base[b]) for b in sorted(point) if b in base and point[b] > 0 and base[b] > 0}


@dataclass(frozen=True)
class Degradation:
    """Efficiency and degradation of a point against its paired baselines, with intervals."""

    efficiency: Interval
    degradation: Interval
    log_ratios: dict[int, float]

    @property
    def n(self) -> int:
        return len(self.log_ratios)


def degradation(point: dict[int, float], base: dict[int, float], confidence: float = CONFIDENCE,
                design: Design | None = None) -> Degradation:
    """Paired estimate: degradation = 1 - 1/exp(mean ln ratio), its interval mapped through the same
    monotone function (so it is the interval of the geometric-mean ratio)."""
    r = paired_log_ratios(point, base)
    iv = mean_interval(list(r.values()), confidence, design)

    def deg(x: float) -> float:
        return 1 - math.exp(-x) if math.isfinite(x) else (1.0 if x > 0 else -math.inf)

    def eff(x: float) -> float:
        return math.exp(-x) if math.isfinite(x) else (0.0 if x > 0 else math.inf)

    if iv.n == 0:
        nan = Interval(math.nan, math.nan, math.nan, 0, "none")
        return Degradation(nan, nan, r)
    d = Interval(deg(iv.estimate), deg(iv.low), deg(iv.high), iv.n, iv.method)
    e = Interval(eff(iv.estimate), eff(iv.high), eff(iv.low), iv.n, iv.method)
    return Degradation(e, d, r)


def cv(values) -> float | None:
    """Coefficient of variation (sample sd / mean); None with fewer than two values or an infinite
    one (path_imbalance with an idle path: no spread to speak of)."""
    x = _finite(values)
    if len(x) < 2 or not np.isfinite(x).all() or x.mean() == 0:
        return None
    return float(x.std(ddof=1) / abs(x.mean()))


def paired_cv(log_ratios) -> float | None:
    """The CV of a point's step time relative to its block's baseline: sd of the ratios / their mean."""
    x = _finite(log_ratios)
    if len(x) < 2:
        return None
    return cv(np.exp(x))


@dataclass(frozen=True)
class Trend:
    tau: float | None
    p: float | None
    n: int

    def detected(self, alpha: float = TREND_ALPHA) -> bool:
        return self.p is not None and self.p < alpha

    @property
    def testable(self) -> bool:
        return self.n >= TREND_MIN_N


def trend(values_in_order) -> Trend:
    """Kendall's tau of the values against their measurement order (tau < 0: getting faster); not
    testable with fewer than TREND_MIN_N values (no ordering of 4 reaches p < 0.05)."""
    x = _finite(values_in_order)
    if len(x) < TREND_MIN_N or np.all(x == x[0]):
        return Trend(None, None, len(x))
    from scipy import stats  # deferred: scipy.stats, 20 s under TCG
    res = stats.kendalltau(np.arange(len(x)), x)
    return Trend(float(res.statistic), float(res.pvalue), len(x))


def rank_test(point: dict[int, float], base: dict[int, float]) -> float | None:
    """Wilcoxon signed-rank p-value of the paired step times (None when it cannot be computed)."""
    blocks = [b for b in point if b in base]
    if len(blocks) < 2:
        return None
    d = np.asarray([point[b] - base[b] for b in blocks])
    if np.all(d == 0):
        return 1.0
    from scipy import stats  # deferred: scipy.stats, 20 s under TCG
    try:
        return float(stats.wilcoxon(d).pvalue)
    except ValueError:
        return None


def is_stationary(steps, window: int = 5, max_drift: float = 0.02) -> bool:
    """Warm-up is over when the last `window` step times show no trend: the Theil-Sen slope over
    the window moves the step time by less than `max_drift` of its median, or by less than half
    their spread (noisy steps, a batch of a few Poisson requests: no trend stands out of them)."""
    x = _finite(steps)
    if len(x) < max(window, 1):
        return False
    if window < 2:  # a window of one step has no trend (a slope over one point is no number)
        return True
    w = x[-window:]
    med = float(np.median(w))
    if med <= 0:
        return True
    drift = abs(theil_sen_slope(w)) * (window - 1)
    return drift < max_drift * med or drift < 0.5 * float(w.max() - w.min())


def theil_sen_slope(y) -> float:
    """The median of the pairwise slopes of y against its index (Theil-Sen; as scipy.stats.theilslopes,
    without importing scipy.stats, which takes ~20 s in the TCG guest where warm-ups run)."""
    y = np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(y), k=1)
    return float(np.median((y[j] - y[i]) / (j - i)))


@dataclass(frozen=True)
class Quality:
    """Why a point's interval should not be taken at face value (empty: it can)."""

    cv: float | None = None
    trend: Trend | None = None
    max_cv: float = MAX_CV
    alpha: float = TREND_ALPHA
    reasons: tuple[str, ...] = field(default=())

    @staticmethod
    def of(cv_value: float | None, tr: Trend | None, max_cv: float = MAX_CV, alpha: float = TREND_ALPHA) -> Quality:
        reasons = []
        if cv_value is not None and cv_value > max_cv:
            reasons.append(f"CV {cv_value:.1%} > {max_cv:.0%}")
        if tr is not None and tr.detected(alpha):
            reasons.append(f"trend over measurement order (Kendall tau {tr.tau:+.2f}, p = {tr.p:.3f})")
        return Quality(cv_value, tr, max_cv, alpha, tuple(reasons))

    @property
    def ok(self) -> bool:
        return not self.reasons


def _side(iv: Interval, op: str, threshold: float) -> str:
    """PASS if every value in the interval meets `op threshold`, FAIL if none does, else INCONCLUSIVE."""
    check = OPS[op]
    lo_ok, hi_ok = check(iv.low, threshold), check(iv.high, threshold)
    if op in ("==", "!="):
        if iv.low == iv.high:
            return PASS if lo_ok else FAIL
        inside = iv.low <= threshold <= iv.high
        if op == "==":
            return INCONCLUSIVE if inside else FAIL
        return INCONCLUSIVE if inside else PASS
    if lo_ok and hi_ok:
        return PASS
    if not lo_ok and not hi_ok:
        return FAIL
    return INCONCLUSIVE


def value_format(metric: str | None):
    """How a person reads a metric's values: fractions of the ideal (efficiency and its degradation,
    utilization) as percentages, the rest with four significant digits."""
    name = metric or ""
    if name in ("efficiency_degradation", "degradation") or name.endswith("_degradation"):
        return lambda v: f"{v * 100:+.2f} %"
    if name == "efficiency" or name.endswith(("_efficiency", "_utilization", "_util", "_fraction")):
        return lambda v: f"{v * 100:.2f} %"
    return lambda v: f"{v:.4g}"


def judge(iv: Interval, op: str, threshold: float, quality: Quality | None = None,
          wide: Interval | None = None, metric: str | None = None) -> tuple[str, str]:
    """(verdict, reason) of `METRIC op threshold` on the interval of the metric; `wide`: the same
    interval widened on the scale it is taken on, for noisy data (default: widened as it stands)."""
    conf = f"{CONFIDENCE:.0%} interval"
    if iv.n == 0 or _isnan(iv.low) or _isnan(iv.high):
        return INCONCLUSIVE, "not measured"
    if iv.n == 1 and iv.method == "none":
        return INCONCLUSIVE, "one block: no interval (run more repetitions)"
    f = value_format(metric)
    text, bar = f"[{f(iv.low)}, {f(iv.high)}]", f"{op} {f(threshold)}"
    v = _side(iv, op, threshold)
    if v == INCONCLUSIVE:
        return v, f"{conf} {text} straddles {bar}"
    if quality is not None and not quality.ok:
        wide = wide or iv.widened(QUALITY_WIDEN)
        if _side(wide, op, threshold) != v:
            return INCONCLUSIVE, (f"{'; '.join(quality.reasons)}: the interval taken {QUALITY_WIDEN:g}x wider "
                                  f"[{f(wide.low)}, {f(wide.high)}] straddles {bar}")
    word = "meets" if v == PASS else "violates"
    return v, f"{conf} {text} {word} {bar}" + (f" (despite {'; '.join(quality.reasons)})"
                                               if quality is not None and not quality.ok else "")


def all_values_judge(values, op: str, threshold: float) -> tuple[str, str]:
    """Exact criteria (== / !=, counts that must be zero): every block must satisfy it."""
    x = [v for v in values if v is not None and not _isnan(v)]
    if not x:
        return INCONCLUSIVE, "not measured"
    bad = [v for v in x if not OPS[op](v, threshold)]
    if bad:
        return FAIL, f"{len(bad)} of {len(x)} blocks violate {op} {threshold:g} (e.g. {bad[0]:g})"
    return PASS, f"all {len(x)} blocks meet {op} {threshold:g}"
