"""The statistics of randomized blocks on synthetic series (no lab): drift cancels under shuffled
blocks and biases sweep order, intervals straddling a threshold are inconclusive, exit codes and
the JUnit mapping."""

from __future__ import annotations

import math
import random
import statistics
import xml.etree.ElementTree as ET

import pytest
from scipy import stats as sst

from metrolab.harness.errors import EXIT_CAPABILITY, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_INTERNAL, EXIT_LAB, EXIT_SPEC
from metrolab.harness.runner.engine import block_order
from metrolab.harness.scenario import stats as st
from metrolab.harness.scenario.criteria import parse_criterion
from metrolab.harness.scenario.points import Point
from metrolab.harness.scenario.verdict import evaluate, summarize

pytestmark = pytest.mark.unit

TRUE_DEGRADATION = {0: 0.0, 100: 0.01, 250: 0.025, 500: 0.05}  # of the step time, per distance
BASE_STEP = 0.2


def _points() -> list[Point]:
    return [Point(baseline=True)] + [Point(distance_km=float(d)) for d in TRUE_DEGRADATION]


def _rows(order: list[tuple[int, Point]], drift_per_measurement: float, noise: float, seed: int) -> list[dict]:
    """Step times of a machine that speeds up over the run (a multiplicative drift per
    measurement) plus noise; `order` is (block, point) in measurement order."""
    rng = random.Random(seed)
    rows = []
    for i, (block, p) in enumerate(order):
        true = BASE_STEP * (1 + (0.0 if p.baseline else TRUE_DEGRADATION[int(p.distance_km)]))
        t = true * (1 - drift_per_measurement) ** i * (1 + rng.gauss(0, noise))
        rows.append({"workload": "w", "point_key": p.key, "label": p.label(), **p.fields(), "block": block,
                     "repetition": block, "order": i, "status": "ok", "step_time_s": t})
    return rows


def _shuffled(blocks: int, seed: int) -> list[tuple[int, Point]]:
    return [(b, p) for b in range(blocks) for p in block_order(_points(), seed, "w", b)]


def _sweep_order(blocks: int) -> list[tuple[int, Point]]:
    """The old design: the baseline first, then every point in sweep order, repetitions back to back."""
    return [(b, p) for p in _points() for b in range(blocks)]


def test_drift_cancels_under_shuffled_blocks_and_biases_sweep_order():
    drift, blocks = 0.004, 6  # the machine gets 0.4 % faster per measurement: ~11 % over the run
    errs_shuffled, errs_sweep = [], []
    for seed in range(20):
        for order, errs in ((_shuffled(blocks, seed), errs_shuffled), (_sweep_order(blocks), errs_sweep)):
            pts = {p.fields["distance_km"]: p for p in summarize(_rows(order, drift, 0.005, seed)) if not p.baseline}
            errs.append(pts[500.0].efficiency_degradation - 1 + 1 / (1 + TRUE_DEGRADATION[500]))
    bias_shuffled = sum(errs_shuffled) / len(errs_shuffled)
    bias_sweep = sum(errs_sweep) / len(errs_sweep)
    assert abs(bias_shuffled) < 0.005, bias_shuffled     # pairing within blocks cancels the drift
    assert bias_sweep < -0.05, bias_sweep                # baseline first: later points look faster than ideal


def test_the_null_point_interval_contains_zero_under_drift():
    rows = _rows(_shuffled(6, seed=7), 0.004, 0.005, seed=7)
    null = next(p for p in summarize(rows) if not p.baseline and p.fields["distance_km"] == 0)
    assert null.ci_low <= 0 <= null.ci_high, (null.ci_low, null.ci_high)


def test_interval_across_the_threshold_is_inconclusive():
    iv = st.Interval(0.045, 0.03, 0.06, 5, "t")
    assert st.judge(iv, "<=", 0.05)[0] == st.INCONCLUSIVE
    assert "straddles" in st.judge(iv, "<=", 0.05)[1]
    assert st.judge(st.Interval(0.02, 0.01, 0.03, 5, "t"), "<=", 0.05)[0] == st.PASS
    assert st.judge(st.Interval(0.08, 0.06, 0.1, 5, "t"), "<=", 0.05)[0] == st.FAIL
    assert st.judge(st.Interval(0.9, 0.85, 0.95, 5, "t"), ">=", 0.95)[0] == st.INCONCLUSIVE


