"""A scenario's policy on a SONiC switch of a run (pure): the config_db fragment it writes there,
what of it SONiC cannot take (refused with the reason), and the switch's counters as a
repetition's metrics.

What maps: flow control `pause` (port-level PFC) and `ecn` become the lossless class on every
port of the switch (`metrolab.harness.policy.sonic.render`: PFC on the lossless priorities, headroom sized
for each port's link distance and speed, WRED/ECN, the PFC watchdog); `ecmp-l3` / `ecmp-l4` become
SWITCH_HASH's fields. What does not: tail-drop, deep-buffer, per-flow queues and slices (a SONiC
switch's buffers are its ASIC's shared pools, not a queue metrolab sizes per link), flow-level
backpressure (PFC pauses a priority, not a flow), planned paths (policy routes; not written yet).

A link's `rate` at a SONiC port is that port's speed (its headroom and ECN thresholds are sized
for it); its distance is the point's (the link's impairment delay at fiber speed).
"""

from __future__ import annotations

from dataclasses import dataclass

from metrolab.harness.policy.sonic import C_FIBER_KM_S, LosslessPolicy, PortSpec, render, validate

HASH_FIELDS = {"l3": ["SRC_IP", "DST_IP"],
               "l4": ["SRC_IP", "DST_IP", "IP_PROTOCOL", "L4_SRC_PORT", "L4_DST_PORT"]}
PRIORITIES = (3, 4)          # the lossless class's (SONiC's stock RoCE priorities)
DEFAULT_SPEED_GBPS = 100.0   # a port whose link names no rate and whose PORT entry no speed


@dataclass(frozen=True)
class Port:
    """One of the switch's ports in the run: the topology link it carries and its SONiC name."""
    link: str
    name: str
    speed_gbps: float
    distance_km: float


def touches(policy, node: str, ends: dict[str, tuple[str, str]]) -> bool:
    """Whether `policy` writes anything on switch `node` (`ends`: link -> its two nodes)."""
    fc, lb = policy.flow_control, policy.load_balancing
    on_link = any(node in ends[lk] for lk in policy.links or [])
    return bool((on_link and (fc is not None or policy.slices)) or (lb is not None and node in (policy.switches or [])))


def refusal(policy, node: str, ends: dict[str, tuple[str, str]]) -> str | None:
    """Why `policy` cannot go on SONiC switch `node`, or None."""
    fc, lb = policy.flow_control, policy.load_balancing
    on_link = any(node in ends[lk] for lk in policy.links or [])
    if on_link and policy.slices:
        return (f"policy {policy.name}: slices are HTB classes on a Linux port; {node} is a SONiC switch "
                "(its scheduler is the lossless class's DWRR)")
    if on_link and fc is not None and fc.kind not in ("pause", "ecn"):
        why = ("PFC pauses a priority, not a flow: use pause" if fc.kind == "backpressure" else
               "its buffers are the ASIC's shared pools, not a queue metrolab sizes per link")
        return f"policy {policy.name}: {fc.kind} on SONiC switch {node}: {why} (SONiC takes pause and ecn)"
    if lb is not None and node in (policy.switches or []) and lb.kind == "planned":
        return (f"policy {policy.name}: planned paths are policy routes, not written on SONiC switch {node} yet "
                "(SONiC takes ecmp-l3 and ecmp-l4)")
    return None


def ports_of(node: str, links: dict, mine: dict[str, tuple[str, float | None]], base: dict) -> list[Port]:
    """`node`'s ports in the run: `links` name -> topology link, `mine` link -> (the port's SONiC
    name, its speed in the switch's PORT table), `base` link -> the point's Impairment (its delay
    gives the distance). A port's speed: its link's rate where the scenario names one, else the
    switch's, else DEFAULT_SPEED_GBPS."""
    out = []
    for name, (port, speed) in sorted(mine.items()):
        lk = links[name]
        imp = base.get(name)
        delay = imp.delay_s if imp is not None else 0.0
        km = delay * C_FIBER_KM_S if delay else (lk.props.distance_km or 0.0)
        out.append(Port(name, port, (lk.rate_bps / 1e9) if lk.rate_bps else (speed or DEFAULT_SPEED_GBPS), km))
    return out


