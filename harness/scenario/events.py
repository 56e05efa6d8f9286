"""Network events during a measured repetition, and what they did to its steps.

A scenario's `events:` list puts changes on a timeline that starts when the runner asks the ranks
for a repetition's steps: a link goes down (and back up), flaps, drops a burst of packets, takes a
longer route (more delay), changes rate, or a switch goes away (all its links). They apply at the
sweep points they name (`point:`, as faults do), never at a baseline: the baseline is the steady
network the efficiency is measured against.

Which steps an event touched, and how long the job took to recover, come from the steps' own
wall-clock times (each rank-0 step's start and end) against the times the runner applied and
reverted each change: pure functions here, the runner's player in metrolab.harness.runner.events.

    events:
      - {kind: flap, link: wan-ab-1, at: 2s, period: 2s, count: 2}    # down 1 s, up 1 s, twice
      - {kind: loss, link: wan-ab-2, at: 1s, duration: 500ms, loss: 0.01}
      - {kind: delay, link: wan-ab-1, at: 3s, duration: 2s, distance_km: 200}   # a longer route
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from metrolab.netem.models import DEFAULT_GROUP_INDEX, fiber_delay_s
from metrolab.netem.units import parse_probability, parse_rate, parse_time


def seconds(v: Any) -> float:
    """A time: a number is seconds, a string carries its unit ('500ms', '2s')."""
    if isinstance(v, str):
        return parse_time(v)
    return float(v)


class EventSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["link-down", "flap", "loss", "delay", "rate", "node-down"]
    at: float = Field(description="seconds after the repetition's steps were asked for (a number is seconds, "
                                  "or '500ms', '2s')")
    duration: float | None = Field(default=None, description="how long it lasts (default: to the end of the "
                                                              "repetition); flap: ignored")
    link: str | None = None
    node: str | None = Field(default=None, description="node-down: the switch that goes away")
    period: float | None = Field(default=None, description="flap: one down-and-up cycle, down for half of it")
    count: int = Field(default=1, ge=1, description="flap: cycles")
    loss: float | None = Field(default=None, description="loss: the burst's drop probability")
    delay: float | None = Field(default=None, description="delay: one-way seconds added (a longer route)")
    distance_km: float | None = Field(default=None, gt=0, description="delay: the added route length instead")
    rate: float | None = Field(default=None, description="rate: the link's new rate (bit/s, or '50mbit'), "
                                                         "divided by the scale factor like the sweep's")
    point: dict[str, Any] = Field(default_factory=dict, description="the sweep points it applies at "
                                                                    "(field: value; default every one)")

    @field_validator("at", "duration", "period", "delay", mode="before")
    @classmethod
    def _time(cls, v):
        return None if v is None else seconds(v)

    @field_validator("loss", mode="before")
    @classmethod
    def _prob(cls, v):
        return None if v is None else parse_probability(v)

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, v):
        return None if v is None else parse_rate(v)

    @field_validator("at")
    @classmethod
    def _at(cls, v):
        if v < 0:
            raise ValueError("an event happens at or after the start of the repetition (at >= 0)")
        return v

    @model_validator(mode="after")
    def _fields_of_kind(self):
        need = {"link-down": ["link"], "flap": ["link", "period"], "loss": ["link", "loss"],
                "delay": ["link"], "rate": ["link", "rate"], "node-down": ["node"]}[self.kind]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} event needs {' and '.join(missing)}")
        if self.kind == "delay" and (self.delay is None) == (self.distance_km is None):
            raise ValueError("a delay event needs delay or distance_km (one of them)")
        for f in ("duration", "period"):
            v = getattr(self, f)
            if v is not None and v <= 0:
                raise ValueError(f"{f} must be > 0")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0")
        return self

    def added_delay_s(self, group_index: float = DEFAULT_GROUP_INDEX) -> float:
        if self.delay is not None:
            return self.delay
        return fiber_delay_s(self.distance_km or 0.0, group_index)

    def applies_to(self, point) -> bool:
        return not point.baseline and all(getattr(point, k, None) == v or dict(point.params).get(k) == v
                                          for k, v in self.point.items())


@dataclass(frozen=True)
class Window:
    """One change on the timeline: `event` (its index in the scenario) from `start` to `end`
    seconds (None: to the end of the repetition)."""

    event: int
    kind: str
    start: float
    end: float | None


def timeline(events: list[EventSpec]) -> list[Window]:
    """The changes the events make, in time order; a flap is `count` windows of period/2 down."""
    out: list[Window] = []
    for i, e in enumerate(events):
        if e.kind == "flap":
            assert e.period is not None
            out += [Window(i, "link-down", e.at + c * e.period, e.at + c * e.period + e.period / 2)
                    for c in range(e.count)]
        else:
            out.append(Window(i, e.kind, e.at, None if e.duration is None else e.at + e.duration))
    return sorted(out, key=lambda w: (w.start, w.event))


def overlaps(step: tuple[float, float], start: float, end: float | None) -> bool:
    return step[1] > start and (end is None or step[0] < end)


@dataclass(frozen=True)
class Impact:
    """What a repetition's events did to its steps (times are wall-clock seconds, as measured)."""

    steady_steps: int                 # steps that ended before the first change
    steady_p99_s: float | None        # their 99th percentile: the bound a step must come back under
    event_steps: int                  # steps that overlap a change
    event_step_max_s: float | None    # the longest of them
    slow_steps: int                   # steps from the first change on above the steady p99
    recovery_steps: int | None        # of those, before the first one back under it after the last change ended
    recovery_s: float | None          # from the last change's end to the end of the last slow step (>= 0)
    per_step: tuple[tuple[int, ...], ...]  # for each step, the windows (indices into applied) it overlaps

    @property
    def zero_impact(self) -> bool | None:
        """The BMWG sense: no step from the first change on left the steady state's p99."""
        return None if self.steady_p99_s is None else self.slow_steps == 0

    def metrics(self) -> dict[str, float | None]:
        z = self.zero_impact
        return {"steady_steps": float(self.steady_steps), "event_steps": float(self.event_steps),
                "event_step_max_s": self.event_step_max_s,
                "steady_p99_s": self.steady_p99_s, "slow_steps": float(self.slow_steps),
                "recovery_steps": None if self.recovery_steps is None else float(self.recovery_steps),
                "recovery_s": self.recovery_s, "zero_impact": None if z is None else float(z)}


