"""Shared fixtures: labs built from small specs, removed after each test."""

from __future__ import annotations

import pytest

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
