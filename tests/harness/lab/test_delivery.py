"""In-order delivery on the lab's veths (harness/lab/delivery.py), the default: every end receives
through NAPI (GRO on, TSO off) without aggregating (gro_max_size 1), so packets that leave a shaped
egress in order reach the next namespace in order, one by one. Its effect on RC QPs behind two
shaped stages is the guest test tests/harness/rdma/test_order_guest.py."""

from __future__ import annotations

import pytest
from pyroute2.ethtool import Ethtool

from harness.lab.delivery import GRO_MAX_SIZE, TSO
from harness.lab.netns import NetnsLab
from harness.lab.nsctx import in_netns
from harness.spec.loader import topology_from_data
from tests.support.labs import two_hosts


def _features(lab, node: str) -> dict[str, dict]:
    with in_netns(lab.ns(node)):
        et = Ethtool()
    h = lab.handle(node)
    try:
        return {e.ifname: {k: v.enable for k, v in et.get_features(e.ifname).features.items()
                           if k in ("rx-gro", *TSO)}
                | {"gro_max_size": h.get_links(h.link_lookup(ifname=e.ifname)[0])[0].get("IFLA_GRO_MAX_SIZE")}
                for e in lab.plan.ifaces_of(node)}
    finally:
        et.close()


@pytest.mark.lab
def test_every_veth_end_receives_through_napi_one_packet_at_a_time_by_default():
    topo = topology_from_data(two_hosts(rate="100mbit"), "<test>")
    for lab in (NetnsLab(topo), NetnsLab(topo, in_order=False)):
        lab.up()
        try:
            for node in ("h1", "sw", "h2"):
                for ifname, f in _features(lab, node).items():
                    assert f["rx-gro"] is lab.in_order, (node, ifname, f)
                    assert f["tx-tcp-segmentation"] is not lab.in_order, (node, ifname, f)
                    assert (f["gro_max_size"] == GRO_MAX_SIZE) is lab.in_order, (node, ifname, f)
        finally:
            lab.down()
