"""The BMWG drafts' KPIs: the load-balancing indices, the ratios a row derives, the JCT ratio's
interval, and the table in docs/kpis.md that maps them, kept equal to the code and naming only
columns a run really writes."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from metrolab.harness.scenario import kpis
from metrolab.harness.scenario.verdict import PointSummary
from metrolab.workloads.registry import WORKLOADS, workload_metrics

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[3] / "docs" / "kpis.md"


def test_jain_and_max_mean_read_balance_at_both_ends():
    assert kpis.jain([5, 5, 5, 5]) == pytest.approx(1.0) and kpis.max_mean([5, 5, 5, 5]) == pytest.approx(1.0)
    assert kpis.jain([9, 0, 0]) == pytest.approx(1 / 3) and kpis.max_mean([9, 0, 0]) == pytest.approx(3.0)
    assert kpis.jain([3, 1]) == pytest.approx(16 / 20) and kpis.max_mean([3, 1]) == pytest.approx(1.5)
    assert kpis.jain([0, 0]) is None and kpis.max_mean([]) is None


def test_a_row_derives_its_ratios_only_from_what_it_counted():
    row = {"ecn_marks": 30, "wan_packets": 1000, "rdma_retries": 2, "rdma_sent_pkts": 400, "tcp_retrans_segs": 0,
           "tcp_sent_segs": 800, "ttft_p50_s": 0.2, "kv_transfer_p50_s": 0.05, "busbw_gbs": 0.02, "line_rate_bps": 200e6}
    assert kpis.derive(row) == pytest.approx({"ecn_marked_ratio": 0.03, "rdma_retx_ratio": 0.005, "tcp_retx_ratio": 0.0,
                                              "ttft_fabric_share": 0.25, "busbw_line_ratio": 0.8})
    assert kpis.derive({"ecn_marks": 3, "wan_packets": 0, "busbw_gbs": 1.0, "line_rate_bps": None}) == {}


def test_the_jct_ratio_is_efficiencys_reciprocal_with_its_interval_turned_round():
    assert kpis.jct_ratio(0.8, 0.5, 1.0) == pytest.approx((1.25, 1.0, 2.0))
    ratio, low, high = kpis.jct_ratio(0.9, 0.0, 1.1)
    assert ratio == pytest.approx(1 / 0.9) and low == pytest.approx(1 / 1.1) and math.isinf(high)
    assert kpis.jct_ratio(None, None, None) == (None, None, None)


def test_every_kpi_names_a_column_a_run_writes():
    point_fields = {f.name for f in dataclasses.fields(PointSummary)}
    written = set(workload_metrics(list(WORKLOADS))) | {"step_time_s"} | point_fields
    for k in kpis.KPIS:
        assert not k.metric or k.metric in written, k
        assert k.metric or k.how.startswith(("not covered", "metrolab run")), k
    for c in kpis.TRAINING_CASES + kpis.INFERENCE_CASES:
        assert bool(c.runs) == bool(c.metrics), c
        assert c.runs or c.note.startswith("not covered"), c


def test_docs_kpis_shows_the_tables_the_code_has():
    assert kpis.markdown() in DOC.read_text(), "regenerate: python -m metrolab.harness.scenario.kpis"
