"""Multi-agent A2A on the host kernel (netns lab, nftables allow-lists, Ray, gloo for the group):
tasks go down the chain and back over connections that stay open, and an agent outside the
allow-list reaches every other agent without the policy and none with it."""

from __future__ import annotations

import pytest

from metrolab.harness.runner.run import run_scenario
from metrolab.harness.scenario.spec import scenario_from_data
from tests.support.labs import fl_sites

pytestmark = pytest.mark.requires("netns")


def test_delegation_chains_and_an_intruder_the_allow_list_stops(tmp_path):
    allow = [{"a": a, "b": b, "ports": [29650], "proto": "tcp"} for a, b in (("a1", "b1"), ("b1", "c1"))]
    data = {"name": "a2a", "topology": fl_sites(),
            "policies": [{"name": "agents-allow", "allow": allow}],
            "workloads": [{"kind": "a2a", "hosts": ["a1", "b1", "c1", "a2"],
                           "params": {"port": 29650, "intruders": ["a2"], "think_s": 0.05, "tasks": 6,
                                      "task_rate": 10}}],
            "sweep": {"links": ["wan-ab"], "policy": ["none", "agents-allow"]},
            "repetitions": 2, "warmups": 1, "scale": 1000,
            "acceptance": ["intruder_reached == 0 where policy in {agents-allow}", "reconnects == 0"]}
    out = run_scenario(scenario_from_data(data, "a2a.yaml", quick=True), tmp_path / "run")
    assert out.verdict.passed, [(r.label, r.message) for r in out.verdict.results if not r.passed]
    pts = {p.fields["policy"]: p.metrics for p in out.verdict.points if not p.baseline}
    # the intruder beside the orchestrator tries the three agents: all answer without the list
    assert pts["none"]["intruder_attempts"] == pts["agents-allow"]["intruder_attempts"] == 3
    assert pts["none"]["intruder_reached"] == 3 and pts["agents-allow"]["intruder_reached"] == 0
    for m in pts.values():
        assert m["tasks_done"] == 6 and m["reconnects"] == 0
        # three agents think 50 ms each on every task: the floor of its latency
        assert 0.15 <= m["task_p50_s"] <= m["task_p99_s"] < 1.0, m
