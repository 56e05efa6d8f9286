"""A link impaired packet by packet gets wire-sized packets from the hosts' TCP.

netem (and the nft loss rule where the kernel has no netem) loses, duplicates, reorders and
jitters one buffer at a time. With GSO a TCP sender hands its interface buffers of up to 64 KB
(44 segments at a 1500-byte MTU), which a lossy link would lose as one: up to 44 times fewer
loss events than its loss rate says, and TCP, which backs off per loss event, far faster than on
a real link. Where a link is impaired per packet the lab's hosts send one segment a buffer
(`Lab.wire_packets`); elsewhere they keep GSO, which costs the guest's TCP less CPU.

What is read: the bytes and buffers the sender's interface sent (a veth counts a GSO buffer as
one packet) while TCP fills the link."""

from __future__ import annotations

import pytest

from metrolab.harness.kernel.counters import if_counters
from metrolab.netem.probe import measure_rate
from tests.support.labs import two_hosts

pytestmark = pytest.mark.requires("netns")

WIRE = 1500 + 14  # the largest wire packet at the lab's MTU, with its Ethernet header


def bytes_per_buffer(lab) -> float:
    """Mean size of what h1's TCP handed its interface while it filled the link for a second."""
    a, b = lab.plan.ends("h1-sw")
    h = lab.handle("h1")
    before = if_counters(h, a.ifname)
    measure_rate(lab, a, b, str(lab.topology.nodes["h1"].address), str(lab.topology.nodes["sw"].address),
                 duration=1.0)
    after = if_counters(h, a.ifname)
    return (after["tx_bytes"] - before["tx_bytes"]) / (after["tx_packets"] - before["tx_packets"])


@pytest.mark.parametrize("lossy", [False, True])
def test_tcp_reaches_a_link_lossy_per_packet_in_wire_sized_packets(lab_factory, lossy):
    # no rate: a TBF would split buffers larger than its bucket itself, and hide what TCP sent
    lab = lab_factory(two_hosts(loss=0.001 if lossy else None))
    size = bytes_per_buffer(lab)
    print(f"lossy={lossy}: {size:.0f} bytes a buffer")
    if lossy:
        assert lab.wire_packets and size <= WIRE, size  # one segment a buffer: each is lost alone
    else:
        # the contrast that gives the bound its meaning: left alone, TCP's buffers are several
        # segments each (GSO sizes them to ~1 ms at the pacing rate, up to 64 KB)
        assert not lab.wire_packets and size > 2 * WIRE, size
