"""One way to place a test: `unit`, or requires(...) from which its tier follows. A session with a
test marked `lab` by hand, or with no tier at all, stops at collection and names each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def collect(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_placed.py").write_text("import pytest\n\n" + body)
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "tests.support.tiers",
                           "-p", "no:cacheprovider", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(ROOT)})


def test_a_test_marked_by_hand_or_not_at_all_stops_the_session_by_name(tmp_path):
    res = collect(tmp_path, "@pytest.mark.lab\ndef test_by_hand(): pass\n\n\ndef test_nowhere(): pass\n\n\n"
                            "@pytest.mark.unit\ndef test_unit(): pass\n")
    assert res.returncode == pytest.ExitCode.USAGE_ERROR, res.stdout + res.stderr
    assert "test_by_hand: marked lab by hand" in res.stderr and "test_nowhere: neither unit nor requires" in res.stderr
    assert "test_unit" not in res.stderr


def test_tests_placed_the_one_way_are_collected(tmp_path):
    res = collect(tmp_path, "@pytest.mark.unit\ndef test_unit(): pass\n\n\n"
                            "@pytest.mark.requires('gpus')\ndef test_gpu(): pass\n")
    assert res.returncode == 0 and "2 tests collected" in res.stdout, res.stdout + res.stderr
