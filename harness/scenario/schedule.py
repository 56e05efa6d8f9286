"""Task-based scheduling (white paper §4.2.1): a transfer request gets a committed window, or a
refusal that says why.

A request names its bytes, a deadline and a service level (minute, hour or day: the granularity
of the windows the operator commits to). The path's bandwidth history predicts what the traffic
already on it will take in each slot (a high quantile of the samples at the same phase of the
history's period: the day's profile); the reservations already committed take theirs. The window
is the one that ends earliest before the deadline among those whose every slot has the rate the
bytes need (at the same end, the one with the most rate free: off the peak); the rate reserved is what fills the window exactly, with a margin (the operator
reserves what the task needs, not the whole free rate, so the next request still fits).

Pure functions: metrolab.harness.runner.tasks plays a schedule on a lab (a slice per window, reserved when
it opens and released when it ends, and rate changes mid-transfer).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

ServiceLevel = Literal["minute", "hour", "day"]
SLOT_S: dict[str, float] = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclass(frozen=True)
class History:
    """What the traffic already on the path carried: one sample (bit/s) per `interval_s`, oldest
    first, the first at time 0. With a `period_s` (a day) the samples at the same phase predict a
    time; without, all of them do."""

    interval_s: float
    used_bps: tuple[float, ...]
    period_s: float | None = None

    def predicted_bps(self, t0: float, t1: float, quantile: float = 0.95) -> float:
        """The rate the path's own traffic is expected to take at most over [t0, t1): the worst
        phase's `quantile` of its samples."""
        if not self.used_bps:
            return 0.0
        if self.period_s is None:
            return _quantile(self.used_bps, quantile)
        per = max(1, round(self.period_s / self.interval_s))
        first, last = math.floor(t0 / self.interval_s), max(math.ceil(t1 / self.interval_s) - 1,
                                                             math.floor(t0 / self.interval_s))
        phases = {k % per for k in range(first, last + 1)}
        return max(_quantile([v for i, v in enumerate(self.used_bps) if i % per == ph] or [0.0], quantile)
                   for ph in phases)


def _quantile(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, round(q * 100) - 1))])


@dataclass(frozen=True)
class Request:
    name: str
    bytes: int
    deadline_s: float           # from `now`
    service: ServiceLevel = "minute"


@dataclass(frozen=True)
class Reservation:
    name: str
    start_s: float
    end_s: float
    rate_bps: float

    def overlaps(self, t0: float, t1: float) -> bool:
        return self.start_s < t1 and t0 < self.end_s


@dataclass(frozen=True)
class Commitment:
    request: Request
    start_s: float
    end_s: float
    rate_bps: float             # reserved for the window
    free_bps: float             # the least free rate over the window, before this reservation

    @property
    def reservation(self) -> Reservation:
        return Reservation(self.request.name, self.start_s, self.end_s, self.rate_bps)


@dataclass(frozen=True)
class Refusal:
    request: Request
    reason: str


def slot_s(service: ServiceLevel, time_scale: float = 1.0) -> float:
    """A service level's slot, in the lab's time (`time_scale` < 1 compresses it: 1/60 plays a
    minute in a second)."""
    if service not in SLOT_S:
        raise ValueError(f"service level {service!r}: one of {', '.join(SLOT_S)}")
    return SLOT_S[service] * time_scale


def free_bps(capacity_bps: float, history: History, reservations: Sequence[Reservation], t0: float,
             t1: float, quantile: float = 0.95) -> float:
    """The rate left over [t0, t1) once the path's predicted traffic and the reservations in force
    are taken (the busiest moment of the interval counts)."""
    points = sorted({t0, *(r.start_s for r in reservations if t0 < r.start_s < t1)})
    reserved = max(sum(r.rate_bps for r in reservations if r.overlaps(p, t1) and r.start_s <= p) for p in points)
    return capacity_bps - history.predicted_bps(t0, t1, quantile) - reserved


