"""The guest tier: tests marked `guest` need netem and Soft-RoCE. Where the host kernel lacks
them, this plugin boots the guest kernel once, runs all of them there in one pytest session,
and reports each result back into the host's session as if it had run here. Where the host
has them (GitHub Actions with rxe, lab hosts), they simply run here."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from _pytest.reports import TestReport

# the whole guest tier, one boot: 30-38 min here, and CI's machine was slower (a run hit a 40-min
# limit and every guest test errored). CI's hard limit is 90 min, the host tier ~17 of them
TIER_TIMEOUT_S = 65 * 60


def in_guest() -> bool:
    from harness import settings
    return settings.in_guest()


def read_report(report: Path) -> dict[str, list[dict]]:
    """nodeid -> the phases the guest reported (guest_report.py), as far as the file goes."""
    out: dict[str, list[dict]] = {}
    for line in report.read_text().splitlines() if report.exists() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # the last line, cut by a guest killed mid-write
            continue
        out.setdefault(rec["nodeid"], []).append(rec)
    return out


def completed(phases: list[dict] | None, error: str | None) -> list[dict]:
    """A test's phases as the host reports them: one that never ran, or began and never finished
    (the guest stopped in the middle of it: a timeout), fails with the reason."""
    why = error or "no result came back"
    if not phases:
        return [{"when": "setup", "outcome": "failed", "duration": 0.0, "sections": [],
                 "longrepr": f"did not run in the guest: {why}"}]
    if any(ph["when"] == "teardown" for ph in phases) or any(ph["outcome"] == "failed" for ph in phases):
        return phases
    return [*phases, {"when": "call", "outcome": "failed", "duration": 0.0, "sections": [],
                      "longrepr": f"did not finish in the guest: {why}"}]


class GuestTier:
    def __init__(self, config):
        self.config = config
        self.items: list[pytest.Item] = []
        self.results: dict[str, list[dict]] | None = None
        self.error: str | None = None
        self.exit_code: int | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        self.items = [i for i in items if i.get_closest_marker("guest")]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        # `guest` is set by the `requires` marker (tests/support/tiers.py) only where this kernel
        # lacks what the test needs
        if not item.get_closest_marker("guest"):
            return None
        if self.results is None:
            self._run_in_guest()
        self._report(item)
        # what the skipped local protocol would have done: tear down the fixtures and nodes the
        # next item does not share (else the next item finds its predecessor's setup still there)
        item.session._setupstate.teardown_exact(nextitem)
        return True

    def _write(self, line: str) -> None:
        tr = self.config.pluginmanager.getplugin("terminalreporter")
        if tr is not None:
            tr.write_line(line)
        else:
            print(line, file=sys.stderr)

    def _run_in_guest(self) -> None:
        from harness.vm.kernel import prepare_kernel
        from harness.vm.qemu import Guest
        self.results = {}
        nodeids = [i.nodeid for i in self.items]
        t0 = time.monotonic()
        report: Path | None = None
        try:
            kernel = prepare_kernel(self._write)
            guest = Guest(kernel)
            self._write(f"\nguest tier: {len(nodeids)} tests in guest kernel {kernel.release} "
                        f"({guest.accel}: {guest.accel_why})")
            import tempfile
            share = Path(tempfile.mkdtemp(prefix="guest-tier-")) / "run"
            share.mkdir()
            report = share / "report.jsonl"  # on the share: written by the guest, read here
            argv = [sys.executable, "-m", "pytest", "-p", "tests.support.guest_report", "-p", "no:cacheprovider",
                    "-v" if self.config.option.verbose > 0 else "-q", "-rfEs",
                    f"--color={'yes' if self.config.get_terminal_writer().hasmarkup else 'no'}", *nodeids]
            # netem's calibration (~17 s under TCG) reused for the boot, not remeasured per lab after a
            # minute: the tests that judge a calibrated delay remove it and measure their own
            env = {"METROLAB_GUEST_REPORT": str(report), "COLUMNS": "160",
                   "METROLAB_NETEM_CALIBRATION_MAX_AGE_S": str(TIER_TIMEOUT_S)}
            res = guest.run(argv, cwd=self.config.rootpath, env=env,
                            timeout=TIER_TIMEOUT_S, results_dir=share,
                            on_line=lambda line: self._write(f"guest| {line}"),
                            on_log=lambda line: self._write(f"guest! {line}") if "Traceback" in line or
                            line.startswith("E ") else None)
            self.results = read_report(report)
            self.exit_code = res.exit_code
            self._write(f"guest tier: pytest exit {res.exit_code}, boot {res.boot_s:.1f} s, "
                        f"{time.monotonic() - t0:.0f} s in all")
            if not self.results:
                self.error = f"the guest's pytest reported nothing (exit {res.exit_code}): " + " | ".join(res.output[-10:])
        except Exception as exc:  # noqa: BLE001 — the guest itself failed: every test it did not finish fails with the reason
            self.error = f"{type(exc).__name__}: {exc}"
            self._write(f"guest tier failed: {self.error}")
            if report is not None:
                self.results = read_report(report)  # what finished before (a timeout) keeps its own result

    def _report(self, item) -> None:
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        phases = completed(self.results.get(item.nodeid) if self.results else None, self.error)
        now = time.time()
        for ph in phases:
            longrepr = ph["longrepr"]
            if ph["outcome"] == "skipped" and isinstance(longrepr, list):
                longrepr = (longrepr[0], int(longrepr[1]), longrepr[2])
            rep = TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, ph["outcome"], longrepr,
                             ph["when"], sections=[tuple(s) for s in ph.get("sections", [])],
                             duration=ph["duration"], start=now, stop=now + ph["duration"])
            ihook.pytest_runtest_logreport(report=rep)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


    def pytest_sessionfinish(self, session, exitstatus):
        """The guest's pytest fails on its own (e.g. leftovers after its session) even where every
        test passed: that fails this session too."""
        failed = any(r["outcome"] == "failed" for recs in (self.results or {}).values() for r in recs)
        if self.exit_code not in (None, 0) and not failed and session.exitstatus == 0:
            self._write(f"guest tier: the guest's pytest exited {self.exit_code} with every test passed "
                        "(see the guest| lines above)")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config):
    if not in_guest():
        config.pluginmanager.register(GuestTier(config), "metrolab-guest-tier")
