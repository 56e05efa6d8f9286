"""Events on a repetition's timeline (metrolab.harness.scenario.events): the spec, the windows they make,
and the attribution of steps to what was applied: pure, no lab."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from metrolab.harness.errors import SpecError
from metrolab.harness.scenario.events import EventSpec, Window, impact, percentile99, timeline
from metrolab.harness.scenario.points import Point
from metrolab.harness.scenario.spec import scenario_from_data

pytestmark = pytest.mark.unit


def test_times_rates_and_probabilities_parse_with_their_units():
    e = EventSpec(kind="rate", link="wan", at="500ms", duration=2, rate="50mbit")
    assert (e.at, e.duration, e.rate) == (0.5, 2.0, 50e6)
    assert EventSpec(kind="loss", link="wan", at=0, loss="1%").loss == 0.01
    assert EventSpec(kind="delay", link="wan", at=0, distance_km=100).added_delay_s() == pytest.approx(489.7e-6, rel=1e-3)
    assert EventSpec(kind="delay", link="wan", at=0, delay="2ms").added_delay_s() == 0.002


@pytest.mark.parametrize("fields,message", [
    ({"kind": "flap", "link": "wan", "at": 1}, "needs period"),
    ({"kind": "loss", "at": 1, "loss": 0.1}, "needs link"),
    ({"kind": "node-down", "at": 1}, "needs node"),
    ({"kind": "delay", "link": "wan", "at": 1}, "delay or distance_km"),
    ({"kind": "delay", "link": "wan", "at": 1, "delay": 1, "distance_km": 10}, "delay or distance_km"),
    ({"kind": "link-down", "link": "wan", "at": -1}, "at >= 0"),
    ({"kind": "link-down", "link": "wan", "at": 1, "duration": 0}, "duration must be > 0"),
    ({"kind": "loss", "link": "wan", "at": 1, "loss": 2}, "outside [0, 1]"),
    ({"kind": "reboot", "link": "wan", "at": 1}, "link-down"),
])
def test_an_incomplete_event_is_refused_with_the_reason(fields, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        EventSpec(**fields)


def test_a_flap_is_count_windows_of_half_a_period_down_in_time_order():
    events = [EventSpec(kind="flap", link="a", at=2, period=2, count=3),
              EventSpec(kind="loss", link="b", at=1, duration=0.5, loss=0.01),
              EventSpec(kind="rate", link="b", at=3, rate="1mbit")]
    assert timeline(events) == [Window(1, "loss", 1.0, 1.5), Window(0, "link-down", 2.0, 3.0),
                                Window(2, "rate", 3.0, None), Window(0, "link-down", 4.0, 5.0),
                                Window(0, "link-down", 6.0, 7.0)]


def test_events_never_touch_a_baseline_and_follow_their_point_filter():
    e = EventSpec(kind="link-down", link="wan", at=1, point={"distance_km": 100, "algo": "flat"})
    assert e.applies_to(Point(distance_km=100, params=(("algo", "flat"),)))
    assert not e.applies_to(Point(distance_km=100, params=(("algo", "hierarchical"),)))
    assert not e.applies_to(Point(distance_km=0, params=(("algo", "flat"),), baseline=True))
    assert EventSpec(kind="link-down", link="wan", at=1).applies_to(Point(distance_km=0))


def steps_of(durations: list[float], t: float = 100.0) -> list[tuple[float, float]]:
    out = []
    for d in durations:
        out.append((t, t + d))
        t += d
    return out


def test_an_outage_is_charged_to_the_steps_it_overlaps_and_recovery_is_timed():
    # steps of 1 s, an outage from 103.5 to 105: the step it starts in runs 3 s, one after it 1.5 s
    steps = steps_of([1.0, 1.0, 1.02, 3.0, 1.5, 1.0, 1.0])
    got = impact(steps, [(103.5, 105.0)])
    assert got.steady_steps == 3 and got.steady_p99_s == pytest.approx(percentile99([1.0, 1.0, 1.02]))
    assert [bool(w) for w in got.per_step] == [False, False, False, True, False, False, False]
    assert got.event_steps == 1 and got.event_step_max_s == 3.0
    assert got.slow_steps == 2 and got.recovery_steps == 2 and got.zero_impact is False
    assert got.recovery_s == pytest.approx(107.52 - 105.0)  # the 1.5 s step ended 2.52 s after the outage
    m = got.metrics()
    assert m["zero_impact"] == 0.0 and m["event_steps"] == 1.0


def test_a_change_the_steps_never_felt_is_zero_impact():
    steps = steps_of([1.0, 1.1, 1.0, 1.05, 1.0])
    got = impact(steps, [(102.5, 102.7)])
    assert got.event_steps == 1 and got.slow_steps == 0 and got.zero_impact is True
    assert got.recovery_steps == 0 and got.recovery_s == 0.0


def test_what_cannot_be_judged_is_none_not_a_verdict():
    steps = steps_of([2.0, 2.0])
    # a change from the first moment: no steady step to compare against
    early = impact(steps, [(99.0, 101.0)])
    assert early.steady_p99_s is None and early.zero_impact is None and early.recovery_s is None
    # still in force when the steps ended: recovery was never seen
    late = impact(steps_of([1.0, 1.0, 1.0, 5.0]), [(102.5, None)])
    assert late.steady_p99_s == 1.0 and late.slow_steps == 1 and late.zero_impact is False
    assert late.recovery_steps is None and late.recovery_s is None
    # no change applied (the steps ended first): nothing touched, nothing slow
    none = impact(steps, [])
    assert none.event_steps == 0 and none.slow_steps == 0 and none.zero_impact is True


TOPO = "rdma-pair"  # harness/topologies/: a1 -- gw-a == wan == gw-b -- b1


def scenario(events: list[dict], kind: str = "training-step") -> dict:
    return {"name": "ev", "topology": TOPO, "workloads": [{"kind": kind, "hosts": ["a1", "b1"]}],
            "sweep": {"links": ["wan"], "distance_km": [10]}, "events": events}


def test_a_scenario_names_what_its_events_refer_to():
    ok = scenario_from_data(scenario([{"kind": "flap", "link": "wan", "at": "1s", "period": "2s"}]), "ev.yaml")
    assert ok.spec.events[0].period == 2.0
    for events, path, value in [
        ([{"kind": "link-down", "link": "wan-9", "at": 1}], "events[0].link", "wan-9"),
        ([{"kind": "node-down", "node": "a1", "at": 1}], "events[0].node", "a1"),
        ([{"kind": "link-down", "link": "wan", "at": 1, "point": {"colour": 1}}], "events[0].point.colour", "colour"),
    ]:
        with pytest.raises(SpecError) as exc:
            scenario_from_data(scenario(events), "ev.yaml")
        assert exc.value.path == path and exc.value.value == value and exc.value.file == "ev.yaml", exc.value
    with pytest.raises(SpecError) as exc:
        scenario_from_data(scenario([{"kind": "link-down", "link": "wan", "at": 1}], kind="collective"), "ev.yaml")
    assert exc.value.path == "workloads[0].kind" and "times each step" in exc.value.message
