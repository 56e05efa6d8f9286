"""Headroom arithmetic (no lab): which hosts and transport a workload's capacity is measured with,
the emulated line rate of its path, and the extra scale factor that brings the ratio under a limit."""

from __future__ import annotations

import pytest

from metrolab.harness.runner import headroom as hr
from metrolab.harness.scenario.spec import load_scenario

pytestmark = pytest.mark.unit


def test_extra_scale_is_the_smallest_1_2_5_factor_under_the_limit():
    assert hr.extra_scale(0.3, 0.5) == 1
    assert hr.extra_scale(0.9, 0.5) == 2
    assert hr.extra_scale(1.05, 0.5) == 5          # 1.05 / 2 = 0.525 is still over
    assert hr.extra_scale(40, 0.5) == 100
    assert hr.extra_scale(1e6, 0.5) == 2e6          # beyond the table: the exact factor


def test_a_resumed_run_keeps_its_scale_only_where_rows_were_measured_at_it():
    assert hr.run_scale([0.6], 0.5, True, None, rows_recorded=False) == (2.0, None)
    assert hr.run_scale([0.6], 0.5, False, None, rows_recorded=False) == (1.0, None)
    # rows at 1.0 in the record: a resumed guest that reads 0.60 keeps 1.0, and its rows say host-bound
    extra, why = hr.run_scale([0.6], 0.5, True, 1.0, rows_recorded=True)
    assert extra == 1.0 and "kept" in why
    # lost before any row (the stop-48 main job: a guest crash in the warm passes): decided again
    extra, why = hr.run_scale([0.6], 0.5, True, 1.0, rows_recorded=False)
    assert extra == 2.0 and "decided again (was 1)" in why


def test_pairs_transports_and_line_rates_of_the_builtin_workloads():
    scn = load_scenario("disaggregated-training")
    w = scn.spec.workloads[0]
    assert hr.pair_of(w.kind, w.params, ["a1", "a2", "s1"], scn.topology) == ("s1", "a1")
    assert hr.transport_of(w.kind, {"transport": "tcp"}) == "tcp" and hr.transport_of(w.kind, {}) == "rdma"
    assert hr.transport_of("collective", {"backend": "verbs"}) == "rdma"
    main = load_scenario("allreduce-distance")
    assert hr.line_rate(main.topology, "a1", "b1") == 200e6          # the WAN, not the 400 Mbit/s access
    assert hr.line_rate(main.topology, "a1", "b1", rate_divisor=5) == 40e6
    h = hr.Headroom("w", "tcp", ("a1", "b1"), True, 200e6, 400e6, 0.5)
    assert not h.host_bound and hr.Headroom("w", "tcp", ("a", "b"), True, capacity_ratio=0.6).host_bound
    assert hr.Headroom("w", "tcp", ("a", "b"), False, utilization=0.9).overloaded
    assert hr.Headroom("w", "tcp", ("a", "b"), False, cpu_load=0.85).to_dict()["cpu_bound"]
    assert not hr.Headroom("w", "tcp", ("a", "b"), False, cpu_load=0.85, max_cpu_load=0.9).cpu_bound

