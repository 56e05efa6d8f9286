"""Flat and hierarchical collectives agree (gloo over the lab's veths, host kernel)."""

from __future__ import annotations

import pytest

from metrolab.harness.errors import LabError
from metrolab.harness.kernel.launch import run_ranks
from tests.support.labs import rdma_sites

pytestmark = pytest.mark.requires("netns")


def test_hierarchical_equals_flat_on_gloo(lab_factory):
    lab = lab_factory(rdma_sites((2, 2), rdma=False))
    hosts = ["a1", "b1", "a2", "b2"]  # sites interleaved in rank order: the reassembly must follow ranks
    results = run_ranks(lab, hosts, ["-m", "tests.support.dist_checks", "hierarchical", "--backends", "gloo",
                                     "--sites", "a,b,a,b"], port=29540, timeout=300)
    for r in results:
        checks = r.json()["checks"]
        assert checks and all(c["equal"] for c in checks), [c for c in checks if not c["equal"]][:5]


def test_a_group_of_different_programs_runs_each_on_its_host_and_a_failing_one_is_named(lab_factory):
    # the verbs tool's server and client are such a group (metrolab.harness.rdma.pair)
    lab = lab_factory(rdma_sites((1, 1), rdma=False))
    def prog(who: str, host: str) -> list[str]:  # binds its host's lab address: only there does it exist
        addr = str(lab.topology.nodes[host].address)
        return ["-c", f"import json, os, socket; socket.socket().bind(({addr!r}, 0)); "
                      f"print(json.dumps({{'who': {who!r}, 'rank': os.environ['RANK']}}))"]
    results = run_ranks(lab, ["a1", "b1"], [prog("server", "a1"), prog("client", "b1")], timeout=60)
    assert [(r.host, r.json()) for r in results] == [("a1", {"who": "server", "rank": "0"}),
                                                     ("b1", {"who": "client", "rank": "1"})]
    with pytest.raises(LabError, match=r"rank 1 on b1 exited 3:\n.*no peer"):
        run_ranks(lab, ["a1", "b1"], [["-c", "print('ok')"],
                                      ["-c", "import sys; print('no peer', file=sys.stderr); sys.exit(3)"]], timeout=60)
