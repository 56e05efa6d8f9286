"""`kind: command` on the host kernel (netns lab, TBF rates, Ray, gloo): a user's real DDP script
runs on two rank hosts across the lab and reports its steps, slower by what the narrowed link
must carry; a rank whose command fails stops the others' at once, and a command past its timeout
is killed, and one that does not start fails like one that exits: each a failed repetition naming
its cause, leaving no process behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.workloads.test_workloads_lab import run, sites

pytestmark = pytest.mark.requires("netns")

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "train_ddp.py"
HIDDEN = 128
# the MLP's parameters (fp32): every step all-reduces their gradients
GRAD_BYTES = 4 * (256 * HIDDEN + HIDDEN + HIDDEN * 256 + 256)


def test_a_users_ddp_script_runs_across_the_lab_and_waits_for_the_narrowed_link(tmp_path):
    topo = sites(a=("aidc", ["a1"]), b=("aidc", ["b1"]))
    out = run(tmp_path, [{"kind": "command", "name": "ddp", "hosts": ["a1", "b1"],
                          "params": {"command": f"{{python}} {EXAMPLE} --steps 6 --hidden {HIDDEN}",
                                     "timeout_s": 120}}],
              {"links": ["wan-ab"], "convergence": [16]}, topology=topo)  # and the baseline, 1:1
    assert out.verdict.passed, [p.error for p in out.verdict.failed_points]
    pts = {p.fields["convergence"]: p.metrics | {"step_time_s": p.step_time_s} for p in out.verdict.points}
    for m in pts.values():
        assert m["reported_steps"] == 5  # six steps written, the first left out
        assert m["command_wall_s"] > 5 * m["step_time_s"]
    # two ranks: each must receive the other's S bytes of gradients every step, so each direction of
    # the 400/16 = 25 Mbit/s link carries >= S a step, less only TBF's 16 kB bucket
    floor = (GRAD_BYTES - 16 * 1024) * 8 / (400e6 / 16)
    assert pts[16.0]["step_time_s"] > floor > 3 * pts[1.0]["step_time_s"], (pts, floor)
    assert len(pts) == 2 and out.verdict.points[0].baseline
    log = (tmp_path / "run" / "logs" / "ddp-rank0-a1.log").read_text()
    assert "trained 6 steps" in log and "--- command run" in log


def _running(argv: str) -> list[str]:
    """The PIDs whose command line is `argv`."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().replace(b"\0", b" ").strip() == argv.encode():
                out.append(d.name)
        except OSError:  # ended while read
            pass
    return out


def test_a_failing_or_hung_command_fails_the_repetition_and_leaves_nothing_running(tmp_path):
    topo = sites(a=("aidc", ["a1"]), b=("aidc", ["b1"]))
    exits = {"command": "sleep 61.7", "timeout_s": 60,
             "host_commands": {"b1": ["{python}", "-c", "import sys; print('boom'); sys.exit(3)"]}}
    t0 = time.monotonic()
    out = run(tmp_path, [{"kind": "command", "name": "exits", "hosts": ["a1", "b1"], "params": exits},
                         {"kind": "command", "name": "hangs", "hosts": ["a1", "b1"],
                          "params": {"command": "sleep 61.9", "timeout_s": 1.5}},
                         {"kind": "command", "name": "missing", "hosts": ["a1", "b1"],
                          "params": {"command": "sleep 61.8", "host_commands": {"b1": "/nonexistent/train"}}}],
              {"links": ["wan-ab"]}, topology=topo, repetitions=1)
    took = time.monotonic() - t0
    errors = {p.workload: p.error or "" for p in out.verdict.failed_points}
    assert set(errors) == {"exits", "hangs", "missing"}, errors
    assert "rank 1: exited with 3" in errors["exits"] and "boom" in errors["exits"], errors
    assert "rank 0: stopped: another rank's command failed" in errors["exits"], errors
    assert "rank 0: timed out after 1.5 s" in errors["hangs"], errors
    assert "rank 1: did not start: [Errno 2]" in errors["missing"], errors
    assert "rank 0: stopped: another rank's command failed" in errors["missing"], errors
    # the peers' sleeps were stopped when b1 failed, not left to their 60 s (300 s) timeout
    assert took < 60, took
    assert not any(_running(f"sleep 61.{i}") for i in (7, 8, 9))
