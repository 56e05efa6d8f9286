"""Policy specs in a scenario: what they may name, and the errors a wrong one gets (pure)."""

from __future__ import annotations

import pytest

from metrolab.harness.errors import SpecError, SpecErrors
from metrolab.harness.scenario.spec import scenario_from_data
from tests.support.labs import metro, site

pytestmark = pytest.mark.unit

TOPO = metro(site("aidc-a", "a1", "a2"), site("aidc-b", "b1"), wan={"wan-1": ("gw-a", "gw-b"), "wan-2": ("gw-a", "gw-b")},
             name="t", rate="200mbit")

GOOD = [
    {"name": "deep", "links": ["wan-1", "wan-2"], "flow_control": {"kind": "deep-buffer"}},
    {"name": "shallow", "links": ["wan-1"], "flow_control": {"kind": "tail-drop", "buffer": "32k"}},
    {"name": "planned", "switches": ["gw-a", "gw-b"], "load_balancing": {"kind": "planned"}},
    {"name": "tenants", "links": ["wan-1"], "slices": [
        {"name": "train", "dscp": 26, "guaranteed": "150mbit", "ceiling": "200mbit"},
        {"name": "bulk", "source": "a2", "guaranteed": "20mbit"}]},
    {"name": "agents", "allow": [{"a": "a1", "b": "b1", "ports": [29500], "proto": "tcp"}]},
]


def scenario(policies, sweep_policy):
    return scenario_from_data({"name": "p", "topology": TOPO, "workloads": [{"kind": "collective"}],
                               "sweep": {"links": ["wan-1"], "policy": sweep_policy}, "policies": policies},
                              "p.yaml")


def test_policies_are_a_sweep_dimension():
    scn = scenario(GOOD, ["none", "deep", "planned", "tenants", "agents"])
    assert [p.name for p in scn.spec.policies] == ["deep", "shallow", "planned", "tenants", "agents"]
    assert scn.spec.policies[1].flow_control.buffer == 32 * 1024
    assert scn.spec.policies[3].slices[0].guaranteed == 150e6


@pytest.mark.parametrize("policies,sweep,where,text", [
    (GOOD, ["none", "dep"], "sweep.policy[1]", "unknown policy"),
    ([{"name": "x", "links": ["wan-9"], "flow_control": {"kind": "ecn"}}], ["x"], "policies[0].links[0]", "no such link"),
    ([{"name": "x", "switches": ["a1"], "load_balancing": {"kind": "ecmp-l4"}}], ["x"], "policies[0].switches[0]",
     "not a switch"),
    ([{"name": "x", "flow_control": {"kind": "ecn"}}], ["x"], "policies[0].links", "apply to links"),
    ([{"name": "x", "links": ["wan-1"], "slices": [{"name": "s", "dscp": 1, "guaranteed": "150mbit"},
                                                  {"name": "t", "dscp": 2, "guaranteed": "100mbit"}]}], ["x"],
     "policies[0].slices", "exceed link wan-1"),
    ([{"name": "x", "links": ["wan-1"], "slices": [{"name": "s", "dscp": 1, "source": "a1", "guaranteed": "1mbit"}]}],
     ["x"], "policies[0].slices[0]", "exactly one of dscp or source"),
    ([{"name": "x", "links": ["wan-1"], "slices": [{"name": "s", "dscp": 1, "guaranteed": "9mbit",
                                                   "ceiling": "5mbit"}]}], ["x"], "policies[0].slices[0]",
     "below its guaranteed"),
    ([{"name": "x", "allow": [{"a": "a1", "b": "zz"}]}], ["x"], "policies[0].allow[0].b", "not a host"),
    ([{"name": "x", "allow": [{"a": "a1", "b": "b1", "ports": [70000]}]}], ["x"], "policies[0].allow[0].ports",
     "not in 1..65535"),
    ([{"name": "x", "links": ["wan-1"], "flow_control": {"kind": "tail-drop", "buffer": 100}}], ["x"],
     "policies[0].flow_control.buffer", "at least one 1500-byte packet"),
    ([{"name": "x"}], ["x"], "policies[0]", "sets nothing"),
    ([{"name": "x", "links": ["a1-gw-a"], "flow_control": {"kind": "pause"}}], ["x"], "policies[0].flow_control",
     "name the upstream link"),
    ([{"name": "x", "links": ["a1-gw-a", "a2-gw-a"], "flow_control": {"kind": "backpressure", "upstream": "wan-1"}}],
     ["x"], "policies[0].links", "name exactly one"),
    ([{"name": "x", "links": ["b1-gw-b"], "flow_control": {"kind": "pause", "upstream": "wan-9"}}], ["x"],
     "policies[0].flow_control.upstream", "no such link"),
    ([{"name": "x", "links": ["b1-gw-b"], "flow_control": {"kind": "pause", "upstream": "a1-gw-a"}}], ["x"],
     "policies[0].flow_control.upstream", "shares no single node with b1-gw-b"),
    ([{"name": "x", "links": ["wan-1"], "flow_control": {"kind": "pause", "upstream": "wan-2"}}], ["x"],
     "policies[0].flow_control.upstream", "shares no single node"),  # parallel links meet at both ends
    ([{"name": "x", "links": ["b1-gw-b"], "flow_control": {"kind": "pause", "upstream": "wan-1"}}], ["x"],
     "policies[0].links", "needs a rate on b1-gw-b"),
    ([{"name": "x", "links": ["wan-1"], "flow_control": {"kind": "ecn", "upstream": "wan-2"}}], ["x"],
     "policies[0].flow_control", "are for pause and backpressure"),
])
def test_bad_policies_are_named(policies, sweep, where, text):
    with pytest.raises((SpecError, SpecErrors)) as e:
        scenario(policies, sweep)
    errs = e.value.errors if isinstance(e.value, SpecErrors) else [e.value]
    assert any(er.path.startswith(where) and text in er.message for er in errs), [(er.path, er.message) for er in errs]


def test_pause_policies_name_their_congested_link_and_upstream():
    topo = {**TOPO, "sites": [TOPO["sites"][0], {**TOPO["sites"][1], "access": {"switch": "gw-b", "rate": "20mbit"}}]}
    scn = scenario_from_data({"name": "p", "topology": topo, "workloads": [{"kind": "collective"}],
                              "sweep": {"links": ["wan-1"], "policy": ["pfc", "bp"]}, "policies": [
                                  {"name": "pfc", "links": ["b1-gw-b"],
                                   "flow_control": {"kind": "pause", "upstream": "wan-1", "headroom": "64k"}},
                                  {"name": "bp", "links": ["b1-gw-b"],
                                   "flow_control": {"kind": "backpressure", "upstream": "wan-2", "response": "20ms"}}]},
                             "p.yaml")
    pfc, bp = (p.flow_control for p in scn.spec.policies)
    assert pfc.pauses and bp.pauses and pfc.headroom == 64 << 10 and pfc.response == 0.5 and bp.response == 0.02
    from metrolab.harness.policy.model import congested_switch
    links = {lk.name: lk for lk in scn.topology.links}
    assert congested_switch(links["b1-gw-b"], links["wan-1"]) == "gw-b"
