"""The measurement plan of a run: randomized blocks.

A block measures a workload's baseline and every sweep point once. Points are only compared
within their combination of swept workload parameters (each has its own baseline), so a block
visits the combinations in a shuffled order and, inside each, the baseline and the points in a
shuffled order; a fresh order per block, drawn from the run's recorded seed, so the same run
directory resumes into the same plan. What is already recorded is never measured again, and a
point whose failures exceed the scenario's allowance (`statistics.allowed_failures`, 0 by default)
is not retried in later blocks.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from metrolab.harness.scenario.points import Point


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 2 ** 31)


def block_rng(seed: int, *key: object) -> random.Random:
    """The shuffle of one block of an experiment (key: what it orders, and the block): drawn from
    the run's recorded seed, so a resumed run draws the same order."""
    digest = hashlib.sha256(":".join(map(str, (seed, *key))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass
class Sweep:
    points: list[Point]               # baselines and grid points (every combination)
    seed: int
    done: set = field(default_factory=set)   # (workload, point key, block) measured
    failures: dict = field(default_factory=dict)  # (workload, point key) -> failed repetitions
    allowed_failures: int = 0
    measured: int = 0
    skipped: int = 0
    order: int = 0                    # index of the next measurement in the run

    def combos(self) -> list[tuple]:
        out: list[tuple] = []
        for p in self.points:
            if p.params not in out:
                out.append(p.params)
        return out

    def block(self, workload: str, block: int) -> list[Point]:
        """Every point of the workload in this block's order."""
        rng = block_rng(self.seed, workload, block)
        combos = self.combos()
        rng.shuffle(combos)
        out = []
        for c in combos:
            pts = [p for p in self.points if p.params == c]
            rng.shuffle(pts)
            out += pts
        return out

    def failed(self, workload: str, point: Point) -> bool:
        """The point failed more repetitions than allowed: it is not measured again."""
        return self.failures.get((workload, point.key), 0) > self.allowed_failures

    def fail(self, workload: str, point: Point, block: int) -> None:
        self.failures[(workload, point.key)] = self.failures.get((workload, point.key), 0) + 1

    def is_done(self, workload: str, point: Point, block: int) -> bool:
        return (workload, point.key, block) in self.done or self.failed(workload, point)

    def todo(self, workload: str, block: int) -> list[Point]:
        return [p for p in self.block(workload, block) if not self.is_done(workload, p, block)]

    def blocks_recorded(self, workload: str) -> int:
        """Blocks this workload has rows for (a resumed run continues after them)."""
        return 1 + max((b for (w, _, b) in self.done if w == workload), default=-1)
