"""Load balancing on Linux switches: the kernel's ECMP hash over L3 (addresses) or L4 (5-tuple),
and planned per-flow paths installed as policy routes (one `ip rule` per 5-tuple selecting a
table whose route to the destination goes over the planned link).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from harness.errors import LabError
from harness.lab.nsctx import write_sysctl

TABLE_BASE = 1000     # per-link routing tables of planned paths
RULE_PRIORITY = 1000  # planned rules sit before the main table (32766)


def set_hash(lab, switches: list[str], fields: str, seed: int | None = 1) -> None:
    """fib_multipath_hash_policy 0 (L3) or 1 (L4) on the switches; a fixed hash seed (kernels
    >= 6.11) makes the flow-to-path mapping reproducible run to run."""
    policy = {"l3": 0, "l4": 1}[fields]
    for s in switches:
        ns = lab.ns(s)
        write_sysctl(ns, "net.ipv4.fib_multipath_hash_policy", policy)
        write_sysctl(ns, "net.ipv6.fib_multipath_hash_policy", policy)
        if seed is not None:
            try:
                write_sysctl(ns, "net.ipv4.fib_multipath_hash_seed", seed)
            except (OSError, LabError):
                pass  # an older kernel: its random boot-time seed


@dataclass
class Installed:
    switch: str
    rules: list[dict] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)


def parallel_links(lab, switch: str, dst: str) -> dict[str, object]:
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


def install_planned(lab, switch: str, flows, assignment: dict[tuple, str]) -> Installed:
    """Pin every flow to its planned link on `switch`: a table per link, a rule per 5-tuple."""
    from socket import AF_INET, AF_INET6

    from harness.lab.netns import RTNH_F_ONLINK
    h = lab.handle(switch)
    out = Installed(switch)
    tables: dict[tuple[str, str], int] = {}
    try:
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
                kw = {"dst": route.dst, "table": table, "family": fam, "gateway": nh.gateway,
                      "oif": h.link_lookup(ifname=nh.ifname)[0]}
                if route.family == 4:
                    kw["flags"] = RTNH_F_ONLINK
                h.route("add", **kw)
                out.routes.append(kw)
                tables[(link, route.dst)] = table
            rule = {"table": tables[(link, route.dst)], "priority": RULE_PRIORITY + i, "family": fam,
                    "src": f.src, "dst": f.dst, "ip_proto": f.proto,
                    "sport_range": f"{f.sport}:{f.sport}", "dport_range": f"{f.dport}:{f.dport}"}
            h.rule("add", **rule)
            out.rules.append(rule)
    except BaseException:
        remove_planned(lab, out)
        raise
    return out


def remove_planned(lab, inst: Installed) -> None:
    h = lab.handle(inst.switch)
    for rule in reversed(inst.rules):
        try:
            h.rule("del", **rule)
        except Exception:  # noqa: BLE001 — already gone
            pass
    for kw in reversed(inst.routes):
        try:
            h.route("del", **kw)
        except Exception:  # noqa: BLE001
            pass
    inst.rules, inst.routes = [], []
