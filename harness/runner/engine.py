"""The one engine every experiment runs on: randomized blocks, resume, until-conclusive, budget,
interference and progress.

An Experiment names its points (stable keys; points holding the same `params` are compared with
each other: a block visits the parameter combinations in a shuffled order and, inside each, the
points in a shuffled order), measures one point in one block into a row it has written to the
Record, and says which of its rows are which (`recorded`: key, block, done). The Engine draws each
block's order from the run's recorded seed, so a resumed run draws the same plan; measures only
what the Record does not hold; never retries a point whose failures exceed the allowance; after
the planned blocks, measures more while `look` finds something undecided and the block or time
budget lasts; and replaces a block another process took CPU from (the Monitor), up to a limit.

Experiments: a scenario workload's sweep and a soak (metrolab.harness.runner.run), the Go-Back-N
sweep (gbn_sweep.GbnSweep), task plays (tasks.Plays) and the white paper's claims
(metrolab.whitepaper); the noise bench runs a scenario.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from metrolab.harness.kernel.interference import Monitor, between, interfered
from metrolab.harness.runner.record import Record

BLOCKS = "blocks.jsonl"  # what each block ran beside (interference), a line per block


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 2 ** 31)


def block_rng(seed: int, *key: object) -> random.Random:
    """The shuffle of one block of an experiment (key: its name and the block): drawn from the
    run's recorded seed, so a resumed run draws the same order."""
    digest = hashlib.sha256(":".join(map(str, (seed, *key))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def block_order(points: Sequence[Any], seed: int, name: str, block: int) -> list[Any]:
    """Every point in this block's order: the parameter combinations shuffled, then the points of
    each (a combination is set up once a block)."""
    rng = block_rng(seed, name, block)
    combos: list[Any] = []
    for p in points:
        if getattr(p, "params", ()) not in combos:
            combos.append(getattr(p, "params", ()))
    rng.shuffle(combos)
    out = []
    for c in combos:
        pts = [p for p in points if getattr(p, "params", ()) == c]
        rng.shuffle(pts)
        out += pts
    return out


class Experiment:
    """What an experiment tells the Engine. By default its rows are the Record's `stream`, each
    naming its point (`key`) and `block`, and a recorded row is done (a failure is a row too)."""

    name: str      # its block orders are drawn under this name; its blocks' records carry it
    record: Record
    stream: str

    def points(self) -> Sequence[Any]:  # each with a stable `key` (and `params`, if any)
        raise NotImplementedError

    def measure(self, point: Any, block: int) -> dict:  # the row, in the Record when it returns
        raise NotImplementedError

    def rows(self) -> list[dict]:
        return self.record.lines(self.stream)

    def recorded(self, row: dict) -> tuple[str, int, bool] | None:  # key, block, done; None: not its row
        return row["key"], row["block"], True

    def prepare(self, engine: Engine) -> None:  # before its first measurement in this invocation
        pass


@dataclass(frozen=True)
class Budget:
    blocks: int                       # planned
    max_blocks: int | None = None     # after the planned blocks: more while `look` finds something undecided
    seconds: float | None = None      # ... and while time remains
    clock_after_planned: bool = False  # the time budget counts from the planned blocks' end (a soak), else from the start
    max_replaced: int = 0             # blocks under interference measured again
    allowed_failures: int = 0         # a point's failed repetitions before it is measured no more


@dataclass
class Outcome:
    blocks: int = 0      # blocks run (replaced ones included)
    clean: int = 0
    replaced: int = 0
    measured: int = 0    # rows written by this invocation
    skipped: int = 0     # already in the Record
    stopped: str = ""    # planned | blocks | time | decided | failed


@dataclass
class Engine:
    record: Record
    seed: int
    progress: Callable[..., None] = lambda **kw: None  # advance= (points), grow= (points added to the plan)
    monitor: Monitor | None = None
    limits: tuple[float, float] = (1.0, 1.0)  # max interference, max guest wait (metrolab.harness.kernel.interference)
    done: set = field(default_factory=set)        # (experiment, key, block) measured
    failures: dict = field(default_factory=dict)  # (experiment, key) -> failed repetitions

    def block(self, exp: Experiment, block: int) -> list[Any]:
        return block_order(exp.points(), self.seed, exp.name, block)

    def account(self, exp: Experiment, row: dict) -> None:
        """A row of the experiment's, done or failed (a row measured outside the blocks counts too)."""
        got = exp.recorded(row)
        if got is None:
            return
        key, block, ok = got
        if ok:
            self.done.add((exp.name, key, block))
        else:
            self.failures[(exp.name, key)] = self.failures.get((exp.name, key), 0) + 1

    def failed(self, exp: Experiment, point: Any, allowed: int = 0) -> bool:
        return self.failures.get((exp.name, point.key), 0) > allowed

    def run(self, exp: Experiment, budget: Budget, look: Callable[[], bool] | None = None) -> Outcome:
        """Block after block until the budget says stop; `look()` is True while something is undecided."""
        for row in exp.rows():
            self.account(exp, row)
        points = list(exp.points())
        out = Outcome()
        deadline = None if budget.seconds is None or budget.clock_after_planned else time.monotonic() + budget.seconds
        prepared = False
        while True:
            if all(self.failed(exp, p, budget.allowed_failures) for p in points):
                out.stopped = "failed"
                break
            if out.clean >= budget.blocks:
                if deadline is None and budget.seconds is not None:
                    deadline = time.monotonic() + budget.seconds
                out.stopped = self._stop(out, budget, deadline, look)
                if out.stopped:
                    break
                self.progress(grow=len(points))
            todo = [p for p in self.block(exp, out.blocks) if (exp.name, p.key, out.blocks) not in self.done
                    and not self.failed(exp, p, budget.allowed_failures)]
            out.skipped += len(points) - len(todo)
            self.progress(advance=len(points) - len(todo))
            if todo and not prepared:
                exp.prepare(self)
                prepared = True
            mark = self.monitor.mark() if self.monitor is not None else None
            for p in todo:
                if self.failed(exp, p, budget.allowed_failures):  # failed in this very block
                    continue
                self.account(exp, exp.measure(p, out.blocks))
                out.measured += 1
                self.progress(advance=1)
            beside = between(mark, self.monitor.mark()) if todo and self.monitor is not None else {}
            hit = bool(beside) and interfered(beside, *self.limits)
            replace = hit and out.replaced < budget.max_replaced
            if beside:
                self.record.append(BLOCKS, {"workload": exp.name, "block": out.blocks, **beside, "interfered": hit,
                                            "replaced": replace})
            if replace:
                out.replaced += 1  # left out by the judge: measured again
                self.progress(grow=len(points))
            else:
                out.clean += 1
            out.blocks += 1
        return out

    @staticmethod
    def _stop(out: Outcome, budget: Budget, deadline: float | None, look: Callable[[], bool] | None) -> str:
        """Why the run stops after its planned blocks ('' to measure another)."""
        if budget.max_blocks is None and budget.seconds is None:
            return "planned"
        if budget.max_blocks is not None and out.clean >= budget.max_blocks:
            return "blocks"
        if deadline is not None and time.monotonic() > deadline:
            return "time"
        if look is not None and not look():
            return "decided"
        return ""
