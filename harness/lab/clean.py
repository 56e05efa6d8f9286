"""`metrolab lab clean`: remove every lab on this machine and whatever killed runs left."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

from metrolab.harness.kernel import zygote
from metrolab.harness.kernel.nsctx import NETNS_RUN_DIR
from metrolab.harness.lab import rxe
from metrolab.harness.lab.netns import remove_namespace
from metrolab.harness.lab.state import PREFIX_HEAD, LabState, all_states, pid_alive

# namespaces are named <lab id>-<node>, lab id = 'ml' + 6 hex digits
LAB_NS = re.compile(rf"^{PREFIX_HEAD}[0-9a-f]{{6}}-[a-z0-9][a-z0-9-]*$")


def clean_all(per_backend: Mapping[str, Callable[[LabState], list[str]]] | None = None) -> list[str]:
    """Every lab journaled on this machine whose run is gone: its namespaces, rxe devices and Ray
    processes, then `per_backend[its backend](journal)` for what a backend above this layer made
    (a sandbox's machines); hosts labs live on a testbed's machines (metrolab.harness.backends)."""
    removed: list[str] = []
    busy = set()
    for st in all_states():
        if st.backend == "hosts":
            continue  # on a testbed's machines: below, through its Ray cluster
        if st.status == "building" and pid_alive(st.pid):
            busy.update(st.namespaces)  # another process is building it right now
            continue
        removed += _stop_ray(st.extra.get("ray_pids", []))
        for dev in st.extra.get("rxe", []):
            rxe.delete(dev)
            removed.append(f"rdma:{dev}")
        for name in reversed(st.namespaces):
            if (NETNS_RUN_DIR / name).exists():
                remove_namespace(name)
                removed.append(name)
        if st.backend in (per_backend or {}):
            removed += (per_backend or {})[st.backend](st)
        st.remove()
    removed += _orphan_guests() + zygote.remove_stale()
    # a journal can be lost (its directory wiped): our naming pattern finds the rest
    for dev in rxe.devices():
        if LAB_NS.match(dev) and dev not in busy:
            rxe.delete(dev)
            removed.append(f"rdma:{dev}")
    if NETNS_RUN_DIR.exists():
        for p in sorted(NETNS_RUN_DIR.iterdir()):
            if LAB_NS.match(p.name) and p.name not in busy:
                remove_namespace(p.name)
                removed.append(p.name)
    return removed


def _stop_ray(pids: list[int]) -> list[str]:
    """Ray processes a killed run started, by PID (never `ray stop`, which matches by name
    machine-wide); a PID now held by something else is left alone."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ray" in cmd:
            try:
                os.kill(pid, signal.SIGKILL)
                out.append(f"ray:{pid}")
            except ProcessLookupError:
                pass
    return out


def _orphan_guests() -> list[str]:
    """qemu guests of metrolab whose metrolab process is gone (qemu normally dies with it)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if any(arg.startswith(b"console=") and b"metrolab.init=" in arg for arg in cmd) and (
                ppid == 1 or not pid_alive(ppid)):
            os.kill(int(proc.name), signal.SIGKILL)
            out.append(f"qemu:{proc.name}")
    return out
