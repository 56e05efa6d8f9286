"""Planned per-flow paths (the white paper's network-level load balancing): a controller that
knows a workload's flows assigns each to one of the parallel paths so that no path carries more
than its share, instead of leaving it to a hash. Pure; the lab installs the result as
per-flow policy routes or SRv6 encapsulation (metrolab.harness.policy.ecmp).

Also the figures a policy is judged by: the bytes per path and their imbalance (max / min).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial


@dataclass(frozen=True)
class Flow:
    """A 5-tuple and the bytes it will carry (learned from the workload, or announced by it)."""

    src: str
    dst: str
    sport: int
    dport: int
    proto: int = 6
    bytes: int = 1

    @property
    def key(self) -> tuple:
        return (self.src, self.dst, self.sport, self.dport, self.proto)


def plan(flows: list[Flow], paths: list[str]) -> dict[tuple, str]:
    """Assign every flow to a path, heaviest flows first onto the least loaded path (LPT: within
    4/3 of the optimum, and exact for equal flows that divide evenly). Deterministic: ties go to
    the path listed first and to the lower 5-tuple."""
    if not paths:
        raise ValueError("no paths to plan over")
    if len({f.key for f in flows}) != len(flows):
        raise ValueError("a flow (5-tuple) appears twice")
    load = {p: 0 for p in paths}
    out = {}
    for f in sorted(flows, key=lambda f: (-f.bytes, f.key)):
        best = min(paths, key=lambda p: (load[p], paths.index(p)))
        out[f.key] = best
        load[best] += f.bytes
    return out


def path_bytes(flows: list[Flow], assignment: dict[tuple, str], paths: list[str]) -> dict[str, int]:
    load = {p: 0 for p in paths}
    for f in flows:
        load[assignment[f.key]] += f.bytes
    return load


def imbalance(load: dict[str, int]) -> float:
    """max / min bytes over the paths (inf when a path is idle while another is not)."""
    lo, hi = min(load.values()), max(load.values())
    if hi == 0:
        return 1.0
    return float("inf") if lo == 0 else hi / lo


def hash_efficiency(flows: int, paths: int) -> float:
    """Expected flow transmission efficiency when a hash spreads `flows` equal, synchronized flows
    uniformly at random over `paths` equal paths: a step ends when the most loaded path has
    carried its flows, so one draw achieves (flows / paths) / max load. Exact (multinomial)."""
    if flows < 1 or paths < 1:
        raise ValueError("flows and paths must be >= 1")
    total = 0.0

    def counts(left: int, slots: int):
        if slots == 1:
            yield (left,)
            return
        for c in range(left + 1):
            for rest in counts(left - c, slots - 1):
                yield (c, *rest)
    for c in counts(flows, paths):
        ways = factorial(flows)
        for x in c:
            ways //= factorial(x)
        total += ways / paths ** flows * (flows / paths) / max(c)
    return total
