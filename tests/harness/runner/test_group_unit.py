"""The rank group's arithmetic (metrolab.harness.runner.group), without ranks."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def test_cpu_load_is_the_busiest_machines_share_of_its_own_cores():
    from metrolab.harness.runner.group import cpu_load
    # two ranks on one 2-core machine, each busy 0.8 of the wall time: 0.8 of the machine
    one = [{"cpu_s": 0.8, "wall_s": 1.0, "machine": "m", "cpus": 2}, {"cpu_s": 0.8, "wall_s": 1.0, "machine": "m", "cpus": 2}]
    assert cpu_load(one) == pytest.approx(0.8)
    # the same ranks on two 2-core machines of a testbed: each machine 0.4 busy, not 0.8
    two = [{"cpu_s": 0.8, "wall_s": 1.0, "machine": "a", "cpus": 2}, {"cpu_s": 0.4, "wall_s": 1.0, "machine": "b", "cpus": 2}]
    assert cpu_load(two) == pytest.approx(0.4)
    assert cpu_load([{"cpu_s": 0.1, "wall_s": 0.0}]) is None and cpu_load([]) is None
