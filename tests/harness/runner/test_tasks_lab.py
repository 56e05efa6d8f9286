"""Task-based scheduling and elastic bandwidth played on a real lab (host kernel: HTB slices on the
WAN egress, real TCP transfers): windows met, a rate raised mid-transfer ends the task sooner and
a cut one misses its window, as the model says; the link's utilization follows the plan; the link
gets its own queue back."""

from __future__ import annotations

import json

import pytest
import yaml

from metrolab.harness.runner.tasks import Plan, RateChange, play
from metrolab.harness.scenario.taskplan import load_plan
from tests.support.labs import rdma_sites
from tests.support.runs import metrolab

pytestmark = pytest.mark.requires("netns")


def qdiscs(lab) -> list[str]:
    end = next(e for e in lab.plan.ends("wan-ab") if e.node == "gw-a")
    ipr = lab.handle("gw-a")
    return sorted(q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(ipr.link_lookup(ifname=end.ifname)[0]))


def test_windows_are_kept_a_raised_slice_ends_sooner_and_a_cut_one_misses(lab_factory):
    spec, _ = load_plan("task-scheduling")  # its history and requests, on a lab without netem
    lab = lab_factory(rdma_sites((1, 1), rdma=False))
    before = qdiscs(lab)
    plan = Plan(link="wan-ab", egress="gw-a", src="a1", dst="b1", capacity_bps=spec.path.capacity,
                history=spec.history_model(), requests=spec.request_models(), time_scale=spec.time_scale,
                changes=[RateChange("sync", 0.5, 20e6), RateChange("backup", 1.0, 20e6)], guard_s=spec.guard)
    res = play(lab, plan)
    after = qdiscs(lab)
    print(json.dumps(res, indent=1))
    assert after == before, (before, after)
    by = {t["name"]: t for t in res["tasks"]}
    sync, backup, bulk = by["sync"], by["backup"], by["bulk"]
    assert not bulk["committed"] and "deadline" in bulk["reason"]
    for t in (sync, backup):
        assert t["received"] == t["bytes"], t
        assert abs(t["start_s"] - t["window_s"][0]) < 0.2, t  # sent when its window opened
        assert abs(t["end_s"] - t["predicted_end_s"]) < 0.3, t  # where the slice's rates put its end
    # raised to 20 Mbit/s after 0.5 s: done well inside its window (the model: 1.4 of 2 s)
    assert sync["met"] and sync["end_s"] < sync["window_s"][1] - 0.3, sync
    # cut from 35 to 20 Mbit/s after 1 s: its window cannot hold it any more, and the report says so
    assert backup["predicted_end_s"] > backup["window_s"][1] and not backup["met"], backup
    assert res["committed"] == 2 and res["met"] == 1 and res["refused"] == 1
    # the link carried what the model says, slot by slot (the background at its median, each slice at
    # its rates until its end): the raised sync, the idle slots between, the cut backup's overrun
    off = [abs(s["utilization"] - s["model"]) for s in res["slots"] if s["start_s"] > 0]  # 0: the flows start
    assert max(off) < 0.15, res["slots"]
    busiest = max(res["slots"], key=lambda s: s["utilization"])
    assert busiest["start_s"] in (0.0, 4.0) and busiest["utilization"] > 0.7, res["slots"]


def test_the_command_plays_a_plan_repeatedly_judges_it_on_an_interval_and_resumes(tmp_path):
    topo = tmp_path / "pair.yaml"
    topo.write_text(yaml.safe_dump(rdma_sites((1, 1), rdma=False)))
    spec, _ = load_plan("task-scheduling")
    data = json.loads(spec.model_dump_json()) | {"topology": str(topo)}
    data["requests"] = [r for r in data["requests"] if r["name"] != "backup"]  # a short play: sync and bulk
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    res = metrolab("tasks", str(plan), "--repeat", "2", "--out", str(out), "--json")
    got = json.loads(res.stdout)
    # two plays: t on one degree of freedom (12.7) may stretch the prediction interval past the window
    assert (res.returncode, got["status"]) in ((0, "pass"), (5, "inconclusive")), res.stderr[-3000:]
    assert got == json.loads((out / "tasks.json").read_text())
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2  # each play written as it ended
    sync, bulk = got["tasks"]
    # raised to 20 Mbit/s: the model ends it at ~1.4 s of a 2 s window, and each play did; the interval
    # of two plays (t on 1 dof) is the verdict's to weigh, not a bound here
    ends = [next(t for t in r["tasks"] if t["name"] == "sync")["end_s"] for r in got["runs"]]
    assert sync["met"] == 2 and max(ends) < 2.0 and abs(sync["model_error_s"]["estimate"]) < 0.3, (ends, sync)
    assert all(r["control_late_s"] >= 0 and r["wan_drops"] >= 0 for r in got["runs"]), got["runs"]  # recorded per play
    assert not bulk["committed"] and got["refused"] == 1
    assert "sync within [0, 2) s" in (out / "junit.xml").read_text() and "| sync |" in (out / "summary.md").read_text()
    # --resume keeps the two plays and measures only the third: three plays put the next one inside
    res = metrolab("tasks", str(plan), "--repeat", "3", "--resume", str(out), "--json")
    again = json.loads(res.stdout) if res.stdout else {}
    # each play's sync end beside what would make it late: the controller, or drops on the link
    # (a suite run once read an end near 1.8 s here: inconclusive, with nothing to tell why)
    plays = [(next(t for t in r["tasks"] if t["name"] == "sync")["end_s"], r["control_late_s"], r["wan_drops"])
             for r in again.get("runs", [])]
    assert res.returncode == 0, (plays, res.stderr[-3000:])
    assert again["repetitions"] == 3 and again["runs"][:2] == got["runs"]
    assert again["status"] == "pass" and again["tasks"][0]["verdict"] == "pass", again["tasks"][0]
    assert again["tasks"][0]["end_s"]["high"] < 2.0, again["tasks"][0]
    # resuming with another plan is refused, naming what differs
    data["guard"] = 0.5
    plan.write_text(yaml.safe_dump(data))
    res = metrolab("tasks", str(plan), "--repeat", "4", "--resume", str(out), "--json")
    assert res.returncode != 0 and "guard" in res.stderr and "another plan" in res.stderr, res.stderr[-2000:]
    assert len((out / "runs.jsonl").read_text().splitlines()) == 3
    # and a new run into it would lose them: refused
    res = metrolab("tasks", str(plan), "--out", str(out), "--json")
    assert res.returncode != 0 and "resume it (--resume)" in res.stderr, res.stderr[-2000:]
    assert len((out / "runs.jsonl").read_text().splitlines()) == 3
