"""A SONiC switch's management plane over ssh: the sandbox plays the switch (its own sshd, and a
real Redis server holding SONiC's CONFIG_DB and COUNTERS_DB layout, as `config` and `show` read
and write them). metrolab's lossless class, rendered for the switch's ports, is applied in one
transaction beside the switch's own tables, and the switch is put back exactly (every key of
CONFIG_DB read back); the ASIC's counters (PFC frames per priority, queue drops, ECN marks,
watermarks) are read from COUNTERS_DB. What only a real switch verifies — that its ASIC acts on the
config and counts — is in docs/testbed.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrolab.harness.errors import LabError
from metrolab.harness.kernel.nsctx import in_netns
from metrolab.harness.policy import sonic_db
from metrolab.harness.policy.sonic import render
from metrolab.harness.policy.sonic_spec import SonicSpec
from metrolab.harness.scenario.spec import load_scenario
from metrolab.harness.testbed import hostkeys
from metrolab.harness.testbed.resolve import load_testbed
from metrolab.harness.testbed.sandbox import Sandbox
from metrolab.harness.testbed.sonic_mgmt import SonicSwitch
from tests.support.sonic import config_db, hset, redis

pytestmark = pytest.mark.requires("netns")
TOPOLOGY = Path(__file__).with_name("main-host-kernel.yaml")
PORT_OID = {"Ethernet0": "oid:0x1000000000002", "Ethernet4": "oid:0x1000000000003"}
QUEUE_OID = {f"{p}:{q}": f"oid:0x150000000000{i}{q}" for i, p in enumerate(PORT_OID) for q in (3, 4)}
# the switch's own: what a SONiC switch holds before metrolab touches it
OWN_CONFIG = {
    "DEVICE_METADATA|localhost": {"hwsku": "Mellanox-SN2700", "platform": "x86_64-mlnx_msn2700-r0", "type": "LeafRouter"},
    "PORT|Ethernet0": {"alias": "etp1", "speed": "100000", "mtu": "9100", "admin_status": "up"},
    "PORT|Ethernet4": {"alias": "etp2", "speed": "100000", "mtu": "9100", "admin_status": "up"},
    "BUFFER_PROFILE|pg_lossless_100000_300m_profile": {"pool": "ingress_lossless_pool", "xon": "18432",
                                                       "xon_offset": "2496", "xoff": "165888", "size": "184320",
                                                       "dynamic_th": "1"},
    "WRED_PROFILE|AZURE_LOSSLESS": {"ecn": "ecn_all", "wred_green_enable": "true", "green_min_threshold": "250000",
                                    "green_max_threshold": "2097152", "green_drop_probability": "5"},
    "PORT_QOS_MAP|Ethernet0": {"pfc_enable": "3,4", "dscp_to_tc_map": "AZURE"},
}


def seed(sock: Path) -> None:
    with redis(sock, sonic_db.CONFIG_DB) as r:
        for key, fields in OWN_CONFIG.items():
            hset(r, key, fields)
    with redis(sock, sonic_db.COUNTERS_DB) as r:
        hset(r, "COUNTERS_PORT_NAME_MAP", PORT_OID)
        hset(r, "COUNTERS_QUEUE_NAME_MAP", QUEUE_OID)
        hset(r, f"COUNTERS:{PORT_OID['Ethernet0']}", {
            "SAI_PORT_STAT_PFC_3_TX_PKTS": "17", "SAI_PORT_STAT_PFC_3_RX_PKTS": "5", "SAI_PORT_STAT_PFC_4_TX_PKTS": "0",
            "SAI_PORT_STAT_PFC_4_RX_PKTS": "0", "SAI_PORT_STAT_IF_IN_DISCARDS": "2",
            "SAI_PORT_STAT_IF_OUT_DISCARDS": "9"})
        hset(r, f"COUNTERS:{QUEUE_OID['Ethernet0:3']}", {
            "SAI_QUEUE_STAT_PACKETS": "1000", "SAI_QUEUE_STAT_DROPPED_PACKETS": "3",
            "SAI_QUEUE_STAT_WRED_ECN_MARKED_PACKETS": "42"})
        hset(r, f"PERSISTENT_WATERMARKS:{QUEUE_OID['Ethernet0:3']}", {"SAI_QUEUE_STAT_SHARED_WATERMARK_BYTES": "65536"})


@pytest.fixture(scope="module")
def switch():
    sb = Sandbox(load_scenario(str(TOPOLOGY)).topology, sonic={"gw-b"})
    sb.up()
    try:
        seed(sb.redis_socket("gw-b"))
        tb = load_testbed(sb.testbed_file)
        assert "gw-b" not in {m.name for m in tb.ray_machines()}  # ssh only: no Ray on a SONiC switch
        with in_netns(sb.controller_ns):  # the controller's management network
            hostkeys.pin(tb)
        yield sb, SonicSwitch(tb.machine("gw-b"), tb.known_hosts)
    finally:
        sb.down()


def test_the_lossless_class_goes_in_beside_the_switchs_own_tables_and_comes_out_exactly(switch):
    sb, sw = switch
    sock = sb.redis_socket("gw-b")
    before = config_db(sock)
    policy = SonicSpec(switch="gw-b", ports=[{"name": "Ethernet0", "speed": "100g", "distance_km": 100},
                                             {"name": "Ethernet4", "speed": "100g"}]).policy()
    fragment = render(policy)
    with in_netns(sb.controller_ns):
        saved = sw.snapshot()
        written = sw.apply(fragment)
    during = config_db(sock)
    for table, keys in fragment.items():
        for key, fields in keys.items():
            # each key replaced, as `config load` does (a list as SONiC stores it: `field@`, comma-joined)
            assert during[f"{table}|{key}"] == sonic_db.to_raw(fields), (table, key)
    assert sorted(written) == sorted(f"{t}|{k}" for t, ks in fragment.items() for k in ks)
    # the 100 km port's headroom profile: its cable holds ~12.6 MB during a pause round trip,
    # where the stock 300 m profile (which metrolab's own replaces for the local port) has 184,320 B
    profiles = {k: int(v["size"]) for k, v in during.items() if k.startswith("BUFFER_PROFILE|")}
    assert max(profiles.values()) > 12_000_000 > 184_320 == int(before["BUFFER_PROFILE|pg_lossless_100000_300m_profile"]
                                                                ["size"]), profiles
    for key in ("DEVICE_METADATA|localhost", "PORT|Ethernet0", "PORT|Ethernet4"):
        assert during[key] == before[key]  # tables metrolab does not write are never touched
    with in_netns(sb.controller_ns):
        undone = sw.restore(saved)
    assert config_db(sock) == before  # every key, every field
    assert "WRED_PROFILE|AZURE_LOSSLESS" in undone["rewritten"]  # the switch's own thresholds back
    assert set(undone["deleted"]) == set(written) - set(before)


def test_the_asics_counters_are_read_per_port_priority_and_queue(switch):
    sb, sw = switch
    with in_netns(sb.controller_ns):
        c = sw.counters(["Ethernet0", "Ethernet4", "Ethernet99"], [3, 4], [3, 4])
    e0 = c["ports"]["Ethernet0"]
    assert (e0["pfc3_tx"], e0["pfc3_rx"], e0["pfc4_tx"], e0["in_discards"], e0["out_discards"]) == (17, 5, 0, 2, 9)
    assert e0["pfc3_rx_pause_us"] is None  # a counter this ASIC does not keep: not a zero
    assert c["queues"]["Ethernet0:3"] == {"packets": 1000, "dropped": 3, "ecn_marked": 42, "watermark_bytes": 65536}
    assert c["queues"]["Ethernet4:4"] == {"packets": None, "dropped": None, "ecn_marked": None,
                                          "watermark_bytes": None}
    assert c["missing"] == ["Ethernet99"] and "Ethernet99" not in c["ports"]


def test_a_switch_whose_management_plane_is_not_there_is_named(switch):
    sb, sw = switch
    m = sw.m.model_copy(update={"vars": {**sw.m.vars, "sonic_redis": f"unix:{sb.dir}/nowhere.sock"}})
    with in_netns(sb.controller_ns), pytest.raises(LabError, match=r"SONiC switch gw-b \(10\.99\.0\.\d+\): snapshot: "
                                                                  r"RedisError: no Redis"):
        SonicSwitch(m, sw.known_hosts).snapshot()