def fragment(policy, node: str, ports: list[Port], ends: dict[str, tuple[str, str]]) -> dict:
    """The config_db fragment `policy` writes on `node` (empty: nothing of it is there)."""
    fc, lb = policy.flow_control, policy.load_balancing
    out: dict = {}
    if fc is not None and fc.kind in ("pause", "ecn") and any(node in ends[lk] for lk in policy.links or []):
        lossless = LosslessPolicy(ports=[PortSpec(p.name, p.speed_gbps, p.distance_km or 0.3) for p in ports],
                                  lossless_priorities=PRIORITIES)
        if fc.kind == "ecn":  # marking from the policy's queue delay at the slowest port's speed
            slowest = min(p.speed_gbps for p in ports)
            lossless.ecn_min_bytes = max(1500, int(fc.ecn_threshold * slowest * 1e9 / 8))
            lossless.ecn_max_bytes = 2 * lossless.ecn_min_bytes
        out = render(lossless)
        del out["SWITCH_HASH"]  # flow control leaves the switch's hash as it is
    if lb is not None and lb.kind in ("ecmp-l3", "ecmp-l4") and node in (policy.switches or []):
        out["SWITCH_HASH"] = {"GLOBAL": {"ecmp_hash": list(HASH_FIELDS[lb.kind[-2:]])}}
    problems = validate(out)
    if problems:  # render's own output: a bug, not the user's input
        raise AssertionError(f"SONiC fragment for {node}: " + "; ".join(problems))
    return out


def _delta(before, after) -> int | None:
    return None if before is None or after is None else after - before


def _sum(values) -> int | None:
    """A sum over counters, None where none of them is counted (absent is not zero)."""
    vals = [v for v in values if v is not None]
    return sum(vals) if vals else None


def metrics(before: dict, after: dict, congested: str | None = None, upstream: str | None = None) -> dict:
    """One repetition's, from one switch's counters read before and after it (`metrolab.harness.policy.
    sonic_db.counters`): PFC frames sent and received on the lossless priorities, the lossless
    queues' packets, drops and ECN marks, the deepest watermark, the ports' discards. With port
    pause on this switch (`congested`, `upstream`: its SONiC port names), the same names the
    namespace lab's emulation reports: pause frames the upstream port sent, the congested port's
    lossless queues' drops, packets and loss."""
    def port_delta(port: str, key: str) -> int | None:
        b, a = before["ports"].get(port, {}), after["ports"].get(port, {})
        return _delta(b.get(key), a.get(key))

    def queue_delta(port: str | None, key: str) -> int | None:
        return _sum(_delta(before["queues"].get(q, {}).get(key), v.get(key)) for q, v in after["queues"].items()
                    if port is None or q.split(":")[0] == port)

    ports = list(after["ports"])
    pfc = {d: _sum(port_delta(p, f"pfc{pri}_{d}") for p in ports for pri in PRIORITIES) for d in ("tx", "rx")}
    marks = [v.get("watermark_bytes") for v in after["queues"].values()]
    out = {"switch_pfc_tx": pfc["tx"], "switch_pfc_rx": pfc["rx"],
           "switch_queue_packets": queue_delta(None, "packets"), "switch_queue_drops": queue_delta(None, "dropped"),
           "switch_ecn_marked": queue_delta(None, "ecn_marked"),
           "switch_watermark_bytes": max((m for m in marks if m is not None), default=None),
           "switch_discards": _sum(port_delta(p, k) for p in ports for k in ("in_discards", "out_discards"))}
    if congested is not None and upstream is not None:
        drops, packets = queue_delta(congested, "dropped"), queue_delta(congested, "packets")
        out |= {"pause_frames": _sum(port_delta(upstream, f"pfc{pri}_tx") for pri in PRIORITIES),
                "congested_drops": drops, "congested_packets": packets,
                "congested_loss": (drops / (drops + packets) if drops is not None and packets is not None
                                   and drops + packets else None)}
    return out


def combine(per_switch: list[dict]) -> dict:
    """Several switches' metrics as one repetition's: counts summed (None only where no switch
    counts it), the deepest watermark."""
    out: dict = {}
    for m in per_switch:
        for k, v in m.items():
            if k == "congested_loss":
                continue
            if k not in out or out[k] is None:
                out[k] = v
            elif v is not None:
                out[k] = max(out[k], v) if k == "switch_watermark_bytes" else out[k] + v
    if "congested_drops" in out:
        d, p = out["congested_drops"], out["congested_packets"]
        out["congested_loss"] = d / (d + p) if d is not None and p is not None and d + p else None
    return out
