"""The training and inference workloads through the runner on the host kernel (netns lab, TBF
rates, Ray, gloo/TCP): WAN bytes of hierarchical vs flat AllReduce, disaggregated pulls that are
intact and never touch a disk, PD-separated inference that decodes what a single host would."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from metrolab.harness.runner.run import run_scenario
from metrolab.harness.scenario.spec import scenario_from_data
from metrolab.workloads.diskguard import DiskWrites
from metrolab.workloads.request_trace import read_trace
from tests.support.labs import metro, site, wan_pair

pytestmark = pytest.mark.requires("netns")


def sites(**kinds) -> dict:
    """Sites of (kind, hosts), a gateway each, every pair of gateways joined by a 400 Mbit/s WAN link."""
    return metro(*(site(name, *hosts, kind=kind) for name, (kind, hosts) in kinds.items()), name="wl", rate="400mbit")


def run(tmp_path, workloads, sweep, **over):
    data = {"name": "wl", "topology": over.pop("topology"), "workloads": workloads, "sweep": sweep,
            "repetitions": 2, "warmups": 1, "scale": 1000} | over
    return run_scenario(scenario_from_data(data, "wl.yaml", quick=True), tmp_path / "run")


def test_hierarchical_allreduce_moves_fewer_bytes_across_the_wan(tmp_path):
    topo = sites(a=("aidc", ["a1", "a2"]), b=("aidc", ["b1", "b2"]))
    out = run(tmp_path, [{"kind": "training-step", "hosts": ["a1", "a2", "b1", "b2"],
                          "params": {"model": "gpt2-small", "iters": 2}}],
              {"links": ["wan-ab"], "params": {"algo": ["flat", "hierarchical"]}}, topology=topo)
    assert out.verdict.passed, [p.error for p in out.verdict.failed_points]
    wan = {p.fields["algo"]: p.metrics["wan_bytes"] for p in out.verdict.points if not p.baseline}
    grads = out.verdict.points[0].metrics["gradient_bytes"]
    # flat ring over 4 ranks, 2 per site: 2 of the 4 ring hops cross the WAN, 2 (n-1)/n of the
    # data per hop -> ~3x the gradients per step; hierarchical: the two leaders' exchange, ~2x
    assert wan["hierarchical"] < 0.85 * wan["flat"], wan
    assert wan["hierarchical"] >= 2 * 2 * grads, (wan, grads)  # 2 steps, at least the leaders' exchange


def test_disaggregated_pulls_are_intact_and_stay_in_memory(tmp_path):
    topo = sites(a=("aidc", ["a1", "a2"]), s=("storage", ["s1"]))
    out = run(tmp_path, [{"kind": "disaggregated-training", "hosts": ["a1", "a2", "s1"],
                          "params": {"transport": "tcp", "batch_size": "256m", "pool": 5, "iters": 6}}],
              {"links": ["wan-as"], "convergence": [1, 16], "params": {"prefetch": [1, 3]}},
              topology=topo, acceptance=["bad_batches == 0", "disk_write_bytes == 0"])
    assert out.verdict.passed, [(r.label, r.message) for r in out.verdict.results if not r.passed]
    by = {(p.fields["convergence"], p.fields["prefetch"]): p for p in out.verdict.points if not p.baseline}
    for p in by.values():
        assert p.metrics["pull_gbs"] > 0 and p.metrics["batch_bytes"] == int((256 << 20) / 1000)
    # 16:1 leaves 25 Mbit/s: a 268 kB batch takes ~86 ms to cross against ~15 ms of compute, so a rank
    # waits at least ~70 ms a step for the link (two ranks share it: more); half of that is the bound.
    # On the free link a batch crosses in ~5 ms, inside the compute: what stall remains there is the
    # host's CPU (three processes on two cores; a suite run read 43 ms once), which a narrower link
    # can only add to
    m = by[(16.0, 1)].metrics
    model = m["batch_bytes"] * 8 / (400e6 / 16) - m["compute_s"]
    narrow, free = m["stall_s"], by[(1.0, 3)].metrics["stall_s"]
    assert narrow > 0.5 * model > 0.03 and free < narrow, (narrow, free, model)


def test_the_disk_write_witness_sees_a_write():
    """Control for disk_write_bytes == 0: the same witness catches a real write in this process."""
    guard = DiskWrites()
    with tempfile.NamedTemporaryFile(dir="/var/tmp") as f:
        f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())
        written, files = guard.result()
    assert written >= 1 << 20 and files == [f.name], (written, files)


def test_pd_inference_decodes_what_one_host_would(tmp_path):
    topo = sites(a=("aidc", ["a1"]), b=("aidc", ["b1"]))
    out = run(tmp_path, [{"kind": "pd-inference", "hosts": ["a1", "b1"], "params": {"requests": 5}}],
              {"links": ["wan-ab"], "convergence": [1, 64], "params": {"request_rate": [0, 40]}},
              topology=topo, scale=1, acceptance=["token_mismatches == 0"])
    assert out.verdict.passed, [(r.label, r.message) for r in out.verdict.results if not r.passed]
    pts = {(p.fields["convergence"], p.fields["request_rate"]): p.metrics for p in out.verdict.points
           if not p.baseline}
    for m in pts.values():
        assert m["kv_bytes_per_request"] == 2 * 2 * 4 * 64 * 16 * 4  # layers, K/V, heads, tokens, dims, fp32
        assert 0 < m["kv_transfer_p50_s"] <= m["ttft_p50_s"] <= m["e2e_p50_s"] and m["tpot_p50_s"] > 0
    # 64:1 leaves 6.25 Mbit/s: a 64 KiB KV cache takes > 80 ms to cross instead of ~1.3 ms
    assert pts[(64.0, 0)]["kv_transfer_p50_s"] > 0.05 > pts[(1.0, 0)]["kv_transfer_p50_s"]


def test_pd_inference_replays_a_request_trace_open_loop(tmp_path):
    """The shipped trace's first requests: each its own prompt and output length, decoded as one
    host would, its own KV cache across a link narrowed 64-fold, each arriving when the trace says."""
    trace = Path(__file__).resolve().parents[2] / "scenarios" / "traces" / "azure-llm-synthetic.csv"
    reqs = read_trace(trace, 0, 4)
    topo = sites(a=("aidc", ["a1"]), b=("aidc", ["b1"]))
    out = run(tmp_path, [{"kind": "pd-inference", "hosts": ["a1", "b1"],
                          "params": {"requests": 4, "request_trace": str(trace)}}],
              {"links": ["wan-ab"], "convergence": [64]}, topology=topo, scale=1,
              acceptance=["token_mismatches == 0"])
    assert out.verdict.passed, [(r.label, r.message) for r in out.verdict.results if not r.passed]
    kv = [2 * 2 * 4 * r.prompt_tokens * 16 * 4 for r in reqs]  # layers, K/V, heads, tokens, dims, fp32
    narrow = next(p for p in out.verdict.points if not p.baseline).metrics
    assert narrow["kv_bytes_per_request"] == sum(kv) / len(kv)
    # 64:1 leaves 6.25 Mbit/s: a cache crosses no faster than that but for TBF's 16 kB bucket, which
    # an idle link has full when it starts
    burst, rate = 16 * 1024, 6.25e6
    assert narrow["kv_transfer_p50_s"] > (min(kv) - burst) * 8 / rate, (narrow["kv_transfer_p50_s"], kv)
    assert narrow["tokens_per_s"] > 0
    assert narrow["kv_transfer_gbs"] < rate / 8 / 1e9 * sum(kv) / (sum(kv) - len(kv) * burst), narrow
    # open loop: the repetition spans at least the trace's own arrivals
    assert narrow["throughput_rps"] <= 4 / reqs[3].arrival_s + 1e-9


def test_a_pipeline_turns_link_bound_when_its_boundary_narrows(tmp_path):
    """GPipe across the WAN: with the link free the stages idle only in GPipe's bubble; narrowed
    200-fold, every micro-batch waits for its activations, and the model says by how much."""
    from metrolab.workloads import models as wm
    topo = sites(a=("aidc", ["a1"]), b=("aidc", ["b1"]))
    out = run(tmp_path, [{"kind": "pipeline", "hosts": ["a1", "b1"],
                          "params": {"model": "gpt2-small", "micro_batches": 8, "compute_scale": 4, "iters": 2}}],
              {"links": ["wan-ab"], "convergence": [1, 200]}, topology=topo,
              acceptance=["activations_wrong == 0"])
    assert out.verdict.passed, [(r.label, r.message) for r in out.verdict.results if not r.passed]
    pts = {p.fields["convergence"]: p for p in out.verdict.points if not p.baseline}
    base = next(p for p in out.verdict.points if p.baseline)
    ideal = wm.ideal_bubble(2, 8)
    assert base.metrics["ideal_bubble_fraction"] == pytest.approx(ideal)
    # 12.6 kB of activations cross 400 Mbit/s in 0.26 ms, far under a stage's 10 ms forward (4x
    # GPT-2 small's: each of the 32 messages a step costs the host ~0.5 ms of Python and gloo, which
    # on 2.6 ms stages put the bubble at 0.21 once)
    assert ideal - 0.02 < base.metrics["bubble_fraction"] < ideal + 0.1, base.metrics
    # at 2 Mbit/s each crossing takes ~53 ms, more than a stage's 10 + 20 ms: 16 of them a step,
    # all on the critical path but the first of each phase, which the shaper's 16 KiB token bucket,
    # full after the idle, lets through at once (a run at 1x compute: 0.74 s against 16 x 53 ms)
    narrow = pts[200.0]
    wire = 1024 * 8 * 768 * 2 // 1000 * 8 / wm.goodput_bps(wm.Path(400e6 / 200))
    assert narrow.step_time_s > 2 * 7 * wire, (narrow.step_time_s, wire)
    assert narrow.metrics["bubble_fraction"] > base.metrics["bubble_fraction"] + 0.3, narrow.metrics
    assert abs(narrow.step_time_s / narrow.predicted_step_s - 1) < 0.25, (narrow.step_time_s, narrow.predicted_step_s)
    assert narrow.metrics["boundary_bytes"] == 2 * 8 * (1024 * 8 * 768 * 2 // 1000)


def test_workload_alone_runs_and_writes_its_scenario(tmp_path):
    """`metrolab workload` on a rate-only lab (host kernel, Ray): one baseline, one point, a report."""
    import json
    import subprocess
    import sys

    import yaml
    topo = tmp_path / "pair.yaml"
    topo.write_text(yaml.safe_dump(wan_pair(rate="200mbit")))
    out = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "workload", "collective", "--topology", str(topo),
                          "--hosts", "a1,b1", "-p", "size=256k", "-p", "iters=2", "--convergence", "4",
                          "--repetitions", "1", "--warmups", "0", "--backend", "netns", "--out", str(tmp_path / "r"),
                          "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert [p["label"] for p in res["points"]] == ["baseline (0 km, lossless)", "0 km, 4:1"]
    assert res["points"][1]["step_time_s"] > res["points"][0]["step_time_s"]  # a quarter of the rate
    assert (tmp_path / "r" / "workload-scenario.yaml").exists() and (tmp_path / "r" / "report.html").exists()
