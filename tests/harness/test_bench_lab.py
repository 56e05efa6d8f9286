"""`metrolab bench noise` on the netns backend: the baseline against an identical 0 km point."""

from __future__ import annotations

import json

import pytest

from tests.support.runs import metrolab, scenario

pytestmark = pytest.mark.requires("netns")


def test_bench_noise_reports_the_null_interval(tmp_path):
    # a rate-limited WAN without delay: the host kernel runs it (TBF), no guest needed
    res = metrolab("bench", "noise", "--scenario", str(scenario(tmp_path)), "--blocks", "3", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["blocks"] == 3
    assert out["null_ci_low"] <= out["null_degradation"] <= out["null_ci_high"]
    assert out["null_ci_halfwidth"] == pytest.approx((out["null_ci_high"] - out["null_ci_low"]) / 2)
    assert out["cv"] >= 0 and out["step_time_s"] > 0
    assert out["capacity_ratio"] > 0  # measured before the sweep, the workload's transport unshaped
    assert isinstance(out["ok"], bool) and isinstance(out["decidable_at_5pct"], bool)
