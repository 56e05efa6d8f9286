"""Flow control and tenant slices on a link's egress (both ends), composed with its impairment.

- tail-drop / deep-buffer: the link's rate stage (TBF) gets a byte limit: shallow (32 KiB unless
  given) or at least 1.5 x the link's bandwidth-delay product and 4 MiB (an emulated lossless
  link: deep-buffer switches hold an incast burst whatever the distance);
- slices: the rate stage becomes HTB: one class per tenant (guaranteed rate, ceiling), keyed by
  DSCP or source address with u32 filters, unclassified traffic in a default class that may borrow
  what the tenants leave.

Under netem the rate stage is netem's child (handle 10:), on a host kernel the root (1:).
"""

from __future__ import annotations

import dataclasses
import ipaddress

from harness import sh
from harness.errors import LabError
from netem.profile import Impairment

ETH_P_IP = 0x0800
SHALLOW = 32 * 1024
DEEP_FLOOR = 4 << 20  # a deep-buffer switch holds a whole incast even where the BDP is tiny
DEFAULT_CLASS = 0x99


def buffer_bytes(fc, imp: Impairment) -> int:
    """The byte limit a flow-control policy gives the link's rate stage."""
    if fc.kind == "tail-drop":
        return fc.buffer or SHALLOW
    rate = imp.rate_bps or 1e9
    rtt = 2 * (imp.delay_s or 0.0) + 0.001  # + 1 ms: the lab's own hops
    return max(fc.buffer or 0, int(1.5 * rate / 8 * rtt), DEEP_FLOOR)


def with_flow_control(imp: Impairment, fc) -> Impairment:
    if fc is None or fc.kind not in ("tail-drop", "deep-buffer"):
        return imp
    return dataclasses.replace(imp, queue_bytes=buffer_bytes(fc, imp))


def u32_keys(sl, addresses: dict[str, str]) -> list[str]:
    """pyroute2 u32 keys ("value/mask+offset", 32-bit words of the IPv4 header) for a slice."""
    if sl.dscp is not None:
        return [f"0x{(sl.dscp << 2) << 16:08x}/0x00fc0000+0"]  # the TOS byte, ECN bits masked out
    net = ipaddress.ip_network(addresses.get(sl.source, sl.source), strict=False)
    if net.version != 4:
        raise LabError(f"slice {sl.name}: u32 source matching is IPv4 here ({sl.source})")
    return [f"0x{int(net.network_address):08x}/0x{int(net.netmask):08x}+12"]


def install_slices(shaper, ifname: str, imp: Impairment, slices, addresses: dict[str, str], netem: bool) -> None:
    """Replace the rate stage of `ifname` (already shaped with `imp`) by HTB with one class per slice."""
    ipr = shaper.ipr
    idx = shaper._index(ifname)
    link_rate = imp.rate_bps
    if not link_rate:
        raise LabError(f"{ifname}: slices divide a link's rate; give the link a rate")
    if netem:
        parent, handle = 0x10001, 0x100000          # netem 1: -> its class 1:1 -> our HTB 10:
        try:
            ipr.tc("del", index=idx, handle=handle, parent=parent)
        except Exception:  # noqa: BLE001 — no TBF child: netem without a rate
            pass
        ipr.tc("add", "htb", idx, handle, parent=parent, default=DEFAULT_CLASS)
    else:
        shaper.clear(ifname)
        handle = 0x10000
        ipr.tc("add", "htb", idx, handle, default=DEFAULT_CLASS)
    major = handle >> 16
    top = (major << 16) | 1
    burst = max(1600, int(link_rate / 8 * 0.002))
    ipr.tc("add-class", "htb", idx, top, parent=handle, rate=int(link_rate / 8), ceil=int(link_rate / 8),
           burst=burst, cburst=burst)
    spare = max(link_rate - sum(s.guaranteed for s in slices), link_rate * 0.01)
    classes = [(0x10 + i, s.guaranteed, s.ceiling or link_rate) for i, s in enumerate(slices)]
    classes.append((DEFAULT_CLASS, spare, link_rate))
    limit = imp.queue_bytes or int(link_rate / 8 * 0.05)
    for minor, rate, ceil in classes:
        cid = (major << 16) | minor
        ipr.tc("add-class", "htb", idx, cid, parent=top, rate=int(rate / 8), ceil=int(ceil / 8), burst=burst,
               cburst=burst)
        # pyroute2 0.9 drops `parent` for fifo qdiscs (it would land on the root): tc places it
        sh.tc(["qdisc", "add", "dev", ifname, "parent", f"{major:x}:{minor:x}", "handle", f"{0x100 + minor:x}:",
               "bfifo", "limit", str(limit)], netns=shaper.ns)
    for i, s in enumerate(slices):
        ipr.tc("add-filter", "u32", idx, parent=handle, prio=10 + i, protocol=ETH_P_IP,
               target=(major << 16) | (0x10 + i), keys=u32_keys(s, addresses))

