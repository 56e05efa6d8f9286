"""A tree's counts: the root's packets and drops (it counts its children's), every qdisc's marks."""

from __future__ import annotations

import pytest

from metrolab.netem.tree import Qdisc, counts

pytestmark = pytest.mark.unit


def test_a_childs_drop_counts_once_and_marks_add_up():
    tree = [Qdisc("tbf", "1:", "root", 100_000, 125_000, packets=90, drops=7, overlimits=40),
            Qdisc("red", "20:", "1:1", 60_000, packets=90, drops=7, marks=12)]
    assert counts(tree) == (90, 7, 12)
    assert counts([]) == (0, 0, 0)
    # counters are not part of a tree's shape: two reads of one tree compare equal
    assert tree[1] == Qdisc("red", "20:", "1:1", 60_000)
