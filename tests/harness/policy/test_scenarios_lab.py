"""The load-balancing scenario (--quick) through the runner on the host kernel: the controller
learns the elephants' 5-tuples on the switches during a first pass, plans them over the
two paths and pins them; hashing is left to the kernel. The white paper's claim, measured."""

from __future__ import annotations

import pandas as pd
import pytest

from metrolab.harness.runner.run import run_scenario
from metrolab.harness.scenario import kpis
from metrolab.harness.scenario.spec import load_scenario

pytestmark = pytest.mark.requires("netns")


def test_planned_paths_balance_synchronized_elephants_that_hashing_cannot(tmp_path):
    scn = load_scenario("load-balancing", quick=True)
    # without the scenario's planned-srv6: SRv6 is tested on its own (test_apply_lab.py), in the
    # guest where this host kernel lacks seg6; there planned paths read a median 0.94 in one run and
    # 0.98-0.99 in another (TCG's noise, three blocks), and the bounds below are the host's
    policies = [p for p in scn.spec.policies if p.name != "planned-srv6"]
    sweep = scn.spec.sweep.model_copy(update={"policy": [p.name for p in policies]})
    # two blocks, not the quick variant's three: every assertion below is on medians, on each
    # block, or on the verdict of L3's idle path (infinite imbalance) - none needs the third
    scn.spec = scn.spec.model_copy(update={"policies": policies, "sweep": sweep, "repetitions": 2})
    out = run_scenario(scn, tmp_path / "run")
    assert not out.verdict.failed_points, [(p.label, p.error) for p in out.verdict.failed_points]
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    by = rows[rows["path_imbalance"].notna()].groupby("policy")
    eff, imb = by["flow_efficiency"].median(), by["path_imbalance"].median()
    # L3: one address pair, one path: half the capacity, the other path idle
    assert eff["ecmp-l3"] < 0.55 and imb["ecmp-l3"] > 10, (eff, imb)
    # planned: the flows learned and split evenly; > 95 % of the two paths' capacity
    assert imb["planned"] <= 1.05 and eff["planned"] > 0.95, (eff, imb)
    assert eff["planned"] > eff["ecmp-l4"] - 0.01 and eff["planned"] > eff["ecmp-l3"]
    # in every block: a block that rebuilds the connections (another flow count came in between)
    # must plan the new ones, not reuse the 5-tuples learned from the old (they match nothing, and
    # the flows fall back to one path: ~0.5). One repetition's noise reaches 0.94 (CI, 8 flows) and
    # 0.88 (a clean-clone run on a slow day, 4 flows): 0.75 still tells a stale plan from noise
    planned = rows[rows["policy"] == "planned"]
    assert planned["flow_efficiency"].min() > 0.75, planned[["flows", "block", "flow_efficiency"]]
    import json
    for _, r in rows[rows["path_bytes"].notna()].iterrows():  # per-link bytes, recorded with each repetition
        sent = list(json.loads(r["path_bytes"]).values())
        assert sum(sent) == r["wan_bytes"]
        # the BMWG drafts' indices over the same bytes (docs/kpis.md)
        assert r["jain_index"] == pytest.approx(kpis.jain(sent)) and r["ecmp_max_mean"] == pytest.approx(kpis.max_mean(sent))
    # L3 leaves one of the two paths idle: Jain's index 1/2, the busiest path twice the mean;
    # planned splits them within the 5 % its imbalance is held to
    jfi = rows[rows["jain_index"].notna()].groupby("policy")["jain_index"].median()
    assert jfi["ecmp-l3"] < 0.51 and jfi["planned"] > 0.99, jfi
    # planned routes pass the paper's criterion (efficiency > 0.95, intervals ~0.98-1.0). SRv6 pays 64
    # header bytes per packet (~0.96 of the capacity), and path_imbalance (our own <= 1.05: bytes both
    # ways, retransmissions included) reads 1.01-1.03 with a spread that three blocks sometimes leave
    # straddling 1.05 (CI, 2026-11-28); and planned at 4 flows read 0.998, 0.978, 0.960 in its three
    # blocks (CI, 2026-11-29, a slow day): [0.93, 1.03], undecided against 0.95. Inconclusive is the
    # honest verdict of three blocks there; a fail is not allowed, and the medians above are > 0.95
    verdicts = {(c.label, c.metric): c.verdict for c in out.verdict.results}
    assert all(v in ("pass", "inconclusive") for (label, metric), v in verdicts.items()
               if "planned," in label and metric == "flow_efficiency"), verdicts
    # what the mechanism decides in any run: L3 hashing leaves a path idle (imbalance infinite)
    l3 = [v for (label, metric), v in verdicts.items() if "ecmp-l3" in label and metric == "path_imbalance"]
    assert l3 and all(v == "pass" for v in l3), verdicts
    assert out.verdict.status != "fail", [(c.criterion, c.label, c.message) for c in out.verdict.results]


def test_whitepaper_upload_claim_fills_both_links_and_records_their_utilization(tmp_path):
    """`metrolab run whitepaper --quick --claims upload` end to end: the sample-upload scenario
    (--quick) with the links' utilization sampled, judged as the paper's claim, in one report."""
    import json

    from tests.support.runs import metrolab
    proc = metrolab("run", "whitepaper", "--quick", "--claims", "upload", "--out", str(tmp_path / "wp"), "--json")
    assert proc.returncode in (0, 5), proc.stderr[-2000:]       # holds, or undecided by three blocks; never fails
    res = json.loads(proc.stdout)
    (claim,) = res["claims"]
    assert claim["id"] == "upload" and claim["error"] is None and claim["verdict"] in ("holds", "inconclusive")
    assert claim["measured"] and all(m["metric"] == "link_util_min" for m in claim["measured"])
    md = (tmp_path / "wp" / "whitepaper.md").read_text()
    assert "> 90 %" in md and claim["verdict"] in md and "the scale model preserves" in md
    rows = pd.read_parquet(tmp_path / "wp" / "upload" / "results.parquet")
    for _, r in rows.iterrows():
        series = json.loads(r["link_series"])  # per link, per 50 ms: its busier direction over its rate
        assert set(series) == {"t", "wan-1", "wan-2"} and len(series["wan-1"]) == len(series["t"]) >= 3
        # a link carries its rate; one 50 ms interval reads up to ~15 % over it (the shaper's burst,
        # the sampler's own timing), the busy period's mean does not
        assert max(max(series["wan-1"]), max(series["wan-2"])) < 1.5
        assert r["link_util_min"] <= r["link_util"] <= 1.05
        # the links' bytes (both ways) over their capacity and the busy period hold at least what
        # the samples read in it (the edges and ACKs add to the bytes)
        assert sum(json.loads(r["path_bytes"]).values()) * 8 / (200e6 * r["busy_s"]) >= 0.95 * r["link_util"]
    planned = rows[rows["policy"] == "planned"]
    # planned paths split the upload's 8 flows evenly: both links > 90 % busy (white paper 2.3.1)
    assert planned["link_util_min"].median() > 0.9, planned[["block", "link_util", "link_util_min"]]
