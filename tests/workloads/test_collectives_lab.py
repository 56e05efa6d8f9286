"""`metrolab collectives` end to end on the host kernel (gloo over the lab's veths)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.support.labs import rdma_sites

pytestmark = pytest.mark.requires("netns")


def metrolab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metrolab.harness.cli", *args], capture_output=True, text=True, timeout=600)


def test_gloo_benchmark_rows_have_nccl_tests_fields_and_no_wrong_elements(tmp_path):
    topo = tmp_path / "sites.yaml"
    topo.write_text(yaml.safe_dump(rdma_sites((2, 1), rdma=False)))
    res = metrolab("collectives", str(topo), "--collective-backend", "gloo", "--ops",
                   "all_reduce,all_gather,reduce_scatter,broadcast,reduce,all_to_all,sendrecv",
                   "-b", "1k", "-e", "64k", "-f", "8", "-n", "2", "-w", "1", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["nranks"] == 3 and out["hosts"] == ["a1", "a2", "b1"]
    assert len(out["rows"]) == 7 * 3
    for r in out["rows"]:
        assert r["oop_wrong"] == 0 and r["oop_time_us"] > 0 and r["oop_busbw_gbs"] > 0, r
        assert r["ip_wrong"] in (0, None), r  # all_to_all has no in-place form in torch
    hier = metrolab("collectives", str(topo), "--collective-backend", "gloo", "--algo", "hierarchical",
                    "--ops", "all_reduce,all_gather", "-b", "4k", "-e", "4k", "-n", "2", "--json")
    assert hier.returncode == 0, hier.stderr[-2000:]
    assert all(r["oop_wrong"] == 0 and r["ip_wrong"] == 0 for r in json.loads(hier.stdout)["rows"])


def test_bad_rank_hosts_are_a_clear_error(tmp_path):
    topo = tmp_path / "sites.yaml"
    topo.write_text(yaml.safe_dump(rdma_sites((1, 1), rdma=False)))
    res = metrolab("collectives", str(topo), "--collective-backend", "gloo", "--hosts", "a1,gw-a")
    assert res.returncode == 2 and "--hosts" in res.stderr and "gw-a" in res.stderr
    res = metrolab("collectives", str(topo), "--collective-backend", "verbs", "--backend", "netns")
    assert res.returncode != 0 and "rdma" in res.stderr.lower()
