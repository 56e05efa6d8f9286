"""Pure models of the training and inference workloads: FLOPs, buckets, KV bytes, percentiles,
arrivals, and the parameter errors a scenario author gets (no lab)."""

from __future__ import annotations

import itertools
import statistics

import pytest

from metrolab.harness.errors import SpecError, SpecErrors
from metrolab.harness.scenario.points import Point, baselines, grid
from metrolab.harness.scenario.spec import SweepSpec, scenario_from_data
from metrolab.harness.scenario.verdict import summarize
from metrolab.workloads import profiles as pf
from metrolab.workloads.pd_inference import arrivals, percentile
from tests.support.labs import metro, site

pytestmark = pytest.mark.unit

TOPO = metro(site("aidc-a", "a1", "a2"), site("store", "s1", kind="storage", gw="gw-s"), wan={"wan": ("gw-a", "gw-s")},
             name="t", rate="100mbit")


def scenario(kind: str, params: dict, hosts=None, **over):
    w = {"kind": kind, "params": params} | ({"hosts": hosts} if hosts else {})
    return scenario_from_data({"name": "s", "topology": TOPO, "workloads": [w]} | over, "s.yaml")


def test_training_flops_and_compute_time():
    # GPT-2 small, 8 x 1024 tokens: 6 * 124e6 * 8192 FLOPs on an H100 at 40 % MFU
    flops = pf.training_flops(124e6, 8192)
    assert flops == pytest.approx(6.095e12, rel=1e-3)
    assert pf.compute_time_s(flops, 989, 0.4) == pytest.approx(flops / 395.6e12)
    with pytest.raises(ValueError):
        pf.compute_time_s(flops, 989, 0)


def test_buckets_follow_backward_order_and_cover_every_layer():
    per_layer = pf.layer_bytes(1000, 10)
    assert sum(per_layer) == 1000 and len(per_layer) == 10
    plan = pf.bucket_plan(per_layer, 250)
    assert plan[0][0] == 9 and plan[-1][-1] == 0            # last layer's gradients are reduced first
    assert sorted(i for b in plan for i in b) == list(range(10))
    assert all(sum(per_layer[i] for i in b) >= 250 for b in plan[:-1])
    assert pf.bucket_plan(per_layer, 1000) == [list(range(9, -1, -1))]
    with pytest.raises(ValueError, match="exceeds"):
        pf.bucket_plan(per_layer, 1001)
    with pytest.raises(ValueError):
        pf.layer_bytes(1000, 0)


def test_kv_cache_bytes_of_known_models():
    # Llama-2 7B: 32 layers x 32 heads x 128 dims x (K, V) x 2 bytes = 512 KiB per token
    assert pf.kv_bytes_per_token(pf.PROFILES["llama2-7b"]) == 512 * 1024
    # 70B uses grouped-query attention (8 KV heads): 80 x 8 x 128 x 2 x 2 = 320 KiB
    assert pf.kv_bytes_per_token(pf.PROFILES["llama2-70b"]) == 320 * 1024
    assert pf.exposed_comm(0.10, 0.08) == pytest.approx(0.02) and pf.exposed_comm(0.05, 0.08) == 0


def test_percentiles_and_poisson_arrivals():
    vals = list(range(1, 101))
    assert percentile(vals, 50) == 50 and percentile(vals, 99) == 99 and percentile([3.0], 99) == 3.0
    a = arrivals(2000, 20.0, seed=1)
    assert a == arrivals(2000, 20.0, seed=1) and a == sorted(a)
    gaps = [y - x for x, y in itertools.pairwise(a)]
    assert statistics.mean(gaps) == pytest.approx(1 / 20, rel=0.08)
    assert arrivals(3, 0, seed=1) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("kind,params,path,text", [
    ("training-step", {"layers": 0}, "params.layers", "greater than or equal to 1"),
    ("training-step", {"model": "gpt2-small", "bucket_size": "1g"}, "params", "exceeds the model's gradients"),
    ("training-step", {"model": "gpt-5"}, "params.model", "unknown model profile"),
    ("disaggregated-training", {"transport": "tcp", "prefetch": 0}, "params.prefetch", "at least one pull"),
    ("disaggregated-training", {"transport": "tcp", "bucket_size": "1g"}, "params", "exceeds"),
    ("disaggregated-training", {"transport": "tcp", "storage": "b9"}, "params.storage", "rank hosts"),
    ("pd-inference", {"d_model": 30, "heads": 4}, "params.d_model", "divisible"),
    ("pd-inference", {"model": "nope"}, "params.model", "unknown model"),
])
def test_bad_workload_parameters_are_named(kind, params, path, text):
    with pytest.raises(SpecError) as e:
        scenario(kind, params, hosts=["a1", "a2", "s1"] if kind != "pd-inference" else ["a1", "s1"])
    assert e.value.path == f"workloads[0].{path}" and text in e.value.message, (e.value.path, e.value.message)
    assert e.value.file == "s.yaml"


def test_pd_inference_takes_two_hosts_and_rdma_needs_rdma_hosts():
    with pytest.raises(SpecError, match="two hosts"):
        scenario("pd-inference", {}, hosts=["a1", "a2", "s1"])
    with pytest.raises(SpecError, match="rdma: true"):
        scenario("disaggregated-training", {"transport": "rdma"}, hosts=["a1", "s1"])


def test_swept_parameters_get_their_own_baselines_and_columns():
    sweep = SweepSpec(distance_km=[0, 100], params={"algo": ["flat", "hierarchical"]})
    pts = grid(sweep)
    assert len(pts) == 4 and len(baselines(sweep)) == 2
    assert Point().key == Point(params=()).key  # scenarios without swept parameters keep their keys
    row = pts[1].fields()
    assert row["algo"] == "hierarchical" and row["params"] == '{"algo": "hierarchical"}'
    rows = []
    for p, t in [(baselines(sweep)[0], 1.0), (baselines(sweep)[1], 2.0), (pts[2], 1.25), (pts[3], 2.0)]:
        rows.append({"workload": "w", "point_key": p.key, "label": p.label(), **p.fields(), "status": "ok",
                     "step_time_s": t})
    eff = {s.label: s.efficiency for s in summarize(rows)}
    # each point against the baseline of its own parameters, not the other algorithm's
    assert eff["100 km, algo=flat"] == pytest.approx(0.8) and eff["100 km, algo=hierarchical"] == pytest.approx(1.0)


def test_swept_parameter_errors_point_at_the_sweep():
    with pytest.raises(SpecError) as e:
        scenario("training-step", {}, hosts=["a1", "a2"], sweep={"params": {"micro_batches": [1, 0]}})
    assert e.value.path == "sweep.params.micro_batches" and "greater than or equal to 1" in e.value.message
    with pytest.raises((SpecError, SpecErrors), match="backend cannot be swept"):
        scenario("training-step", {}, hosts=["a1", "a2"], sweep={"params": {"backend": ["gloo", "verbs"]}})
    scn = scenario("training-step", {}, hosts=["a1", "a2"], sweep={"params": {"algo": ["flat", "hierarchical"]}},
                   acceptance=["overlap_efficiency > 0.5 where algo == hierarchical"])
    assert scn.criteria[0].where[0].field == "algo"
