"""What `metrolab testbed check` needs to know of one machine, printed as JSON. Runs on the machine
(ansible's script module, the machine's own Python) before metrolab is installed there, so it uses
the standard library only: kernel, netem, RDMA devices and their RoCEv2 GIDs, the data interfaces'
MTU and state, and metrolab's versions in its venv if there is one.

    python3 machine_facts.py VENV IFACE...
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

SYS_NET = Path("/sys/class/net")
SYS_IB = Path("/sys/class/infiniband")


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


def netem() -> bool:
    if Path("/sys/module/sch_netem").exists():
        return True
    return subprocess.run(["modprobe", "-n", "-q", "sch_netem"], capture_output=True, check=False).returncode == 0


def rdma_devices() -> list[dict]:
    """Each RDMA device: its netdev, port state, and the indices of its RoCE v2 GIDs."""
    out = []
    for dev in sorted(SYS_IB.iterdir()) if SYS_IB.is_dir() else []:
        for port in sorted((dev / "ports").iterdir()):
            types = port / "gid_attrs" / "types"
            ndevs = port / "gid_attrs" / "ndevs"
            v2, netdev = [], None
            for t in sorted(types.iterdir(), key=lambda p: int(p.name)) if types.is_dir() else []:
                kind = _read(t)
                gid = _read(port / "gids" / t.name)
                if kind and "v2" in kind.lower() and gid and gid != "0000:0000:0000:0000:0000:0000:0000:0000":
                    v2.append({"index": int(t.name), "gid": gid})
                    netdev = netdev or _read(ndevs / t.name)
            out.append({"device": dev.name, "port": int(port.name), "state": _read(port / "state"),
                        "netdev": netdev, "rocev2_gids": v2})
    return out


def interfaces(names: list[str]) -> dict[str, dict]:
    return {n: {"exists": (SYS_NET / n).exists(), "mtu": int(_read(SYS_NET / n / "mtu") or 0) or None,
                "operstate": _read(SYS_NET / n / "operstate")} for n in names}


def versions(venv: str) -> dict | None:
    py = Path(venv) / "bin" / "python"
    if not py.exists():
        return None
    res = subprocess.run([str(py), "-m", "harness.testbed.versions"], capture_output=True, text=True, check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def main(argv: list[str]) -> None:
    venv, ifaces = argv[0], argv[1:]
    print(json.dumps({"kernel": platform.release(), "python": platform.python_version(), "netem": netem(),
                      "rdma": rdma_devices(), "interfaces": interfaces(ifaces), "versions": versions(venv),
                      "uid": os.getuid()}))


if __name__ == "__main__":
    main(sys.argv[1:])
