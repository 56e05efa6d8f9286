"""A testbed's machines prepared, checked and cleaned through metrolab's ansible project
(ansible/site.yml, check.yml, clean.yml) with an inventory written from the testbed file.

Provisioning installs on every Ray machine the controller's own metrolab (its wheel) with the
controller's pinned dependency versions (its `pip freeze` as constraints): Ray refuses a cluster
of mixed versions, and ranks must agree on torch and pyverbs.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from metrolab.harness import settings
from metrolab.harness.ansible_run import PlaybookRun, run_playbook
from metrolab.harness.errors import CapabilityError, LabError
from metrolab.harness.kernel import sh
from metrolab.harness.testbed import hostkeys, versions
from metrolab.harness.testbed.derive import inventory
from metrolab.harness.testbed.resolve import Testbed

log = logging.getLogger(__name__)
Progress = Callable[[str], None] | None
SOURCE = Path(__file__).resolve().parents[2]  # a checkout's root (pyproject.toml), where there is one


def wan_limits(tb: Testbed) -> dict[str, int]:
    """wan-emulator -> netem's queue in packets: the largest BDP-sized limit of the links it carries."""
    out: dict[str, int] = {}
    links = {lk.name: lk for lk in tb.topology.links}
    for lm in tb.spec.map.links:
        if lm.emulator:
            imp = links[lm.link].impairment(tb.topology.group_index)
            out[lm.emulator] = max(out.get(lm.emulator, 1000), imp.limit_packets or 1000)
    return out


def ray_token(tb: Testbed, create: bool = True) -> Path:
    """The cluster's token for Ray's token authentication (RAY_AUTH_MODE=token on every node and on
    the controller): 256 random bits, readable by its owner only, made once and kept beside the
    testbed file; a token changed there restarts every node with it at the next provisioning."""
    path = tb.ray_token
    if not path.exists():
        if not create:
            raise LabError(f"testbed {tb.name}: no Ray token at {path} (run `metrolab testbed provision`)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def full_inventory(tb: Testbed, known_hosts: Path | None = None) -> dict[str, Any]:
    inv = inventory(tb, known_hosts)
    for name, limit in wan_limits(tb).items():
        inv["all"]["hosts"][name].setdefault("metrolab_wan_limit_packets", limit)
    return inv


@contextmanager
def inventory_file(tb: Testbed, known_hosts: Path | None = None) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", prefix=f"metrolab-{tb.name}-", suffix=".yml") as f:
        yaml.safe_dump(full_inventory(tb, known_hosts), f, sort_keys=False)
        f.flush()
        yield f.name


def constraints() -> str:
    """The controller's dependency versions as pip constraints (metrolab itself and local paths left out)."""
    res = sh.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], timeout=120)
    keep = [ln for ln in res.stdout.splitlines()
            if ln and not ln.startswith(("#", "-e ", "metrolab==")) and " @ file:" not in ln]
    return "\n".join(keep) + "\n"


def wheel(out_dir: Path) -> Path:
    """metrolab's wheel: METROLAB_WHEEL, or built from this checkout."""
    given = settings.get("METROLAB_WHEEL")
    if given:
        if not Path(given).is_file():
            raise CapabilityError(f"METROLAB_WHEEL={given}: no such file")
        return Path(given)
    if not (SOURCE / "pyproject.toml").is_file():
        raise CapabilityError("provisioning installs the controller's metrolab on the machines: this metrolab is not "
                              "a checkout, so set METROLAB_WHEEL to the wheel it was installed from")
    sh.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out_dir),
            str(SOURCE)], timeout=600)
    found = sorted(out_dir.glob("metrolab-*.whl"))
    if not found:
        raise CapabilityError(f"pip wheel wrote no metrolab wheel into {out_dir}")
    return found[-1]


def controller(dist_dir: Path) -> dict[str, Any]:
    """What the metrolab role compares and installs: the controller's versions, wheel and constraints."""
    cons = dist_dir / "constraints.txt"
    cons.write_text(constraints())
    return {"versions": versions.collect(), "wheel": str(wheel(dist_dir)), "constraints": str(cons)}


def provision(tb: Testbed, *, check: bool = False, progress: Progress = None) -> PlaybookRun:
    """ansible/site.yml on every machine (--check: what would change, nothing changed). First each
    machine's ssh host key is pinned (read once, then checked on every connection; a changed one
    stops it before anything runs); with --check the keys it would pin are used, not written."""
    if progress:
        progress("reading the machines' ssh host keys")
    keys = hostkeys.pin(tb, write=not check)
    with tempfile.TemporaryDirectory(prefix="metrolab-dist-") as dist:
        known = None
        if check:  # what is pinned plus what would be: the playbook connects as it will
            known = Path(dist) / "known_hosts"
            lines = [ln for k in keys if k["state"] == "would pin" for ln in k["lines"]]
            known.write_text((tb.known_hosts.read_text() if tb.known_hosts.exists() else "") + "".join(
                f"{ln}\n" for ln in lines))
        with inventory_file(tb, known) as inv:
            if progress:
                progress("building the controller's wheel and constraints")
            extra = {"metrolab_controller": controller(Path(dist)),
                     # --check compares a token there is (a changed one restarts the nodes), makes none
                     "metrolab_ray_token": "" if check and not tb.ray_token.exists() else str(ray_token(tb))}
            run = run_playbook("site.yml", inv, extra, check=check, progress=progress)
    run.host_keys = [{k: v for k, v in key.items() if k != "lines"} for key in keys]
    return run


def clean(tb: Testbed, *, progress: Progress = None) -> PlaybookRun:
    """ansible/clean.yml: Ray nodes stopped by PID file, impairments and policy state removed."""
    with inventory_file(tb) as inv:
        return run_playbook("clean.yml", inv, {}, progress=progress)


def facts(tb: Testbed, *, progress: Progress = None) -> PlaybookRun:
    """ansible/check.yml: each machine's facts (harness/testbed/machine_facts.py run there)."""
    script = Path(__file__).with_name("machine_facts.py")
    with inventory_file(tb) as inv:
        return run_playbook("check.yml", inv, {"metrolab_facts_script": str(script)}, progress=progress)
