"""Shared fixtures: labs built from small specs, removed after each test."""

from __future__ import annotations

import pytest

from metrolab.harness import settings
from tests.support.labs import build_lab

pytest_plugins = ["tests.support.tiers", "tests.support.guest_tier"]


@pytest.fixture
def lab_factory():
    """Build labs from spec dicts; every lab is torn down after the test, also on failure."""
    labs = []

    def make(spec: dict, strict: bool = True):
        lab = build_lab(spec, strict=strict)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        if lab.state is not None and lab.state.path.exists():  # not taken down by the test itself
            lab.down()


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
