"""A route as pyroute2's arguments: plain data and a netlink handle only, so it runs where the
hosts backend's operations run on a machine (Ray's or the ssh agent's: no pydantic there)."""

from __future__ import annotations

RTNH_F_ONLINK = 4  # the gateway is on the link (a point-to-point peer), whatever the prefix says


def route_request(ipr, dst: str, family: int, nexthops: list[tuple[str, str]]) -> dict:
    """pyroute2's arguments for a route to `dst` over (gateway, ifname) next hops (ECMP when several):
    IPv4 hops are onlink (the gateway is the peer of a point-to-point address); IPv6 has explicit
    peer routes. Used in a namespace and on a testbed's machine alike."""
    flags = RTNH_F_ONLINK if family == 4 else 0
    hops = [{"gateway": gw, "oif": ipr.link_lookup(ifname=ifname)[0], "flags": flags} for gw, ifname in nexthops]
    kw: dict = {"dst": dst, "family": 2 if family == 4 else 10}
    if len(hops) == 1:
        kw |= hops[0]
    else:
        kw["multipath"] = hops
    return kw
