"""SONiC config_db for a lossless RoCE class across a metro: the tables a switch needs, with PFC
headroom sized from each port's distance and speed, checked for internal consistency, and diffed
against a running config (pure; no switch needed).

Tables: PORT_QOS_MAP, DSCP_TO_TC_MAP, TC_TO_QUEUE_MAP, TC_TO_PRIORITY_GROUP_MAP, BUFFER_PROFILE,
BUFFER_PG, WRED_PROFILE, QUEUE, SCHEDULER, PFC_WD, SWITCH_HASH. Stock values follow SONiC's
templates (../shared/notes/field.md): xon 18432, xon_offset 2496, dynamic_th 1, AZURE_LOSSLESS
WRED with ECN, PFC watchdog 200/200 ms, lossless priorities 3 and 4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

C_FIBER_KM_S = 198_000.0     # what SONiC's headroom calculation uses for light in fiber
STOCK_XON = 18432
STOCK_XON_OFFSET = 2496
PAUSE_QUANTUM_BITS = 512


def bytes_on_cable(distance_km: float, speed_gbps: float) -> int:
    """Bytes in flight on the cable during a PFC round trip: 2 x L x speed / c_fiber / 8."""
    if distance_km < 0 or speed_gbps <= 0:
        raise ValueError("distance >= 0 km and speed > 0 Gb/s")
    return int(2 * distance_km * speed_gbps * 1e9 / C_FIBER_KM_S / 8)


def headroom(distance_km: float, speed_gbps: float, mtu: int = 9100, response_quanta: int = 2,
             response_s: float | None = None) -> dict[str, int]:
    """xoff: what arrives after the pause is sent (the cable's round trip, a frame being sent at
    each end, the peer's response time); size = xon + xoff. The peer's response is `response_quanta`
    pause quanta (a NIC's or switch's), or `response_s` seconds at line rate where the peer is
    slower (the lab's emulated backpressure: its controller's reaction)."""
    if response_s is not None:
        if response_s < 0:
            raise ValueError("response_s >= 0")
        peer_response = int(response_s * speed_gbps * 1e9 / 8)
    else:
        peer_response = response_quanta * PAUSE_QUANTUM_BITS * max(1, int(speed_gbps // 25)) // 8
    xoff = bytes_on_cable(distance_km, speed_gbps) + 2 * mtu + peer_response
    return {"xon": STOCK_XON, "xon_offset": STOCK_XON_OFFSET, "xoff": xoff, "size": STOCK_XON + xoff}


@dataclass
class PortSpec:
    name: str
    speed_gbps: float
    distance_km: float = 0.3     # SONiC's stock cable length is 300 m


@dataclass
class LosslessPolicy:
    ports: list[PortSpec]
    lossless_priorities: tuple[int, ...] = (3, 4)
    dscp_to_tc: dict[int, int] = field(default_factory=lambda: {3: 3, 4: 4, 26: 3, 46: 5, 48: 6})
    ecn_min_bytes: int = 1048576
    ecn_max_bytes: int = 2097152
    ecn_drop_probability: int = 5
    pfcwd_detection_ms: int = 200
    pfcwd_restoration_ms: int = 200
    pfcwd_action: str = "drop"
    pfcwd_poll_ms: int = 200
    scheduler_weights: dict[int, int] = field(default_factory=lambda: {3: 50, 4: 50})
    hash_fields: tuple[str, ...] = ("SRC_IP", "DST_IP", "IP_PROTOCOL", "L4_SRC_PORT", "L4_DST_PORT")
    mtu: int = 9100


def _profile_name(p: PortSpec) -> str:
    return f"pg_lossless_{int(p.speed_gbps * 1000)}_{_length(p.distance_km)}_profile"


def _length(km: float) -> str:
    return f"{round(km * 1000)}m" if km < 1 else f"{km:g}km"


def render(policy: LosslessPolicy) -> dict:
    """config_db JSON (table -> key -> fields, every value a string, as `config load` takes it)."""
    pri = ",".join(str(p) for p in policy.lossless_priorities)
    db: dict[str, dict[str, dict[str, str]]] = {t: {} for t in (
        "DSCP_TO_TC_MAP", "TC_TO_QUEUE_MAP", "TC_TO_PRIORITY_GROUP_MAP", "PORT_QOS_MAP", "BUFFER_PROFILE",
        "BUFFER_PG", "WRED_PROFILE", "QUEUE", "SCHEDULER", "PFC_WD", "SWITCH_HASH")}
    db["DSCP_TO_TC_MAP"]["AZURE"] = {str(d): str(tc) for d, tc in sorted(policy.dscp_to_tc.items())}
    tcs = sorted(set(policy.dscp_to_tc.values()) | set(policy.lossless_priorities))
    db["TC_TO_QUEUE_MAP"]["AZURE"] = {str(t): str(t) for t in tcs}
    db["TC_TO_PRIORITY_GROUP_MAP"]["AZURE"] = {str(t): str(t) for t in tcs}
    db["WRED_PROFILE"]["AZURE_LOSSLESS"] = {
        "ecn": "ecn_all", "wred_green_enable": "true", "green_min_threshold": str(policy.ecn_min_bytes),
        "green_max_threshold": str(policy.ecn_max_bytes), "green_drop_probability": str(policy.ecn_drop_probability)}
    for q, w in sorted(policy.scheduler_weights.items()):
        db["SCHEDULER"][f"scheduler.{q}"] = {"type": "DWRR", "weight": str(w)}
    db["PFC_WD"]["GLOBAL"] = {"POLL_INTERVAL": str(policy.pfcwd_poll_ms)}
    db["SWITCH_HASH"]["GLOBAL"] = {"ecmp_hash": list(policy.hash_fields)}  # type: ignore[dict-item]  # a list, as SONiC's schema has it
    for p in policy.ports:
        prof = _profile_name(p)
        db["BUFFER_PROFILE"][prof] = {"pool": "ingress_lossless_pool", "dynamic_th": "1",
                                      **{k: str(v) for k, v in headroom(p.distance_km, p.speed_gbps, policy.mtu).items()}}
        db["PORT_QOS_MAP"][p.name] = {"dscp_to_tc_map": "AZURE", "tc_to_queue_map": "AZURE",
                                      "tc_to_pg_map": "AZURE", "pfc_enable": pri, "pfcwd_sw_enable": pri}
        db["BUFFER_PG"][f"{p.name}|{_ranges(policy.lossless_priorities)}"] = {"profile": prof}
        for q in policy.lossless_priorities:
            db["QUEUE"][f"{p.name}|{q}"] = {"scheduler": f"scheduler.{q}", "wred_profile": "AZURE_LOSSLESS"}
        db["PFC_WD"][p.name] = {"action": policy.pfcwd_action, "detection_time": str(policy.pfcwd_detection_ms),
                                "restoration_time": str(policy.pfcwd_restoration_ms)}
    return db


def _ranges(pris) -> str:
    s = sorted(pris)
    return f"{s[0]}-{s[-1]}" if len(s) > 1 and s[-1] - s[0] == len(s) - 1 else ",".join(map(str, s))


def _expand(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def validate(db: dict) -> list[str]:
    """Internal consistency: every reference resolves, thresholds are ordered, priorities agree.
    Returns the problems, each naming its table, key and field (empty: consistent)."""
    errs: list[str] = []

    def ref(table: str, key: str, fieldname: str, target: str, name: str) -> None:
        if name not in db.get(target, {}):
            errs.append(f"{table}|{key}: {fieldname} {name!r} is not in {target}")

    for port, f in db.get("PORT_QOS_MAP", {}).items():
        for fld, target in (("dscp_to_tc_map", "DSCP_TO_TC_MAP"), ("tc_to_queue_map", "TC_TO_QUEUE_MAP"),
                            ("tc_to_pg_map", "TC_TO_PRIORITY_GROUP_MAP")):
            if fld in f:
                ref("PORT_QOS_MAP", port, fld, target, f[fld])
        pfc = set(_expand(f.get("pfc_enable", ""))) if f.get("pfc_enable") else set()
        pgs = set()
        for key in db.get("BUFFER_PG", {}):
            p, _, r = key.partition("|")
            if p == port:
                pgs |= set(_expand(r))
        if pfc != pgs:
            errs.append(f"PORT_QOS_MAP|{port}: pfc_enable {sorted(pfc)} but lossless buffer PGs {sorted(pgs)}")
        for q in pfc:
            if f"{port}|{q}" not in db.get("QUEUE", {}):
                errs.append(f"PORT_QOS_MAP|{port}: priority {q} is lossless but QUEUE|{port}|{q} is missing")
    for key, f in db.get("BUFFER_PG", {}).items():
        ref("BUFFER_PG", key, "profile", "BUFFER_PROFILE", f.get("profile", ""))
    for key, f in db.get("QUEUE", {}).items():
        if "scheduler" in f:
            ref("QUEUE", key, "scheduler", "SCHEDULER", f["scheduler"])
        if "wred_profile" in f:
            ref("QUEUE", key, "wred_profile", "WRED_PROFILE", f["wred_profile"])
    for name, f in db.get("BUFFER_PROFILE", {}).items():
        try:
            xon, xoff, size = int(f["xon"]), int(f["xoff"]), int(f["size"])
        except (KeyError, ValueError):
            errs.append(f"BUFFER_PROFILE|{name}: xon, xoff and size must be integers")
            continue
        if size < xon + xoff:
            errs.append(f"BUFFER_PROFILE|{name}: size {size} < xon {xon} + xoff {xoff}")
    for name, f in db.get("WRED_PROFILE", {}).items():
        lo, hi = int(f.get("green_min_threshold", 0)), int(f.get("green_max_threshold", 0))
        if lo >= hi:
            errs.append(f"WRED_PROFILE|{name}: green_min_threshold {lo} must be below green_max_threshold {hi}")
        if not 0 <= int(f.get("green_drop_probability", 0)) <= 100:
            errs.append(f"WRED_PROFILE|{name}: green_drop_probability is a percentage")
    for key, f in db.get("PFC_WD", {}).items():
        if key != "GLOBAL" and f.get("action") not in ("drop", "forward", "alert"):
            errs.append(f"PFC_WD|{key}: action {f.get('action')!r} (drop, forward or alert)")
    tc_map = db.get("DSCP_TO_TC_MAP", {})
    for port, f in db.get("PORT_QOS_MAP", {}).items():
        tcs = {int(v) for v in tc_map.get(f.get("dscp_to_tc_map", ""), {}).values()}
        for q in _expand(f["pfc_enable"]) if f.get("pfc_enable") else []:
            if q not in tcs:
                errs.append(f"PORT_QOS_MAP|{port}: lossless priority {q} is reached by no DSCP in "
                            f"{f.get('dscp_to_tc_map')}")
    return errs


def diff(running: dict, desired: dict) -> list[tuple[str, str, str, Any, Any]]:
    """(op, table, key, old, new) for every entry to add, remove or change."""
    out = []
    for table in sorted(set(running) | set(desired)):
        a, b = running.get(table, {}), desired.get(table, {})
        for key in sorted(set(a) | set(b)):
            if key not in a:
                out.append(("add", table, key, None, b[key]))
            elif key not in b:
                out.append(("remove", table, key, a[key], None))
            elif a[key] != b[key]:
                out.append(("change", table, key, a[key], b[key]))
    return out
