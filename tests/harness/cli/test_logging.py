"""-v/--log-file: what metrolab does, logged; the log file stays on the host."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.lab
def test_verbose_log_file_records_the_commands_metrolab_runs(tmp_path):
    log = tmp_path / "metrolab.log"
    res = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "doctor", "--json", "-vv", "--log-file", str(log)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    text = log.read_text()
    assert "metrolab.harness.kernel.sh DEBUG run in mlprobe" in text and "tc qdisc add dev d0 root handle 1: red" in text, text[:2000]
