"""Inference delivery without a lab: the model's bytes, the delivery model (unicast vs chain) and
what the built-in scenario predicts."""

from __future__ import annotations

import hashlib

import pytest

from metrolab.harness.scenario.points import Point
from metrolab.harness.scenario.predict import make_predictor
from metrolab.harness.scenario.spec import load_scenario
from metrolab.netem.models import fiber_delay_s
from metrolab.workloads import models as wm
from metrolab.workloads.delivery import CHUNK, DeliveryParams, model_bytes

pytestmark = pytest.mark.unit


def test_the_model_is_the_same_everywhere_and_sized_to_the_scale():
    a, b = model_bytes(100_000, 3), model_bytes(100_000, 3)
    assert a == b and len(a) == 100_000 and a != model_bytes(100_000, 4)
    assert hashlib.sha256(a).digest() != hashlib.sha256(a[:-1] + b"\0").digest()
    assert DeliveryParams(model_size="13.5g").sizes(1000)[0] == int(13.5 * 2 ** 30 / 1000)
    assert DeliveryParams(model_size="1m").sizes(1e6)[0] == CHUNK  # never below one chunk


def test_a_chain_beats_copies_that_share_the_source_link():
    access, wan_b, wan_c = wm.Path(100e6), wm.Path(400e6, 0.0005), wm.Path(400e6, 0.0004)
    unicast = wm.fair_share_paths([[access, wan_b], [access, wan_c]])
    chain = wm.fair_share_paths([[access, wan_b], [wan_b, wan_c]])  # a1 -> b1, b1 -> c1
    u, c = wm.delivery_s(10e6, "unicast", unicast), wm.delivery_s(10e6, "chain", chain)
    assert u == pytest.approx(2 * c, rel=0.05)
    # longer never faster; a third site never faster
    far = wm.fair_share_paths([[access, wm.Path(400e6, 0.0025)], [access, wan_c]])
    assert wm.delivery_s(10e6, "unicast", far) > u
    three = wm.fair_share_paths([[access, wan_b], [access, wan_c], [access, wan_c]])
    assert wm.delivery_s(10e6, "unicast", three) > u
    with pytest.raises(ValueError, match="mode"):
        wm.delivery_s(1, "multicast", unicast)


def test_the_builtin_scenario_predicts_unicast_slower_and_distance_costly():
    scn = load_scenario("inference-delivery")
    w = scn.spec.workloads[0]
    steps = {}
    for mode in ("unicast", "chain"):
        params = dict(w.params) | {"mode": mode}
        pred = make_predictor(scn, w, list(w.hosts), params, list(scn.spec.sweep.links), scn.spec.scale)
        pred.fit(Point(baseline=True), 1.0)
        fitted = [pred.predict(Point(distance_km=d)) for d in (50, 100, 250, 500)]
        assert fitted == sorted(fitted)
        steps[mode] = [pred._model(Point(distance_km=d))(0.0) for d in (50, 100, 250, 500)]  # the network's part
    # unicast: s1's and s2's copies share wan-as (100 Mbit/s each); the chain runs at the WAN's 200
    assert all(u > c for u, c in zip(steps["unicast"], steps["chain"], strict=True))
    # the chain pays every hop's delay: a1 -> b1 (wan-ab), b1 -> s1 (wan-bs), s1 -> s2 (its site)
    assert steps["chain"][3] - steps["chain"][1] > 2 * (fiber_delay_s(500) - fiber_delay_s(100))
