"""Inside the guest: write each test phase's outcome as a JSON line for the host's session."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from metrolab.harness import settings
from tests.support.canary import canary_ms

CANARY: list[float] = []  # the guest's speed after each test: a fixed loop's best of three, in ms
AT_START: dict[str, str] = {}


def fresh_canary() -> str:
    """The canary in a new interpreter, in ms (a slower session process alone would not slow it)."""
    res = subprocess.run([sys.executable, "-m", "tests.support.canary"], capture_output=True, text=True, timeout=120)
    return res.stdout.strip() or "?"


def netns_objects() -> str:
    """The net_namespace slab's objects and its objects per slab, or '?' where the slab is not listed
    (merged or unreadable). An upper bound on the namespaces the kernel holds, dying ones included:
    SLUB counts every object of the slabs a CPU holds (its current one and its partial list) as in
    use, free ones included, so the count moves by whole slabs (their size printed beside it) and a
    few slabs more per CPU do not show a leak (the guest: 6 a slab, 2 CPUs)."""
    try:
        lines = Path("/proc/slabinfo").read_text().splitlines()
    except OSError:
        return "?"
    row = next((line.split() for line in lines if line.startswith("net_namespace ")), None)
    return f"{row[1]} ({row[4]} a slab)" if row else "?"


def pytest_runtest_logreport(report):
    lr = report.longrepr
    if report.skipped and isinstance(lr, tuple):
        lr = [str(lr[0]), int(lr[1] or 0), str(lr[2])]
    elif lr is not None:
        lr = str(lr)
    rec = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome, "longrepr": lr,
           "duration": report.duration, "sections": [list(s) for s in report.sections]}
    if report.when == "teardown":
        CANARY.append(canary_ms())
    with open(settings.get("METROLAB_GUEST_REPORT"), "a") as f:
        f.write(json.dumps(rec) + "\n")


def pytest_sessionstart(session):
    """Start the rank zygote's imports (torch: ~30 s under TCG) while the first tests build labs."""
    from metrolab.harness.kernel.zygote import prestart
    AT_START.update(netns=netns_objects(), fresh=fresh_canary())  # before the zygote's import competes
    prestart()


def pytest_terminal_summary(terminalreporter):
    """Whether the session slowed (a backpressure thread left polling once made every later test
    1.38x slower in this process), beside what could slow it: /tmp (a tmpfs: the guest's memory),
    memory left, the net_namespace slab (at most the namespaces the kernel holds), the load, and the
    loop in a new interpreter (a slower session with a steady fresh loop points at this process, not
    the guest)."""
    if len(CANARY) < 2:
        return
    k = max(1, len(CANARY) // 10)
    first, last = statistics.median(CANARY[:k]), statistics.median(CANARY[-k:])
    tmp = os.statvfs("/tmp")
    mem = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    terminalreporter.write_line(
        f"guest speed: a fixed loop took {first:.1f} ms after the first {k} tests and {last:.1f} ms after the "
        f"last {k} ({last / first:.2f}x; {min(CANARY):.1f}-{max(CANARY):.1f} ms over {len(CANARY)}); "
        f"/tmp {(tmp.f_blocks - tmp.f_bfree) * tmp.f_frsize / 2**20:.0f} MiB used, "
        f"memory available {int(mem['MemAvailable'].split()[0]) / 2**10:.0f} MiB, net_namespace slab objects "
        f"{AT_START.get('netns', '?')} at the start and {netns_objects()} now, load (1 min, runnable/all) "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[0:4:3])}; in a new interpreter the loop took "
        f"{AT_START.get('fresh', '?')} ms at the start and {fresh_canary()} ms now")
    terminalreporter.write_line("guest speed after each test, ms: " + " ".join(f"{c:.0f}" for c in CANARY))