def percentile99(values: list[float]) -> float:
    """The 99th percentile by linear interpolation (numpy's default), without numpy."""
    x = sorted(values)
    pos = 0.99 * (len(x) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (x[hi] - x[lo]) * (pos - lo)


def impact(steps: list[tuple[float, float]], applied: list[tuple[float, float | None]]) -> Impact:
    """Attribute steps to the changes as applied: `steps` are (start, end) in time order, `applied`
    the (start, end) each change was in force (end None: still in force when the steps ended)."""
    durations = [b - a for a, b in steps]
    per_step = tuple(tuple(j for j, (s, e) in enumerate(applied) if overlaps(st, s, e)) for st in steps)
    first = min((s for s, _ in applied), default=math.inf)
    steady = [d for (a, b), d in zip(steps, durations) if b <= first]
    p99 = percentile99(steady) if steady else None
    touched = [d for d, w in zip(durations, per_step) if w]
    after = [i for i, (a, b) in enumerate(steps) if b > first]
    slow = [i for i in after if p99 is not None and durations[i] > p99]
    ends = [e for _, e in applied]
    last_end = None if not applied or any(e is None for e in ends) else max(e for e in ends if e is not None)
    recovery_steps = recovery_s = None
    if p99 is not None and last_end is not None:
        back = next((i for i in after if steps[i][0] >= last_end and durations[i] <= p99), None)
        if back is not None:
            recovery_steps = sum(1 for i in slow if i < back)
            slow_before = [steps[i][1] for i in slow if i < back]
            recovery_s = max(0.0, max(slow_before) - last_end) if slow_before else 0.0
    return Impact(len(steady), p99, len(touched), max(touched) if touched else None, len(slow),
                  recovery_steps, recovery_s, per_step)
