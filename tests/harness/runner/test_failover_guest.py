"""The built-in failover scenario, --quick, in the guest kernel (100 km of netem delay): a WAN path
flaps twice under a running training step with planned paths, and the controller re-plans around
it and back each time (self-healing); the flaps keep their order and length however late TCG makes
them, and the lateness is reported. (What a cut does to the steps: test_events_lab.py, on the host,
where the timeline keeps time.)"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from metrolab.harness.runner.run import run_scenario
from metrolab.harness.scenario.spec import load_scenario

pytestmark = pytest.mark.requires("netem")


def test_failover_replans_around_each_flap_and_charges_it_to_its_steps(tmp_path):
    scn = load_scenario("failover", quick=True)
    # the mechanism, on the training step (the inference through a cut: test_events_lab.py)
    scn.spec = scn.spec.model_copy(update={"repetitions": 1, "workloads": scn.spec.workloads[:1]})
    out = run_scenario(scn, tmp_path / "run", backend="vm")
    assert not out.verdict.failed_points, [(p.label, p.error) for p in out.verdict.failed_points]
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    flapped = rows[~rows["baseline"]]
    assert len(flapped) == 1 and (flapped["policy"] == "planned").all()
    assert (flapped["replan_s"] > 0).all() and (flapped["event_steps"] >= 1).all(), flapped.iloc[0].to_dict()
    (rec,) = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    # both flaps fell inside the repetition's steps: down and back twice, a re-plan at each change
    assert [a["kind"] for a in rec["applied"]] == ["link-down", "link-down"], rec["applied"]
    assert [r["down"] for r in rec["replans"]] == [["wan-ab-1"], [], ["wan-ab-1"], []], rec["replans"]
    assert len(rec["steps"]) == 24 and rec["steady_steps"] >= 1, rec
    # never early, each down at least the 2 s asked, in order; how late (seconds under TCG) is reported
    for a in rec["applied"]:
        assert a["at_s"] >= a["planned_s"] - 0.01 and a["until_s"] - a["at_s"] >= 2.0 - 0.01, rec["applied"]
    assert rec["applied"][1]["at_s"] >= rec["applied"][0]["until_s"], rec["applied"]
    late = max([a["at_s"] - a["planned_s"] for a in rec["applied"]] +
               [a["until_s"] - a["planned_end_s"] for a in rec["applied"]])
    assert flapped["event_late_s"].iloc[0] == pytest.approx(late) and rec["event_late_s"] == pytest.approx(late)
