"""netem in the guest kernel: delay fidelity, loss, rate and the BDP-sized queue."""

from __future__ import annotations


import pytest

from harness.lab.probe import concurrent_rtts, measure_loss, measure_rate
from netem.models import binomial_interval, fiber_delay_s
from tests.support.labs import two_hosts

pytestmark = pytest.mark.guest
DISTANCES = (0, 100, 250, 500)


def star(distances=DISTANCES, **link) -> dict:
    """One switch, one host per distance: h<km> -- sw."""
    return {"name": "star", "sites": [{"name": "s", "kind": "aidc", "subnet": "10.9.0.0/24",
                                       "hosts": [f"h{d}" for d in distances], "switches": ["sw"]}],
            "links": [{"a": f"h{d}", "b": "sw", "distance_km": d, **link} for d in distances]}


def _fidelity_once(lab_factory) -> dict[int, float]:
    from netem.calibrate import _cache_file
    _cache_file().unlink(missing_ok=True)  # a fresh calibration for this lab
    lab = lab_factory(star())
    targets = {}
    for d in DISTANCES:
        a, _ = lab.plan.ends(f"h{d}-sw")
        targets[d] = (lab.ns(f"h{d}"), a.ifname, a.peer_ll6)
    # pinged concurrently, so every distance sees the same emulator drift; the minimum RTT, since
    # netem never delivers early and jitter only adds (the propagation delay is the floor)
    rtts = {d: min(s) for d, s in concurrent_rtts(targets, count=500).items()}
    lab.down()
    return {d: (rtts[d] - rtts[0]) / (2 * fiber_delay_s(d) * 1e3) - 1 for d in DISTANCES[1:]}


def test_delay_fidelity_within_3_percent(lab_factory):
    """RTT minus the 0 km RTT within +-3 % of the configured round trip at 100, 250 and 500 km.

    Under TCG one calibration-and-measurement window scatters by about +-15 us (the emulator's
    timer latency; docs/vm.md), which is 1.5-4 % at 100 km: a window that misses is measured again
    with a fresh calibration, at most three windows in all, and every window is reported."""
    windows = []
    for _ in range(3):
        errors = _fidelity_once(lab_factory)
        windows.append({d: f"{e:+.2%}" for d, e in errors.items()})
        if all(abs(e) <= 0.03 for e in errors.values()):
            break
    print("relative RTT error per window:", windows)
    assert all(abs(float(e.rstrip("%")) / 100) <= 0.03 for e in windows[-1].values()), windows


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
    rate = 200e6
    lab = lab_factory(star((500,), rate="200mbit"))
    a, b = lab.plan.ends("h500-sw")
    rtt = 2 * fiber_delay_s(500) + 1e-3  # plus the guest's own ~0.3-1 ms
    wire, _ = measure_rate(lab, a, b, "10.9.0.1", str(lab.topology.nodes["sw"].address), duration=3.0,
                           window=int(2 * rate * rtt / 8))
    stats = _qdisc_stats(lab, "h500", a.ifname)
    assert stats["netem"]["drop"] == 0 and stats["tbf"]["drop"] == 0
    assert wire == pytest.approx(rate, rel=0.05)