def commit(req: Request, capacity_bps: float, history: History, reservations: Sequence[Reservation],
           now_s: float = 0.0, time_scale: float = 1.0, margin: float = 0.05, goodput: float = 0.95,
           quantile: float = 0.95, guard_s: float = 0.0) -> Commitment | Refusal:
    """The earliest-ending window of whole slots between `now_s` (rounded up to a slot boundary)
    and the deadline in which the request's bytes fit at the free rate of every slot.

    `goodput`: the payload share of the wire rate (headers, the transport's own pace); `margin`:
    what the reserved rate adds to the exact fill; `guard_s`: the part of the window's start the
    transfer is not counted on for (its sender starting; the bytes must fit in the rest)."""
    if req.bytes <= 0:
        return Refusal(req, f"{req.name}: nothing to transfer (bytes {req.bytes})")
    slot = slot_s(req.service, time_scale)
    first = math.ceil(now_s / slot - 1e-9) * slot
    last_end = now_s + req.deadline_s
    n = math.floor((last_end - first) / slot + 1e-9)
    if n < 1:
        return Refusal(req, f"{req.name}: the deadline ({req.deadline_s:g} s) ends before the next "
                            f"{req.service} slot starts ({first - now_s:g} s from now)")
    bits = req.bytes * 8 / goodput
    free = [free_bps(capacity_bps, history, reservations, first + k * slot, first + (k + 1) * slot, quantile)
            for k in range(n)]
    best: Commitment | None = None
    for i in range(n):
        low = math.inf
        for j in range(i, n):
            low = min(low, free[j])
            if low <= 0:
                break
            dur = (j - i + 1) * slot - guard_s
            if dur <= 0:
                continue
            need = bits / dur
            if need <= low:  # the margin is taken where the slots have it
                end = first + (j + 1) * slot
                # the earliest end; at the same end the roomier window (off the peak)
                if best is None or end < best.end_s or (end == best.end_s and low > best.free_bps):
                    best = Commitment(req, first + i * slot, end, min(low, need * (1 + margin)), low)
                break
    if best is not None:
        return best
    # the roomiest window there was: what it would have carried
    room, where = 0.0, (first, first)
    for i in range(n):
        low = math.inf
        for j in range(i, n):
            low = min(low, free[j])
            dur = (j - i + 1) * slot - guard_s
            if low > 0 and low * dur > room:
                room, where = low * dur, (first + i * slot, first + (j + 1) * slot)
    return Refusal(req, f"{req.name}: {req.bytes} bytes do not fit before the deadline ({req.deadline_s:g} s, "
                        f"{n} {req.service} slot(s)): the roomiest window, [{where[0] - now_s:g}, "
                        f"{where[1] - now_s:g}) s from now, carries {room * goodput / 8 / 1e6:.3g} MB")


def schedule(requests: Sequence[Request], capacity_bps: float, history: History,
             reservations: Sequence[Reservation] = (), **kw) -> list[Commitment | Refusal]:
    """Requests in the order they arrive, each against the reservations before it."""
    held = list(reservations)
    out: list[Commitment | Refusal] = []
    for req in requests:
        got = commit(req, capacity_bps, history, held, **kw)
        if isinstance(got, Commitment):
            held.append(got.reservation)
        out.append(got)
    return out


def finish_s(start_s: float, bytes_: int, rates: Sequence[tuple[float, float]], goodput: float = 0.95) -> float:
    """When a transfer that starts at `start_s` ends under a rate that changes: `rates` is
    (from time, bit/s) in time order, the first at or before the start (elastic bandwidth: the
    tenant's rate raised or cut mid-transfer)."""
    left = bytes_ * 8 / goodput
    t = start_s
    steps = [(max(at, start_s), r) for at, r in rates]
    for k, (at, rate) in enumerate(steps):
        until = steps[k + 1][0] if k + 1 < len(steps) else math.inf
        if until <= t:
            continue
        t = max(t, at)
        if rate <= 0:
            t = until
            continue
        if left <= rate * (until - t):
            return t + left / rate
        left -= rate * (until - t)
        t = until
    return math.inf
