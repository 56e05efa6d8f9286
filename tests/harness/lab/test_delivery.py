"""In-order delivery on the lab's veths (harness/lab/delivery.py), opt-in: every end receives
through NAPI (GRO on, TSO off), so packets that leave a shaped egress in order reach the next
namespace in order. Its effect on RC QPs behind two shaped stages was measured in the guest
(docs/lab.md); a guest test belongs with making it the default."""

from __future__ import annotations

import pytest
from pyroute2.ethtool import Ethtool

from harness.lab.delivery import TSO
from harness.lab.netns import NetnsLab
from harness.lab.nsctx import in_netns
from harness.spec.loader import topology_from_data
from tests.support.labs import two_hosts


def _features(lab, node: str) -> dict[str, dict[str, bool]]:
    with in_netns(lab.ns(node)):
        et = Ethtool()
    try:
        return {e.ifname: {k: v.enable for k, v in et.get_features(e.ifname).features.items()
                           if k in ("rx-gro", *TSO)} for e in lab.plan.ifaces_of(node)}
    finally:
        et.close()


@pytest.mark.lab
def test_every_veth_end_receives_through_napi_when_asked_and_not_by_default():
    topo = topology_from_data(two_hosts(rate="100mbit"), "<test>")
    for in_order in (True, False):
        lab = NetnsLab(topo, in_order=in_order)
        lab.up()
        try:
            for node in ("h1", "sw", "h2"):
                for ifname, f in _features(lab, node).items():
                    assert f["rx-gro"] is in_order, (node, ifname, f)
                    assert f["tx-tcp-segmentation"] is not in_order, (node, ifname, f)
        finally:
            lab.down()
