"""metrolab's version: the release, and in a git checkout the commit it is built from (a PEP 440
local label, `0.1.0+g1a2b3c4d`). A wheel built from another commit is another version, so
`testbed provision` replaces the metrolab on every machine when the controller moves on, and
`testbed check` names a machine left behind. Read from the checkout's files (no git process: a
rank imports this under TCG too); installed from a wheel, the version baked into its metadata.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata
from pathlib import Path

RELEASE = "0.1.0"
ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path) -> str | None:
    """The commit HEAD names in the checkout at `root` (a branch's, via its ref or packed-refs),
    or None where `root` is no checkout."""
    git = root / ".git"
    if git.is_file():  # a worktree or submodule: "gitdir: PATH"
        text = git.read_text().strip()
        if not text.startswith("gitdir:"):
            return None
        git = (root / text.split(":", 1)[1].strip()).resolve()
    try:
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head.split(":", 1)[1].strip()
    common = git
    if (git / "commondir").is_file():
        common = (git / (git / "commondir").read_text().strip()).resolve()
    for base in (git, common):
        try:
            return (base / ref).read_text().strip()
        except OSError:
            pass
        try:
            for line in (base / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
        except OSError:
            pass
    return None


def from_checkout(root: Path = ROOT) -> str | None:
    commit = git_commit(root)
    return f"{RELEASE}+g{commit[:12]}" if commit else None


@cache
def version() -> str:
    found = from_checkout()
    if found:
        return found
    try:
        return metadata.version("metrolab")
    except metadata.PackageNotFoundError:
        return RELEASE


def __getattr__(name: str) -> str:
    if name == "__version__":  # setuptools reads it when it builds the wheel
        return version()
    raise AttributeError(name)
