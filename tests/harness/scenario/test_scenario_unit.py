"""Scenario spec, criteria, sweep points and verdicts: pure, no lab."""

from __future__ import annotations

import pytest

from metrolab.harness.errors import SpecError, SpecErrors
from metrolab.harness.scenario.criteria import parse_criterion
from metrolab.harness.scenario.points import DELAY_LINE_S, Point, baseline, grid, per_packet, point_impairment
from metrolab.harness.scenario.spec import builtin_scenarios, load_scenario, scenario_from_data
from metrolab.harness.scenario.verdict import efficiency, evaluate, iqr, summarize
from metrolab.netem.profile import Impairment, LossModel

pytestmark = pytest.mark.unit

TOPO = "metro-pair"  # harness/topologies/: a1 -- gw-a == wan-ab == gw-b -- b1


def scenario(**over):
    data = {"name": "s", "topology": TOPO, "workloads": [{"kind": "collective", "params": {"size": "1m"}}],
            "sweep": {"distance_km": [0, 100]}} | over
    return scenario_from_data(data, "s.yaml")


def test_criteria_parse_and_apply():
    c = parse_criterion("efficiency_degradation <= 0.05 where distance_km in [100, 500] and loss == 0")
    assert c.metric == "efficiency_degradation" and c.op == "<=" and c.threshold == 0.05
    assert c.applies({"distance_km": 100, "loss": 0.0}) and c.applies({"distance_km": 500, "loss": 0})
    assert not c.applies({"distance_km": 50, "loss": 0}) and not c.applies({"distance_km": 250, "loss": 1e-3})
    assert c.check(0.05) and not c.check(0.06) and not c.check(None)
    s = parse_criterion("busbw_gbs > 1 where policy in {none, ecn}", ["busbw_gbs"])
    assert s.applies({"policy": "ecn"}) and not s.applies({"policy": "pfc"})
    j = parse_criterion("step_time_s < 10ms")
    assert j.threshold == pytest.approx(0.01)


