"""Inside the guest: write each test phase's outcome as a JSON line for the host's session."""

from __future__ import annotations

import json

from metrolab.harness import settings


def pytest_runtest_logreport(report):
    lr = report.longrepr
    if report.skipped and isinstance(lr, tuple):
        lr = [str(lr[0]), int(lr[1] or 0), str(lr[2])]
    elif lr is not None:
        lr = str(lr)
    rec = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome, "longrepr": lr,
           "duration": report.duration, "sections": [list(s) for s in report.sections]}
    with open(settings.get("METROLAB_GUEST_REPORT"), "a") as f:
        f.write(json.dumps(rec) + "\n")


def pytest_sessionstart(session):
    """Start the rank zygote's imports (torch: ~30 s under TCG) while the first tests build labs."""
    from metrolab.harness.kernel.zygote import prestart
    prestart()
