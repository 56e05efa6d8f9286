"""The flow-control scenario (--quick) in the guest kernel (netem for the 100 km, RED for ECN):
a 3-to-1 incast across the WAN under each egress-queue policy, read from the queues' own
counters (drops, CE marks) and the flows' completion times."""

from __future__ import annotations

import pandas as pd
import pytest

from metrolab.harness.runner.run import run_scenario
from metrolab.harness.scenario.spec import load_scenario

pytestmark = pytest.mark.requires("netem")


def test_incast_under_shallow_deep_ecn_and_per_flow_queues(tmp_path):
    scn = load_scenario("flow-control", quick=True)
    # one block: what is asserted (drops at a 32 KiB buffer, none deeper or per flow, marks only with
    # ECN) is each queue's mechanism in any one incast, not a statistic over blocks
    scn.spec = scn.spec.model_copy(update={"repetitions": 1})
    out = run_scenario(scn, tmp_path / "run", backend="vm")
    assert not out.verdict.failed_points, [(p.label, p.error) for p in out.verdict.failed_points]
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    # the policies' link keeps one shaper at every point, the baselines too (Lab.tbf_links)
    assert (rows["rate_stage"] == "tbf").all(), rows[["label", "rate_stage"]]
    rows = rows[rows["wan_drops"].notna() & ~rows["baseline"]]
    drops = rows.groupby("policy")["wan_drops"].sum()
    marks = rows.groupby("policy")["ecn_marks"].sum()
    assert drops["tail-drop"] > 0, drops                     # the burst overflows a 32 KiB buffer
    # each dropped segment was the senders' data (the ACKs' queue never fills), and the flows finished:
    # the rank hosts' TCP stacks sent each again
    resent = rows.groupby("policy")["tcp_retrans_segs"].sum()
    assert (resent >= drops).all(), (resent, drops)
    assert drops["deep-buffer"] == 0 and drops["per-flow"] == 0, drops
    assert marks["ecn"] > 0 and drops["ecn"] < drops["tail-drop"], (marks, drops)  # marks instead of drops
    assert (marks.drop("ecn") == 0).all(), marks             # nothing marks CE without the ECN policy
