"""The verbs torch.distributed backend between lab hosts over Soft-RoCE (guest kernel)."""

from __future__ import annotations

import pytest

from metrolab.harness.kernel.launch import run_ranks
from tests.support.labs import rdma_sites

pytestmark = pytest.mark.requires("netem", "rxe")
CHECKS = ["-m", "tests.support.dist_checks"]
SMALL_SLOTS = {"METROLAB_VERBS_SLOT": "65536"}  # multi-chunk transfers at test sizes


@pytest.fixture(scope="module")
def sites(module_labs):
    return module_labs(rdma_sites((2, 1)))


@pytest.mark.parametrize("hosts", [["a1", "b1"], ["a1", "a2", "b1"]], ids=["world2", "world3"])
def test_every_collective_on_verbs_equals_gloo(sites, hosts):
    results = run_ranks(sites, hosts, CHECKS + ["collectives"], port=29510 + len(hosts), env=SMALL_SLOTS,
                        timeout=900)
    for r in results:
        checks = r.json()["checks"]
        cases = [c for c in checks if "equal" in c]
        bad = [c for c in cases if not c["equal"]]  # includes a case nothing could check
        assert not bad, f"rank {r.rank}: {bad[:5]}"
        assert len(cases) >= 100
        # every all-reduce against the result computed from all ranks' seeded inputs, gloo or not
        reduces = [c for c in cases if c["case"].startswith("all_reduce ") and "AVG" not in c["case"]]
        assert len(reduces) == 3 * 4 * 4 and all("oracle" in c["checked_against"] for c in reduces), reduces[:3]


def test_ddp_trains_to_the_same_weights_on_verbs_and_gloo(sites):
    results = run_ranks(sites, ["a1", "b1"], CHECKS + ["ddp"], port=29520, env=SMALL_SLOTS, timeout=600)
    for r in results:
        res = r.json()
        assert res["max_abs_diff"] <= 1e-6, res


def test_a_dead_rank_fails_the_others_within_the_timeout(sites):
    results = run_ranks(sites, ["a1", "a2", "b1"], CHECKS + ["dead", "--timeout", "20"], port=29530,
                        timeout=300, check=False)
    assert results[2].rc == 17
    for r in results[:2]:
        res = r.json()
        assert res["error"] and "rank" in res["error"], res
        assert res["seconds"] <= 20 + 15, res  # the group's timeout, plus the time to notice


def test_hierarchical_equals_flat_on_verbs(sites):
    results = run_ranks(sites, ["a1", "b1", "a2"], CHECKS + ["hierarchical", "--backends", "verbs",
                                                            "--sites", "a,b,a"], port=29535, env=SMALL_SLOTS,
                        timeout=600)
    for r in results:
        checks = r.json()["checks"]
        assert checks and all(c["equal"] for c in checks), [c for c in checks if not c["equal"]][:5]
