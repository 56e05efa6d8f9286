"""Flow control and tenant slices on a link's egress (both ends), composed with its impairment.

- tail-drop / deep-buffer: the link's rate stage (TBF) gets a byte limit: shallow (32 KiB unless
  given) or at least 1.5 x the link's bandwidth-delay product and 4 MiB (an emulated lossless
  link: deep-buffer switches hold an incast burst whatever the distance);
- ecn: RED with ECN under the rate stage: once the average queue holds more than
  `ecn_threshold` of the link's rate, packets of ECN-capable flows are marked CE instead of
  dropped (dropped only past RED's hard limit);
- slices: the rate stage becomes HTB: one class per tenant (guaranteed rate, ceiling), keyed by
  DSCP or source address with u32 filters, unclassified traffic in a default class that may borrow
  what the tenants leave; a strict slice is served before the others while under its rate;
- per-flow: the same HTB with one class per learned 5-tuple (equal shares, each may borrow the
  whole link) and its own queue, so one flow's backlog does not delay or drop another's.

Under netem the rate stage is netem's child (handle 10:), on a host kernel the root (1:). A link
without a policy takes netem's own rate instead (netem.profile.Impairment.rate_in_netem): every
policy's impairment goes through `classful` first.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import sh
from metrolab.netem.profile import Impairment
from metrolab.netem.tree import read_tree

ETH_P_IP = 0x0800
SHALLOW = 32 * 1024
DEEP_FLOOR = 4 << 20  # a deep-buffer switch holds a whole incast even where the BDP is tiny
DEFAULT_CLASS = 0x99


def classful(imp: Impairment) -> Impairment:
    """`imp` with its rate in the TBF child under netem (10:), which the queue policies fill (RED)
    or replace (HTB); netem's own rate would queue inside netem, out of their reach."""
    return dataclasses.replace(imp, tbf_stage=True)


def _require_classful(shaper, ifname: str) -> None:
    """Refuse to add queues behind a netem that carries the link's rate: they would never fill."""
    root = next((q for q in read_tree(shaper.ipr, shaper.ns, ifname, netlink_only=True) if q.parent == "root"), None)
    if root is not None and root.kind == "netem" and root.rate:
        raise LabError(f"{ifname}: netem carries this link's rate, so a queue under it never fills; "
                       "impair the link with qos.classful(impairment) first")


def buffer_bytes(fc, imp: Impairment) -> int:
    """The byte limit a flow-control policy gives the link's rate stage."""
    if fc.kind == "tail-drop":
        return fc.buffer or SHALLOW
    rate = imp.rate_bps or 1e9
    rtt = 2 * (imp.delay_s or 0.0) + 0.001  # + 1 ms: the lab's own hops
    return max(fc.buffer or 0, int(1.5 * rate / 8 * rtt), DEEP_FLOOR)


