"""Interference (harness/kernel/interference.py): what the machine gave to other processes during a
measurement, read from /proc here, and the rule that flags a block (the thresholds come from the
main job's measurements: quiet, beside a busy process with and without the real-time guest)."""

from __future__ import annotations

import os
import time

import pytest

from metrolab.harness.kernel.interference import between, interfered, take_mark

pytestmark = pytest.mark.unit


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_busy_child_is_the_lab_and_a_busy_stranger_is_interference():
    """This process's tree is the lab: a busy child counts as its own CPU. A process outside the
    tree (double-forked: its parent exits, it is nobody's child here) counts as interference."""
    pid = os.fork()
    if pid == 0:  # a child of this test: part of the lab
        _spin(0.6)
        os._exit(0)
    a = take_mark()
    time.sleep(0.5)
    b = take_mark()
    os.waitpid(pid, 0)
    assert b.lab_s - a.lab_s > 0.3                 # the child's half second of CPU is the lab's
    assert between(a, b)["interference"] < 0.2

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:  # the grandchild: reparented away from this process's tree
            os.close(r)
            os.write(w, b"go")
            _spin(0.6)
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
    os.read(r, 2)
    a = take_mark()
    time.sleep(0.5)
    b = take_mark()
    got = between(a, b)["interference"]
    # one core kept busy through the 0.5 s between the marks: a 1/cores share of the machine (the
    # lower bound allows for /proc/stat's 10 ms ticks and the spinner's start)
    assert 0.7 / b.cores < got < 1.3 / b.cores + 0.1, got


def test_the_guests_wait_decides_whether_other_processes_cost_it_anything():
    # quiet: nothing to flag
    assert not interfered({"interference": 0.01, "guest_wait": 0.03}, 0.1, 0.15)
    # a busy neighbour held off by the real-time guest: the guest did not wait
    assert not interfered({"interference": 0.25, "guest_wait": 0.03}, 0.1, 0.15)
    # the same neighbour against an ordinary guest: half the guest's time spent waiting
    assert interfered({"interference": 0.5, "guest_wait": 0.55}, 0.1, 0.15)
    # a guest that saturates its own CPUs waits on its own threads: not interference
    assert not interfered({"interference": 0.01, "guest_wait": 0.15}, 0.1, 0.15)
    # on the host kernel nothing holds a neighbour off the ranks: its CPU alone decides
    assert interfered({"interference": 0.3}, 0.1, 0.15) and not interfered({"interference": 0.05}, 0.1, 0.15)
    assert between(None, take_mark()) == {}
