"""Soft-RoCE between lab hosts in different sites, through the emulated WAN (guest kernel)."""

from __future__ import annotations

import numpy as np
import pytest

from metrolab.harness.rdma import perftest
from metrolab.harness.scenario.points import DELAY_LINE_S
from metrolab.netem.models import fiber_delay_s
from metrolab.netem.profile import Impairment

pytestmark = pytest.mark.requires("netem", "rxe")


def wan_bytes(lab) -> int:
    """Bytes gw-a sent into the WAN link (the direction a1 -> b1)."""
    h = lab.handle("gw-a")
    idx = h.link_lookup(ifname=lab.plan.ifaces[("gw-a", "wan")].ifname)[0]
    return h.get_links(idx)[0].get("IFLA_STATS64")["tx_bytes"]


def test_perftest_crosses_the_wan_and_feels_its_delay(lab_factory):
    lab = lab_factory("rdma-pair")  # harness/topologies/: a1 -- gw-a == wan == gw-b -- b1
    size, iters = 65536, 300
    before = wan_bytes(lab)
    bw = perftest.run(lab, "b1", "a1", "ib_write_bw", size=size, iters=iters)
    assert bw.values["bw_avg_gbps"] > 0.02
    assert wan_bytes(lab) - before >= size * iters  # the RDMA WRITEs went over the WAN link
    # ib_write_lat reports half the round trip, so it rises with the one-way delay. Every distance,
    # 0 km included, goes through netem's delay line at its raw delay (as a sweep does), so the line's
    # fixed cost under TCG (~0.1 ms) is common to all and only the slope is judged: a least-squares
    # slope over two rounds of 0-500 km (a 2.5 ms span), from the minimum of 300 round trips (the
    # typical value carries the emulator's scheduling noise, hundreds of us; even the minimum
    # scatters by +-100-230 us). Measured here: slope 1.18-1.22, perftest and our clock-based tool
    # alike, while ping's floor on the same link rises at 1.04 (the calibrated per-qdisc offset):
    # Soft-RoCE's round trip under TCG gains ~0.1-0.15 us per us of delay, not yet explained
    # (docs/vm.md). The bounds fail a delay that is missing (0), halved (0.5) or applied twice (2).
    xs, ys = [], []
    for rnd in range(2):
        for i, km in enumerate((0, 100, 250, 500)):
            delay = max(fiber_delay_s(km), DELAY_LINE_S)
            lab.impair("wan", Impairment(delay_s=delay, limit_packets=10000, extra={"raw_delay": True}))
            if rnd == 0 and km:
                port = 18520 + 2 * i
                far = perftest.run(lab, "b1", "a1", "ib_write_bw", size=size, iters=iters, port=port)
                assert far.values["bw_avg_gbps"] > 0, km
            xs.append(delay * 1e6)
            ys.append(perftest.run(lab, "b1", "a1", "ib_write_lat", size=2, iters=300,
                                   port=18530 + 10 * rnd + i).values["t_min_us"])
    slope = np.polyfit(xs, ys, 1)[0]
    assert 0.8 <= slope <= 1.5, (slope, list(zip(xs, ys)))
