"""The Engine's plan, resume, failures, budget and interference, on an experiment whose rows are
written to a real Record (what is measured here is a counter: the engine is what is tested)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from metrolab.harness.kernel.interference import Mark
from metrolab.harness.runner.engine import BLOCKS, Budget, Engine, block_order
from metrolab.harness.runner.record import Record
from metrolab.harness.scenario.points import Point

pytestmark = pytest.mark.unit


@dataclass
class Counting:
    """Each measurement a row; `fail` names points whose every repetition fails."""

    record: Record
    pts: list[Point]
    fail: set[str] = field(default_factory=set)
    name: str = "w"
    measured: list[tuple[str, int]] = field(default_factory=list)
    prepared: int = 0

    def points(self) -> list[Point]:
        return self.pts

    def rows(self) -> list[dict]:
        return self.record.lines("rows.jsonl")

    def recorded(self, row: dict) -> tuple[str, int, bool] | None:
        return (row["key"], row["block"], row["ok"]) if row["workload"] == self.name else None

    def prepare(self, engine: Engine) -> None:
        self.prepared += 1

    def measure(self, p: Point, block: int) -> dict:
        self.measured.append((p.key, block))
        row = {"workload": self.name, "key": p.key, "block": block, "ok": p.key not in self.fail}
        self.record.append("rows.jsonl", row)
        return row


POINTS = [Point(baseline=True)] + [Point(distance_km=float(d)) for d in (100, 500)]


def test_every_point_once_a_block_in_the_blocks_own_order(tmp_path):
    exp = Counting(Record(tmp_path), POINTS)
    out = Engine(exp.record, seed=3).run(exp, Budget(4))
    assert (out.blocks, out.clean, out.measured, out.skipped, out.stopped) == (4, 4, 12, 0, "planned")
    for b in range(4):
        assert [k for k, blk in exp.measured if blk == b] == [p.key for p in block_order(POINTS, 3, "w", b)]
    assert exp.prepared == 1


def test_a_resumed_run_measures_only_what_the_record_lacks(tmp_path):
    exp = Counting(Record(tmp_path), POINTS)
    Engine(exp.record, seed=3).run(exp, Budget(2))
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    (tmp_path / "rows.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:9])  # a kill mid-line
    again = Counting(Record(tmp_path), POINTS)
    out = Engine(again.record, seed=3).run(again, Budget(3))
    assert out.skipped == 4 and out.measured == 5
    rows = again.rows()
    assert sorted((r["key"], r["block"]) for r in rows) == sorted((p.key, b) for p in POINTS for b in range(3))
    nothing = Counting(Record(tmp_path), POINTS)
    assert Engine(nothing.record, seed=3).run(nothing, Budget(3)).measured == 0 and nothing.prepared == 0


def test_a_point_failing_past_its_allowance_is_not_measured_again(tmp_path):
    exp = Counting(Record(tmp_path), POINTS, fail={POINTS[2].key})
    out = Engine(exp.record, seed=1).run(exp, Budget(4, allowed_failures=1))
    assert [b for k, b in exp.measured if k == POINTS[2].key] == [0, 1]  # two failures, then no more
    assert out.measured == 4 * 2 + 2
    every = Counting(Record(tmp_path / "all"), POINTS, fail={p.key for p in POINTS})
    assert Engine(every.record, seed=1).run(every, Budget(1, seconds=3600)).stopped == "failed"


def test_more_blocks_while_the_look_is_undecided_up_to_the_block_budget(tmp_path):
    looks: list[int] = []

    def undecided() -> bool:
        looks.append(len(exp.rows()))
        return len(looks) < 3

    exp = Counting(Record(tmp_path), POINTS)
    out = Engine(exp.record, seed=2).run(exp, Budget(2, max_blocks=10, seconds=3600), look=undecided)
    assert out.stopped == "decided" and out.clean == 4 and looks == [6, 9, 12]
    capped = Counting(Record(tmp_path / "capped"), POINTS)
    out = Engine(capped.record, seed=2).run(capped, Budget(2, max_blocks=3, seconds=3600), look=lambda: True)
    assert out.stopped == "blocks" and out.clean == 3


def test_the_time_budget_counts_after_the_planned_blocks_when_asked(tmp_path):
    exp = Counting(Record(tmp_path), POINTS[:1])
    t0 = time.monotonic()
    out = Engine(exp.record, seed=2).run(exp, Budget(1, seconds=0.2, clock_after_planned=True))
    assert out.stopped == "time" and out.clean >= 2 and time.monotonic() - t0 >= 0.2


class Busy:
    """A monitor whose machine was busy with something else during the first `busy` blocks."""

    def __init__(self, busy: int):
        self.busy, self.t, self.n, self.other_s = busy, 0.0, 0, 0.0

    def mark(self) -> Mark:
        self.t += 1.0
        self.n += 1
        if self.n % 2 == 0 and self.n // 2 <= self.busy:  # marks come in pairs: a block's start and end
            self.other_s += 0.9  # of the block's 1 s
        return Mark(t=self.t, busy_s=self.other_s, lab_s=0.0, cores=1, wait_s=None)


def test_a_block_under_interference_is_recorded_and_replaced_up_to_the_limit(tmp_path):
    exp = Counting(Record(tmp_path), POINTS)
    out = Engine(exp.record, seed=4, monitor=Busy(3), limits=(0.25, 0.1)).run(exp, Budget(2, max_replaced=2))  # type: ignore[arg-type]
    blocks = exp.record.lines(BLOCKS)
    assert [b["interfered"] for b in blocks] == [True, True, True, False]
    assert [b["replaced"] for b in blocks] == [True, True, False, False]  # the third is kept: the limit is 2
    assert (out.blocks, out.clean, out.replaced, out.measured) == (4, 2, 2, 12)
