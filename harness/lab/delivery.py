"""In-order delivery across a lab's veths.

A veth hands a packet to its peer with netif_rx, onto the input backlog of whichever CPU runs the
sender. Behind a shaped egress that CPU changes from packet to packet (the qdisc is run by its
watchdog timer or by the next enqueue, on any CPU), and two backlogs drain independently: packets
leave the shaper in order and can reach the next namespace swapped (captured along a path, issue
19's note). TCP absorbs that; an RC QP takes every swap for a loss (a NAK, then Go-Back-N).

With GRO on, a veth receives through NAPI instead: one ring per receive queue, drained in order.
The kernel takes that path only for packets it could aggregate, which excludes forwarded ones
while the sender has TSO on (veth_skb_is_eligible_for_gro); so each end gets GRO on and TSO off.
Everything here lives in the lab's namespaces and goes with them.
"""

from __future__ import annotations

from harness.lab.nsctx import in_netns

TSO = ("tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation")


def napi_delivery(ns: str, ifnames: list[str]) -> dict[str, dict[str, bool]]:
    """GRO on and TSO off on these interfaces of namespace `ns`; returns what the kernel reports
    after the change (feature -> enabled), which a caller can check."""
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
    finally:
        et.close()
    return out
