"""Task plans (pure): the built-in one commits what its comments say; bad plans are refused with
the file, the field and the value, before anything is built."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from metrolab.harness.errors import SpecErrors
from metrolab.harness.runner.record import Record
from metrolab.harness.scenario.schedule import Commitment, Refusal, schedule
from metrolab.harness.scenario.taskplan import check_plan, load_plan
from metrolab.harness.spec.loader import load_topology

pytestmark = pytest.mark.unit


def test_the_builtin_plan_commits_off_the_peak_and_refuses_what_cannot_fit():
    spec, file = load_plan("task-scheduling")
    check_plan(spec, load_topology(spec.topology), file)
    assert spec.time_scale == pytest.approx(1 / 60)
    sync, backup, bulk = schedule(spec.request_models(), spec.path.capacity, spec.history_model(),
                                  time_scale=spec.time_scale, guard_s=spec.guard)
    assert isinstance(sync, Commitment) and (sync.start_s, sync.end_s) == (0.0, 2.0)
    # the quiet slots: 3 of them would need 46 Mbit/s once the guard is left out; 4 need 34
    assert isinstance(backup, Commitment) and (backup.start_s, backup.end_s) == (4.0, 8.0)
    assert isinstance(bulk, Refusal) and "deadline (8 s" in bulk.reason


def test_a_plan_naming_what_the_topology_lacks_is_refused_field_by_field(tmp_path):
    spec, _ = load_plan("task-scheduling")
    data = json.loads(spec.model_dump_json())
    data["path"] |= {"link": "wan-xy", "src": "z9"}
    data["changes"] = [{"task": "nosuch", "after": 1.0, "rate": 1e6}]
    data["requests"].append(dict(data["requests"][0]))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    spec2, file = load_plan(str(bad))
    with pytest.raises(SpecErrors) as err:
        check_plan(spec2, load_topology(spec2.topology), file)
    text = str(err.value)
    for what in ("path.link", "wan-xy", "path.src", "'z9'", "changes[0].task", "requests[3].name", str(bad)):
        assert what in text, (what, text)


def test_the_command_refuses_a_bad_value_and_prints_the_plan_without_a_lab(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npath: {link: wan-ab, egress: gw-a, src: a1, dst: b1, capacity: fast}\n"
                   "history: {interval: 1s, used: []}\nrequests: [{name: a, bytes: 1mb, deadline: 2s}]\n")
    res = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "tasks", str(bad)], capture_output=True, text=True)
    assert res.returncode != 0 and "path.capacity" in res.stderr and str(bad) in res.stderr, res.stderr
    res = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "tasks", "task-scheduling", "--plan-only", "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)["tasks"]}
    assert rows["backup"]["window_s"] == [4.0, 8.0] and not rows["bulk"]["committed"] and rows["bulk"]["reason"]


def test_the_command_refuses_zero_plays_and_a_directory_that_is_not_a_run(tmp_path):
    cli = [sys.executable, "-m", "metrolab.harness.cli", "tasks", "task-scheduling"]
    res = subprocess.run([*cli, "--repeat", "0"], capture_output=True, text=True)
    assert res.returncode == 2 and "--repeat" in res.stderr and "'0'" in res.stderr, res.stderr
    res = subprocess.run([*cli, "--resume", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode != 0 and str(tmp_path) in res.stderr and "plan.json" in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, no lab built


def test_a_resumed_run_with_every_play_is_summarized_without_a_lab_and_a_cut_last_line_is_played_again(tmp_path):
    from tests.harness.scenario.test_tasksummary_unit import play
    spec, _ = load_plan("task-scheduling")
    (tmp_path / "plan.json").write_text(spec.model_dump_json())
    plays = [play(1.55, 7.8), play(1.56, 7.75), play(1.54, 7.79)]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in plays) + '{"tasks": [{"na')
    res = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "tasks", "task-scheduling", "--repeat", "3",
                          "--resume", str(tmp_path), "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr  # three plays recorded: summarized here, no lab, no guest
    out = json.loads(res.stdout)
    assert out["repetitions"] == 3 and out["status"] == "pass" and len(out["runs"]) == 3
    assert (tmp_path / "junit.xml").is_file() and (tmp_path / "summary.md").is_file()
    # the next play appends cleanly: the cut line is sealed apart, never merged with it
    Record(tmp_path).append("runs.jsonl", plays[0])
    assert len(Record(tmp_path).lines("runs.jsonl")) == 4
    assert (tmp_path / "runs.jsonl").read_text().splitlines()[3] == '{"tasks": [{"na'
