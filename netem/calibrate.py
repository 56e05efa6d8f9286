"""Calibrate netem's fixed per-qdisc delay overhead on this kernel.

Under QEMU TCG a netem qdisc delivers a packet later than configured by a fixed amount (timer
latency, ~70-90 us per qdisc on the 7.3 guest; no measurable proportional part). We measure it
once per boot on a throwaway pair of namespaces (RTT with no netem and with netem at two delays,
pinged concurrently) and subtract it from every configured delay, so distance targets land within
a few percent; the figure is recorded with the results.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from pyroute2 import NetNS, netns


PROBE_DELAYS_S = (0.5e-3, 2.5e-3)
MAX_AGE_S = float(os.environ.get("METROLAB_NETEM_CALIBRATION_MAX_AGE_S", 60))
SAMPLES, RUNS = 400, 3  # a TCG guest's timer latency drifts over seconds: many samples, taken concurrently


@dataclass(frozen=True)
class NetemFit:
    """Per qdisc: delivered = slope * configured + offset_s."""

    offset_s: float = 0.0
    slope: float = 1.0

    def configure_for(self, wanted_s: float) -> float:
        return max(0.0, (wanted_s - self.offset_s) / self.slope)


def _cache_file():
    from harness.lab.state import state_dir
    return state_dir() / "netem-fit.json"


def _boot_id() -> str:
    import platform
    from pathlib import Path
    return platform.release() + ":" + Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def measure_fit(prefix: str, record=lambda name: None) -> NetemFit:
    """netem's per-qdisc delivery fit on this kernel, cached for MAX_AGE_S: under TCG the
    overhead drifts by ~25 us per qdisc over minutes, so a stale figure costs a few percent at
    100 km (METROLAB_NETEM_OFFSET_US overrides it)."""
    import json
    forced = os.environ.get("METROLAB_NETEM_OFFSET_US")
    if forced is not None:
        return NetemFit(float(forced) * 1e-6, 1.0)
    cache = _cache_file()
    try:
        data = json.loads(cache.read_text())
        if data.get("boot") == _boot_id() and time.time() - data.get("at", 0) < MAX_AGE_S:
            return NetemFit(data["offset_s"], data["slope"])
    except (OSError, ValueError, KeyError):
        pass
    fit = _measure(prefix, record)
    cache.write_text(json.dumps({"boot": _boot_id(), "at": time.time(), "offset_s": fit.offset_s,
                                 "slope": fit.slope}))
    return fit


def _measure(prefix: str, record) -> NetemFit:
    from harness.lab.probe import concurrent_rtts
    a, b = f"{prefix}-cal-a", f"{prefix}-cal-b"
    for name in (a, b):
        record(name)
        netns.create(name)
    try:
        with NetNS(a) as ha, NetNS(b) as hb:
            targets = {}
            for k, d in enumerate((0.0, *PROBE_DELAYS_S)):  # one veth pair per delay, measured side by side
                ha.link("add", ifname=f"c{k}", kind="veth", peer={"ifname": f"p{k}", "net_ns_fd": b})
                ia, ib = ha.link_lookup(ifname=f"c{k}")[0], hb.link_lookup(ifname=f"p{k}")[0]
                ha.addr("add", index=ia, address=f"10.254.{k}.1", prefixlen=30)
                hb.addr("add", index=ib, address=f"10.254.{k}.2", prefixlen=30)
                ha.link("set", index=ia, state="up")
                hb.link("set", index=ib, state="up")
                if d:
                    for h, i in ((ha, ia), (hb, ib)):
                        h.tc("add", "netem", i, 0x10000, delay=int(d * 1e6), limit=10000)
                targets[d] = (a, f"c{k}", f"10.254.{k}.2")
            # a first run only warms up: under TCG the emulator translates the timer, netem and ping
            # paths on first use, and the overhead measured before that is ~25 us per qdisc too high
            runs = [concurrent_rtts(targets, count=SAMPLES) for _ in range(RUNS + 1)][1:]
    finally:
        for name in (a, b):
            netns.remove(name)
    # the minimum: netem never delivers early and emulator jitter only adds, so the fastest of
    # many packets shows the fixed overhead (medians wander by +-30 us between windows). Jitter
    # biases every estimate upwards (a delayed path has more of it than the plain one), so the
    # lowest estimate over runs and probe delays is the best one.
    estimates = []
    for rtts in runs:
        plain = min(rtts[0.0]) / 1e3
        estimates += [(min(rtts[d]) / 1e3 - plain) / 2 - d for d in PROBE_DELAYS_S]
    return NetemFit(max(0.0, min(estimates)), 1.0)
