"""Multi-agent A2A without a lab: the delegation chain a spec gives, its errors, and the task model."""

from __future__ import annotations

import pytest

from metrolab.harness.errors import SpecError
from metrolab.harness.scenario.points import Point
from metrolab.harness.scenario.predict import make_predictor
from metrolab.harness.scenario.spec import load_scenario, scenario_from_data
from metrolab.netem.models import fiber_delay_s
from metrolab.workloads import models as wm
from metrolab.workloads.a2a import A2AParams, chain_of

pytestmark = pytest.mark.unit


def test_the_chain_skips_the_intruders_unless_given():
    hosts = ["a1", "b1", "s1", "a2", "s2"]
    assert chain_of(A2AParams(intruders=["s2"]), hosts) == ["a1", "b1", "s1", "a2"]
    assert chain_of(A2AParams(chain=["s1", "b1"]), hosts) == ["a1", "s1", "b1"]
    assert A2AParams(request_bytes="64k").sizes(1000) == (65, 16)
    assert A2AParams().sizes(1e9) == (1, 1)


@pytest.mark.parametrize("params,field,why", [
    ({"intruders": ["a1"]}, "params.intruders[0]", "not an agent host after the first"),
    ({"intruders": ["b1"], "chain": ["b1", "s1"]}, "params.chain", "intruders in the chain: b1"),
    ({"chain": ["b1", "b1"]}, "params.chain", "appears twice"),
    ({"chain": ["x9"]}, "params.chain[0]", "not an agent host"),
])
def test_bad_chains_are_refused_by_field(params, field, why):
    data = {"name": "a2a", "topology": "default", "sweep": {"distance_km": [100]},
            "workloads": [{"kind": "a2a", "hosts": ["a1", "b1", "s1"], "params": params}]}
    with pytest.raises(SpecError) as err:
        scenario_from_data(data, "a2a.yaml")
    assert field in str(err.value) and why in str(err.value)


def test_a_task_pays_each_hop_both_ways():
    hops = [wm.Path(200e6, fiber_delay_s(100)), wm.Path(200e6, fiber_delay_s(80))]
    t = wm.a2a_task_s(hops, 3, 0.02, 65, 16, task_rate=5)
    assert t == pytest.approx(3 * 0.02 + 2 * (fiber_delay_s(100) + fiber_delay_s(80)), rel=0.01)
    far = [wm.Path(200e6, fiber_delay_s(500)), hops[1]]
    assert wm.a2a_task_s(far, 3, 0.02, 65, 16, task_rate=5) > t


def test_the_builtin_scenario_predicts_three_hops_of_delay():
    scn = load_scenario("a2a")
    w = scn.spec.workloads[0]
    pred = make_predictor(scn, w, list(w.hosts), dict(w.params), list(scn.spec.sweep.links), scn.spec.scale)
    pred.fit(Point(baseline=True), 0.1)
    near, far = (pred.predict(Point(distance_km=d)) for d in (100, 500))
    # a1 -> b1 -> s1 -> a2: three WAN crossings each way, every swept link at the point's distance
    assert far - near == pytest.approx(6 * (fiber_delay_s(500) - fiber_delay_s(100)), rel=0.02)
