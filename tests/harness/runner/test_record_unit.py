"""The run directory's one writer: what a kill leaves is read back without the line it cut, and
the next append starts a line of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from metrolab.harness.runner.record import Record

pytestmark = pytest.mark.unit


def test_a_cut_line_is_left_out_and_sealed_apart_from_the_next(tmp_path):
    rec = Record(tmp_path / "run")
    rec.append("rows.jsonl", {"a": 1})
    with open(rec.path("rows.jsonl"), "a") as f:
        f.write('{"a": 2, "b": [1, 2')  # what a kill -9 in the middle of a write leaves
    assert rec.lines("rows.jsonl") == [{"a": 1}]
    rec.append("rows.jsonl", {"a": 3})
    assert rec.lines("rows.jsonl") == [{"a": 1}, {"a": 3}]
    assert rec.path("rows.jsonl").read_text().splitlines()[-1] == '{"a": 3}'


def test_documents_are_replaced_whole(tmp_path):
    rec = Record(tmp_path)
    rec.write_json("meta.json", {"n": 1})
    rec.write_json("meta.json", {"n": 2})
    assert rec.read_json("meta.json") == {"n": 2} and rec.read_json("absent.json", {}) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]  # nothing left aside


def test_a_killed_writer_loses_at_most_the_line_it_was_writing(tmp_path):
    """A writer killed at an arbitrary moment: every line it finished appending is there."""
    code = ("import sys; from metrolab.harness.runner.record import Record\n"
            "r = Record(sys.argv[1])\n"
            "for i in range(10**9):\n"
            "    r.append('rows.jsonl', {'i': i, 'pad': 'x' * 4000}); print(i, flush=True)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    said = [int(p.stdout.readline()) for _ in range(50)]
    time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    rows = Record(tmp_path).lines("rows.jsonl")
    assert [r["i"] for r in rows] == list(range(len(rows))) and len(rows) > said[-1]
