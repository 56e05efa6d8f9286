"""Load balancing on Linux switches: the kernel's ECMP hash over L3 (addresses) or L4 (5-tuple),
and planned per-flow paths: one `ip rule` per 5-tuple selecting a table whose route to the
destination goes over the planned link, either as a plain next hop (`route`) or as SRv6
encapsulation (`srv6`): the flow is carried in IPv6 to a segment ID that only the planned link
leads to, and the switch at its far end decapsulates it (End.DX4) and forwards the inner packet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from socket import AF_INET, AF_INET6
from typing import Any

from metrolab.harness.errors import LabError
from metrolab.harness.lab.routes import RTNH_F_ONLINK
from metrolab.harness.policy import node

TABLE_BASE = 1000     # per-link routing tables of planned paths
RULE_PRIORITY = 1000  # planned rules sit before the main table (32766)
SRV6_OVERHEAD = 40 + 8 + 16  # outer IPv6 header + a one-segment SRH


def set_hash(lab, switches: list[str], fields: str, seed: int | None = 1) -> None:
    """fib_multipath_hash_policy 0 (L3) or 1 (L4) on the switches; a fixed hash seed (kernels
    >= 6.11) makes the flow-to-path mapping reproducible run to run."""
    policy = {"l3": 0, "l4": 1}[fields]
    values: dict[str, str | int] = {k: policy for k in node.HASH_SYSCTLS}
    if seed is not None:
        values[node.HASH_SEED] = seed  # optional: an older kernel keeps its random boot-time seed
    for s in switches:
        lab.policy_touch(s)
        lab.on(s, node.write_sysctls, values, optional=(node.HASH_SEED,))


@dataclass
class Installed:
    switch: str
    rules: list[dict] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)
    remote: list[tuple[str, dict]] = field(default_factory=list)  # (node, route): SRv6 SIDs at far ends


def sid(lab, switch: str, table: int) -> str:
    """The segment ID a switch's planned table `table` sends to: unique per installing switch."""
    index = sorted(lab.topology.nodes).index(switch) + 1
    return f"fc00:{index:x}::{table:x}"


def parallel_links(lab, switch: str, dst: str) -> dict[str, tuple[Any, Any]]:
    """The switch's ECMP next hops towards `dst` (an address), by link name."""
    addr = ipaddress.ip_address(dst)
    best = None
    for r in lab.plan.routes_of(switch):
        if r.family != addr.version or r.dst == "default":
            continue
        net = ipaddress.ip_network(r.dst)
        if addr in net and (best is None or net.prefixlen > ipaddress.ip_network(best.dst).prefixlen):
            best = r
    if best is None:
        raise LabError(f"{switch} has no route to {dst}")
    by_if = {i.ifname: i.link for i in lab.plan.ifaces_of(switch)}
    return {by_if[nh.ifname]: (best, nh) for nh in best.nexthops}


def install_planned(lab, switch: str, flows, assignment: dict[tuple, str], encap: str = "route") -> Installed:
    """Pin every flow to its planned link on `switch`: a table per link, a rule per 5-tuple. The
    routes and rules are made here and added where the switch lives, in one call per node."""
    out = Installed(switch)
    tables: dict[tuple[str, str], int] = {}
    for i, f in enumerate(sorted(flows, key=lambda f: f.key)):
        links = parallel_links(lab, switch, f.dst)
        link = assignment[f.key]
        if link not in links:
            raise LabError(f"planned link {link} is not a path from {switch} to {f.dst} "
                           f"(paths: {', '.join(sorted(links))})")
        route, nh = links[link]
        fam = AF_INET if route.family == 4 else AF_INET6
        if (link, route.dst) not in tables:
            table = TABLE_BASE + len(tables)
            if encap == "srv6":
                _srv6_path(lab, out, switch, link, nh, route.dst, f.dst, table)
            else:
                kw = {"dst": route.dst, "table": table, "family": fam, "gateway": nh.gateway, "oif": nh.ifname}
                if route.family == 4:
                    kw["flags"] = RTNH_F_ONLINK
                out.routes.append(kw)
            tables[(link, route.dst)] = table
        out.rules.append({"table": tables[(link, route.dst)], "priority": RULE_PRIORITY + i, "family": fam,
                          "src": f.src, "dst": f.dst, "ip_proto": f.proto,
                          "sport_range": f"{f.sport}:{f.sport}", "dport_range": f"{f.dport}:{f.dport}"})
    mine = [*(("route", kw) for kw in out.routes), *(("rule", kw) for kw in out.rules)]
    try:
        for far, kw in out.remote:  # the far ends' SIDs first: the switch's rules lead to them
            lab.policy_touch(far, netlink=[("route", kw)])
            lab.on(far, node.netlink_add, [("route", kw)])
        lab.policy_touch(switch, netlink=mine)
        lab.on(switch, node.netlink_add, mine)
    except BaseException:
        remove_planned(lab, out)
        raise
    return out


def _srv6_path(lab, out: Installed, switch: str, link: str, nh, prefix: str, dst: str, table: int) -> None:
    """Table `table` on `switch` encapsulates towards a SID routed only over `link`; the node at
    the link's far end decapsulates (End.DX4) and routes the inner packet to `dst`."""
    lab.check_srv6()
    end = next(e for e in lab.plan.ends(link) if e.node == switch)
    mtu = next(x for x in lab.topology.links if x.name == link).props.mtu
    if mtu < 1500 + SRV6_OVERHEAD:
        raise LabError(f"SRv6 adds {SRV6_OVERHEAD} bytes to a packet: link {link} needs mtu >= "
                       f"{1500 + SRV6_OVERHEAD} (it has {mtu}); set the link's mtu in the topology")
    if ipaddress.ip_address(dst).version != 4:
        raise LabError(f"SRv6 planned paths carry IPv4 flows here (End.DX4); {dst} is not IPv4")
    s = sid(lab, switch, table)
    # the SID is reachable over this link only
    out.routes.append({"dst": f"{s}/128", "family": AF_INET6, "gateway": end.peer_ll6, "oif": end.ifname})
    out.remote.append((end.peer_node, {"dst": f"{s}/128", "family": AF_INET6, "oif": end.peer_ifname,
                                       "encap": {"type": "seg6local", "action": "End.DX4", "nh4": dst}}))
    out.routes.append({"dst": prefix, "family": AF_INET, "table": table, "oif": end.ifname,
                       "encap": {"type": "seg6", "mode": "encap", "segs": s}})


def remove_planned(lab, inst: Installed) -> None:
    lab.on(inst.switch, node.netlink_del, [*(("route", kw) for kw in inst.routes),
                                           *(("rule", kw) for kw in inst.rules)])
    for far, kw in reversed(inst.remote):
        lab.on(far, node.netlink_del, [("route", kw)])
    inst.rules, inst.routes, inst.remote = [], [], []
