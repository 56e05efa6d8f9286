"""Enter a named network namespace in the current thread, and come back.

setns(2) acts on the calling thread only, so sockets made inside the block belong to that
namespace and keep it after the block: the lab creates probe sockets this way in-process.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from pathlib import Path

import pyroute2.config
from pyroute2 import IPRoute

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def in_netns(name: str):
    """Run the block inside /run/netns/<name> (current thread only)."""
    target = os.open(NETNS_RUN_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def write_sysctl(ns: str, key: str, value: str | int) -> None:
    """Set a net.* sysctl inside namespace `ns` (/proc/sys/net resolves per thread)."""
    with in_netns(ns):
        Path("/proc/sys", *key.split(".")).write_text(str(value))


def wire_sized(ipr, ifname: str) -> None:
    """`ifname` (of pyroute2 handle `ipr`) sends one TCP segment a buffer (gso_max_segs 1), as a NIC
    puts them on the wire: a qdisc that loses or jitters packets then acts on each (docs/lab.md)."""
    ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], gso_max_segs=1)


def netns_inode(name: str) -> int:
    return os.stat(NETNS_RUN_DIR / name).st_ino


def pids_in_netns(name: str) -> list[int]:
    """PIDs whose network namespace is `name` (to stop them before the namespace goes)."""
    try:
        ino = netns_inode(name)
    except FileNotFoundError:
        return []
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == ino:
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def iproute(name: str):
    """pyroute2's netlink handle inside namespace `name` (created if missing).

    pyroute2 opens it from a forked helper that it stops with SIGTERM; the helper must die by the
    default action, not run a handler it inherited (Ray's exits the interpreter, which in a fork of
    pytest or of a run unwinds the parent's stack in the child)."""
    pyroute2.config.disable_mp_signal = True
    return IPRoute(netns=name)


def iproute_here():
    """pyroute2's netlink handle in this thread's network namespace (inside `in_netns`, or on a
    testbed's machine), with the same signal setting as `iproute`."""
    pyroute2.config.disable_mp_signal = True
    return IPRoute()
