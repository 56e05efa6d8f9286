"""In-order delivery on the lab's veths (harness/lab/delivery.py): every end receives through NAPI
(GRO on, TSO off), so packets that leave a shaped egress in order reach the next namespace in
order, and an RC QP behind two shaped stages sees no sequence gap it did not cause by a loss."""

from __future__ import annotations

import pytest
from pyroute2.ethtool import Ethtool

from harness.lab.delivery import TSO
from harness.lab.netns import NetnsLab
from harness.lab.nsctx import in_netns
from harness.spec.loader import topology_from_data
from netem.profile import Impairment
from tests.support.labs import rdma_sites, two_hosts


def _features(lab, node: str) -> dict[str, dict[str, bool]]:
    with in_netns(lab.ns(node)):
        et = Ethtool()
    try:
        return {e.ifname: {k: v.enable for k, v in et.get_features(e.ifname).features.items()
                           if k in ("rx-gro", *TSO)} for e in lab.plan.ifaces_of(node)}
    finally:
        et.close()


@pytest.mark.lab
def test_every_veth_end_receives_through_napi_unless_asked_not_to():
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


@pytest.mark.requires("netem", "rxe")
def test_qps_through_two_shaped_stages_see_no_gap_without_loss():
    """a1 -> gw-a -> 100 Mbit/s WAN (0.5 ms) -> gw-b -> b1's 20 Mbit/s port, deep queues: nothing is
    dropped, so every out-of-sequence request b1 counts would be reordering (before in-order delivery
    there were 4-11 per run, every run; issue 19's captures)."""
    from harness.rdma.run import run_pair
    lab = NetnsLab(topology_from_data(rdma_sites((1, 1)), "<test>"))
    lab.up()
    try:
        lab.impair("b1-gw-b", Impairment(rate_bps=20e6, limit_packets=8000, queue_bytes=8 << 20))
        lab.impair("wan-ab", Impairment(delay_s=0.0005, rate_bps=100e6, limit_packets=8000, queue_bytes=8 << 20))
        # 4 QPs x 128 unacknowledged packets queue ~200 ms at the port: above rxe's default timer
        # (2^14 x 4.096 us = 67 ms), which would fire spuriously and resend; 2^19 (2.1 s) does not
        res = run_pair(lab, "b1", "a1", mode="bw", size=262144, iters=2, qps=4, port=19150,
                       extra=["--op-timeout", "120", "--timeout", "19"])
        c = res["counters"]["rdma"]
        assert c["b1"].get("out_of_seq_request", 0) == 0 and c["b1"].get("duplicate_request", 0) == 0, c
        assert c["a1"].get("rcvd_seq_err", 0) == 0 and c["a1"].get("completer_retry_err", 0) == 0, c
        # and the port is the bottleneck, not Go-Back-N: > 80 % of its 20 Mbit/s
        assert res["client"]["bw_avg_gbps"] > 0.8 * 0.02 * 1024 / 1082, res["client"]
    finally:
        lab.down()
