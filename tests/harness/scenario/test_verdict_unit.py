"""What a verdict rests on (harness/scenario/verdict.py), on synthetic rows: every repetition,
counts for rates, gates on every performance metric, clean blocks, and the family of a criterion's
points. Each test is a hole through which a wrong answer walked out at ad1b757."""

from __future__ import annotations

import math

import pytest

from metrolab.harness.scenario import stats as st
from metrolab.harness.scenario.criteria import parse_criterion
from metrolab.harness.scenario.verdict import Settings, evaluate, summarize

pytestmark = pytest.mark.unit

METRICS = ("flow_efficiency", "wan_drops", "wan_packets", "wan_loss", "bad_batches")


def _row(key: str, block: int, *, baseline: bool = False, distance: float = 100.0, step: float = 1.0, **kw) -> dict:
    return {"workload": "w", "point_key": key, "label": key, "baseline": baseline,
            "distance_km": 0.0 if baseline else distance, "loss": 0.0, "policy": "none", "block": block,
            "repetition": block, "order": 10 * block + (0 if baseline else 1), "status": "ok",
            "step_time_s": step, **kw}


def _judge(rows: list[dict], *criteria: str, settings: Settings | None = None, blocks: list[dict] | None = None):
    points = summarize(rows, METRICS, settings, blocks) if blocks is not None else summarize(rows, METRICS, settings)
    v = evaluate(points, [parse_criterion(c, METRICS) for c in criteria], settings)
    return v, {(r.point_key, r.metric): r for r in v.results}


def test_a_point_that_failed_a_repetition_fails_its_criteria_not_judged_on_the_survivors():
    rows = []
    for b in range(3):
        rows.append(_row("b", b, baseline=True, step=1.0))
        rows.append(_row("p", b, step=1.01) if b < 2 else
                    _row("p", b) | {"status": "failed", "repetition": -1, "error": "rank 1 exited with 13"})
    v, res = _judge(rows, "efficiency_degradation <= 0.05 where distance_km in [100, 500]")
    r = res[("p", "efficiency_degradation")]
    assert r.verdict == "fail" and "1 of 3 repetitions failed: rank 1 exited with 13" in r.message
    assert v.status == "fail" and [p.point_key for p in v.failed_points] == ["p"]
    # an allowance the scenario states judges the survivors, and says how many failed
    allowed = Settings(allowed_failures=1)
    v, res = _judge(rows, "efficiency_degradation <= 0.05 where distance_km in [100, 500]", settings=allowed)
    p = next(x for x in v.points if x.point_key == "p")
    assert res[("p", "efficiency_degradation")].verdict != "fail" and p.failed_repetitions == 1 and not v.failed_points


def test_rates_are_judged_on_their_counts():
    rows = []
    for b in range(3):
        rows.append(_row("b", b, baseline=True, wan_drops=0, wan_packets=8000, wan_loss=0.0))
        rows.append(_row("p", b, wan_drops=0, wan_packets=8000, wan_loss=0.0))
        rows.append(_row("q", b, distance=500.0, wan_drops=4, wan_packets=8000, wan_loss=4 / 8004))
        rows.append(_row("z", b, distance=250.0, wan_drops=None, wan_packets=None, wan_loss=None))
    _, res = _judge(rows, "wan_loss < 0.00001")
    p = res[("p", "wan_loss")]
    need = f"{st.trials_for_rate_below(1e-5):,} packets"  # ~369,000 (two-sided 95 %)
    assert p.verdict == "inconclusive" and "0 of 24000 packets" in p.message and need in p.message
    assert res[("q", "wan_loss")].verdict == "fail"
    assert res[("z", "wan_loss")].verdict == "inconclusive" and "not measured" in res[("z", "wan_loss")].message
    big = [r | {"wan_packets": 200_000} for r in rows if r["point_key"] == "p"] + \
          [r for r in rows if r["point_key"] == "b"]
    assert _judge(big, "wan_loss < 0.00001")[1][("p", "wan_loss")].verdict == "pass"


def test_every_performance_metric_is_gated_by_what_else_bounds_it():
    """A CPU-starved sender never congests the link: 'no loss' and 'throughput' say CPU-bound, as
    step times do; an integrity check is not bounded by the host."""
    rows = []
    for b in range(4):
        common = {"cpu_load": 0.95, "wan_drops": 0, "wan_packets": 500_000, "wan_loss": 0.0, "bad_batches": 0}
        rows.append(_row("b", b, baseline=True, flow_efficiency=0.99 + 0.001 * b, **common))
        rows.append(_row("p", b, step=1.001, flow_efficiency=0.98 + 0.001 * b, **common))
    _, res = _judge(rows, "flow_efficiency > 0.95", "wan_loss < 0.00001", "bad_batches == 0")
    for metric in ("flow_efficiency", "wan_loss"):
        assert res[("p", metric)].verdict == "inconclusive" and "CPU-bound" in res[("p", metric)].message, metric
    assert res[("p", "bad_batches")].verdict == "pass"
    rows = [r | {"cpu_load": 0.3} for r in rows]
    _, res = _judge(rows, "flow_efficiency > 0.95", "wan_loss < 0.00001")
    assert res[("p", "flow_efficiency")].verdict == "pass" and res[("p", "wan_loss")].verdict == "pass"
    host = [r | {"cpu_load": 0.3, "host_bound": True, "capacity_ratio": 0.9} for r in rows]
    assert "host-bound" in _judge(host, "flow_efficiency > 0.95")[1][("p", "flow_efficiency")].message


