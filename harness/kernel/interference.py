"""Interference: what the machine gave to something other than the lab while a measurement ran.

A measurement in the TCG guest shares the host's cores with everything else on the machine; one
busy process beside it moved the main job's noise floor from +-0.8 % to +-16 % (docs/statistics.md).
The lab's own processes (this process tree: the runner, its ranks, Ray, the guest's qemu) are
known, so a mark of the machine's counters before and after each measurement says how much CPU
went elsewhere:

- `interference`: CPU time outside the lab over the measurement's wall time, as a share of the
  machine's cores (steal, the hypervisor's other guests, counts as outside);
- `guest_wait`: on the vm backend, the time the guest's threads were runnable and waited for a
  core, as a share of wall time per guest CPU (what interference cost the guest).

A measurement is *interfered* when other processes took more than `max_interference` of the
machine and, on the vm backend, it cost the guest: its threads waited more than `max_guest_wait` of
the time. Measured on the main job: quiet, others 0-2 % and the guest's wait 2-5 %; beside one busy
process, others 16-30 % and the wait 2-5 % while qemu runs in the real-time class (held off: not
interfered), 50 % and 52-59 % without it (interfered); a guest that saturates its own CPUs waits on
its own threads (15 % with others at 1 %: not interference). On the host kernel nothing holds other
processes off the lab's ranks: their CPU alone decides. The runner replaces such a block; the judge
leaves it out.

On the vm backend the host samples its counters into a file on the run directory's share every
SAMPLE_S (`HostSampler`, started by the host for the guest's run) and the guest's runner reads the
latest mark: both marks come from the host's clock and counters. Elsewhere the runner marks this
machine itself. Nothing here changes the machine; a mark costs a few /proc reads.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from metrolab.harness import settings

SAMPLE_S = 0.2
TREE_EVERY_S = 2.0   # the sampler lists the lab's processes anew this often (a /proc scan)
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Mark:
    t: float                  # the marking machine's monotonic clock, s
    busy_s: float             # every core's busy time since boot (steal included)
    lab_s: float              # CPU time of the lab's processes (live ones and those they reaped)
    wait_s: float | None      # run-queue wait of the guest's threads (vm backend)
    cores: int
    guest_cpus: int | None = None


def _busy_s() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + steal) / CLK_TCK


def _tree(root: int) -> list[int]:
    """`root` and every descendant (by parent pid, from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _threads(pid: int) -> tuple[float, float]:
    """(run time, run-queue wait) of every thread of `pid`, s (/proc/PID/task/TID/schedstat, ns)."""
    run = wait = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                v = f.read().split()
            run, wait = run + int(v[0]), wait + int(v[1])
        except (OSError, IndexError, ValueError):
            continue
    return run / 1e9, wait / 1e9


def _reaped_s(pid: int) -> float:
    """CPU of the children `pid` has reaped (a short helper's time moves here; ticks: small)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rpartition(")")[2].split()
        return (int(v[13]) + int(v[14])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def take_mark(pids: list[int] | None = None) -> Mark:
    """This machine's counters now; the lab is `pids` (default: this process's tree)."""
    lab = wait = 0.0
    guests = 0
    for pid in pids if pids is not None else _tree(os.getpid()):
        run, waited = _threads(pid)
        lab += run + _reaped_s(pid)
        if _name(pid).startswith("qemu-system"):
            wait += waited
            guests += int(settings.get("METROLAB_VM_CPUS"))
    return Mark(time.monotonic(), _busy_s(), lab, wait if guests else None, os.cpu_count() or 1, guests or None)


def between(a: Mark | None, b: Mark | None) -> dict[str, float]:
    """A measurement's interference from the marks before and after it (empty without both)."""
    if a is None or b is None or b.t <= a.t:
        return {}
    wall = b.t - a.t
    out = {"interference": max(0.0, (b.busy_s - a.busy_s) - (b.lab_s - a.lab_s)) / wall / b.cores}
    if a.wait_s is not None and b.wait_s is not None and b.guest_cpus:
        out["guest_wait"] = max(0.0, b.wait_s - a.wait_s) / wall / b.guest_cpus
    return out


def interfered(metrics: dict, max_interference: float, max_guest_wait: float) -> bool:
    """Did another process cost this measurement CPU it wanted (see the module's docstring)?"""
    if (metrics.get("interference") or 0.0) <= max_interference:
        return False
    wait = metrics.get("guest_wait")
    return wait is None or wait > max_guest_wait


def interference_summary(blocks: list[dict]) -> dict:
    """A workload's interference in a few figures (its blocks' records, blocks.jsonl)."""
    def median(key: str) -> float | None:
        vals = sorted(b[key] for b in blocks if b.get(key) is not None)
        return vals[len(vals) // 2] if vals else None
    return {"blocks": len(blocks), "interference_median": median("interference"),
            "interference_max": max((b["interference"] for b in blocks if b.get("interference") is not None),
                                    default=None),
            "guest_wait_median": median("guest_wait"),
            "blocks_interfered": sorted(b["block"] for b in blocks if b.get("interfered")),
            "blocks_replaced": sorted(b["block"] for b in blocks if b.get("replaced"))}


class HostSampler:
    """On the host, for a guest's run: the latest mark of this machine, every SAMPLE_S, written
    atomically to `path` (on the share the guest reads)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrolab-host-sampler", daemon=True)

    def _loop(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        pids: list[int] = []
        listed = -TREE_EVERY_S
        while not self._stop.is_set():
            if time.monotonic() - listed >= TREE_EVERY_S:
                pids, listed = _tree(os.getpid()), time.monotonic()
            try:
                tmp.write_text(json.dumps(asdict(take_mark(pids))))
                os.replace(tmp, self.path)
            except OSError:
                pass
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> HostSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Monitor:
    """What the runner marks around each measurement: the host's sampler's latest mark in the guest
    (METROLAB_HOST_CPU names its file), this machine's own elsewhere; None on a testbed (its
    machines are not this one)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.shared = settings.get("METROLAB_HOST_CPU") if settings.in_guest() else None

    def mark(self) -> Mark | None:
        if not self.enabled:
            return None
        if settings.in_guest():
            if not self.shared:
                return None
            try:
                return Mark(**json.loads(Path(self.shared).read_text()))
            except (OSError, ValueError, TypeError):
                return None
        return take_mark()
