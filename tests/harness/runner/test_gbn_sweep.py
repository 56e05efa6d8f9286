"""The GBN sweep's pure parts: block orders, the paired summary, the models it puts beside it."""

import pytest

from metrolab.harness.runner.engine import block_order
from metrolab.harness.runner.gbn_sweep import GbnPoint, full_scale_model, lab_model, summarize

pytestmark = pytest.mark.unit
POINTS = [GbnPoint(d, p) for d in (0.0, 100.0) for p in (0.0, 1e-3)]


def test_each_block_has_its_own_order_and_a_resumed_run_the_same():
    orders = [block_order(POINTS, 7, "gbn", b) for b in range(6)]
    assert all(sorted(o, key=lambda x: x.key) == sorted(POINTS, key=lambda x: x.key) for o in orders)
    assert len({tuple(p.key for p in o) for o in orders}) > 1
    assert block_order(POINTS, 7, "gbn", 3) == orders[3]


def test_the_model_takes_the_lower_of_link_and_cpu_and_adds_fiber_to_the_base_rtt():
    cpu_bound = lab_model(baseline_gbps=0.05, link_rate_bps=200e6, distance_km=100, base_rtt_s=0.4e-3)
    assert cpu_bound.rate_bps == pytest.approx(0.05e9 * 1082 / 1024)
    assert cpu_bound.rtt_s == pytest.approx(0.4e-3 + 2 * 100 * 4.9e-6, rel=0.02)
    assert lab_model(5.0, 200e6, 0, 0.4e-3).rate_bps == 200e6
    full = full_scale_model(100)
    assert not full.window_bound and full.in_flight > 2000     # 100 Gb/s x 1 ms of 4 KiB packets


def test_summary_pairs_each_point_with_its_own_blocks_baseline():
    rows = []
    for b, drift in enumerate((1.0, 0.5, 0.8)):  # the machine runs at half speed in block 1
        for d in (0.0, 100.0):
            rows.append({"block": b, "distance_km": d, "loss": 0.0, "goodput_gbps": 0.1 * drift})
            rows.append({"block": b, "distance_km": d, "loss": 1e-3, "goodput_gbps": 0.09 * drift,
                         "seq_naks": 10, "qdisc_drops": 12})
    rows.append({"block": 2, "distance_km": 100.0, "loss": 1e-2, "error": "timed out"})
    out = {(r["distance_km"], r["loss"]): r for r in summarize(rows, 200e6, 0.4e-3)}
    lossy = out[(100.0, 1e-3)]
    # paired: 0.9 in every block despite the drift, so the interval is exact
    assert lossy["efficiency"] == pytest.approx(0.9) and lossy["eff_low"] == pytest.approx(0.9)
    assert lossy["within"] is False and lossy["model_error"] == pytest.approx(lossy["model_efficiency"] - 0.9)
    assert lossy["seq_naks"] == 10 and lossy["blocks"] == 3
    assert out[(100.0, 0.01)]["failed"] == 1 and out[(100.0, 0.01)]["blocks"] == 0
    assert out[(0.0, 0.0)]["efficiency"] == 1.0
    assert summarize([r for r in rows if r["loss"] != 0], 200e6, 0.4e-3) == []
