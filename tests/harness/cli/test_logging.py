"""-v/--log-file: what metrolab does, logged; the log file stays on the host."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.requires("netns")
def test_verbose_log_file_records_the_commands_metrolab_runs(tmp_path):
    log = tmp_path / "metrolab.log"
    res = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "doctor", "--json", "-vv", "--log-file", str(log)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    text = log.read_text()
    assert "metrolab.harness.kernel.sh DEBUG run in mlprobe" in text and "tc qdisc add dev d0 root handle 1: red" in text, text[:2000]


@pytest.mark.unit
def test_the_guests_command_logs_as_much_as_the_console_shows(tmp_path):
    from metrolab.harness.cli import setup_logging
    from metrolab.harness.vm.reexec import verbosity
    try:
        # a log file takes everything, whatever -v says: it asks nothing of the guest's console
        for verbose, flags in ((0, []), (1, ["-v"]), (2, ["-vv"])):
            setup_logging(verbose, str(tmp_path / "metrolab.log"))
            assert verbosity() == flags, verbose
    finally:
        setup_logging(0, None)
