"""Files metrolab ships beside its code: built-in scenarios (`scenarios/`), topologies, ansible
playbooks (`ansible/`) and the guest's scripts. They are package data, found through
importlib.resources whether metrolab runs from a checkout (editable install) or from a wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _dir(package: str) -> Path:
    # a real directory in both layouts (metrolab is never imported from a zip): ansible and the
    # guest's kernel command line need paths
    return Path(str(resources.files(package)))


def scenarios_dir() -> Path:
    return _dir("metrolab") / "scenarios"


def topologies_dir() -> Path:
    return _dir("metrolab.harness") / "topologies"


def ansible_dir() -> Path:
    return _dir("metrolab") / "ansible"


def playbook(name: str) -> Path:
    return ansible_dir() / name


def guest_script(name: str) -> Path:
    return _dir("metrolab.harness.vm") / name
