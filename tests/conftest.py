"""Shared fixtures: labs built from small specs or built-in topologies, removed after their test or
module; one local Ray for the session."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from metrolab.harness import settings
from tests.support.labs import lab_up

pytest_plugins = ["tests.support.tiers", "tests.support.guest_tier"]


def _labs():
    """Labs of spec dicts or built-in topology names (tests/support/labs.py): each torn down when
    the fixture's scope ends, also on failure (a lab the test took down itself: nothing is left to remove)."""
    with ExitStack() as stack:
        yield lambda spec, strict=True: stack.enter_context(lab_up(spec, strict=strict))


@pytest.fixture
def lab_factory():
    """The labs of one test."""
    yield from _labs()


@pytest.fixture(scope="module")
def module_labs():
    """Labs the tests of one module share (a lab a test must not change under the others)."""
    yield from _labs()


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the session's in-process runs: each run_scenario finds it up and leaves it
    so (RayCluster's owner is whoever started it), where starting and stopping one per run cost
    4.6 s here. Runs through the CLI still start their own (tests/harness/runner/test_run_lab.py
    checks that start)."""
    from metrolab.harness.runner.agents import RayCluster
    cluster = RayCluster()
    yield cluster
    cluster.close()


@pytest.fixture(autouse=True)
def _shared_ray(request):
    """Host-kernel lab tests share `local_ray`; not in the guest (no Ray under TCG), nor beside a
    testbed, whose runs connect this process to the testbed's own cluster, nor before the guest
    tier has run (Ray's idle daemons on the host would be noise in the guest's timing)."""
    tier = request.config.pluginmanager.getplugin("metrolab-guest-tier")
    guest_first = tier is not None and tier.items and tier.results is None
    if (request.node.get_closest_marker("lab") and not settings.in_guest() and not guest_first
            and "testbed" not in request.node.path.parts):
        request.getfixturevalue("local_ray")