def test_a_block_measured_under_interference_is_left_out_whole():
    rows, blocks = [], []
    for b in range(4):
        slow = 1.3 if b == 2 else 1.0  # another process took the machine during block 2's point
        rows.append(_row("b", b, baseline=True, step=1.0))
        rows.append(_row("p", b, step=1.01 * slow))
        blocks.append({"workload": "w", "block": b, "interference": 0.5 if b == 2 else 0.01, "interfered": b == 2,
                       "replaced": b == 2})
    v, _ = _judge(rows, "efficiency_degradation <= 0.05 where distance_km in [100, 500]", blocks=blocks)
    p = next(x for x in v.points if x.point_key == "p")
    b = next(x for x in v.points if x.baseline)
    assert p.excluded_blocks == [2] and b.excluded_blocks == [2] and p.repetitions == b.repetitions == 3
    assert p.efficiency_degradation == pytest.approx(1 - 1 / 1.01)


def test_a_criterion_over_several_points_fails_one_only_after_holms_correction():
    """Three points each just past the threshold at 95 %: read one by one, each fails and the claim
    over them 'does not hold' with a family-wise error near 3 x 2.5 %; under Holm's step-down only
    the point that still violates at alpha/3 fails."""
    rows = []
    for b in range(4):
        rows.append(_row("b", b, baseline=True, step=1.0))
        rows.append(_row("far", b, distance=500.0, step=1.30 + 0.01 * (b % 2)))
        # log ratio 0.0693 +- 0.01: past -ln 0.95 = 0.0513 at t(3) 3.18 (95 %), not at 4.18 (97.5 %)
        rows.append(_row("near", b, distance=250.0, step=math.exp(0.0693 + 0.00866 * (-1) ** b)))
        rows.append(_row("ok", b, distance=100.0, step=1.01))
    crit = "efficiency_degradation <= 0.05 where distance_km in [100, 500]"
    per_point = _judge(rows, crit, settings=Settings(family="per-point"))[1]
    assert per_point[("near", "efficiency_degradation")].verdict == "fail"
    _, res = _judge(rows, crit)
    assert res[("far", "efficiency_degradation")].verdict == "fail"
    near = res[("near", "efficiency_degradation")]
    assert near.verdict == "inconclusive" and "Holm" in near.message and "3 members" in near.message
    assert res[("ok", "efficiency_degradation")].verdict == "pass"


def test_an_inconclusive_interval_says_how_many_blocks_would_decide_it():
    rows = []
    for b in range(4):
        rows.append(_row("b", b, baseline=True, step=1.0))
        rows.append(_row("p", b, step=1.045 * (1 + 0.01 * (-1) ** b)))
    r = _judge(rows, "efficiency_degradation <= 0.05 where distance_km in [100, 500]")[1][("p", "efficiency_degradation")]
    assert r.verdict == "inconclusive" and r.blocks_needed is not None and 4 < r.blocks_needed < 200
    assert math.isfinite(r.low) and r.low < 0.05 < r.high


def test_an_interval_past_exps_range_is_unbounded_not_an_error():
    """Two blocks that disagree by 2.3 in log ratio, at 99.9 % (t = 637): the lower bound is a log
    ratio of about -1000, which exp cannot take (a CLI run exited 70 with OverflowError)."""
    from metrolab.harness.scenario.sequential import Design
    from metrolab.harness.scenario.verdict import Sample
    s = Sample("ratio", (-1.2, 1.1))
    iv = s.interval(Design("fixed", 0.999, 2, 2), 0.001, as_metric="efficiency_degradation")
    assert iv.low == -math.inf and 0 < iv.high <= 1
    eff = s.interval(Design("fixed", 0.999, 2, 2), 0.001, as_metric="efficiency")
    assert eff.high == math.inf and eff.low >= 0


def test_a_step_verdict_at_a_point_that_contradicts_physics_is_inconclusive():
    """A point faster than the ideal network, or a longer link degrading less than a shorter one,
    beyond their intervals: drift or a bug. Its step-time verdict, pass or fail, is not one the data
    support; a sound series keeps its verdicts."""
    def rows(steps: dict[str, tuple[float, float]]) -> list[dict]:
        out = []
        for b in range(5):
            wiggle = 0.002 * (b % 3)
            out.append(_row("b", b, baseline=True, step=1.0 + wiggle))
            out += [_row(k, b, distance=d, step=s + wiggle) for k, (d, s) in steps.items()]
        return out
    crit = "efficiency_degradation <= 0.05 where distance_km in [100, 500]"
    v, res = _judge(rows({"fast": (100.0, 0.9)}), crit)
    r = res[("fast", "efficiency_degradation")]
    assert r.verdict == "inconclusive" and "contradicts physics" in r.message and "faster than the ideal" in r.message
    assert v.status == "inconclusive" and len(v.warnings) == 1
    # 500 km degrading 2 % where 100 km degrades 10 %: neither the pass nor the fail stands
    v, res = _judge(rows({"near": (100.0, 1.10), "far": (500.0, 1.02)}), crit)
    assert [res[(k, "efficiency_degradation")].verdict for k in ("near", "far")] == ["inconclusive"] * 2
    assert all("degrades less than" in res[(k, "efficiency_degradation")].message for k in ("near", "far"))
    # the same figures the right way round are judged: 100 km passes, 500 km fails
    v, res = _judge(rows({"near": (100.0, 1.02), "far": (500.0, 1.10)}), crit)
    assert [res[(k, "efficiency_degradation")].verdict for k in ("near", "far")] == ["pass", "fail"]
    assert v.warnings == []
