"""`metrolab bench noise` and `bench lab` on the netns backend."""

from __future__ import annotations

import json
import os

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


def test_bench_lab_builds_the_grid_and_leaves_nothing():
    """`metrolab bench lab` builds and removes a 4-site x 4-host lab: its figures name that lab (a
    leaf and four hosts a site; the leaves' full mesh and every access link), and no namespace of it
    remains (its speed targets are the benchmark's to report, not this test's)."""
    before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    res = metrolab("bench", "lab", "--repeat", "1", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert (out["namespaces"], out["links"], out["repeat"]) == (4 * (1 + 4), 4 * 3 // 2 + 4 * 4, 1), out
    assert out["build_s"] > 0 and out["teardown_s"] > 0 and isinstance(out["build_ok"], bool)
    after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert after <= before, sorted(after - before)