def red_params(fc, imp: Impairment) -> tuple[int, int, int]:
    """RED's (min, max, limit) bytes: marking from `ecn_threshold` seconds of the link's rate."""
    lo = max(3000, int((imp.rate_bps or 0) / 8 * fc.ecn_threshold))
    hi = 3 * lo
    return lo, hi, max(fc.buffer or 0, 4 * hi, DEEP_FLOOR // 4)


def leaf_bytes(imp: Impairment) -> int:
    """The queue of each HTB class (50 ms of the link's rate unless the link sets one)."""
    return imp.queue_bytes or int((imp.rate_bps or 0) / 8 * 0.05)


def with_flow_control(imp: Impairment, fc, slices: int = 0) -> Impairment:
    """The link's impairment with the policy's buffer (flow control `fc`, or `slices` HTB tenant
    classes), and a netem limit that lets that buffer bind. The rate stage is then the TBF child
    the policy acts on (`classful`), not netem's own rate."""
    if fc is None and not slices:
        return imp
    imp = classful(imp)
    if fc is not None and fc.kind in ("tail-drop", "deep-buffer"):
        imp = dataclasses.replace(imp, queue_bytes=buffer_bytes(fc, imp))
        held = imp.queue_bytes
    elif fc is not None and fc.kind == "ecn":
        held = red_params(fc, imp)[2]
    else:
        held = ((fc.flows if fc is not None else slices) + 1) * leaf_bytes(imp)  # a queue per class + default
    if imp.limit_packets:
        # netem's packet limit counts what its child (the rate stage) holds too: raise it so the
        # policy's byte limit is the one that drops, however small the packets
        imp = dataclasses.replace(imp, limit_packets=imp.limit_packets + -(-(held or 0) // 64))
    return imp


def dscp_key(dscp: int) -> str:
    """The pyroute2 u32 key of a DSCP: the TOS byte, ECN bits masked out."""
    return f"0x{(dscp << 2) << 16:08x}/0x00fc0000+0"


def htb_burst(link_rate: float) -> int:
    """The bucket of every HTB class on a link: 2 ms of its rate, at least a full frame."""
    return max(1600, int(link_rate / 8 * 0.002))


def u32_keys(sl, addresses: dict[str, str]) -> list[str]:
    """pyroute2 u32 keys ("value/mask+offset", 32-bit words of the IPv4 header) for a slice."""
    if sl.dscp is not None:
        return [dscp_key(sl.dscp)]
    net = ipaddress.ip_network(addresses.get(sl.source, sl.source), strict=False)
    if net.version != 4:
        raise LabError(f"slice {sl.name}: u32 source matching is IPv4 here ({sl.source})")
    return [f"0x{int(net.network_address):08x}/0x{int(net.netmask):08x}+12"]


def flow_keys(f) -> list[str]:
    """u32 keys of a 5-tuple (IPv4 without options: the ports are the word at offset 20)."""
    if ipaddress.ip_address(f.src).version != 4:
        raise LabError(f"per-flow queues match IPv4 5-tuples here ({f.src})")
    return [f"0x{f.proto << 16:08x}/0x00ff0000+8",
            f"0x{int(ipaddress.ip_address(f.src)):08x}/0xffffffff+12",
            f"0x{int(ipaddress.ip_address(f.dst)):08x}/0xffffffff+16",
            f"0x{(f.sport << 16) | f.dport:08x}/0xffffffff+20"]


def install_slices(shaper, ifname: str, imp: Impairment, slices, addresses: dict[str, str], netem: bool) -> None:
    """Replace the rate stage of `ifname` (already shaped with `imp`) by HTB with one class per slice."""
    install_classes(shaper, ifname, imp, [(s.guaranteed, s.ceiling, u32_keys(s, addresses), s.strict)
                                          for s in slices], netem)


def install_per_flow(shaper, ifname: str, imp: Impairment, flows, netem: bool, leaf: str = "bfifo") -> int:
    """One HTB class and queue per flow: equal guaranteed shares, each may take the whole link."""
    if not flows:
        raise LabError("per-flow queues need the workload's flows (none were learned)")
    if not imp.rate_bps:
        raise LabError(f"{ifname}: per-flow queues divide a link's rate; give the link a rate")
    share = imp.rate_bps * 0.99 / len(flows)
    return install_classes(shaper, ifname, imp, [(share, None, flow_keys(f)) for f in flows], netem, leaf)


def install_classes(shaper, ifname: str, imp: Impairment, classes: list[tuple], netem: bool,
                    leaf: str = "bfifo") -> int:
    """HTB as the rate stage: (guaranteed bit/s, ceiling bit/s or None, u32 keys[, strict]) per
    class, in filter order, plus a default class for the rest. Strict classes get HTB priority 0 and
    the rest 1: HTB serves the lowest priority number first among the classes under their rate
    (and lends spare rate in that order). Each class's queue is a `leaf` qdisc (handle
    0x100 + the class minor) holding `leaf_bytes(imp)`: bfifo, or plug (released:
    metrolab.harness.policy.backpressure pauses it). Returns the HTB's major."""
    ipr = shaper.ipr
    idx = shaper._index(ifname)
    link_rate = imp.rate_bps
    if not link_rate:
        raise LabError(f"{ifname}: HTB classes divide a link's rate; give the link a rate")
    if netem:
        _require_classful(shaper, ifname)
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
    burst = htb_burst(link_rate)
    ipr.tc("add-class", "htb", idx, top, parent=handle, rate=int(link_rate / 8), ceil=int(link_rate / 8),
           burst=burst, cburst=burst)
    classes = [(*c, False) if len(c) == 3 else tuple(c) for c in classes]  # strict: off unless given
    spare = max(link_rate - sum(c[0] for c in classes), link_rate * 0.01)
    rest = int(any(c[3] for c in classes))  # with a strict class the others are served after it
    leaves = [(0x10 + i, rate, ceil or link_rate, 0 if strict else rest)
              for i, (rate, ceil, _, strict) in enumerate(classes)]
    leaves.append((DEFAULT_CLASS, spare, link_rate, rest))
    limit = leaf_bytes(imp)
    for minor, rate, ceil, prio in leaves:
        cid = (major << 16) | minor
        ipr.tc("add-class", "htb", idx, cid, parent=top, rate=int(rate / 8), ceil=int(ceil / 8), burst=burst,
               cburst=burst, prio=prio)
        # pyroute2 0.9 drops `parent` for fifo qdiscs (it would land on the root): tc places it
        sh.tc(["qdisc", "add", "dev", ifname, "parent", f"{major:x}:{minor:x}", "handle", f"{0x100 + minor:x}:",
               leaf, "limit", str(limit)], netns=shaper.ns)
        if leaf == "plug":  # a new plug holds everything until released
            sh.tc(["qdisc", "change", "dev", ifname, "handle", f"{0x100 + minor:x}:", "plug", "release_indefinite"],
                  netns=shaper.ns)
    for i, (_, _, keys, _) in enumerate(classes):
        ipr.tc("add-filter", "u32", idx, parent=handle, prio=10 + i, protocol=ETH_P_IP,
               target=(major << 16) | (0x10 + i), keys=keys)
    return major


def change_class(shaper, ifname: str, major: int, minor: int, rate: float, link_rate: float) -> None:
    """A class of `install_classes` (strict) held to `rate` as guarantee and ceiling, changed in
    place: its queue and filter stay (elastic bandwidth, metrolab.harness.runner.tasks)."""
    r, burst = int(min(rate, link_rate) / 8), htb_burst(link_rate)
    shaper.ipr.tc("change-class", "htb", shaper._index(ifname), (major << 16) | minor, parent=(major << 16) | 1,
                  rate=r, ceil=r, burst=burst, cburst=burst, prio=0)


def install_ecn(shaper, ifname: str, imp: Impairment, fc, netem: bool) -> dict:
    """RED with ECN as the rate stage's queue (TBF 10: under netem, 1: on a host kernel): marks
    from `ecn_threshold` seconds of queue (min), certainly at three times that (max, probability 1)."""
    rate = imp.rate_bps
    if not rate:
        raise LabError(f"{ifname}: ECN marks a rate stage's queue; give the link a rate")
    parent = "10:1" if netem else "1:1"
    kinds = {q.kind for q in read_tree(shaper.ipr, shaper.ns, ifname)}
    if "tbf" not in kinds:
        raise LabError(f"{ifname}: no TBF rate stage to put RED under (qdiscs: {', '.join(sorted(kinds))})")
    lo, hi, limit = red_params(fc, imp)
    burst = max(2, (2 * lo + hi) // (3 * 1000))
    sh.tc(["qdisc", "add", "dev", ifname, "parent", parent, "handle", "20:", "red", "limit", str(limit),
           "min", str(lo), "max", str(hi), "avpkt", "1000", "burst", str(burst), "bandwidth", f"{int(rate)}bit",
           "probability", "1", "ecn"], netns=shaper.ns)
    return {"min": lo, "max": hi, "limit": limit}
