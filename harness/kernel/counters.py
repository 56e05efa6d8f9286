"""RDMA (rxe / NIC) hardware counters, the TCP stack's counters and interface counters, read before
and after a run."""

from __future__ import annotations

from pathlib import Path

from metrolab.harness.kernel.nsctx import iproute_here

IB_CLASS = Path("/sys/class/infiniband")
# the calling thread's network namespace: a lab enters a node's namespace in the calling thread
# only, which need not be the main one (/proc/self/net)
THREAD_NET = Path("/proc/thread-self/net")


def hw_counters(dev: str, port: int = 1) -> dict[str, int]:
    """Every counter the device exports for `port` (empty if it exports none)."""
    out = {}
    for base in (IB_CLASS / dev / "ports" / str(port) / "hw_counters", IB_CLASS / dev / "hw_counters"):
        if base.is_dir():
            for f in base.iterdir():
                try:
                    out[f.name] = int(f.read_text().strip())
                except (OSError, ValueError):
                    continue
    return out


def tcp_counters() -> dict[str, int]:
    """The TCP stack's counters in this thread's namespace, as "Tcp:OutSegs", "TcpExt:TCPTimeouts", ..."""
    return snmp_counters((THREAD_NET / "snmp").read_text()) | snmp_counters((THREAD_NET / "netstat").read_text())


def snmp_counters(text: str) -> dict[str, int]:
    """/proc/net/snmp's (and netstat's) layout: per protocol, a line of names, then one of values."""
    out = {}
    lines = text.splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        proto, _, names = names.partition(":")
        for name, value in zip(names.split(), values.partition(":")[2].split()):
            out[f"{proto}:{name}"] = int(value)
    return out


def if_counters(ipr, ifname: str) -> dict[str, int]:
    idx = ipr.link_lookup(ifname=ifname)[0]
    stats = ipr.get_links(idx)[0].get("IFLA_STATS64")
    return {k: stats[k] for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped")}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after))}


def node_counters(dev: str, ifnames: list[str]) -> dict:
    """Where the node lives (its namespace, or its machine): its RDMA device's and interfaces' counters."""
    with iproute_here() as ipr:
        return {"rdma": hw_counters(dev), "if": {i: if_counters(ipr, i) for i in ifnames}}


def snapshot(lab, nodes: list[str]) -> dict:
    """rxe counters of the nodes' devices and counters of every interface they own."""
    out: dict[str, dict] = {"rdma": {}, "if": {}}
    for node in nodes:
        got = lab.on(node, node_counters, lab.rxe_device(node), [i.ifname for i in lab.plan.ifaces_of(node)])
        out["rdma"][node] = got["rdma"]
        for ifname, c in got["if"].items():
            out["if"][f"{node}:{ifname}"] = c
    return out


def snapshot_delta(before: dict, after: dict) -> dict:
    return {kind: {k: delta(before[kind].get(k, {}), v) for k, v in after[kind].items()} for kind in after}
