"""What must be equal on the controller and every machine of a testbed: Python, metrolab and the
pinned dependencies (Ray refuses a cluster of mixed versions; torch.distributed and pyverbs must
agree between ranks). Read from package metadata, nothing imported; `python -m` prints it as JSON
(the metrolab role and `metrolab testbed check` run it on the machines)."""

from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import subprocess
from importlib import metadata

from metrolab.harness.version import version

PINNED = ("metrolab", "torch", "ray", "pyroute2", "pydantic", "ansible-core")


def pyverbs_version() -> str | None:
    """Debian's python3-pyverbs (the one matching its rdma-core), by its package version."""
    try:
        if importlib.util.find_spec("pyverbs") is None:
            return None
    except (ImportError, ValueError):
        return None
    if shutil.which("dpkg-query"):
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "python3-pyverbs"],
                             capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout:
            return out.stdout.strip()
    return "present"


def collect() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PINNED:
        if name == "metrolab":  # a checkout's own commit, not the metadata of its last install
            out[name] = version()
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["pyverbs"] = pyverbs_version()
    return out


def _key(name: str, version: str | None) -> str | None:
    # Python's patch level does not matter to pickles, Ray or torch; its minor version does
    if name == "python" and version:
        return ".".join(version.split(".")[:2])
    return version


def differences(controller: dict, machine: dict) -> dict[str, tuple]:
    """name -> (controller's, machine's) for every version that differs."""
    return {k: (controller.get(k), machine.get(k)) for k in controller
            if _key(k, controller.get(k)) != _key(k, machine.get(k))}


def main(argv: list[str]) -> int:
    """Print this machine's versions; with `--compare JSON` (the controller's), exit 3 if any differs."""
    mine = collect()
    if len(argv) == 2 and argv[0] == "--compare":
        diff = differences(json.loads(argv[1]), mine)
        print(json.dumps({"versions": mine, "differences": diff}))
        return 3 if diff else 0
    print(json.dumps(mine))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
