"""bench rdma's judgement (metrolab.harness.runner.rdma_commands.ratio_verdict): a ratio per paired
round, judged on their interval, never on one pair of runs."""

from __future__ import annotations

import pytest

import metrolab
from metrolab.harness.errors import SpecError
from metrolab.harness.runner.rdma_commands import bench_rdma, ratio_verdict

pytestmark = pytest.mark.unit


def test_the_target_is_judged_on_the_interval_of_the_rounds_ratios():
    # latency medians (us) as today's guest swings them: ours near perftest's in every round
    steady = ratio_verdict([210, 380, 1200, 640, 300], [200, 350, 1100, 700, 260], "<=", 1.5)
    assert steady["verdict"] == "pass" and steady["ratio_low"] <= steady["ratio"] <= steady["ratio_high"] < 1.5
    # one round's pair alone would have read 3.3x: the rounds straddle the target, so no verdict
    swinging = ratio_verdict([1000, 300, 700, 330], [300, 310, 450, 320], "<=", 1.5)
    assert swinging["verdict"] == "inconclusive" and "straddles" in swinging["reason"]
    # a tool at half perftest's bandwidth in every round fails the 0.8 target
    slow = ratio_verdict([0.40, 0.52, 0.31], [0.80, 1.0, 0.62], ">=", 0.8)
    assert slow["verdict"] == "fail" and slow["ratio_high"] < 0.8
    assert ratio_verdict([1.0], [1.0], "<=", 1.5)["verdict"] == "inconclusive"  # one round: no interval


def test_one_round_is_refused_before_any_lab_or_guest_is_built():
    for call in (bench_rdma, metrolab.bench_rdma):
        with pytest.raises(SpecError, match="--rounds"):
            call(rounds=1)
