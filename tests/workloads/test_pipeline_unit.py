"""The cloud–edge pipeline's parameters and its GPipe step model (pure, no lab): physics first
(a longer or slower boundary never makes a step faster), then the figures a hand calculation gives."""

from __future__ import annotations

import pytest

from metrolab.harness.errors import SpecError
from metrolab.harness.scenario.points import Point
from metrolab.harness.scenario.predict import make_predictor
from metrolab.harness.scenario.spec import load_scenario, scenario_from_data
from metrolab.netem.models import fiber_delay_s
from metrolab.workloads import models as wm
from metrolab.workloads.pipeline import HEADER, PipelineParams

pytestmark = pytest.mark.unit

LAN = wm.Path(None)


def test_a_free_network_leaves_gpipes_bubble():
    f, b, p, m = 0.01, 0.02, 4, 8
    step = wm.pipeline_step_s([(f, b)] * p, m, 1, [LAN] * (p - 1))
    # (m + p - 1) beats of (f + b), plus the LAN's microseconds
    assert step == pytest.approx((m + p - 1) * (f + b), rel=1e-3)
    assert 1 - m * (f + b) / step == pytest.approx(wm.ideal_bubble(p, m), rel=1e-2)
    assert wm.ideal_bubble(1, 8) == 0 and wm.ideal_bubble(4, 8) == pytest.approx(3 / 11)


def test_distance_is_paid_once_per_crossing_per_phase():
    stages = [(0.01, 0.02)] * 4
    near = [LAN, wm.Path(200e6, fiber_delay_s(100)), LAN]
    far = [LAN, wm.Path(200e6, fiber_delay_s(500)), LAN]
    a, b = (wm.pipeline_step_s(stages, 8, 10_000, x) for x in (near, far))
    # the fill of each phase crosses the WAN once: forward and backward
    assert b - a == pytest.approx(2 * (fiber_delay_s(500) - fiber_delay_s(100)))
    # two crossings (the embeddings on premises, the blocks in the cloud) pay twice as much
    two = [wm.Path(200e6, fiber_delay_s(500)), LAN, wm.Path(200e6, fiber_delay_s(500))]
    assert wm.pipeline_step_s(stages, 8, 10_000, two) > b


def test_a_link_slower_than_the_compute_sets_the_beat():
    stages = [(0.001, 0.002)] * 2
    slow = wm.Path(1e6)
    wire = 100_000 * 8 / wm.goodput_bps(slow)  # ~0.83 s a micro-batch
    step = wm.pipeline_step_s(stages, 8, 100_000, [slow])
    # each phase: both stages' compute, the fill's crossing, then 7 more micro-batches a wire time apart
    assert step == pytest.approx(2 * (wire + 7 * wire) + 2 * 0.001 + 2 * 0.002, rel=1e-6)
    # never faster when the link is slower, the path longer or the messages larger
    assert wm.pipeline_step_s(stages, 8, 100_000, [wm.Path(2e6)]) < step
    assert wm.pipeline_step_s(stages, 8, 100_000, [wm.Path(1e6, 0.005)]) > step
    assert wm.pipeline_step_s(stages, 8, 200_000, [slow]) > step
    with pytest.raises(ValueError, match="3 boundaries"):
        wm.pipeline_step_s([(0.1, 0.2)] * 4, 8, 1, [slow])


def test_params_size_the_activations_and_split_the_compute():
    p = PipelineParams(model="gpt2-small")
    assert p.boundary_bytes(1.0) == 1024 * 8 * 768 * 2  # tokens x hidden x bf16
    assert p.boundary_bytes(1000.0) == 1024 * 8 * 768 * 2 // 1000
    assert p.boundary_bytes(1e12) == HEADER + 1  # never smaller than what identifies it
    even = p.stage_compute_s(4)
    assert even[0][1] == pytest.approx(2 * even[0][0]) and len(set(even)) == 1
    slow = PipelineParams(model="gpt2-small", stage_slowdown=[1, 4]).stage_compute_s(2)
    assert slow[1][0] == pytest.approx(4 * slow[0][0])
    with pytest.raises(ValueError, match="unknown model"):
        PipelineParams(model="gpt5")


def test_a_slowdown_per_stage_is_checked_against_the_hosts():
    data = {"name": "pp", "topology": "default", "sweep": {"distance_km": [100]},
            "workloads": [{"kind": "pipeline", "hosts": ["s1", "a1", "a2", "s2"],
                           "params": {"stage_slowdown": [1, 2]}}]}
    with pytest.raises(SpecError) as err:
        scenario_from_data(data, "pp.yaml")
    assert "stage_slowdown" in str(err.value) and "s1, a1, a2, s2" in str(err.value)


def test_the_builtin_scenario_predicts_a_longer_link_slower():
    scn = load_scenario("cloud-edge")
    w = scn.spec.workloads[0]
    site = [scn.topology.nodes[h].site for h in w.hosts]
    assert site[0] == site[-1] != site[1]  # the embeddings on premises, the blocks in the cloud
    pred = make_predictor(scn, w, list(w.hosts), dict(w.params), list(scn.spec.sweep.links), scn.spec.scale)
    base = Point(baseline=True)
    pred.fit(base, 1.0)
    steps = [pred.predict(Point(distance_km=d)) for d in (0, 100, 250, 500)]
    assert steps == sorted(steps) and steps[0] == pytest.approx(1.0)
    # two crossings, each paid forward and backward: 4 one-way delays at 500 km
    assert steps[-1] - steps[0] == pytest.approx(4 * fiber_delay_s(500), rel=0.05)
