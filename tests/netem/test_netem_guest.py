"""netem in the guest kernel: delay fidelity, loss, rate and the BDP-sized queue."""

from __future__ import annotations

import math
import statistics

import pytest

from metrolab.harness.bench import star_topology as star
from metrolab.netem.models import binomial_interval, fiber_delay_s
from metrolab.netem.probe import concurrent_rtts, measure_loss, measure_rate, rtt_floor
from tests.support.labs import two_hosts

pytestmark = pytest.mark.requires("netem")
DISTANCES = (0, 100, 250, 500)


def test_delay_is_present_monotone_and_within_the_calibration_noise(lab_factory):
    """What must always hold of calibrated netem delay, judged against the noise the calibration
    measured in this same run (not a fixed percentage: under TCG one window's RTT floor scatters by
    +-20 us, which alone is +-2 % at 100 km; the precise error is `metrolab bench vm`'s figure):
    every distance adds delay, more distance adds more, and the RTT floors land on the configured
    round trips within 4 standard deviations of the calibration's own estimates (each distance, and
    their mean: a calibration that is off by its offset, ~120 us per round trip, fails)."""
    from metrolab.netem.calibrate import _cache_file
    _cache_file().unlink(missing_ok=True)  # a fresh calibration for this lab
    lab = lab_factory(star())
    fit = lab.netem_fit
    assert fit is not None and fit.n == 6 and 20e-6 < fit.offset_s < 300e-6, fit
    targets = {}
    for d in DISTANCES:
        a, _ = lab.plan.ends(f"h{d}-sw")
        targets[d] = (lab.ns(f"h{d}"), a.ifname, a.peer_ll6)
    floors = {d: rtt_floor(s) for d, s in concurrent_rtts(targets, count=500).items()}  # ms, pinged at once
    excess = {d: floors[d] - floors[0] for d in DISTANCES[1:]}
    configured = {d: 2 * fiber_delay_s(d) * 1e3 for d in DISTANCES[1:]}
    errors_us = {d: (excess[d] - configured[d]) * 1e3 for d in excess}
    sigma_us = 2 * max(fit.noise_s * 1e6, 10.0)  # per round trip (two qdiscs), floored at ping's resolution
    each = 4 * sigma_us * math.sqrt(1 + 1 / fit.n) + 10
    mean = 4 * sigma_us * math.sqrt(1 / len(errors_us) + 1 / fit.n) + 10
    print(f"offset {fit.offset_s * 1e6:.0f} us/qdisc (sd {fit.noise_s * 1e6:.0f}), RTT error per distance (us):",
          {d: round(e) for d, e in errors_us.items()}, f"bounds: each {each:.0f}, mean {mean:.0f}")
    assert all(excess[d] > 0.5 * configured[d] for d in excess), excess               # delay is there
    assert excess[100] < excess[250] < excess[500], excess                             # and grows with distance
    assert all(abs(e) <= each for e in errors_us.values()), (errors_us, each)
    assert abs(statistics.mean(errors_us.values())) <= mean, (errors_us, mean)


def test_netem_loss_within_binomial_99_9_interval(lab_factory):
    p, n = 0.03, 10000
    lab = lab_factory(two_hosts(loss=p))
    a, b = lab.plan.ends("h1-sw")
    before = _qdisc_stats(lab, "h1", a.ifname)["netem"]
    sent, received = measure_loss(lab.ns("h1"), a.ifname, "10.9.0.1", lab.ns("sw"), b.ifname,
                                  str(lab.topology.nodes["sw"].address), n, pace_bps=5e6, settle=1.0)
    after = _qdisc_stats(lab, "h1", a.ifname)["netem"]
    # netem's own count: its drops out of what it was offered (the probe plus the odd ARP/ND packet),
    # so a slow receiver in the emulator cannot bias the figure
    dropped = after["drop"] - before["drop"]
    offered = after["packets"] - before["packets"] + dropped
    # 99.9 %: at 99 % a correct netem failed one run in a hundred by construction (it did, in CI)
    lo, hi = binomial_interval(offered, p, z=3.2905)
    assert lo <= dropped <= hi, (dropped, offered, (lo, hi))
    assert sent - received >= dropped - 5  # and the receiver saw that loss
    assert received > 0.9 * n


