"""Planned per-flow paths: conflict-free, balanced by bytes (pure)."""

from __future__ import annotations

import pytest

from metrolab.harness.policy.planner import Flow, imbalance, path_bytes, plan

pytestmark = pytest.mark.unit


def elephants(n: int, size: int = 1 << 30) -> list[Flow]:
    return [Flow("10.1.0.2", "10.2.0.2", 40000 + i, 4791, 17, size) for i in range(n)]


def test_eight_equal_elephants_split_evenly_over_two_paths():
    flows = elephants(8)
    a = plan(flows, ["wan-1", "wan-2"])
    load = path_bytes(flows, a, ["wan-1", "wan-2"])
    assert load == {"wan-1": 4 << 30, "wan-2": 4 << 30} and imbalance(load) == 1.0
    assert set(a) == {f.key for f in flows}  # every flow pinned to exactly one path


def test_unequal_flows_stay_within_the_lpt_bound():
    flows = [Flow("10.1.0.2", "10.2.0.2", 1000 + i, 4791, 17, b) for i, b in enumerate([7, 5, 4, 3, 3, 2])]
    load = path_bytes(flows, plan(flows, ["p1", "p2"]), ["p1", "p2"])
    assert sum(load.values()) == 24 and max(load.values()) <= 13  # optimum 12, LPT <= 4/3 of it
    assert plan(flows, ["p1", "p2"]) == plan(list(reversed(flows)), ["p1", "p2"])  # deterministic


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="no paths"):
        plan(elephants(2), [])
    with pytest.raises(ValueError, match="twice"):
        plan(elephants(2) + elephants(1), ["p1"])
    assert imbalance({"p1": 5, "p2": 0}) == float("inf") and imbalance({"p1": 0, "p2": 0}) == 1.0


def test_hash_efficiency_of_synchronized_flows():
    from metrolab.harness.policy.planner import hash_efficiency
    # 8 flows on 2 paths: 4/4 with p = 70/256 (efficiency 1), 5/3 112/256 (0.8), 6/2 56/256 (2/3),
    # 7/1 16/256 (4/7), 8/0 2/256 (1/2)
    expected = (70 * 1 + 112 * 0.8 + 56 * 2 / 3 + 16 * 4 / 7 + 2 * 0.5) / 256
    assert hash_efficiency(8, 2) == pytest.approx(expected)
    assert hash_efficiency(1, 2) == pytest.approx(0.5)       # one flow uses one path of two
    assert hash_efficiency(1, 1) == 1.0
    # more flows average out, but synchronized elephants stay short of planned paths' ~1
    effs = [hash_efficiency(n, 2) for n in (4, 8, 16, 32)]
    assert effs == sorted(effs) and effs[-1] < 0.95
