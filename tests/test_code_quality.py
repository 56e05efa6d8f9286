"""The tree is lint- and type-clean (ruff and mypy as configured in pyproject.toml), and every
`METROLAB_*` variable is read through harness/settings.py and documented in docs/settings.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from metrolab.harness.settings import SETTINGS, markdown_table

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.unit


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / name
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean():
    res = _tool("ruff", "check", ".")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-1000:]


def test_mypy_is_clean():
    res = _tool("mypy")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-1000:]


def test_every_metrolab_variable_is_read_through_settings_and_documented():
    reads = re.compile(r"(os\.environ(\.get)?[\[(]|getenv\()\s*[\"']METROLAB_")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for d in ("harness", "netem", "workloads", "reports", "metrolab", "tests")
                 for p in (ROOT / d).rglob("*.py") if p.name != "settings.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if reads.search(line)]
    assert offenders == [], offenders
    named = set(re.findall(r"METROLAB_[A-Z0-9_]+", "\n".join(
        p.read_text() for d in ("harness", "netem", "workloads", "reports", "metrolab")
        for p in (ROOT / d).rglob("*.py"))))
    assert named <= set(SETTINGS), sorted(named - set(SETTINGS))
    assert markdown_table() in (ROOT / "docs" / "settings.md").read_text(), \
        "docs/settings.md is stale: paste metrolab.harness.settings.markdown_table()"
