"""The guest tier: tests marked `guest` need netem and Soft-RoCE. Where the host kernel lacks
them, this plugin boots the guest kernel once, runs all of them there in one pytest session,
and reports each result back into the host's session as if it had run here (a guest kernel that
crashes part-way is booted again for the tests it did not finish). Where the host
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
CRASH_REBOOTS = 2  # a guest kernel that crashes mid-tier (TCG, harness/vm/guest_pin.sh) is booted again


def in_guest() -> bool:
    from metrolab.harness import settings
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


def after_crash(got: dict[str, list[dict]], todo: list[str]) -> tuple[dict[str, list[dict]], list[str], str | None]:
    """After the guest crashed part-way through `todo`: (the tests that finished, with their phases;
    those to run again, in order; the one the crash hit, if it had begun). A test finished when its
    teardown was reported; one begun and cut short runs again from its setup."""
    done = {n: got[n] for n in todo if any(ph["when"] == "teardown" for ph in got.get(n, ()))}
    again = [n for n in todo if n not in done]
    hit = next((n for n in again if n in got), None)
    return done, again, hit


class GuestTier:
    def __init__(self, config):
        self.config = config
        self.items: list[pytest.Item] = []
        self.results: dict[str, list[dict]] | None = None
        self.error: str | None = None
        self.exit_code: int | None = None
        self.crashes: dict[str, str] = {}  # nodeid -> the guest crash it was running in (then rerun)

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
        from metrolab.harness.vm.kernel import prepare_kernel
        from metrolab.harness.vm.qemu import Guest, GuestCrash
        self.results = {}
        todo = [i.nodeid for i in self.items]
        t0 = time.monotonic()
        try:
            kernel = prepare_kernel(self._write)
            guest = Guest(kernel)
        except Exception as exc:  # noqa: BLE001 — no guest at all: every test fails with the reason
            self.error = f"{type(exc).__name__}: {exc}"
            self._write(f"guest tier failed: {self.error}")
            return
        self._write(f"\nguest tier: {len(todo)} tests in guest kernel {kernel.release} ({guest.accel}: {guest.accel_why})")
        for boot in range(CRASH_REBOOTS + 1):
            report = self._share() / "report.jsonl"  # on the share: written by the guest, read here
            try:
                res = self._boot(guest, todo, report, TIER_TIMEOUT_S - (time.monotonic() - t0), boot)
            except GuestCrash as exc:
                # the emulator's fault, not a test's (harness/vm/guest_pin.sh): what finished keeps its
                # result, the rest runs again in a fresh guest, the test it hit first among them
                done, todo, hit = after_crash(read_report(report), todo)
                self.results.update(done)
                left = TIER_TIMEOUT_S - (time.monotonic() - t0)
                if boot == CRASH_REBOOTS or not todo or left < 120:
                    self.error = f"GuestCrash: {exc}"
                    self.results.update(read_report(report))
                    self._write(f"guest tier failed: {self.error}")
                    return
                if hit is not None:
                    self.crashes[hit] = str(exc)
                self._write(f"guest tier: {exc}; {len(todo)} unfinished tests run again in a fresh guest"
                            + (f", from {hit}" if hit else ""))
                continue
            except Exception as exc:  # noqa: BLE001 — the guest itself failed: every test it did not finish fails with the reason
                self.error = f"{type(exc).__name__}: {exc}"
                self._write(f"guest tier failed: {self.error}")
                self.results.update(read_report(report))  # what finished before (a timeout) keeps its own result
                return
            got = read_report(report)
            self.results.update(got)
            self.exit_code = res.exit_code
            self._write(f"guest tier: pytest exit {res.exit_code}, boot {res.boot_s:.1f} s, "
                        f"{time.monotonic() - t0:.0f} s in all")
            if not got:
                self.error = f"the guest's pytest reported nothing (exit {res.exit_code}): " + " | ".join(res.output[-10:])
            return

    @staticmethod
    def _share() -> Path:
        import tempfile
        share = Path(tempfile.mkdtemp(prefix="guest-tier-")) / "run"
        share.mkdir()
        return share

    def _boot(self, guest, nodeids: list[str], report: Path, timeout: float, boot: int):
        argv = [sys.executable, "-m", "pytest", "-p", "tests.support.guest_report", "-p", "no:cacheprovider",
                "-v" if self.config.option.verbose > 0 else "-q", "-rfEs", "--durations=15",  # the suite's time
                f"--color={'yes' if self.config.get_terminal_writer().hasmarkup else 'no'}", *nodeids]
        # netem's calibration (~17 s under TCG) reused for the boot, not remeasured per lab after a
        # minute: the tests that judge a calibrated delay remove it and measure their own
        env = {"METROLAB_GUEST_REPORT": str(report), "METROLAB_GUEST_BOOT": str(boot), "COLUMNS": "160",
               "METROLAB_NETEM_CALIBRATION_MAX_AGE_S": str(TIER_TIMEOUT_S)}
        return guest.run(argv, cwd=self.config.rootpath, env=env, timeout=timeout, results_dir=report.parent,
                         on_line=lambda line: self._write(f"guest| {line}"),
                         on_log=lambda line: self._write(f"guest! {line}") if "Traceback" in line or
                         line.startswith("E ") else None)

    def _report(self, item) -> None:
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        phases = completed(self.results.get(item.nodeid) if self.results else None, self.error)
        if item.nodeid in self.crashes:  # said where the report is read (terminal, JUnit)
            note = ("guest kernel crash", f"a guest crashed during this test and it ran again in a fresh "
                                          f"one: {self.crashes[item.nodeid]}")
            phases = [{**ph, "sections": [*ph.get("sections", []), note]} if ph["when"] == "call" else ph
                      for ph in phases]
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
