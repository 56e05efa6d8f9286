"""The controller's flow learning: the established TCP connections between lab hosts, read from
each host's sockets (inet_diag through pyroute2) with the bytes each end has sent and had
acknowledged. One connection is two flows, one per direction, each with its own bytes: planned
paths and per-flow queues act on the direction the bytes go.

What a switch's telemetry would report to a controller (white paper section 4.3.1); here the
hosts' socket tables are exact where a switch would sample.
"""

from __future__ import annotations

import ipaddress
import socket

from harness.lab.nsctx import in_netns
from harness.policy.planner import Flow

INET_DIAG_INFO = 1 << (2 - 1)  # the tcp_info extension (INET_DIAG_INFO = 2)


def sockets_of(ns: str) -> list[dict]:
    """Established TCP sockets in namespace `ns`: addresses, ports, bytes sent and acknowledged."""
    from pyroute2.netlink.diag import SS_CONN, DiagSocket
    out = []
    with in_netns(ns):
        ds = DiagSocket()  # a netlink socket belongs to the namespace it was made in
    with ds:
        ds.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for m in ds.get_sock_stats(family=family, states=SS_CONN, extensions=INET_DIAG_INFO):
                if m["idiag_state"] != 1:  # TCP_ESTABLISHED
                    continue
                info = m.get_attr("INET_DIAG_INFO")
                out.append({"src": m["idiag_src"], "dst": m["idiag_dst"], "sport": m["idiag_sport"],
                            "dport": m["idiag_dport"], "bytes": info.get("tcpi_bytes_acked", 0) if info else 0})
    return out


def _canonical(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


def learn(lab, hosts: list[str], since: dict[tuple, int] | None = None, min_bytes: int = 0) -> list[Flow]:
    """Flows between `hosts` (each direction of each connection), with the bytes sent since the
    `since` snapshot (a previous learn's {key: bytes}); flows under `min_bytes` are left out."""
    addrs = {str(lab.topology.nodes[h].address) for h in hosts}
    seen: dict[tuple, Flow] = {}
    for h in hosts:
        for s in sockets_of(lab.ns(h)):
            src, dst = _canonical(s["src"]), _canonical(s["dst"])
            if src not in addrs or dst not in addrs or src == dst:
                continue
            f = Flow(src, dst, s["sport"], s["dport"], 6, s["bytes"])
            seen[f.key] = f
    out = []
    for key, f in sorted(seen.items()):
        sent = f.bytes - (since or {}).get(key, 0)
        if sent >= min_bytes:
            out.append(Flow(f.src, f.dst, f.sport, f.dport, f.proto, max(sent, 0)))
    return out


def snapshot(flows: list[Flow]) -> dict[tuple, int]:
    return {f.key: f.bytes for f in flows}
