"""The vm backend's failures are clear, non-zero and leave no qemu behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.requires("netns")
CLI = [sys.executable, "-m", "metrolab.harness.cli"]


def _qemu_left() -> str:
    return subprocess.run(["pgrep", "-af", "metrolab.init="], capture_output=True, text=True).stdout.strip()


def test_missing_qemu_is_a_clear_error():
    res = subprocess.run(CLI + ["vm", "run", "--", "true"], capture_output=True, text=True,
                         env=os.environ | {"METROLAB_QEMU": "/nonexistent/qemu-system-x86_64"})
    assert res.returncode == 4
    assert "qemu-system-x86_64 is not installed at /nonexistent/qemu-system-x86_64" in res.stderr
    assert _qemu_left() == ""


def test_failed_kernel_download_is_a_clear_error(tmp_path):
    env = os.environ | {"METROLAB_CACHE": str(tmp_path), "METROLAB_DEBIAN_MIRROR": "http://127.0.0.1:9/debian"}
    res = subprocess.run(CLI + ["vm", "prepare"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 4
    assert "no guest kernel with namespace-aware Soft-RoCE could be had" in res.stderr
    assert "trixie-backports: apt update failed" in res.stderr
    assert not list((tmp_path / "guest").glob("*/vmlinuz")) if (tmp_path / "guest").exists() else True


def test_guest_that_does_not_boot_in_time_is_stopped():
    res = subprocess.run(CLI + ["vm", "run", "--", "true"], capture_output=True, text=True, timeout=120,
                         env=os.environ | {"METROLAB_VM_BOOT_TIMEOUT": "0.5"})
    assert res.returncode == 3
    assert "did not boot within 0 s" in res.stderr or "did not boot within 1 s" in res.stderr
    assert _qemu_left() == ""


def test_a_command_runs_in_the_guest_kernel_and_its_exit_code_comes_back():
    res = subprocess.run(CLI + ["vm", "run", "--", "sh", "-c", "uname -r; exit 7"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 7, res.stderr
    assert res.stdout.strip() != os.uname().release  # it ran on the guest's kernel, not ours
    assert _qemu_left() == ""
