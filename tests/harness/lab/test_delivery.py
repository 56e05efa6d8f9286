"""In-order delivery on the lab's veths (harness/lab/delivery.py), the default: every receive queue
of every lab veth steered (RPS) to this machine's CPUs, so a flow's packets that leave a shaped
egress in order go through one backlog and reach the next namespace in order. Read back from each
namespace's own /sys; the machine's own interfaces keep their masks. Its effect on RC QPs behind two
shaped stages is the guest test tests/harness/rdma/test_order_guest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrolab.harness.kernel import sh
from metrolab.harness.lab.delivery import all_cpus_mask
from metrolab.harness.lab.netns import NetnsLab
from metrolab.harness.spec.loader import topology_from_data
from tests.support.labs import two_hosts


def _masks(lab, node: str) -> dict[str, int]:
    script = "for q in /sys/class/net/*/queues/rx-*; do echo \"$q $(cat $q/rps_cpus)\"; done"
    out = sh.run(["ip", "netns", "exec", lab.ns(node), "sh", "-c", script]).stdout.split("\n")
    return {q.split("/")[4]: int(m.replace(",", ""), 16) for q, m in (line.split() for line in out if line)}


def _host_masks() -> dict[str, str]:
    return {str(q): (q / "rps_cpus").read_text() for q in Path("/sys/class/net").glob("*/queues/rx-*")}


@pytest.mark.requires("netns")
def test_every_lab_veth_is_steered_to_the_machines_cpus_by_default():
    topo = topology_from_data(two_hosts(rate="100mbit"), "<test>")
    host = _host_masks()
    for lab in (NetnsLab(topo), NetnsLab(topo, in_order=False)):
        lab.up()
        try:
            for node in ("h1", "sw", "h2"):
                ifaces = {e.ifname for e in lab.plan.ifaces_of(node)}
                masks = _masks(lab, node)
                assert ifaces <= set(masks), (node, masks)
                for ifname in ifaces:
                    want = int(all_cpus_mask(), 16) if lab.in_order else 0
                    assert masks[ifname] == want, (node, ifname, masks, lab.in_order)
        finally:
            lab.down()
    assert _host_masks() == host
