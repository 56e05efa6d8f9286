"""Soft-RoCE between lab hosts in different sites, through the emulated WAN (guest kernel)."""

from __future__ import annotations

import pytest

from harness.rdma import perftest
from netem.models import fiber_delay_s
from netem.profile import Impairment

pytestmark = [pytest.mark.guest, pytest.mark.rdma]


def wan_pair() -> dict:
    sites = [{"name": f"site-{n}", "kind": "aidc", "subnet": f"10.{i + 1}.0.0/24",
              "hosts": [{"name": f"{n}1", "rdma": True}], "switches": [{"name": f"gw-{n}", "role": "gateway"}],
              "access": {"switch": f"gw-{n}"}} for i, n in enumerate("ab")]
    return {"name": "wan-pair", "sites": sites, "links": [{"name": "wan", "a": "gw-a", "b": "gw-b"}]}


def wan_bytes(lab) -> int:
    """Bytes gw-a sent into the WAN link (the direction a1 -> b1)."""
    h = lab.handle("gw-a")
    idx = h.link_lookup(ifname=lab.plan.ifaces[("gw-a", "wan")].ifname)[0]
    return h.get_links(idx)[0].get("IFLA_STATS64")["tx_bytes"]


def test_perftest_crosses_the_wan_and_feels_its_delay(lab_factory):
    lab = lab_factory(wan_pair())
    size, iters = 65536, 300
    before = wan_bytes(lab)
    bw = perftest.run(lab, "b1", "a1", "ib_write_bw", size=size, iters=iters)
    assert bw.values["bw_avg_gbps"] > 0.02
    assert wan_bytes(lab) - before >= size * iters  # the RDMA WRITEs went over the WAN link
    lat0 = perftest.run(lab, "b1", "a1", "ib_write_lat", size=2, iters=300).values["t_min_us"]

    lat = {0: lat0}
    for port, km in ((18516, 100), (18518, 250)):
        lab.impair("wan", Impairment(delay_s=fiber_delay_s(km), limit_packets=10000))
        far = perftest.run(lab, "b1", "a1", "ib_write_bw", size=size, iters=iters, port=port)
        assert far.values["bw_avg_gbps"] > 0
        lat[km] = perftest.run(lab, "b1", "a1", "ib_write_lat", size=2, iters=300, port=port + 1).values["t_min_us"]
    # ib_write_lat reports half the round trip, so it rises by the one-way delay: 100 -> 250 km adds
    # exactly 150 km of fiber. The minimum, since under TCG the typical value carries the emulator's
    # scheduling noise (hundreds of us); the slope, since Soft-RoCE under TCG adds a fixed ~0.1 ms
    # to any delayed path that the 0 km baseline does not have. Even the minimum of 300 round trips
    # scatters by ~+-100 us under TCG (a +23 % slope was seen once): 30 % still fails a delay that is
    # missing or doubled.
    one_way = {km: fiber_delay_s(km) * 1e6 for km in lat}
    assert lat[100] - lat[0] >= 0.95 * one_way[100]
    assert lat[250] - lat[100] == pytest.approx(one_way[250] - one_way[100], rel=0.3)
