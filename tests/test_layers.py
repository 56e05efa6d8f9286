"""Layers point down (issue 32): no cycle between packages; the bottom layer (namespaces and netlink handles, settings,
errors, the one place commands run) imports nothing of metrolab above it, and `netem` stands on it
alone — netem can be taken out and used without the lab, the runner or the CLI."""

from __future__ import annotations

import pytest

from tests.support.imports import cycles, deferred, graph

pytestmark = pytest.mark.unit

BOTTOM = {"harness.kernel", "harness.settings", "harness.errors", "harness.sh"}  # units: tests/support/imports.py


def test_the_bottom_layer_imports_nothing_above_it():
    edges, _ = graph()
    up = {u: sorted(edges[u] - BOTTOM) for u in BOTTOM if edges[u] - BOTTOM}
    assert up == {}


def test_netem_stands_on_the_bottom_layer_only():
    edges, _ = graph()
    assert sorted(edges["netem"] - BOTTOM - {"netem"}) == []
    assert not [c for c in cycles(edges) if "netem" in c]


def test_no_import_cycle_between_packages():
    """At the grain of harness's subpackages and the top packages, imports inside functions included
    (a function-level import is still a dependency: deferring it only hides the cycle)."""
    edges, _ = graph()
    assert cycles(edges) == []


def test_imports_are_at_the_top_but_a_few_that_say_why():
    """An import inside a function is a heavy or optional dependency deferred on purpose (torch on a
    rank's side, scipy, pyverbs, scapy, Ray, matplotlib), with the reason on its line."""
    found = deferred()
    assert [f"{f}:{n}" for f, n, said in found if not said] == []
    assert len(found) < 100
