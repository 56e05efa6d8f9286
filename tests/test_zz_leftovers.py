"""Runs last: the tiers before it left nothing behind (no namespace, rxe device or qemu)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.lab.clean import LAB_NS
from harness.lab.rxe import devices


def _lab_namespaces() -> list[str]:
    d = Path("/run/netns")
    return [p.name for p in d.iterdir() if LAB_NS.match(p.name) or "-cal-" in p.name] if d.exists() else []


@pytest.mark.guest
def test_guest_tier_left_no_namespace_or_rxe_device():
    assert _lab_namespaces() == []
    assert [d for d in devices() if LAB_NS.match(d)] == []


@pytest.mark.lab
def test_no_guest_or_lab_left_on_the_host():
    qemu = subprocess.run(["pgrep", "-af", "metrolab.init="], capture_output=True, text=True).stdout.strip()
    assert qemu == ""
    assert _lab_namespaces() == []
