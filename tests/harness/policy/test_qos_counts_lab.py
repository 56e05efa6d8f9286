"""A classful qdisc tree's drops, counted once: the kernel counts a child's drop at its parent
too (TBF, HTB: `qdisc_qstats_drop(sch)` when the child's enqueue drops), so the root's count is
the tree's and a sum over every qdisc counts each drop twice. Every reader of a link's drops
(the runner's rows, the Go-Back-N sweep's) goes through the lab's `link_counters`, which reads
the roots through the one qdisc read-back (metrolab.netem.tree.counts)."""

from __future__ import annotations

import socket

import pytest

from metrolab.harness.kernel import sh
from metrolab.harness.kernel.nsctx import in_netns
from metrolab.netem.tree import counts, read_tree
from tests.support.labs import two_hosts

pytestmark = pytest.mark.requires("netns")


def test_a_childs_drops_are_counted_once_by_the_root_and_twice_by_a_sum(lab_factory):
    lab = lab_factory(two_hosts())
    end = next(e for e in lab.plan.ends("h1-sw") if e.node == "h1")
    ns, dev = lab.ns("h1"), end.ifname
    # a 1 Mbit/s TBF whose child queue holds three 1000-byte datagrams
    sh.tc(["qdisc", "replace", "dev", dev, "root", "handle", "1:", "tbf", "rate", "1mbit", "burst", "5k",
           "limit", "100k"], netns=ns)
    sh.tc(["qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "bfifo", "limit", "3000"], netns=ns)
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(300):  # far more at once than 5 KB of burst and 3 KB of queue pass
            s.sendto(b"x" * 1000, (str(lab.topology.nodes["h2"].address), 9))
    finally:
        s.close()
    h = lab.handle("h1")
    idx = h.link_lookup(ifname=dev)[0]
    drops = {q.get_attr("TCA_KIND"): q.get_attr("TCA_STATS")["drop"] for q in h.get_qdiscs(index=idx)
             if q.get_attr("TCA_STATS") and q["handle"]}
    child = drops["bfifo"]
    assert child > 200, drops  # the datagrams the queue could not hold
    assert drops["tbf"] == child and sum(drops.values()) == 2 * child, drops
    tree = read_tree(h, ns, dev)
    assert {q.kind: q.drops for q in tree} == drops and counts(tree)[1] == child
    assert lab.link_counters("h1-sw", ecn=False)[1] == child  # the far end (sw) dropped nothing
