"""Calibrate netem's fixed per-qdisc delay overhead on this kernel.

Under QEMU TCG a netem qdisc delivers a packet later than configured: a floor of ~50-75 us per qdisc
(the emulated timer's latency; no proportional part: the low percentiles of the RTT rise with the
configured delay at a slope of 1.00) plus a jitter above that floor (the median packet is another
~40 us later). We measure the floor's offset on a throwaway pair of namespaces (RTT with no netem
and with netem at two delays, pinged concurrently) and subtract it from every configured delay, so
the RTT floor of a link lands on the distance's round trip; the figure and its noise are recorded
with the results.

The floor is the 5th percentile of the RTT samples (`rtt_floor`), not their minimum: an extreme of
a few hundred samples under TCG scatters by +-30 us per RTT window to window, the 5th percentile by
+-20 us. The offset is the *median* of the estimates of several runs and both probe delays: the
minimum of them (what this module took before) is biased low by about one standard deviation of
the estimates, which left every calibrated link 20-60 us per round trip longer than configured
(+4..+11 % at 100 km).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import netns

from metrolab.harness import settings
from metrolab.harness.kernel.nsctx import iproute
from metrolab.netem.probe import concurrent_rtts, rtt_floor

PROBE_DELAYS_S = (0.5e-3, 2.5e-3)
MAX_AGE_S = settings.get("METROLAB_NETEM_CALIBRATION_MAX_AGE_S")
SAMPLES, RUNS, WARMUP_SAMPLES = 300, 3, 100  # concurrent runs: drift over seconds hits every probe alike


@dataclass(frozen=True)
class NetemFit:
    """Per qdisc: delivered floor = slope * configured + offset_s; `noise_s` is the standard deviation
    of the per-qdisc estimates it came from (0 when forced or not measured), `n` their count."""

    offset_s: float = 0.0
    slope: float = 1.0
    noise_s: float = 0.0
    n: int = 0

    def configure_for(self, wanted_s: float) -> float:
        return max(0.0, (wanted_s - self.offset_s) / self.slope)


def _cache_file():
    return settings.state_dir() / "netem-fit.json"


def _boot_id() -> str:
    return platform.release() + ":" + Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def measure_fit(prefix: str, record=lambda name: None) -> NetemFit:
    """netem's per-qdisc delivery fit on this kernel, cached for MAX_AGE_S: under TCG the
    overhead drifts by ~25 us per qdisc over minutes, so a stale figure costs a few percent at
    100 km (METROLAB_NETEM_OFFSET_US overrides it)."""
    forced = settings.get("METROLAB_NETEM_OFFSET_US")
    if forced is not None:
        return NetemFit(float(forced) * 1e-6, 1.0)
    cache = _cache_file()
    try:
        data = json.loads(cache.read_text())
        if data.get("boot") == _boot_id() and time.time() - data.get("at", 0) < MAX_AGE_S:
            return NetemFit(data["offset_s"], data["slope"], data.get("noise_s", 0.0), data.get("n", 0))
    except (OSError, ValueError, KeyError):
        pass
    fit = _measure(prefix, record)
    cache.write_text(json.dumps({"boot": _boot_id(), "at": time.time(), "offset_s": fit.offset_s,
                                 "slope": fit.slope, "noise_s": fit.noise_s, "n": fit.n}))
    return fit


def _measure(prefix: str, record) -> NetemFit:
    a, b = f"{prefix}-cal-a", f"{prefix}-cal-b"
    for name in (a, b):
        record(name)
        netns.create(name)
    try:
        with iproute(a) as ha, iproute(b) as hb:
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
            concurrent_rtts(targets, count=WARMUP_SAMPLES)
            runs = [concurrent_rtts(targets, count=SAMPLES) for _ in range(RUNS)]
    finally:
        for name in (a, b):
            netns.remove(name)
    return fit_from_runs(runs)


def fit_from_runs(runs: list[dict]) -> NetemFit:
    """The per-qdisc offset from concurrent RTT samples {0.0: plain, d: netem at d on both ends}: each
    run and probe delay gives (floor_d - floor_plain) / 2 - d; the median of those estimates is the
    offset (pure; unit-tested)."""
    estimates = []
    for rtts in runs:
        plain = rtt_floor(rtts[0.0]) / 1e3
        estimates += [(rtt_floor(rtts[d]) / 1e3 - plain) / 2 - d for d in rtts if d]
    noise = statistics.stdev(estimates) if len(estimates) > 1 else 0.0
    return NetemFit(max(0.0, statistics.median(estimates)), 1.0, noise, len(estimates))
