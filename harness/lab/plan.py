"""The lab plan: interface names, addresses and routes computed from a topology. Pure.

Addressing: every node owns one IPv4 /32 (and IPv6 /128) on each of its links, like an
unnumbered fabric, so a host has exactly one address and every route is 'via <neighbour> dev
<iface>'. Switches carry the neighbour as the IPv4 peer of that address; hosts carry a plain
/32 (rxe builds its RoCE GIDs from the address field, which a peer would replace) and get an
explicit route to each neighbour instead.
Routing: shortest paths by link cost, hosts never transit; equal-cost next hops -> ECMP.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from metrolab.harness.spec.resolve import Link, Topology


@dataclass(frozen=True)
class Iface:
    node: str
    ifname: str
    link: str
    peer_node: str
    peer_ifname: str
    ll6: str       # our link-local address on this link (fe80::1 on end a, fe80::2 on end b)
    peer_ll6: str  # IPv6 next hops use the peer's link-local: unique per link, even for parallel links


@dataclass(frozen=True)
class NextHop:
    gateway: str  # the neighbour's address (family of the route)
    ifname: str
    peer: str     # neighbour node name


@dataclass(frozen=True)
class Route:
    node: str
    dst: str        # 'default' or a prefix
    family: int     # 4 or 6
    nexthops: tuple[NextHop, ...]


@dataclass
class LabPlan:
    topology: Topology
    ifaces: dict[tuple[str, str], Iface] = field(default_factory=dict)  # (node, link) -> iface
    routes: list[Route] = field(default_factory=list)

    def ifaces_of(self, node: str) -> list[Iface]:
        return [i for (n, _), i in self.ifaces.items() if n == node]

    def routes_of(self, node: str) -> list[Route]:
        return [r for r in self.routes if r.node == node]

    def ends(self, link: str) -> tuple[Iface, Iface]:
        lk = next(x for x in self.topology.links if x.name == link)
        return self.ifaces[(lk.a, lk.name)], self.ifaces[(lk.b, lk.name)]


def _distances_to(dst: str, topo: Topology, adj: dict[str, list[tuple[str, Link]]]) -> dict[str, int]:
    """Dijkstra from `dst` backwards; hosts other than dst are endpoints, never transit."""
    dist = {dst: 0}
    heap = [(0, dst)]
    while heap:
        d, n = heapq.heappop(heap)
        if d > dist.get(n, 1 << 60):
            continue
        if n != dst and not topo.nodes[n].is_switch:
            continue  # a host can reach dst this way, but nobody reaches dst through it
        for m, link in adj[n]:
            nd = d + link.cost
            if nd < dist.get(m, 1 << 60):
                dist[m] = nd
                heapq.heappush(heap, (nd, m))
    return dist


def build_plan(topo: Topology) -> LabPlan:
    plan = LabPlan(topo)
    counters: dict[str, int] = {n: 0 for n in topo.nodes}
    for link in topo.links:
        names = []
        for end in (link.a, link.b):
            names.append(f"eth{counters[end]}")
            counters[end] += 1
        plan.ifaces[(link.a, link.name)] = Iface(link.a, names[0], link.name, link.b, names[1], "fe80::1", "fe80::2")
        plan.ifaces[(link.b, link.name)] = Iface(link.b, names[1], link.name, link.a, names[0], "fe80::2", "fe80::1")

    adj: dict[str, list[tuple[str, Link]]] = {n: [] for n in topo.nodes}
    for link in topo.links:
        adj[link.a].append((link.b, link))
        adj[link.b].append((link.a, link))

    families = [4, 6] if topo.spec.ipv6 else [4]

    def hop(node: str, nbr: str, link: Link, fam: int) -> NextHop:
        iface = plan.ifaces[(node, link.name)]
        gw = str(topo.nodes[nbr].address) if fam == 4 else iface.peer_ll6
        return NextHop(gw, iface.ifname, nbr)

    for dst, dnode in topo.nodes.items():
        dist = _distances_to(dst, topo, adj)
        for node in topo.nodes:
            if node == dst or node not in dist:
                continue
            neighbour = any(m == dst for m, _ in adj[node])
            best = [(m, lk) for m, lk in adj[node]
                    if m in dist and (m == dst or topo.nodes[m].is_switch) and lk.cost + dist[m] == dist[node]]
            if not best:
                continue
            if not topo.nodes[node].is_switch and len(adj[node]) == 1 and not neighbour:
                continue  # a single-homed host uses its default route
            for fam in families:
                if fam == 4 and neighbour and topo.nodes[node].is_switch:
                    continue  # a switch's point-to-point peer address installs this route itself
                prefix = f"{dnode.address}/32" if fam == 4 else f"{dnode.address6}/128"
                plan.routes.append(Route(node, prefix, fam, tuple(hop(node, m, lk, fam) for m, lk in best)))

    for host in topo.hosts():
        uplinks = [(m, lk) for m, lk in adj[host.name] if topo.nodes[m].is_switch]
        if uplinks:
            for fam in families:
                plan.routes.append(Route(host.name, "default", fam,
                                         tuple(hop(host.name, m, lk, fam) for m, lk in uplinks)))
    return plan


def expected_path(plan: LabPlan, src: str, dst: str) -> list[list[str]]:
    """All equal-cost node paths from src to dst that the plan's routes produce."""
    topo = plan.topology
    target = str(topo.nodes[dst].address)
    paths: list[list[str]] = []

    def walk(node: str, path: list[str]):
        if node == dst:
            paths.append(path)
            return
        if len(path) > len(topo.nodes):
            return
        nbrs = [i.peer_node for i in plan.ifaces_of(node)]
        if dst in nbrs:
            walk(dst, path + [dst])
            return
        routes = [r for r in plan.routes_of(node) if r.family == 4 and r.dst == f"{target}/32"]
        if not routes:
            routes = [r for r in plan.routes_of(node) if r.family == 4 and r.dst == "default"]
        for r in routes:
            for nh in r.nexthops:
                walk(nh.peer, path + [nh.peer])

    walk(src, [src])
    return paths
