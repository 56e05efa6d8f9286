"""The load-balancing scenario (--quick) through the runner on the host kernel: the controller
learns the elephants' 5-tuples on the switches during a first pass, plans them over the
two paths and pins them; hashing is left to the kernel. The white paper's claim, measured."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.runner.run import run_scenario
from harness.scenario.spec import load_scenario

pytestmark = pytest.mark.lab


def test_planned_paths_balance_synchronized_elephants_that_hashing_cannot(tmp_path):
    scn = load_scenario("load-balancing", quick=True)
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
    # the flows fall back to one path: ~0.5). One repetition's noise reaches 0.94 here (CI, 8 flows)
    planned = rows[rows["policy"] == "planned"]
    assert planned["flow_efficiency"].min() > 0.9, planned[["flows", "block", "flow_efficiency"]]
    import json
    for _, r in rows[rows["path_bytes"].notna()].iterrows():  # per-link bytes, recorded with each repetition
        assert sum(json.loads(r["path_bytes"]).values()) == r["wan_bytes"]
    # planned routes pass the paper's criterion (efficiency > 0.95, intervals ~0.98-1.0). SRv6 pays 64
    # header bytes per packet (~0.96 of the capacity), and path_imbalance (our own <= 1.05: bytes both
    # ways, retransmissions included) reads 1.01-1.03 with a spread that three blocks sometimes leave
    # straddling 1.05 (CI, 2026-11-28): those may be inconclusive, which is the honest verdict; none may fail
    verdicts = {(c.label, c.metric): c.verdict for c in out.verdict.results}
    assert all(v == "pass" for (label, metric), v in verdicts.items()
               if "planned," in label and metric == "flow_efficiency"), verdicts
    assert out.verdict.status != "fail", [(c.criterion, c.label, c.message) for c in out.verdict.results]
