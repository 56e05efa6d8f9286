"""In-order delivery across a lab's veths.

A veth hands a packet to its peer with netif_rx, onto the input backlog of whichever CPU runs the
sender. Behind a shaped egress that CPU changes from packet to packet (the qdisc is run by its
watchdog timer or by the next enqueue, on any CPU), and two backlogs drain independently: packets
leave the shaper in order and can reach the next namespace swapped (captured along a path, issue
19's note). TCP absorbs that; an RC QP takes every swap for a loss (a NAK, then Go-Back-N).

With GRO on, a veth receives through NAPI instead: one ring per receive queue, drained in order.
The kernel takes that path only for packets it could aggregate, which excludes forwarded ones
while the sender has TSO on (veth_skb_is_eligible_for_gro); so each end gets GRO on and TSO off.
And each end's gro_max_size is 1 byte: NAPI's order without GRO's aggregation, which would merge a
flow's packets at a switch's ingress into one 64 KB skb that a tail drop at its egress loses whole
(skb_gro_receive refuses any merge past gro_max_size). Every lab delivers so by default
(`NetnsLab(in_order=False)` for the kernel's own delivery). Everything here lives in the lab's
namespaces and goes with them.
"""

from __future__ import annotations

from harness.lab.nsctx import in_netns

TSO = ("tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation")


GRO_MAX_SIZE = 1  # bytes: no two packets are ever merged


def napi_delivery(ns: str, ifnames: list[str], ipr=None) -> dict[str, dict[str, bool]]:
    """GRO on and TSO off on these interfaces of namespace `ns`, and no GRO aggregation (through
    `ipr`, the namespace's pyroute2 handle, where given); returns what the kernel reports after the
    change (feature -> enabled), which a caller can check."""
    from pyroute2.ethtool import Ethtool
    with in_netns(ns):
        et = Ethtool()  # its sockets belong to the namespace they were made in
    out = {}
    try:
        for ifname in ifnames:
            f = et.get_features(ifname)
            f.features["rx-gro"].enable = True
            for name in TSO:
                if name in f.features:
                    f.features[name].enable = False
            et.set_features(ifname, f)
            got = et.get_features(ifname).features
            out[ifname] = {name: got[name].enable for name in ("rx-gro", *TSO) if name in got}
            if ipr is not None:
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], gro_max_size=GRO_MAX_SIZE)
    finally:
        et.close()
    return out
