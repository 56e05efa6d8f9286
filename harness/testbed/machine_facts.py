"""What `metrolab testbed check` needs to know of one machine, printed as JSON. Runs on the machine
(ansible's script module, the machine's own Python) before metrolab is installed there, so it uses
the standard library only: the system and kernel, netem, RDMA devices and their RoCEv2 GIDs, the
data interfaces' MTU, state and driver, what makes a RoCE path lossless on each of them (PFC per
priority and ETS through the kernel's DCB interface, `dcb`; DCQCN's ECN enables in sysfs, where
the driver has them), and metrolab's versions in its venv if there is one.

    python3 machine_facts.py VENV IFACE...
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import platform
import shutil
import socket
import struct
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


def _dcb(obj: str, ifname: str) -> dict | None:
    """`dcb -j OBJ show dev IFNAME` (iproute2), None where the driver has no DCB (veth, rxe's netdev
    on a plain NIC) or the tool is missing."""
    exe = shutil.which("dcb") or ("/usr/sbin/dcb" if Path("/usr/sbin/dcb").exists() else None)
    if exe is None:
        return None
    res = subprocess.run([exe, "-j", obj, "show", "dev", ifname], capture_output=True, text=True, check=False)
    if res.returncode != 0 or not res.stdout.strip():
        return None
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        return None


def _prios(value) -> list[int]:
    """The priorities a dcb per-priority array ({"0": false, "3": true} or [..]) turns on."""
    items = value.items() if isinstance(value, dict) else enumerate(value or [])
    return sorted(int(k) for k, v in items if v in (True, 1, "on"))


def lossless(ifname: str) -> dict:
    """PFC (capability and the priorities it is on), ETS (each traffic class's algorithm and share)
    and the ECN enables of DCQCN's notification and reaction points per priority (mlx5's sysfs);
    None for what this interface does not expose."""
    pfc = _dcb("pfc", ifname)
    ets = _dcb("ets", ifname)
    ecn: dict[str, list[int]] | None = None
    base = SYS_NET / ifname / "ecn"
    if base.is_dir():
        ecn = {}
        for point in ("roce_np", "roce_rp"):
            d = base / point / "enable"
            ecn[point] = sorted(int(x.name) for x in d.iterdir() if _read(x) == "1") if d.is_dir() else []
    return {"pfc": None if pfc is None else {"cap": pfc.get("pfc_cap"), "on": _prios(pfc.get("prio_pfc"))},
            "ets": None if ets is None else {"tsa": ets.get("tc_tsa"), "bw": ets.get("tc_bw") or ets.get("tc_tx_bw")},
            "ecn": ecn}


def driver(ifname: str) -> str | None:
    link = SYS_NET / ifname / "device" / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def gro(ifname: str) -> bool | None:
    """Whether the interface merges what it receives (GRO; ethtool's legacy ETHTOOL_GGRO call, as
    ansible/roles/wan_emulator/files/gro.py makes it: each runs alone on the machine)."""
    data = array.array("I", [0x2B, 0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock, 0x8946, struct.pack("16sP16x", ifname.encode(), data.buffer_info()[0]))
    except OSError:
        return None
    return bool(data[1])


def interfaces(names: list[str]) -> dict[str, dict]:
    out = {}
    for n in names:
        exists = (SYS_NET / n).exists()
        out[n] = {"exists": exists, "mtu": int(_read(SYS_NET / n / "mtu") or 0) or None,
                  "operstate": _read(SYS_NET / n / "operstate"),
                  "driver": driver(n) if exists else None, "gro": gro(n) if exists else None,
                  **(lossless(n) if exists else {})}
    return out


def os_release() -> dict[str, str]:
    """ID and VERSION_ID of /etc/os-release (debian 12, ubuntu 24.04)."""
    out = {}
    for line in (_read(Path("/etc/os-release")) or "").splitlines():
        key, _, value = line.partition("=")
        if key in ("ID", "VERSION_ID", "PRETTY_NAME"):
            out[key.lower()] = value.strip().strip('"')
    return out


def versions(venv: str) -> dict | None:
    py = Path(venv) / "bin" / "python"
    if not py.exists():
        return None
    res = subprocess.run([str(py), "-m", "metrolab.harness.testbed.versions"], capture_output=True, text=True, check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def main(argv: list[str]) -> None:
    venv, ifaces = argv[0], argv[1:]
    print(json.dumps({"kernel": platform.release(), "os": os_release(), "python": platform.python_version(),
                      "netem": netem(),
                      "rdma": rdma_devices(), "interfaces": interfaces(ifaces), "versions": versions(venv),
                      "uid": os.getuid()}))


if __name__ == "__main__":
    main(sys.argv[1:])