def test_tcp_loses_wire_packets_at_the_configured_rate(lab_factory):
    """netem loses a buffer at a time, and TCP with GSO hands it buffers of many segments, each lost
    as one (at 1 % configured, 68 of 187,293 wire packets were lost with the hosts' GSO left on).
    A lab whose link loses packets has its hosts send wire-sized ones
    (Lab.wire_packets): netem's drops out of the wire packets TCP offered it are then the
    configured rate, within the binomial 99.9 % interval."""
    p = 0.01
    lab = lab_factory(two_hosts(loss=p))
    a, b = lab.plan.ends("h1-sw")
    before = _qdisc_stats(lab, "h1", a.ifname)["netem"]
    measure_rate(lab, a, b, "10.9.0.1", str(lab.topology.nodes["sw"].address), duration=2.0)
    after = _qdisc_stats(lab, "h1", a.ifname)["netem"]
    dropped = after["drop"] - before["drop"]
    offered = after["packets"] - before["packets"] + dropped  # netem counts a GSO buffer's segments sent
    lo, hi = binomial_interval(offered, p, z=3.2905)
    print(f"netem dropped {dropped} of {offered} wire packets; 99.9 % interval [{lo:.0f}, {hi:.0f}]")
    assert offered > 2000 and lo <= dropped <= hi, (dropped, offered, (lo, hi))


def test_rate_within_5_percent_behind_a_delay(lab_factory):
    lab = lab_factory(two_hosts(rate="100mbit", distance_km=100))
    a, b = lab.plan.ends("h1-sw")
    wire, _ = measure_rate(lab, a, b, "10.9.0.1", str(lab.topology.nodes["sw"].address), duration=3.0)
    assert wire == pytest.approx(100e6, rel=0.05)


def _qdisc_stats(lab, node, ifname) -> dict[str, dict]:
    h = lab.handle(node)
    idx = h.link_lookup(ifname=ifname)[0]
    return {q.get_attr("TCA_KIND"): q.get_attr("TCA_STATS") | {"options": q.get_attr("TCA_OPTIONS")}
            for q in h.get_qdiscs(index=idx)}


def test_queue_limit_is_sized_from_the_bdp(lab_factory):
    lab = lab_factory(star((500,), rate="10gbit"))
    link = lab.topology.links[0]
    expected = link.impairment(lab.topology.group_index).limit_packets
    a, _ = lab.plan.ends(link.name)
    netem = _qdisc_stats(lab, "h500", a.ifname)["netem"]
    assert netem["options"]["limit"] == expected > 1000  # 10 Gbit/s x 2.45 ms would overflow the default


def test_no_tail_drop_at_500_km_at_the_configured_rate(lab_factory):
    """A flow at the link's rate keeps a BDP in flight: the sized queue holds it without a drop.

    The receive window is capped at ~2 BDP so the flow runs at the rate without building a
    standing queue of its own (an uncapped TCP would fill any buffer, which says nothing of netem)."""
    # 100 Mbit/s: the guest's one TCP sender under TCG cannot be counted on for 200 (it read 188, then
    # 180 Mbit/s in clean-clone runs on 2026-11-30), and a flow below the rate proves nothing of the queue
    rate = 100e6
    lab = lab_factory(star((500,), rate="100mbit"))
    a, b = lab.plan.ends("h500-sw")
    rtt = 2 * fiber_delay_s(500) + 1e-3  # plus the guest's own ~0.3-1 ms
    wire, _ = measure_rate(lab, a, b, "10.9.0.1", str(lab.topology.nodes["sw"].address), duration=3.0,
                           window=int(2 * rate * rtt / 8))
    stats = _qdisc_stats(lab, "h500", a.ifname)
    assert "tbf" not in stats and stats["netem"]["drop"] == 0  # netem carries the rate: its queue is the one
    # and it did run at the rate (a slower flow would prove nothing of the queue)
    assert wire == pytest.approx(rate, rel=0.10)
