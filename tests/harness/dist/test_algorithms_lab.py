"""Flat and hierarchical collectives agree (gloo over the lab's veths, host kernel)."""

from __future__ import annotations

import pytest

from metrolab.harness.dist.launch import run_ranks
from tests.support.labs import rdma_sites

pytestmark = pytest.mark.lab


def test_hierarchical_equals_flat_on_gloo(lab_factory):
    lab = lab_factory(rdma_sites((2, 2), rdma=False))
    hosts = ["a1", "b1", "a2", "b2"]  # sites interleaved in rank order: the reassembly must follow ranks
    results = run_ranks(lab, hosts, ["-m", "tests.support.dist_checks", "hierarchical", "--backends", "gloo",
                                     "--sites", "a,b,a,b"], port=29540, timeout=300)
    for r in results:
        checks = r.json()["checks"]
        assert checks and all(c["equal"] for c in checks), [c for c in checks if not c["equal"]][:5]
