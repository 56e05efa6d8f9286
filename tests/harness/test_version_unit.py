"""metrolab's version carries the commit it is built from: another commit is another version, so
a controller that moved on finds every machine left behind (`testbed check`) and provisioning
replaces their metrolab; read from the checkout's files as git keeps them (loose refs, packed
refs, a detached HEAD)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import metrolab.harness
from metrolab.harness import version as v
from metrolab.harness.testbed import versions

pytestmark = pytest.mark.unit


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_each_commit_is_its_own_version_however_git_keeps_the_ref(tmp_path):
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "f").write_text("1")
    git(tmp_path, "add", "f")
    git(tmp_path, "commit", "-q", "-m", "one")
    first = git(tmp_path, "rev-parse", "HEAD")
    assert v.from_checkout(tmp_path) == f"{v.RELEASE}+g{first[:12]}"
    git(tmp_path, "pack-refs", "--all")  # the branch's ref moves into packed-refs
    assert not (tmp_path / ".git" / "refs" / "heads" / "main").exists()
    assert v.from_checkout(tmp_path) == f"{v.RELEASE}+g{first[:12]}"
    (tmp_path / "f").write_text("2")
    git(tmp_path, "commit", "-q", "-am", "two")
    second = v.from_checkout(tmp_path)
    assert second == f"{v.RELEASE}+g{git(tmp_path, 'rev-parse', 'HEAD')[:12]}" and second != f"{v.RELEASE}+g{first[:12]}"
    git(tmp_path, "checkout", "-q", first)  # detached
    assert v.from_checkout(tmp_path) == f"{v.RELEASE}+g{first[:12]}"
    # a machine still on the first commit differs from a controller on the second
    assert versions.differences({"metrolab": second}, {"metrolab": v.from_checkout(tmp_path)}) == {
        "metrolab": (second, f"{v.RELEASE}+g{first[:12]}")}
    assert v.from_checkout(tmp_path / "f") is None  # no checkout there


def test_this_checkout_reports_its_own_commit():
    if not (v.ROOT / ".git").exists():
        pytest.skip("installed from a wheel: the version is the wheel's (no checkout to read)")
    head = subprocess.run(["git", "-C", str(v.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert metrolab.harness.__version__ == metrolab.__version__ == v.version() == versions.collect()["metrolab"] == f"{v.RELEASE}+g{head[:12]}"
