"""Packet-level evidence: what a capture sees agrees with netem's drops and rxe's counters."""

from __future__ import annotations

import os

import pytest

from metrolab.harness.rdma.capture import Capture, retry_stretches, summarize, timer_stalls, to_frame
from metrolab.harness.rdma.gbn import ib_timeout_s, timer_share
from metrolab.harness.rdma.packets import decode
from metrolab.harness.rdma.pair import run_pair
from metrolab.netem.profile import Impairment, LossModel

pytestmark = pytest.mark.requires("netem", "rxe")

ITERS = 100  # 64 KiB WRITEs: about 60 retries at 1 % loss (8-12 s under TCG here)


def _netem_drops(lab, node: str, link: str) -> int:
    h = lab.handle(node)
    idx = h.link_lookup(ifname=lab.plan.ifaces[(node, link)].ifname)[0]
    return sum(q.get_attr("TCA_STATS")["drop"] for q in h.get_qdiscs(index=idx) if q.get_attr("TCA_KIND") == "netem")


def test_capture_counts_the_retransmissions_that_the_drops_imply(lab_factory):
    lab = lab_factory("rdma-pair")
    lab.impair("wan", Impairment(loss=LossModel(p=0.01), limit_packets=10000))
    drops0 = _netem_drops(lab, "gw-a", "wan")
    a1_if = lab.plan.ifaces_of("a1")[0].ifname
    with Capture(lab.ns("a1"), a1_if) as cap:  # a1's own link: every transmission, and the ACK/NAKs that arrive
        res = run_pair(lab, "b1", "a1", size=65536, iters=ITERS, port=19200, extra=["--op-timeout", "120"])
    data_drops = _netem_drops(lab, "gw-a", "wan") - drops0
    assert cap.drops == 0, f"the capture fell behind: {cap.drops} frames dropped by the kernel"
    df = to_frame(cap.frames)
    summary = summarize(df)
    outgoing = df[df["outgoing"] & (df["kind"] == "request")]
    # 64 KiB WRITEs at a 1 KiB MTU, every one captured (two CI runs saw half of them: the reader,
    # behind under TCG, stopped with frames still queued; Capture now reads them out)
    assert len(outgoing) >= ITERS * 64, (len(outgoing), int(outgoing["psn"].max() - outgoing["psn"].min()) + 1,
                                      res["client"], res["counters"]["rdma"]["a1"])
    assert data_drops > 0
    # Go-Back-N: every dropped data packet is sent again (with the ones behind it)
    assert int(outgoing["retransmit"].sum()) >= data_drops
    assert summary["naks"] >= 1
    # the NAKs that reached a1 are what rxe counted as sequence errors on the requester, within a
    # tenth (at least 3) either way: stale NAKs for a PSN it was already resending are dropped
    # uncounted (4 of 68 in one CI run), and a run with every frame captured (0 kernel drops)
    # read 26 counted against 24 NAKs on the wire (CI, 2026-11-29; not yet explained)
    counted = res["counters"]["rdma"]["a1"].get("rcvd_seq_err", 0)
    assert abs(summary["naks"] - counted) <= max(3, counted // 10), (counted, summary["naks"])
    # rxe starts one retry at a time: until the ACK to the first ACK request among the resent packets
    # returns, a NAK for a loss among them is ignored and only the timer recovers it. The share of
    # retries the timer ended agrees with the prediction from each retry's own stretch. A requester
    # that acts on every NAK would leave ~2 % to the timer. GbnModel's stretches, which run to the
    # message's end, predicted 0.27 where six runs here read 0.23 (this prediction: 0.22), and CI
    # read 1 of 25 (2026-12-06, 50 WRITEs, against GbnModel's 0.28). A timer stall is read from the
    # last ACK, not the last send: a CI run whose window filled late counted 1 of 34 retries by send
    # silence alone (2026-11-29)
    from scipy.stats import binomtest
    retries = res["counters"]["rdma"]["a1"].get("completer_retry_err", 0)
    stretches = retry_stretches(df)
    assert abs(len(stretches) - retries) <= max(3, retries // 10), (len(stretches), retries)
    stalls = len(timer_stalls(df, ib_timeout_s(14, hz=250)))
    predicted = timer_share(stretches["stretch"].dropna().astype(int).tolist(), loss=0.01)
    ci = binomtest(min(stalls, len(stretches)), len(stretches)).proportion_ci(0.999)
    assert ci.low <= predicted <= ci.high, (stalls, len(stretches), predicted, os.uname().release)
    # every captured RoCE packet carries a valid ICRC (real rxe traffic checks our ICRC code)
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether
    roce = [f for _, _, f in cap.frames[:200] if b"\x12\xb7" in f[34:38]]
    assert roce and all(decode(bytes(Ether(f)[IP]))["icrc_ok"] for f in roce)