@pytest.mark.parametrize("text,msg", [
    ("throughput >= 0.9", "unknown metric 'throughput'"),
    ("efficiency >= 0.9 where planet == 3", "unknown sweep field 'planet'"),
    ("efficiency >= 0.9 where distance_km in [500, 100]", "a range is"),
    ("efficiency is good", "METRIC OP VALUE"),
])
def test_bad_criteria_are_clear(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_criterion(text)


def test_grid_baseline_and_keys():
    scn = scenario(sweep={"distance_km": [0, 100], "loss": [0, 1e-3], "rate": ["100gbit"]}, scale=1000)
    pts = grid(scn.spec.sweep, scn.spec.scale)
    assert len(pts) == 4 and pts[0].rate_bps == pytest.approx(100e6)  # 100 Gbit/s / k
    assert len({p.key for p in pts}) == 4 and Point().key == Point().key
    assert baseline().baseline and baseline().key != Point().key


def test_a_scenario_that_impairs_packets_one_by_one_runs_all_its_points_on_wire_sized_packets():
    """Loss, jitter and loss events act per packet (Lab.wire_packets); distance, rate, convergence
    and a cut link do not."""
    assert not per_packet(scenario(sweep={"distance_km": [0, 500], "convergence": [1, 4]}).spec)
    lossy = scenario(sweep={"distance_km": [100], "loss": [0, 1e-4]}).spec
    assert per_packet(lossy) and per_packet(scenario(sweep={"jitter": [0, "100us"]}).spec)
    burst = [{"kind": "loss", "link": "wan-ab", "at": "1s", "duration": "500ms", "loss": 0.01}]
    cut = [{"kind": "link-down", "link": "wan-ab", "at": "1s", "duration": "500ms"}]
    step = [{"kind": "training-step", "params": {"model": "gpt2-small"}}]
    assert per_packet(scenario(workloads=step, events=burst).spec)
    assert not per_packet(scenario(workloads=step, events=cut).spec)
    base = Impairment(rate_bps=100e6)
    assert point_impairment(Point(distance_km=100, loss=1e-4), base, lossy.sweep, 1.468).per_packet
    assert not point_impairment(Point(distance_km=100), base, lossy.sweep, 1.468).per_packet
    assert not point_impairment(baseline(), base, lossy.sweep, 1.468).per_packet  # the run's setting covers it
    assert not Impairment(loss=LossModel(p=1.0)).per_packet  # a cut


def test_point_impairment_follows_distance_loss_and_convergence():
    base = Impairment(delay_s=0.0005, rate_bps=100e6)
    sweep = scenario(sweep={"distance_km": [100], "loss_model": "gilbert-elliott"}).spec.sweep
    imp = point_impairment(Point(distance_km=100, loss=1e-3, convergence=4), base, sweep, 1.468)
    assert imp.delay_s == pytest.approx(100e3 * 1.468 / 299792458)
    assert imp.rate_bps == pytest.approx(25e6)
    assert imp.loss.kind == "gilbert-elliott" and imp.loss.mean_loss == pytest.approx(1e-3)
    b = point_impairment(baseline(), base, sweep, 1.468)
    assert b.delay_s == 0 and b.loss is None and b.rate_bps == 100e6  # the ideal keeps the line rate
    # with netem every point goes through the delay line, at its raw (uncalibrated) delay
    line = point_impairment(baseline(), base, sweep, 1.468, delay_line=True)
    zero = point_impairment(Point(distance_km=0), base, sweep, 1.468, delay_line=True)
    far = point_impairment(Point(distance_km=100), base, sweep, 1.468, delay_line=True)
    assert line.delay_s == zero.delay_s == DELAY_LINE_S and far.delay_s == pytest.approx(imp.delay_s)
    assert line.extra["raw_delay"] and far.extra["raw_delay"] and not imp.extra


def test_verdict_efficiency_iqr_and_criteria():
    rows = []
    for key, base, d, steps in (("b", True, 0.0, [1.0, 1.0, 1.0]), ("p", False, 100.0, [1.04, 1.05, 1.06]),
                                ("q", False, 500.0, [1.4, 1.42, 1.45])):
        for i, t in enumerate(steps):
            rows.append({"workload": "w", "point_key": key, "label": key, "baseline": base, "distance_km": d,
                         "loss": 0.0, "repetition": i, "status": "ok", "step_time_s": t, "busbw_gbs": 1 / t})
    rows.append({"workload": "w", "point_key": "f", "label": "f", "baseline": False, "distance_km": 250.0,
                 "loss": 0.0, "repetition": -1, "status": "failed", "error": "rank 1 exited with 13"})
    pts = summarize(rows, ("busbw_gbs",))
    by = {p.point_key: p for p in pts}
    # paired by block, geometric mean of the ratios
    assert by["p"].efficiency == pytest.approx(1 / (1.04 * 1.05 * 1.06) ** (1 / 3)) and by["b"].efficiency == 1.0
    assert by["q"].step_time_iqr_s == pytest.approx(iqr([1.4, 1.42, 1.45]))
    assert by["f"].status == "failed"
    v = evaluate(pts, [parse_criterion("efficiency_degradation <= 0.1 where distance_km in [100, 500]")])
    res = {r.point_key: r.verdict for r in v.results}
    assert res == {"p": "pass", "q": "fail", "f": "fail"} and not v.passed and v.status == "fail"
    assert efficiency(2.0, 4.0) == 0.5
    with pytest.raises(ValueError):
        efficiency(0, 1)


def test_bad_scenarios_name_file_field_and_value():
    with pytest.raises(SpecError, match=r"s.yaml: workloads\[0\].kind: unknown workload"):
        scenario(workloads=[{"kind": "telepathy"}])
    with pytest.raises(SpecError, match=r"acceptance\[0\]: unknown metric 'joy'"):
        scenario(acceptance=["joy >= 1"])
    with pytest.raises(SpecErrors, match=r"sweep.distance_km: .*empty sweep"):
        scenario(sweep={"distance_km": []})
    with pytest.raises(SpecError, match=r"workloads\[0\].params.size"):
        scenario(workloads=[{"kind": "collective", "params": {"size": 0}}])
    with pytest.raises(SpecError, match=r"workloads\[0\].hosts\[1\]: not a host"):
        scenario(workloads=[{"kind": "collective", "hosts": ["a1", "z9"]}])
    with pytest.raises(SpecError, match=r"sweep.links\[0\]: no such link"):
        scenario(sweep={"links": ["wan-x"]})
    with pytest.raises(SpecError, match=r"sweep.policy\[0\]: unknown policy .*magic"):
        scenario(sweep={"policy": ["magic"]})


def test_builtin_scenarios_validate_full_and_quick():
    assert {"allreduce-distance", "rate-convergence"} <= set(builtin_scenarios())
    for name in builtin_scenarios():
        full, quick = load_scenario(name), load_scenario(name, quick=True)
        assert len(grid(quick.spec.sweep)) <= len(grid(full.spec.sweep))


def test_faster_than_the_baseline_is_a_warning_without_a_policy_and_a_policys_effect_with_one():
    from metrolab.harness.scenario.verdict import PointSummary, warnings

    def point(policy):
        return PointSummary("w", f"k-{policy}", f"100 km, {policy}", {"policy": policy, "distance_km": 100}, False, "ok",
                            repetitions=3, ci_low=-0.5, ci_high=-0.2)
    assert len(warnings([point("none")])) == 1                # the same network, faster: drift or a bug
    assert warnings([point("planned")]) == []                 # planned paths beat the default hash
