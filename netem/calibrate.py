"""Calibrate netem's fixed per-qdisc delay overhead on this kernel.

Under QEMU TCG a netem qdisc adds a constant on top of its configured delay (timer slack;
~45 us per qdisc measured on the 7.3 guest), not a scale error. We measure it once per lab
on a throwaway pair of namespaces and subtract it from every configured delay, so that
distance targets land within a few percent; the figure is recorded with the results.
"""

from __future__ import annotations

import os
import statistics

from pyroute2 import NetNS, netns

from harness import sh

PROBE_DELAY_S = 1e-3
SAMPLES = 60


def _rtts(ns: str, ifname: str, peer: str) -> list[float]:
    import re
    res = sh.run(["ping", "-n", "-c", str(SAMPLES + 3), "-i", "0.01", "-W", "2", "-I", ifname, peer],
                 netns=ns, check=False, timeout=60)
    return [float(x) for x in re.findall(r"time=([0-9.]+) ms", res.stdout)][3:]


def measure_offset(prefix: str, record=lambda name: None) -> float:
    """Seconds netem adds per qdisc beyond its configured delay (>= 0)."""
    forced = os.environ.get("METROLAB_NETEM_OFFSET_US")
    if forced is not None:
        return float(forced) * 1e-6
    a, b = f"{prefix}-cal-a", f"{prefix}-cal-b"
    for name in (a, b):
        record(name)
        netns.create(name)
    try:
        with NetNS(a) as ha, NetNS(b) as hb:
            ha.link("add", ifname="c0", kind="veth", peer={"ifname": "c1", "net_ns_fd": b})
            ia, ib = ha.link_lookup(ifname="c0")[0], hb.link_lookup(ifname="c1")[0]
            ha.addr("add", index=ia, address="10.254.254.1", prefixlen=30)
            hb.addr("add", index=ib, address="10.254.254.2", prefixlen=30)
            ha.link("set", index=ia, state="up")
            hb.link("set", index=ib, state="up")
            plain = statistics.median(_rtts(a, "c0", "10.254.254.2"))
            for h, i in ((ha, ia), (hb, ib)):
                h.tc("add", "netem", i, 0x10000, delay=int(PROBE_DELAY_S * 1e6), limit=10000)
            shaped = statistics.median(_rtts(a, "c0", "10.254.254.2"))
    finally:
        for name in (a, b):
            netns.remove(name)
    return max(0.0, (shaped - plain) / 1e3 - 2 * PROBE_DELAY_S) / 2
