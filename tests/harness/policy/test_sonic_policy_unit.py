"""A scenario's policy on a SONiC switch of a run (pure): the config_db it writes, sized for the
point's distance; what SONiC cannot take, refused with the reason; the switch's counters as a
repetition's metrics (absent is not zero)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from metrolab.harness.policy import sonic_policy
from metrolab.harness.policy.model import PolicySpec
from metrolab.harness.policy.sonic import bytes_on_cable
from metrolab.harness.scenario.spec import load_scenario
from metrolab.netem.profile import Impairment

pytestmark = pytest.mark.unit
SCENARIO = "tests/harness/testbed/sonic-host.yaml"


@pytest.fixture(scope="module")
def topo():
    return load_scenario(SCENARIO).topology


def ends(topo):
    return {lk.name: (lk.a, lk.b) for lk in topo.links}


def policy(**kw) -> PolicySpec:
    return PolicySpec(name="p", **kw)


def ports(topo, wan_km: float = 0.0):
    links = {lk.name: lk for lk in topo.links}
    mine = {"c1-gw-c": ("Ethernet0", 400.0), "wan-c": ("Ethernet4", None)}
    base = {"wan-c": Impairment(delay_s=wan_km / sonic_policy.C_FIBER_KM_S)}
    return sonic_policy.ports_of("gw-c", links, mine, base)


def test_a_port_takes_its_links_rate_else_the_switchs_speed_and_its_points_distance(topo):
    p = {x.link: x for x in ports(topo, wan_km=250)}
    # the scenario names 100 Mbit/s on both links: the rate wins over the PORT table's 400G
    assert (p["c1-gw-c"].name, p["c1-gw-c"].speed_gbps, p["c1-gw-c"].distance_km) == ("Ethernet0", 0.1, 0.0)
    assert p["wan-c"].distance_km == pytest.approx(250)  # the point's delay, at fiber speed
    # links without a rate: the switch's PORT speed, else the default; the topology's distance
    bare = {"x": ("Ethernet8", 400.0), "y": ("Ethernet12", None)}
    unrated = {"x": SimpleNamespace(rate_bps=None, props=SimpleNamespace(distance_km=3)),
               "y": SimpleNamespace(rate_bps=None, props=SimpleNamespace(distance_km=None))}
    got = {x.link: x for x in sonic_policy.ports_of("s", unrated, bare, {})}
    assert (got["x"].speed_gbps, got["x"].distance_km) == (400.0, 3)
    assert got["y"].speed_gbps == sonic_policy.DEFAULT_SPEED_GBPS


def test_pause_writes_the_lossless_class_with_headroom_for_each_ports_distance(topo):
    pfc = policy(links=["c1-gw-c"], flow_control={"kind": "pause", "upstream": "wan-c"})
    near, far = (sonic_policy.fragment(pfc, "gw-c", ports(topo, km), ends(topo)) for km in (0, 500))
    assert "SWITCH_HASH" not in near  # flow control leaves the hash alone
    assert near["PORT_QOS_MAP"]["Ethernet0"]["pfc_enable"] == "3,4" and set(near["PORT_QOS_MAP"]) == {
        "Ethernet0", "Ethernet4"}
    size = {f: {k: int(v["size"]) for k, v in d["BUFFER_PROFILE"].items()} for f, d in (("near", near), ("far", far))}
    # the wan-c port's headroom grows by the cable's bytes at 500 km and 100 Mbit/s; c1's does not
    grown = max(size["far"].values()) - max(size["near"].values())
    assert grown == bytes_on_cable(500, 0.1) - bytes_on_cable(0.3, 0.1)
    assert sonic_policy.fragment(pfc, "gw-a", ports(topo), ends(topo)) == {}  # not gw-a's link


def test_ecn_thresholds_come_from_the_policys_queue_delay_and_hash_fields_from_the_kind(topo):
    ecn = policy(links=["c1-gw-c"], flow_control={"kind": "ecn", "ecn_threshold": "1ms"})
    wred = sonic_policy.fragment(ecn, "gw-c", ports(topo), ends(topo))["WRED_PROFILE"]["AZURE_LOSSLESS"]
    # 1 ms at the slowest port's 100 Mbit/s: 12,500 bytes before marking
    assert (wred["green_min_threshold"], wred["green_max_threshold"]) == ("12500", "25000")
    for kind, fields in (("ecmp-l3", ["SRC_IP", "DST_IP"]),
                         ("ecmp-l4", ["SRC_IP", "DST_IP", "IP_PROTOCOL", "L4_SRC_PORT", "L4_DST_PORT"])):
        lb = policy(switches=["gw-a", "gw-c"], load_balancing={"kind": kind})
        assert sonic_policy.fragment(lb, "gw-c", ports(topo), ends(topo)) == {
            "SWITCH_HASH": {"GLOBAL": {"ecmp_hash": fields}}}
        assert sonic_policy.touches(lb, "gw-c", ends(topo)) and not sonic_policy.touches(lb, "gw-b", ends(topo))


@pytest.mark.parametrize("kw, why", [
    ({"links": ["c1-gw-c"], "flow_control": {"kind": "tail-drop"}}, "tail-drop on SONiC switch gw-c: its buffers"),
    ({"links": ["c1-gw-c"], "flow_control": {"kind": "per-flow"}}, "per-flow on SONiC switch gw-c"),
    ({"links": ["c1-gw-c"], "flow_control": {"kind": "backpressure", "upstream": "wan-c"}},
     "PFC pauses a priority, not a flow"),
    ({"links": ["c1-gw-c"], "slices": [{"name": "t", "dscp": 26, "guaranteed": "10mbit"}]}, "slices are HTB"),
    ({"switches": ["gw-c"], "load_balancing": {"kind": "planned"}}, "planned paths are policy routes"),
])
def test_what_sonic_cannot_take_is_refused_with_the_reason(topo, kw, why):
    assert why in sonic_policy.refusal(policy(**kw), "gw-c", ends(topo))
    assert sonic_policy.refusal(policy(**kw), "gw-a", ends(topo)) is None  # gw-a is not on it


def counters(pfc3_tx, dropped, packets, ecn, mark, discards=0):
    return {"ports": {"Ethernet0": {"pfc3_tx": 0, "pfc3_rx": 0, "pfc4_tx": None, "pfc4_rx": None,
                                    "in_discards": discards, "out_discards": None},
                      "Ethernet4": {"pfc3_tx": pfc3_tx, "pfc3_rx": 1, "pfc4_tx": None, "pfc4_rx": None,
                                    "in_discards": None, "out_discards": None}},
            "queues": {"Ethernet0:3": {"packets": packets, "dropped": dropped, "ecn_marked": ecn,
                                       "watermark_bytes": mark},
                       "Ethernet0:4": {"packets": None, "dropped": None, "ecn_marked": None, "watermark_bytes": None}},
            "missing": []}


def test_counters_become_deltas_and_pause_gets_the_emulations_names():
    before, after = counters(10, 1, 100, 5, 1000), counters(17, 1, 900, 9, 4096, discards=2)
    m = sonic_policy.metrics(before, after, congested="Ethernet0", upstream="Ethernet4")
    assert m["switch_pfc_tx"] == 7 and m["switch_pfc_rx"] == 0 and m["switch_queue_packets"] == 800
    assert (m["switch_queue_drops"], m["switch_ecn_marked"], m["switch_watermark_bytes"]) == (0, 4, 4096)
    assert m["switch_discards"] == 2
    # the upstream port's PFC frames are the pauses; the congested port's lossless queues' loss
    assert (m["pause_frames"], m["congested_drops"], m["congested_packets"], m["congested_loss"]) == (7, 0, 800, 0.0)
    none = {"ports": {}, "queues": {}, "missing": ["Ethernet0", "Ethernet4"]}
    m = sonic_policy.metrics(none, none, congested="Ethernet0", upstream="Ethernet4")
    # a switch that counts nothing measured nothing: None, never 0
    assert all(v is None for v in m.values()), m
    both = sonic_policy.combine([sonic_policy.metrics(before, after), {"switch_pfc_tx": None,
                                                                       "switch_watermark_bytes": 9000}])
    assert both["switch_pfc_tx"] == 7 and both["switch_watermark_bytes"] == 9000
