"""Acceptance criteria: `METRIC OP VALUE [where FIELD COND [and FIELD COND]...]`, pure.

    efficiency_degradation <= 0.05 where distance_km in [100, 500] and loss == 0
    efficiency >= 0.95 where convergence in [32, 64]
    busbw_gbs > 0.1

OP is one of < <= > >= == !=. `in [a, b]` is the closed range a..b; `in {a, b, c}` a set. A
criterion applies to every sweep point its `where` matches (all points without one); the baseline
is a point like the others. Values take units where the field has them (100us, 1e-3, 10gbit).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any

from metrolab.netem.units import parse_rate, parse_time

OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt,
       ">": operator.gt}
POINT_FIELDS = ("distance_km", "loss", "rate_bps", "convergence", "jitter_s", "policy", "workload")
COMMON_METRICS = ("step_time_s", "step_time_iqr_s", "efficiency", "efficiency_degradation")
_CMP = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")
_IN = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s+in\s+([\[{].*[\]}])\s*$")


@dataclass(frozen=True)
class Cond:
    field: str
    op: str                  # a comparison, "range" or "set"
    value: Any               # a number; (lo, hi) for range; a set of values for set

    def matches(self, point: dict) -> bool:
        v = point.get(self.field)
        if self.op == "range":
            lo, hi = self.value
            return v is not None and lo <= v <= hi
        if self.op == "set":
            return v in self.value
        if v is None:
            return False
        return OPS[self.op](v, self.value)


@dataclass(frozen=True)
class Criterion:
    text: str
    metric: str
    op: str
    threshold: float
    where: tuple[Cond, ...] = field(default_factory=tuple)

    def applies(self, point: dict) -> bool:
        return all(c.matches(point) for c in self.where)

    def check(self, value: float | None) -> bool:
        return value is not None and not (isinstance(value, float) and math.isnan(value)) and \
            OPS[self.op](value, self.threshold)


def _number(text: str):
    t = text.strip().strip(",")
    for parse in (float, parse_time, parse_rate):
        try:
            return parse(t)
        except (ValueError, TypeError):
            continue
    if re.fullmatch(r"[a-z0-9][a-z0-9-]*", t):
        return t  # a name (policy, workload)
    raise ValueError(f"{text!r} is not a number")


def _cond(text: str, extra_fields: tuple[str, ...] = ()) -> Cond:
    m = _IN.match(text)
    if m:
        name, body = m.group(1), m.group(2)
        items = [_number(x) for x in body[1:-1].split(",") if x.strip()]
        if body[0] == "[":
            if len(items) != 2 or not all(isinstance(x, float) for x in items) or items[0] > items[1]:
                raise ValueError(f"{text!r}: a range is [low, high]")
            cond = Cond(name, "range", tuple(items))
        else:
            if not items:
                raise ValueError(f"{text!r}: an empty set")
            cond = Cond(name, "set", frozenset(items))
    else:
        m = _CMP.match(text)
        if not m:
            raise ValueError(f"cannot read condition {text.strip()!r} (e.g. 'distance_km in [100, 500]', 'loss == 0')")
        cond = Cond(m.group(1), m.group(2), _number(m.group(3)))
    fields = POINT_FIELDS + tuple(extra_fields)
    if cond.field not in fields:
        raise ValueError(f"unknown sweep field {cond.field!r} in a where clause (fields: {', '.join(fields)})")
    return cond


def parse_criterion(text: str, metrics: tuple[str, ...] | list[str] = (), fields: tuple[str, ...] = ()) -> Criterion:
    """Parse one criterion; `metrics` are the workload metrics known besides the common ones,
    `fields` the swept workload parameters a where clause may name besides the network's."""
    head, _, where = text.partition(" where ")
    m = _CMP.match(head)
    if not m:
        raise ValueError("a criterion reads 'METRIC OP VALUE [where …]', e.g. "
                         "'efficiency_degradation <= 0.05 where distance_km in [100, 500]'")
    metric, op, value = m.group(1), m.group(2), _number(m.group(3))
    known = tuple(COMMON_METRICS) + tuple(metrics)
    if metric not in known:
        raise ValueError(f"unknown metric {metric!r} (metrics: {', '.join(known)})")
    if not isinstance(value, float):
        raise ValueError(f"threshold {m.group(3)!r} is not a number")
    conds = tuple(_cond(c, fields) for c in re.split(r"\s+and\s+", where)) if where.strip() else ()
    return Criterion(text, metric, op, value, conds)
