"""SONiC config_db rendering for a lossless RoCE class: tables, distance-sized headroom,
consistency checks and diffs (pure)."""

from __future__ import annotations

import copy

import pytest

from metrolab.harness.policy.sonic import LosslessPolicy, PortSpec, bytes_on_cable, diff, headroom, render, validate

pytestmark = pytest.mark.unit


def sample() -> LosslessPolicy:
    return LosslessPolicy(ports=[PortSpec("Ethernet0", 100, 0.3), PortSpec("Ethernet4", 100, 100)])


def test_bytes_on_cable_follows_the_formula():
    # 2 x 100 km x 100 Gb/s / 198,000 km/s / 8 = 12.63 MB (field notes: ~12.6 MB at 100 km, 100G)
    assert bytes_on_cable(100, 100) == 12_626_262
    assert bytes_on_cable(0, 100) == 0
    with pytest.raises(ValueError):
        bytes_on_cable(-1, 100)


def test_headroom_grows_with_distance_and_speed():
    sizes = [headroom(km, 100)["size"] for km in (0.3, 10, 100, 500)]
    assert sizes == sorted(sizes) and sizes[-1] - sizes[0] == bytes_on_cable(500, 100) - bytes_on_cable(0.3, 100)
    assert headroom(100, 400)["xoff"] > 3.9 * headroom(100, 100)["xoff"]  # ~4x: the cable term dominates
    h = headroom(100, 100)
    assert h["size"] == h["xon"] + h["xoff"] and h["xon"] == 18432


def test_rendered_tables_for_a_sample_port_set():
    db = render(sample())
    assert validate(db) == []
    assert db["PORT_QOS_MAP"]["Ethernet0"] == {"dscp_to_tc_map": "AZURE", "tc_to_queue_map": "AZURE",
                                               "tc_to_pg_map": "AZURE", "pfc_enable": "3,4",
                                               "pfcwd_sw_enable": "3,4"}
    assert db["BUFFER_PG"] == {"Ethernet0|3-4": {"profile": "pg_lossless_100000_300m_profile"},
                               "Ethernet4|3-4": {"profile": "pg_lossless_100000_100km_profile"}}
    far = db["BUFFER_PROFILE"]["pg_lossless_100000_100km_profile"]
    assert int(far["xoff"]) == bytes_on_cable(100, 100) + 2 * 9100 + 2 * 512 * 4 // 8
    assert far["pool"] == "ingress_lossless_pool" and far["dynamic_th"] == "1"
    assert db["QUEUE"]["Ethernet4|3"] == {"scheduler": "scheduler.3", "wred_profile": "AZURE_LOSSLESS"}
    assert db["WRED_PROFILE"]["AZURE_LOSSLESS"]["ecn"] == "ecn_all"
    assert db["PFC_WD"]["Ethernet0"] == {"action": "drop", "detection_time": "200", "restoration_time": "200"}
    assert db["PFC_WD"]["GLOBAL"] == {"POLL_INTERVAL": "200"}
    assert db["DSCP_TO_TC_MAP"]["AZURE"]["26"] == "3" and "L4_SRC_PORT" in db["SWITCH_HASH"]["GLOBAL"]["ecmp_hash"]


@pytest.mark.parametrize("break_it,needle", [
    (lambda db: db["BUFFER_PG"]["Ethernet0|3-4"].update(profile="nope"), "profile 'nope' is not in BUFFER_PROFILE"),
    (lambda db: db["WRED_PROFILE"]["AZURE_LOSSLESS"].update(green_min_threshold="4000000"),
     "green_min_threshold 4000000 must be below"),
    (lambda db: db["PORT_QOS_MAP"]["Ethernet4"].update(pfc_enable="3"), "pfc_enable [3] but lossless buffer PGs [3, 4]"),
    (lambda db: db["BUFFER_PROFILE"]["pg_lossless_100000_100km_profile"].update(size="184320"), "size 184320 <"),
    (lambda db: db["QUEUE"].pop("Ethernet0|4"), "QUEUE|Ethernet0|4 is missing"),
    (lambda db: db["DSCP_TO_TC_MAP"]["AZURE"].pop("4"), "lossless priority 4 is reached by no DSCP"),
    (lambda db: db["PFC_WD"]["Ethernet0"].update(action="reboot"), "PFC_WD|Ethernet0: action 'reboot'"),
])
def test_inconsistent_config_is_rejected_with_its_location(break_it, needle):
    db = render(sample())
    break_it(db)
    errs = validate(db)
    assert any(needle in e for e in errs), errs


def test_diff_lists_what_changes():
    running = render(LosslessPolicy(ports=[PortSpec("Ethernet0", 100, 0.3)]))
    desired = render(sample())
    d = diff(running, desired)
    assert ("add", "PORT_QOS_MAP", "Ethernet4") in {(op, t, k) for op, t, k, _, _ in d}
    assert diff(desired, desired) == []
    changed = copy.deepcopy(desired)
    changed["PFC_WD"]["Ethernet0"]["detection_time"] = "400"
    assert [(op, t, k) for op, t, k, _, _ in diff(desired, changed)] == [("change", "PFC_WD", "Ethernet0")]


def test_headroom_with_a_slow_peer_counts_its_response_at_line_rate():
    asic = headroom(100, 0.1, mtu=1500)
    slow = headroom(100, 0.1, mtu=1500, response_s=0.5)
    assert slow["xoff"] - (asic["xoff"] - 2 * 512 // 8) == int(0.5 * 0.1e9 / 8)  # 2 quanta replaced by 0.5 s
    with pytest.raises(ValueError):
        headroom(100, 0.1, response_s=-1)
