"""The guest tier's reading of what the guest reported, when the guest stops part-way (a timeout):
what finished keeps its result, what began fails with the reason, what never ran fails too."""

from __future__ import annotations

import json

import pytest

from tests.support.guest_tier import after_crash, completed, read_report

pytestmark = pytest.mark.unit


def phase(nodeid: str, when: str, outcome: str = "passed") -> dict:
    return {"nodeid": nodeid, "when": when, "outcome": outcome, "longrepr": None, "duration": 1.0, "sections": []}


def test_a_timeout_keeps_what_finished_and_fails_the_rest(tmp_path):
    report = tmp_path / "report.jsonl"
    lines = [json.dumps(phase("t::done", w)) for w in ("setup", "call", "teardown")]
    lines.append(json.dumps(phase("t::begun", "setup")))
    report.write_text("\n".join(lines) + '\n{"nodeid": "t::begun", "when": "ca')  # killed mid-write
    got = read_report(report)
    assert [p["when"] for p in got["t::done"]] == ["setup", "call", "teardown"]
    why = "LabError: command did not finish within 3900 s"
    assert completed(got["t::done"], why) == got["t::done"]
    begun = completed(got["t::begun"], why)
    assert [(p["when"], p["outcome"]) for p in begun] == [("setup", "passed"), ("call", "failed")]
    assert why in begun[-1]["longrepr"] and "did not finish" in begun[-1]["longrepr"]
    never = completed(got.get("t::never"), why)
    assert [(p["when"], p["outcome"]) for p in never] == [("setup", "failed")] and why in never[0]["longrepr"]


def test_a_failed_phase_is_reported_as_the_guest_wrote_it(tmp_path):
    failed = [phase("t::x", "setup"), phase("t::x", "call", "failed")]
    assert completed(failed, None) == failed
    assert read_report(tmp_path / "missing.jsonl") == {}


def test_after_a_crash_what_finished_stays_and_the_rest_runs_again_from_the_one_it_hit():
    todo = ["t::a", "t::b", "t::c", "t::d"]
    got = {"t::a": [phase("t::a", w) for w in ("setup", "call", "teardown")],
           "t::b": [phase("t::b", "setup"), phase("t::b", "call", "failed"), phase("t::b", "teardown")],
           "t::c": [phase("t::c", "setup")]}  # the crash came during c's call
    done, again, hit = after_crash(got, todo)
    assert done == {"t::a": got["t::a"], "t::b": got["t::b"]}  # a failure that finished is a result
    assert again == ["t::c", "t::d"] and hit == "t::c"
    assert after_crash({}, todo) == ({}, todo, None)  # crashed before the first test began
