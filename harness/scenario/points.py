"""Sweep points: the grid a scenario spans, the ideal baseline, and each point's impairment (pure)."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from typing import Any

from metrolab.netem.models import fiber_delay_s, netem_limit_packets
from metrolab.netem.profile import Impairment, LossModel

DEFAULT_RATE_BPS = 1e9
# Every point of a sweep, the baseline included, sends the swept links' traffic through netem's
# delay line (1 us where the point has no distance), with the distance's own delay, uncalibrated:
# under TCG the delay line costs a per-packet timer (a floor of ~90 us per qdisc and ~2-3 % of a
# line-rate AllReduce's step time, measured at 30 km as at 100 km), which a baseline without it
# would count as distance. Common to every point, it cancels in the paired comparison.
DELAY_LINE_S = 1e-6


@dataclass(frozen=True)
class Point:
    distance_km: float = 0.0
    loss: float = 0.0
    rate_bps: float | None = None     # already divided by the scale factor
    convergence: float = 1.0
    jitter_s: float = 0.0
    policy: str = "none"
    baseline: bool = False
    params: tuple[tuple[str, Any], ...] = ()   # swept workload parameters, (name, value) sorted

    @property
    def key(self) -> str:
        """Stable identity of the point across runs (resume matches on it)."""
        d = asdict(self)
        if not self.params:
            del d["params"]  # points of scenarios without a params sweep keep their keys
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def fields(self) -> dict:
        """Row columns: the network fields, each swept parameter under its own name, and the swept
        parameters as one JSON column (`params`) so a summary knows which columns they are."""
        d = asdict(self)
        del d["params"]
        return d | dict(self.params) | {"params": json.dumps(dict(self.params), sort_keys=True)}

    def label(self) -> str:
        extra = [f"{k}={v}" for k, v in self.params]
        if self.baseline:
            return "baseline (0 km, lossless)" + (f" {' '.join(extra)}" if extra else "")
        parts = [f"{self.distance_km:g} km"]
        if self.loss:
            parts.append(f"loss {self.loss:g}")
        if self.rate_bps:
            parts.append(f"{self.rate_bps / 1e6:g} Mbit/s")
        if self.convergence != 1:
            parts.append(f"{self.convergence:g}:1")
        if self.jitter_s:
            parts.append(f"jitter {self.jitter_s * 1e6:g} us")
        if self.policy != "none":
            parts.append(self.policy)
        return ", ".join(parts + extra)


def param_combinations(sweep) -> list[tuple[tuple[str, Any], ...]]:
    """Every combination of the swept workload parameters (one empty combination without any)."""
    names = sorted(sweep.params)
    return [tuple(zip(names, values)) for values in itertools.product(*(sweep.params[n] for n in names))]


def grid(sweep, scale: float = 1.0) -> list[Point]:
    """Every combination of the sweep's values, in the order written (distance outermost, swept
    workload parameters innermost)."""
    out = []
    for d, loss, rate, conv, jit, pol, prm in itertools.product(sweep.distance_km, sweep.loss, sweep.rate,
                                                                sweep.convergence, sweep.jitter, sweep.policy,
                                                                param_combinations(sweep)):
        out.append(Point(float(d), float(loss), None if rate is None else rate / scale, float(conv), float(jit), pol,
                         params=prm))
    return out


def baseline(params: tuple[tuple[str, Any], ...] = ()) -> Point:
    """The ideal network: 0 km, no loss, no jitter, no rate cap beyond the links' own (scaled) rate;
    one per combination of swept workload parameters (each is judged against its own ideal)."""
    return Point(baseline=True, params=params)


def baselines(sweep) -> list[Point]:
    return [baseline(p) for p in param_combinations(sweep)]


def per_packet(spec) -> bool:
    """Whether a scenario impairs packets one by one somewhere (Impairment.per_packet at a point of
    its sweep, or a loss event): then every point, the baselines included, runs on hosts that send
    wire-sized packets (Lab.wire_packets). A cut link loses every packet alike and needs none."""
    return (any(point_impairment(p, Impairment(), spec.sweep, 1.0).per_packet for p in grid(spec.sweep))
            or any(e.kind == "loss" for e in spec.events))


def point_impairment(point: Point, base: Impairment, sweep, group_index: float,
                     delay_line: bool = False) -> Impairment:
    """The impairment a swept link gets at `point`, starting from the topology's own for that link.
    `delay_line` (where the kernel has netem): every point, the baseline included, through netem's
    delay line at the distance's own delay (DELAY_LINE_S)."""
    extra = {"raw_delay": True} if delay_line else {}
    if point.baseline:
        # the 0 km lossless point at the link's own rate: the same queue limit as a swept 0 km point
        limit = netem_limit_packets(base.rate_bps or DEFAULT_RATE_BPS, 0.0, 1500, queue_packets=1000)
        return Impairment(rate_bps=base.rate_bps, limit_packets=limit, queue_bytes=base.queue_bytes,
                          delay_s=DELAY_LINE_S if delay_line else 0.0, extra=extra)
    delay = fiber_delay_s(point.distance_km, group_index)
    if delay_line:
        delay = max(delay, DELAY_LINE_S)
    rate = point.rate_bps or base.rate_bps
    if rate and point.convergence > 1:
        rate = rate / point.convergence  # N:1 oversubscription: the link carries 1/N of its line rate
    loss = None
    if point.loss:
        if sweep.loss_model == "gilbert-elliott":
            # bursty loss with mean `loss`: bursts leave the bad state with probability `burst`
            r = sweep.burst
            p = point.loss * r / (1 - point.loss)
            loss = LossModel(kind="gilbert-elliott", p=p, r=r, h=0.0, k=1.0)
        else:
            loss = LossModel(p=point.loss)
    limit = netem_limit_packets(rate or DEFAULT_RATE_BPS, delay + point.jitter_s, 1500, queue_packets=1000)
    return Impairment(delay_s=delay, jitter_s=point.jitter_s, loss=loss, rate_bps=rate, limit_packets=limit,
                      queue_bytes=base.queue_bytes, extra=extra)
