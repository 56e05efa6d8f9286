"""The Python API: docs/api.md's example runs as written, and the API's errors are the CLI's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import metrolab
from metrolab.harness.errors import SpecError

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return max(blocks, key=len)  # the example (the first block is the one-line import)


@pytest.mark.requires("netns")
def test_the_documented_example_runs_and_returns_a_dataframe_and_a_verdict(tmp_path):
    script = example() + '''
import pandas as pd
assert isinstance(rows, pd.DataFrame) and len(rows) > 0 and {"label", "step_time_s", "block"} <= set(rows.columns)
assert result.status in ("pass", "fail", "inconclusive") and result.verdict is not None
assert len(result.verdict.points) == 3 and (result.run_dir / "report.html").exists()  # baseline, 1:1, 4:1
print("API-EXAMPLE-OK", result.status)
'''
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "API-EXAMPLE-OK pass" in res.stdout, res.stdout[-2000:]


@pytest.mark.unit
def test_bad_input_raises_the_located_error_before_anything_runs(tmp_path):
    with pytest.raises(SpecError, match="no such file or built-in scenario"):
        metrolab.run("no-such-scenario", out=tmp_path / "r")
    with pytest.raises(SpecError, match="not a run directory"):
        metrolab.load_run(tmp_path)
    assert not (tmp_path / "r").exists()


@pytest.mark.unit
def test_scenarios_are_the_built_in_files():
    found = metrolab.scenarios()
    assert metrolab.MAIN_SCENARIO in found and all(p.is_file() for p in found.values())
    assert metrolab.load_scenario("load-balancing", quick=True).name == "load-balancing"


@pytest.mark.unit
def test_every_name_the_package_offers_is_there_and_documented():
    table = DOC.read_text()
    for name in metrolab.__all__:
        assert getattr(metrolab, name) is not None, name
        if name not in ("__version__", "MAIN_SCENARIO", "RunResult", "build_lab", "lab"):
            assert f"metrolab.{name}(" in table, f"docs/api.md does not show metrolab.{name}"
    # a plan-only schedule needs no lab: the API's, as `metrolab tasks --plan-only` prints it
    got = metrolab.task_windows("task-scheduling")
    assert got["plan"] == "task-scheduling" and any(t["committed"] for t in got["tasks"]), got
    assert any(not t["committed"] and t["reason"] for t in got["tasks"]), got
