"""Inside the guest: write each test phase's outcome as a JSON line for the host's session."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from metrolab.harness import settings

CANARY: list[float] = []  # the guest's speed after each test: a fixed loop's best of three, in ms


def canary_ms() -> float:
    """A fixed pure-Python loop, timed best of three (~40 ms under TCG): the guest's own speed, which
    the tests' timings share and which nothing in a test's result says."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        sum(i * i for i in range(20_000))
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


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
    prestart()


def pytest_terminal_summary(terminalreporter):
    """Whether the guest slowed over the session (the late guest tests have read 1.3-1.7x slower
    than alone), beside what could slow it: /tmp (a tmpfs: the guest's memory) and memory left."""
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
        f"memory available {int(mem['MemAvailable'].split()[0]) / 2**10:.0f} MiB")
