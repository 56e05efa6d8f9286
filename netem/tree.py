"""The one read-back of an interface's qdisc tree: kind, handle, parent, byte or packet limit and
rate of every qdisc, root first, with its counters. Tests compare the shape with what the shaper
and policies meant to build; `lab status` shows it; the lab's link counters, the flow-control
controller and the rate probe read their counts from it (`counts`: a classful tree's drops once)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from metrolab.harness.kernel import sh

TC_H_ROOT = 0xFFFFFFFF


@dataclass(frozen=True)
class Qdisc:
    kind: str
    handle: str          # tc's notation, "1:"
    parent: str          # "root" or a class, "1:1"
    limit: int | None    # netem: packets; tbf, red, bfifo: bytes
    rate: int | None = None  # bytes/s where the qdisc itself shapes (tbf; netem with a rate)
    # counters since the qdisc was made (not part of its shape: equality ignores them). A classful
    # qdisc counts its children's packets and drops too (TBF, HTB: qdisc_qstats_drop on the parent)
    packets: int = field(default=0, compare=False)
    drops: int = field(default=0, compare=False)
    overlimits: int = field(default=0, compare=False)  # times a shaper held packets back
    marks: int = field(default=0, compare=False)  # CE marks this qdisc made (RED, fq_codel)


def tc_handle(h: int) -> str:
    return f"{h >> 16:x}:"


def tc_class(h: int) -> str:
    return "root" if h == TC_H_ROOT else f"{h >> 16:x}:{h & 0xFFFF:x}"


def _limit(q, red_limits: dict[str, int]) -> int | None:
    kind, opts = q.get_attr("TCA_KIND"), q.get_attr("TCA_OPTIONS")
    if kind == "netem":
        return int(opts["limit"])
    if kind == "tbf":
        return int(opts.get_attr("TCA_TBF_PARMS")["limit"])
    if kind in ("bfifo", "pfifo") and isinstance(opts, str):
        # pyroute2 leaves fifo options undecoded ("39:30:00:00"): struct tc_fifo_qopt { __u32 limit; }
        return int.from_bytes(bytes.fromhex(opts.replace(":", "")[:8]), "little")
    if kind == "red":
        return red_limits.get(tc_handle(q["handle"]))
    return None


def _rate(q) -> int | None:
    kind, opts = q.get_attr("TCA_KIND"), q.get_attr("TCA_OPTIONS")
    if kind == "tbf":
        return int(opts.get_attr("TCA_TBF_PARMS")["rate"])
    if kind == "netem":
        r = opts.get_attr("TCA_NETEM_RATE")
        return int(r["rate"]) if r and r["rate"] else None
    return None


def read_tree(ipr, ns: str | None, ifname: str, *, netlink_only: bool = False) -> list[Qdisc]:
    """The qdiscs on `ifname` (pyroute2 `ipr` of namespace `ns`), parents before children.
    `netlink_only`: no tc process (a counter read on a hot path): RED's limit and CE marks unread."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"interface {ifname} not found in namespace {ns}")
    qs = [q for q in ipr.get_qdiscs(index=found[0]) if q["handle"]]
    # pyroute2 decodes neither RED's options nor RED's and fq_codel's extended stats: tc reads
    # those (a process, so only where such a qdisc is)
    ext = {}
    if not netlink_only and any(q.get_attr("TCA_KIND") in ("red", "fq_codel") for q in qs):
        ext = {q["handle"]: q for q in json.loads(sh.tc(["-s", "-j", "qdisc", "show", "dev", ifname],
                                                         netns=ns).stdout or "[]")}
    red = {h: int(q["options"]["limit"]) for h, q in ext.items() if q.get("kind") == "red"}
    tree = []
    for q in qs:
        st = q.get_attr("TCA_STATS") or {}
        x = ext.get(tc_handle(q["handle"]), {})
        tree.append(Qdisc(q.get_attr("TCA_KIND"), tc_handle(q["handle"]), tc_class(q["parent"]), _limit(q, red),
                          _rate(q), int(st.get("packets", 0)), int(st.get("drop", 0)), int(st.get("overlimits", 0)),
                          int(x.get("marked", 0)) + int(x.get("ce_mark", 0))))
    depth = {"root": 0}
    for _ in tree:  # parents first: a qdisc's depth is its parent qdisc's + 1
        for q in tree:
            major = q.parent.split(":")[0] + ":"
            if q.parent == "root":
                depth[q.handle] = 0
            elif major in depth:
                depth[q.handle] = depth[major] + 1
    return sorted(tree, key=lambda q: (depth.get(q.handle, 99), q.handle))


def counts(tree: list[Qdisc]) -> tuple[int, int, int]:
    """(packets sent, packets dropped, CE marks) by a tree: the root's sent and dropped (it counts
    its children's; a sum over the tree would count a child's drop twice), every qdisc's marks
    (each mark is counted only by the qdisc that made it)."""
    root = [q for q in tree if q.parent == "root"]
    return (sum(q.packets for q in root), sum(q.drops for q in root), sum(q.marks for q in tree))


def qdisc_count(ipr) -> int:
    """Every qdisc in `ipr`'s namespace, on every interface (a leak shows as growth)."""
    return len(ipr.get_qdiscs())
