"""The controller's flow learning, on the switches: while a pass of the workload runs, every packet
the policy's switches send is counted per 5-tuple (an nftables set with a counter per element,
filled from the postrouting hook), and the controller reads the sets afterwards. What a switch's
flow telemetry (sFlow, IPFIX) gives a controller (white paper section 4.3.1), exact here where
a switch would sample; and it sees any transport: TCP connections and RoCEv2 queue pairs (UDP
to 4791, one source port per QP) alike. One connection is two flows, one per direction, each with
its own bytes: planned paths and per-flow queues act on the direction the bytes go.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from metrolab.harness.errors import LabError
from metrolab.harness.policy import node
from metrolab.harness.policy.planner import Flow

TABLE = "metrolab_flows"  # the metrolab_ prefix marks every nft table of ours (lab clean, testbed clean)
PROTOS = {"tcp": 6, "udp": 17}
SET_SIZE = 65535


def script() -> str:
    """The learning table: one set per address family, keyed by the 5-tuple, a counter per element."""
    key4 = "ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service"
    key6 = "ipv6_addr . ipv6_addr . inet_proto . inet_service . inet_service"
    return f"""table inet {TABLE} {{
  set f4 {{ type {key4}; flags dynamic; counter; size {SET_SIZE}; }}
  set f6 {{ type {key6}; flags dynamic; counter; size {SET_SIZE}; }}
  chain egress {{
    type filter hook postrouting priority 0; policy accept;
    meta nfproto ipv4 meta l4proto {{ tcp, udp }} update @f4 {{ ip saddr . ip daddr . meta l4proto . th sport . th dport }}
    meta nfproto ipv6 meta l4proto {{ tcp, udp }} update @f6 {{ ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport }}
  }}
}}
"""


def parse(doc: dict) -> dict[tuple, int]:
    """{5-tuple key: bytes} from `nft -j list table inet metrolab_flows`."""
    out: dict[tuple, int] = {}
    for item in doc.get("nftables", []):
        s = item.get("set")
        if not s or s.get("table") != TABLE:
            continue
        for e in s.get("elem", []):
            e = e.get("elem", e)
            src, dst, proto, sport, dport = e["val"]["concat"]
            proto = PROTOS.get(proto, proto) if isinstance(proto, str) else int(proto)
            key = (str(src), str(dst), int(sport), int(dport), int(proto))
            out[key] = out.get(key, 0) + int((e.get("counter") or {}).get("bytes", 0))
    return out


def merge(counts: list[dict[tuple, int]], addresses: set[str], min_bytes: int = 1) -> list[Flow]:
    """Flows between `addresses` as several switches counted them: a flow crossing two of them is
    counted by both, so each keeps the largest count (the switches it crossed saw the same bytes,
    less what was dropped between them)."""
    best: dict[tuple, int] = {}
    for c in counts:
        for key, b in c.items():
            if key[0] in addresses and key[1] in addresses and key[0] != key[1]:
                best[key] = max(best.get(key, 0), b)
    return [Flow(src, dst, sport, dport, proto, b)
            for (src, dst, sport, dport, proto), b in sorted(best.items()) if b >= min_bytes]


def _read(lab, name: str) -> dict[tuple, int]:
    rc, stdout, stderr = lab.on(name, node.nft_read, f"list table inet {TABLE}")
    if rc != 0:
        raise LabError(f"{name}: could not read the flow counters: {stderr.strip()}")
    return parse(json.loads(stdout))


def remove(lab, nodes: list[str]) -> None:
    for name in nodes:
        lab.on(name, node.nft, f"delete table inet {TABLE}", check=False)


@contextmanager
def learning(lab, nodes: list[str], hosts: list[str]) -> Iterator[list[Flow]]:
    """Count flows on `nodes` while the body runs; on exit the list it yields holds the flows
    between `hosts` (both directions, bytes as the switches saw them). The tables are removed
    whatever happens."""
    addrs = set()
    for h in hosts:
        n = lab.topology.nodes[h]
        addrs |= {str(n.address)} | ({str(n.address6)} if n.address6 else set())
    flows: list[Flow] = []
    installed: list[str] = []
    try:
        for name in nodes:
            installed.append(name)  # recorded first: a half-made table is removed too
            lab.policy_touch(name, nft=[("inet", TABLE)])
            lab.on(name, node.nft, f"table inet {TABLE}\ndelete table inet {TABLE}\n" + script())
        yield flows
        flows.extend(merge([_read(lab, n) for n in nodes], addrs))
    finally:
        remove(lab, installed)


def policy_nodes(lab, policy) -> list[str]:
    """Where a policy's controller learns flows: its switches and the nodes at the ends of its links."""
    nodes = list(policy.switches or [])
    for link in policy.links or []:
        for end in lab.plan.ends(link):
            if end.node not in nodes:
                nodes.append(end.node)
    return nodes
