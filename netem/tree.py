"""Read an interface's qdisc tree back from the kernel: kind, handle, parent and byte or packet
limit of every qdisc, root first. Tests compare it with what the shaper and policies meant to
build; `lab status` shows it."""

from __future__ import annotations

import json
from dataclasses import dataclass

from harness import sh

TC_H_ROOT = 0xFFFFFFFF


@dataclass(frozen=True)
class Qdisc:
    kind: str
    handle: str          # tc's notation, "1:"
    parent: str          # "root" or a class, "1:1"
    limit: int | None    # netem: packets; tbf, red, bfifo: bytes
    rate: int | None = None  # bytes/s where the qdisc itself shapes (tbf; netem with a rate)


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


def read_tree(ipr, ns: str, ifname: str) -> list[Qdisc]:
    """The qdiscs on `ifname` (pyroute2 `ipr` of namespace `ns`), parents before children."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"interface {ifname} not found in namespace {ns}")
    # pyroute2 has no RED decoder: tc reads RED's limit
    red = {q["handle"]: int(q["options"]["limit"]) for q in
           json.loads(sh.tc(["-j", "qdisc", "show", "dev", ifname], netns=ns).stdout or "[]")
           if q.get("kind") == "red"}
    tree = [Qdisc(q.get_attr("TCA_KIND"), tc_handle(q["handle"]), tc_class(q["parent"]), _limit(q, red),
                  _rate(q))
            for q in ipr.get_qdiscs(index=found[0]) if q["handle"]]
    depth = {"root": 0}
    for _ in tree:  # parents first: a qdisc's depth is its parent qdisc's + 1
        for q in tree:
            major = q.parent.split(":")[0] + ":"
            if q.parent == "root":
                depth[q.handle] = 0
            elif major in depth:
                depth[q.handle] = depth[major] + 1
    return sorted(tree, key=lambda q: (depth.get(q.handle, 99), q.handle))
