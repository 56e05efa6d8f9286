"""Soft-RoCE (rxe) devices for lab hosts: add, find the RoCEv2 GID, remove.

`rdma link add` has no netlink library in Python, so it goes through metrolab.harness.kernel.sh. In the
kernel's default "shared" RDMA namespace mode rxe devices are global (every namespace sees
them), so their names carry the lab id; on kernels whose rxe is namespace-aware (7.x) each
device's UDP socket lives in its netdev's namespace and RoCE traffic crosses the lab's links.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import sh

IB_CLASS = Path("/sys/class/infiniband")


def device_name(lab_id: str, node: str) -> str:
    return f"{lab_id}-{node}"[:63]


def devices() -> list[str]:
    return sorted(p.name for p in IB_CLASS.iterdir()) if IB_CLASS.exists() else []


def add(ns: str, name: str, netdev: str) -> None:
    sh.run(["rdma", "link", "add", name, "type", "rxe", "netdev", netdev], netns=ns)


def delete(name: str) -> None:
    if (IB_CLASS / name).exists():
        sh.run(["rdma", "link", "delete", name], check=False)


def roce_v2_gid_index(dev: str, address: str | None = None, port: int = 1, timeout: float = 5.0) -> int:
    """Index of the RoCEv2 GID that carries `address` (IPv4-mapped or IPv6) on dev's port; with no
    address, the first IPv4-mapped RoCEv2 GID."""
    want = None
    if address is not None:
        ip = ipaddress.ip_address(address)
        want = ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip
    base = IB_CLASS / dev / "ports" / str(port)
    if not base.exists():
        raise LabError(f"RDMA device {dev} port {port} does not exist (devices: {', '.join(devices()) or 'none'})")
    deadline = time.monotonic() + timeout
    while True:
        for gid_file in sorted((base / "gids").iterdir(), key=lambda p: int(p.name)):
            try:
                gid = ipaddress.IPv6Address(gid_file.read_text().strip())
                kind = (base / "gid_attrs" / "types" / gid_file.name).read_text().strip()
            except (OSError, ValueError):
                continue
            if kind == "RoCE v2" and (gid == want if want is not None else gid.ipv4_mapped is not None):
                return int(gid_file.name)
        if time.monotonic() > deadline:
            raise LabError(f"{dev}: no RoCEv2 GID for {address or 'an IPv4 address'} on port {port}")
        time.sleep(0.05)
