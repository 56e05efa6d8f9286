"""The vm backend's calls: the host writes a call and its typed arguments into a directory both
kernels see, `metrolab measure` makes it where it runs and writes the result beside it; no command
line is rebuilt. The first test makes the guest's half here, on this kernel; the second crosses to
the guest where this kernel lacks rxe (this machine), or stays here where it has it."""

from __future__ import annotations

import json

import pytest
import yaml

import metrolab
from metrolab.harness.capabilities import probe
from tests.support.runs import TOPO
from tests.support.runs import metrolab as cli

pytestmark = pytest.mark.requires("netns")


def test_a_call_is_made_where_measure_runs_and_its_result_written_beside_it(tmp_path):
    topo = tmp_path / "topo.yaml"
    topo.write_text(yaml.safe_dump(TOPO))  # a rate, no distance: this kernel builds it without netem
    call = tmp_path / "call"
    call.mkdir()
    (call / "request.json").write_text(json.dumps({"call": "probe_links", "kwargs": {
        "topology": str(topo), "links": ["wan"], "duration": 0.5, "loss_packets": 200}}))
    res = cli("measure", str(call))
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads((call / "result.json").read_text())
    (link,) = got["links"]
    assert link["link"] == "wan" and link["rate_configured_bps"] == 200e6, link
    assert link["rate_bps"] > 0 and link["rtt_ms"] > 0
    # a call the guest does not make, and an argument the function does not take: refused, named
    (call / "request.json").write_text(json.dumps({"call": "os.system", "kwargs": {}}))
    res = cli("measure", str(call))
    assert res.returncode == 2 and "request.json" in res.stderr and "os.system" in res.stderr, res.stderr
    (call / "request.json").write_text(json.dumps({"call": "probe_links", "kwargs": {"topology": str(topo),
                                                                                     "lnks": ["wan"]}}))
    res = cli("measure", str(call))
    assert res.returncode == 2 and "kwargs" in res.stderr and "lnks" in res.stderr, res.stderr


def test_an_rdma_test_runs_where_rxe_is_and_its_typed_result_comes_back():
    told: list[tuple[str, str]] = []
    res = metrolab.rdma_test(metrolab.RdmaTest(topology="rdma-pair", size="64", iters=200), "lat",
                             on_backend=lambda backend, why: told.append((backend, why)))
    # this machine's kernel has no rxe: the call went to the guest's (a hosted runner's has it)
    assert told and told[0][0] == ("netns" if probe().has("rxe") else "vm"), told
    (row,) = res["rows"]
    assert row["bytes"] == 64 and row["iterations"] == 200 and 0 < row["t_min_us"] <= row["t_typical_us"], row
