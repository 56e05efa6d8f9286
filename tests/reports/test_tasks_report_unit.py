"""A task plan's report files from a summary (no lab): the Markdown holds each task's interval and
verdict beside the model's end; JUnit has one testcase per committed task, a failure for a broken
commitment and a skip for an inconclusive one; a refusal is no testcase."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from metrolab.harness.scenario.tasksummary import summarize
from metrolab.reports.tasks import write_task_reports
from tests.harness.scenario.test_tasksummary_unit import play

pytestmark = pytest.mark.unit


def test_markdown_and_junit_say_what_the_summary_says(tmp_path):
    res = {"plan": "task-scheduling"} | summarize([play(1.57, 7.8), play(1.58, 7.95), play(1.56, 7.9)])
    files = write_task_reports(tmp_path, res)
    md = files["markdown"].read_text()
    assert "metrolab tasks task-scheduling: inconclusive" in md
    sync = next(line for line in md.splitlines() if line.startswith("| sync"))
    assert "[0, 2) s" in sync and "| 1.57 |" in sync and "| 1.53 |" in sync and "3 of 3 | pass" in sync, sync
    assert "| bulk | refused |" in md and "## Utilization by slot" in md
    suite = ET.parse(files["junit"]).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "0", "1")
    cases = {tc.get("name"): tc for tc in suite}
    assert set(cases) == {"sync within [0, 2) s", "backup within [4, 8) s"}
    assert cases["backup within [4, 8) s"].find("skipped") is not None
    assert not list(cases["sync within [0, 2) s"])


def test_a_lost_transfer_is_a_junit_failure(tmp_path):
    res = {"plan": "p"} | summarize([play(1.5, 7.7), play(1.5, 7.7, received=1)])
    suite = ET.parse(write_task_reports(tmp_path, res)["junit"]).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    failure = suite.find("testcase[@name='backup within [4, 8) s']/failure")
    assert failure is not None and "received 1 of" in failure.get("message", "")