def test_noisy_or_trending_data_is_judged_on_a_wider_interval():
    noisy = st.Quality.of(0.08, None)
    assert not noisy.ok and "CV 8.0%" in noisy.reasons[0]
    # narrow interval just under the threshold: taken twice as wide it straddles it
    v, why = st.judge(st.Interval(0.043, 0.038, 0.048, 5, "t"), "<=", 0.05, noisy)
    assert v == st.INCONCLUSIVE and "CV" in why
    # far from the threshold the data still decides, and says it was noisy
    v, why = st.judge(st.Interval(0.30, 0.25, 0.35, 5, "t"), "<=", 0.05, noisy)
    assert v == st.FAIL and "despite" in why
    trending = st.Quality.of(0.01, st.Trend(-0.9, 0.001, 10))
    assert "trend" in trending.reasons[0]


def test_intervals_small_samples_and_special_values():
    one = st.mean_interval([1.0])
    assert one.n == 1 and math.isinf(one.high) and st.judge(one, "<=", 2)[0] == st.INCONCLUSIVE
    same = st.mean_interval([0.5, 0.5, 0.5])
    assert (same.low, same.high, same.method) == (0.5, 0.5, "no-spread")  # the value, not a claim of certainty
    inf = st.mean_interval([math.inf, math.inf, 3.0])
    assert inf.method == "range" and inf.low == 3.0
    two = st.mean_interval([0.01, 0.02])
    assert two.low < -0.03 and two.high > 0.06  # Student's t with one degree of freedom: honest, wide
    # one method whatever the number of blocks (ad1b757 switched from bootstrap+t to BCa at 10)
    for n in (3, 9, 10, 30):
        x = [0.01 + 0.001 * (i % 5) for i in range(n)]
        iv = st.mean_interval(x)
        sd = statistics.stdev(x)
        assert iv.method == "t" and iv.high - iv.low == pytest.approx(2 * sst.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def test_zero_counts_bound_a_rate_they_do_not_prove_it_zero():
    """0 drops among ~24,000 packets (3 blocks of a small run) cannot show loss < 1e-5: the exact
    bound is 1.5e-4; a pass needs ~369,000 loss-free packets; nothing counted is not measured."""
    few = st.rate_interval(0, 24_000)
    assert few.low == 0 and few.high == pytest.approx(1 - 0.025 ** (1 / 24_000))
    assert st.judge(few, "<", 1e-5)[0] == st.INCONCLUSIVE
    need = st.trials_for_rate_below(1e-5)
    assert 368_000 < need < 370_000 and st.rate_interval(0, need).high < 1e-5 <= st.rate_interval(0, need - 1).high
    assert st.judge(st.rate_interval(0, need), "<", 1e-5)[0] == st.PASS
    assert st.judge(st.rate_interval(30, 10_000), "<", 1e-5)[0] == st.FAIL
    assert st.rate_interval(0, 0).n == 0 and st.judge(st.rate_interval(0, 0), "<", 1e-5)[1] == "not measured"


def test_a_trend_is_tested_only_where_it_can_be_detected():
    """Kendall's tau over 4 blocks cannot reach p < 0.05 (its smallest two-sided p is 1/12): 3-4
    blocks say 'not testable' rather than 'no trend'."""
    assert sst.kendalltau(range(4), range(4)).pvalue > 0.05
    for n in (3, 4):
        tr = st.trend(list(range(n)))
        assert tr.p is None and not tr.testable and not tr.detected()
    assert st.trend([5, 4, 3, 2, 1]).detected() and st.trend([5, 4, 3, 2, 1]).testable


def test_a_prediction_interval_is_for_one_value_and_wider_than_the_means():
    lo, hi = st.prediction_interval([1.0, 2.0, 3.0])
    assert (lo + hi) / 2 == pytest.approx(2.0) and (hi - lo) / 2 == pytest.approx(4.3027 * math.sqrt(4 / 3), rel=1e-4)
    assert st.t_interval([1.0, 2.0, 3.0])[1] < hi and st.prediction_interval([5.0]) == (-math.inf, math.inf)


def test_exact_criteria_need_every_block():
    assert st.all_values_judge([0, 0, 0], "==", 0)[0] == st.PASS
    v, why = st.all_values_judge([0, 2, 0], "==", 0)
    assert v == st.FAIL and "1 of 3 blocks" in why


def test_quality_figures():
    assert st.cv([1.0, 1.0]) == 0.0 and st.cv([1.0]) is None
    assert st.cv([float("inf")] * 3) is None  # a path idle in every block: inf - inf was a numpy warning
    assert st.trend([5, 4, 3, 2, 1, 0]).detected() and not st.trend([1, 3, 2, 3, 1, 2]).detected()
    assert st.rank_test({0: 1.1, 1: 1.2, 2: 1.1, 3: 1.3, 4: 1.2, 5: 1.15}, {b: 1.0 for b in range(6)}) < 0.05
    assert st.is_stationary([1.5, 1.2, 1.0, 1.0, 1.01, 0.99, 1.0]) and not st.is_stationary([1.5, 1.4, 1.3, 1.2, 1.1])
    assert st.is_stationary([0.53, 0.63, 0.41, 0.70, 0.45], window=5)  # noise without a trend
    # a window of one (kind: command's warm-up: whole runs, no trend across them) is over after a
    # step; it once read "no number" and warmed a command 20 times
    assert st.is_stationary([2.0], window=1) and not st.is_stationary([], window=1)


def test_verdict_status_and_per_point_reason():
    rows = []
    for b in range(4):
        for key, base, d, t in (("b", True, 0.0, 1.0), ("p", False, 100.0, 1.02 + 0.03 * (b % 2))):
            rows.append({"workload": "w", "point_key": key, "label": key, "baseline": base, "distance_km": d,
                         "loss": 0.0, "block": b, "order": 2 * b + (key == "p"), "status": "ok", "step_time_s": t})
    v = evaluate(summarize(rows), [parse_criterion("efficiency_degradation <= 0.03 where distance_km in [100, 500]")])
    p = next(x for x in v.points if x.point_key == "p")
    assert v.status == "inconclusive" and p.verdict == "inconclusive" and "straddles" in p.reason
    assert p.ci_low < 0.03 < p.ci_high


def test_a_criterion_on_what_only_the_sweep_measures_skips_the_baseline_not_a_point():
    rows = []
    for b in range(3):
        for key, base, d, rec in (("b", True, 0.0, None), ("p", False, 100.0, 0), ("q", False, 500.0, None)):
            rows.append({"workload": "w", "point_key": key, "label": key, "baseline": base, "distance_km": d,
                         "loss": 0.0, "block": b, "order": 3 * b, "status": "ok", "step_time_s": 1.0 + d / 1e4,
                         "recovery_steps": rec})
    v = evaluate(summarize(rows, ("recovery_steps",)), [parse_criterion("recovery_steps <= 1", ("recovery_steps",))])
    # the baseline plays no event: no verdict there; a swept point that lacks it is a gap
    assert {r.point_key: r.verdict for r in v.results} == {"p": "pass", "q": "inconclusive"}, v.results


def test_a_cpu_bound_point_or_baseline_leaves_step_criteria_inconclusive():
    """The CPU, not the network, sets a step the ranks spend most of the machine's CPU on: a clear
    pass on step time is not a claim about the network then, at the point or at its baseline
    (a CPU-bound baseline hides what the link adds); criteria on other metrics are unaffected."""
    from metrolab.harness.scenario.verdict import Settings

    def rows(base_load: float, point_load: float) -> list[dict]:
        out = []
        for b in range(4):
            for key, base, d, t, load in (("b", True, 0.0, 1.0, base_load), ("p", False, 100.0, 1.001 + 0.001 * b,
                                                                              point_load)):
                out.append({"workload": "w", "point_key": key, "label": key, "baseline": base, "distance_km": d,
                            "loss": 0.0, "block": b, "order": 2 * b, "status": "ok", "step_time_s": t,
                            "cpu_load": load, "bytes": 64})
        return out

    crits = [parse_criterion("efficiency_degradation <= 0.05 where distance_km in [100, 500]"),
             parse_criterion("bytes == 64", ("bytes",))]

    def verdicts(base_load: float, point_load: float, settings: Settings | None = None) -> dict:
        v = evaluate(summarize(rows(base_load, point_load), ("bytes",), settings), crits, settings)
        return {(r.point_key, r.metric): (r.verdict, r.message) for r in v.results}

    assert verdicts(0.5, 0.3)[("p", "efficiency_degradation")][0] == "pass"
    for base_load, point_load in ((0.9, 0.3), (0.5, 0.85)):
        got = verdicts(base_load, point_load)
        verdict, message = got[("p", "efficiency_degradation")]
        assert verdict == "inconclusive" and "CPU-bound" in message and f"{max(base_load, point_load):.0%}" in message
        assert got[("p", "bytes")][0] == "pass"
    assert verdicts(0.9, 0.3, Settings(max_cpu_load=0.95))[("p", "efficiency_degradation")][0] == "pass"


def test_exit_codes_are_distinct():
    from metrolab.harness.cli.common import exit_code as _exit_code
    codes = {EXIT_FAIL, EXIT_SPEC, EXIT_LAB, EXIT_CAPABILITY, EXIT_INCONCLUSIVE, EXIT_INTERNAL, 0, 130}
    assert len(codes) == 8
    assert _exit_code("pass", "exit") == 0 and _exit_code("fail", "exit") == EXIT_FAIL
    assert _exit_code("inconclusive", "exit") == EXIT_INCONCLUSIVE
    assert _exit_code("inconclusive", "pass") == 0 and _exit_code("inconclusive", "fail") == EXIT_FAIL


def test_junit_maps_inconclusive_to_skipped(tmp_path):
    from metrolab.reports.build import write_junit
    rows = []
    for b in range(3):
        for key, base, d, t in (("b", True, 0.0, 1.0), ("near", False, 100.0, 1.04 + 0.02 * b),
                                ("far", False, 500.0, 1.5)):
            rows.append({"workload": "w", "point_key": key, "label": key, "baseline": base, "distance_km": d,
                         "loss": 0.0, "block": b, "order": 3 * b, "status": "ok", "step_time_s": t})
    v = evaluate(summarize(rows), [parse_criterion("efficiency_degradation <= 0.05 where distance_km in [100, 500]")])
    assert {r.point_key: r.verdict for r in v.results} == {"near": "inconclusive", "far": "fail"}
    write_junit(tmp_path / "j.xml", {"scenario": "s"}, v)
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite.get("skipped") == "1" and suite.get("failures") == "1"
    cases = {tc.get("name").split(" @ ")[1]: tc for tc in suite.iter("testcase")}
    assert cases["near"].find("skipped") is not None and "inconclusive" in cases["near"].find("skipped").get("message")
    assert cases["far"].find("failure") is not None


def test_block_orders_are_shuffled_reproducible_and_grouped_by_parameters():
    pts = [Point(baseline=True, params=(("algo", a),)) for a in ("flat", "hier")] + \
        [Point(distance_km=float(d), params=(("algo", a),)) for d in (100, 500) for a in ("flat", "hier")]
    orders = [block_order(pts, 42, "w", b) for b in range(6)]
    assert all(sorted(p.key for p in o) == sorted(p.key for p in pts) for o in orders)
    assert len({tuple(p.key for p in o) for o in orders}) > 1          # fresh per block
    assert [p.key for p in block_order(pts, 42, "w", 3)] == [p.key for p in orders[3]]  # same seed, same plan
    for o in orders:  # a combination's points are measured together: one set-up per combination per block
        combos = [p.params for p in o]
        assert combos == sorted(combos, key=combos.index) and len({c for c in combos}) == 2
        assert combos[0] == combos[1] == combos[2] and combos[3] == combos[4] == combos[5]


def test_theil_sen_matches_scipy():
    y = [1.5, 1.2, 1.1, 1.05, 1.0, 1.02, 0.99, 1.01]
    assert st.theil_sen_slope(y) == pytest.approx(sst.theilslopes(y).slope)


def test_a_step_time_interval_stays_positive():
    iv = st.positive_interval([0.011, 0.004])  # two noisy blocks: t's interval of the mean would go below 0
    assert 0 < iv.low < 0.004 and iv.high > 0.011 and st.judge(iv, ">", 0)[0] == st.PASS


def test_an_interval_wider_than_floats_is_unbounded_not_an_error():
    """A suite run under load: few noisy blocks under a sequential design put the log-scale upper end
    past 709 and exp() raised OverflowError (the run exited 70). Such an interval decides nothing."""
    iv = st.positive_interval([0.5, 2.0], widen=1e4)
    assert iv.high == math.inf and iv.low == 0.0 and 0.5 < iv.estimate < 2.0
    assert st.judge(iv, "<", 1.0)[0] == st.INCONCLUSIVE
