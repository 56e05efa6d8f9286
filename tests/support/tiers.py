"""`@pytest.mark.requires(*needs)` decides, in one place, where a test runs:

- here, when this kernel and machine have every need;
- in the guest kernel (the `guest` tier, tests/support/guest_tier.py), when what is missing is
  what the guest kernel brings (netem, RED, Soft-RoCE, …);
- skipped with the reason, for what CI never has (GPUs, SONiC hardware);
- failed with the reason otherwise: a capability CI should have and does not fails loudly.

The tier markers (`lab`, `guest`, `rdma`, `gpu`, `sonic`) follow from the needs, so `-m` keeps
selecting by tier; they are never set by hand (a test is `unit` or declares its needs: a host-kernel
lab test `requires("netns")`), and a test placed otherwise stops the session at collection. Also:
the leftover check, after the whole session, that nothing of a lab or a guest was left on the host.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from metrolab.harness import settings

# what the guest kernel (harness/vm) provides where the host lacks it
GUEST_BRINGS = {"netem", "red", "fq", "fq_codel", "prio", "tbf", "htb", "nft", "rxe", "srv6"}
NEVER_IN_CI = {"gpus": "needs NVIDIA GPUs (never in CI here)",
               "sonic": "needs a SONiC switch: set METROLAB_SONIC_INVENTORY (never in CI here)"}
TIER = {"rxe": "rdma", "gpus": "gpu", "sonic": "sonic"}


def _in_guest() -> bool:
    return settings.in_guest()


def _has(need: str) -> bool:
    if need == "sonic":
        return bool(settings.get("METROLAB_SONIC_INVENTORY"))
    from metrolab.harness.capabilities import probe
    return probe().has(need)


def placement(needs: tuple[str, ...]) -> tuple[str, str]:
    """("here" | "guest" | "skip" | "fail", why) for a test with these needs."""
    missing = [n for n in needs if not _has(n)]
    if not missing:
        return "here", ""
    never = [NEVER_IN_CI[n] for n in missing if n in NEVER_IN_CI]
    if never:
        return "skip", "; ".join(never)
    if not _in_guest() and all(n in GUEST_BRINGS for n in missing):
        return "guest", f"this kernel lacks {', '.join(missing)}"
    return "fail", f"missing {', '.join(missing)} on {'the guest' if _in_guest() else 'this machine'}"


@pytest.hookimpl(tryfirst=True)  # before -m deselects and before the guest tier picks its tests
def pytest_collection_modifyitems(config, items):
    misplaced = [f"{item.nodeid}: {why}" for item in items if (why := unplaced(item))]
    if misplaced:
        raise pytest.UsageError("a test's tier is `unit` or follows from requires(...) (tests/support/tiers.py):\n"
                                + "\n".join(misplaced))
    decided: dict[tuple[str, ...], tuple[str, str]] = {}
    for item in items:
        m = item.get_closest_marker("requires")
        if m is None:
            continue
        needs = tuple(m.args)
        if needs not in decided:
            decided[needs] = placement(needs)
        where, why = decided[needs]
        for n in needs:
            if n in TIER:
                item.add_marker(TIER[n])
        if where == "guest":
            item.add_marker(pytest.mark.guest)
        elif where == "here" and not item.get_closest_marker("guest"):
            item.add_marker(pytest.mark.lab)
        elif where == "skip":
            item.add_marker(pytest.mark.skip(reason=why))
        elif where == "fail":
            item.user_properties.append(("requires_failure", why))


def unplaced(item) -> str | None:
    """Why `item` is not placed the one way (None when it is): `unit`, or the needs it declares."""
    given = sorted({m.name for m in item.iter_markers()} & (set(TIER.values()) | {"lab", "guest"}))
    if given:
        return f"marked {', '.join(given)} by hand; declare what it needs: requires(...)"
    if item.get_closest_marker("unit") is None and item.get_closest_marker("requires") is None:
        return "neither unit nor requires(...)"
    return None


def pytest_runtest_setup(item):
    why = dict(item.user_properties).get("requires_failure")
    if why:
        pytest.fail(f"cannot run: {why}", pytrace=False)


def _namespaces() -> set[str]:
    from metrolab.harness.lab.clean import LAB_NS
    d = Path("/run/netns")
    return {p.name for p in d.iterdir() if LAB_NS.match(p.name) or "-cal-" in p.name} if d.exists() else set()


_AT_START: set[str] = set()
_GUESTS_AT_START: set[int] = set()
_JOURNALS_AT_START: dict[str, int] = {}


def _guests() -> dict[int, str]:
    """Running guests (qemu with metrolab's init) that are ours or nobody's: their parent is this
    process, or they were orphaned (a guest of another session still running is not ours)."""
    out = {}
    for line in subprocess.run(["pgrep", "-af", "metrolab.init="], capture_output=True, text=True).stdout.splitlines():
        pid = int(line.split()[0])
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid in (os.getpid(), 1):
            out[pid] = line
    return out


def _journals() -> dict[str, int]:
    """Lab journals on this machine: lab id -> the process that owns the lab."""
    from metrolab.harness.lab.state import all_states
    return {s.lab_id: s.pid for s in all_states()}


def pytest_sessionstart(session):
    _AT_START.update(_namespaces())
    _JOURNALS_AT_START.update(_journals())
    _GUESTS_AT_START.update(_guests())


def _ours(ns: str) -> bool:
    """A namespace this session left: its lab's owner is this process or gone (a lab another
    session is running right now on this machine is not ours)."""
    from metrolab.harness.lab.state import all_states, pid_alive
    for s in all_states():
        if ns in s.namespaces:
            return s.pid == os.getpid() or not pid_alive(s.pid)
    return True  # no journal claims it (a calibration pair, a probe): left by someone who is gone


def _lab_leftovers() -> list[str]:
    from metrolab.harness.lab.clean import LAB_NS
    from metrolab.harness.lab.rxe import devices
    from metrolab.harness.lab.state import pid_alive
    left = [f"namespace {n}" for n in sorted(_namespaces() - _AT_START) if _ours(n)]
    # a journal left (a test that failed before its clean) reads as a lab still up to the next run
    # on this machine: a CI run once failed on one a local suite had left
    left += [f"lab journal {i}" for i, pid in _journals().items()
             if i not in _JOURNALS_AT_START and (pid == os.getpid() or not pid_alive(pid))]
    try:
        left += [f"rxe device {x}" for x in devices() if LAB_NS.match(x)]
    except Exception:  # noqa: BLE001 — no RDMA netlink on this kernel: no rxe device to leave
        pass
    if not _in_guest():
        left += [f"guest process {line}" for pid, line in _guests().items() if pid not in _GUESTS_AT_START]
    return left


def pytest_sessionfinish(session, exitstatus):
    """Nothing of a lab or a guest outlives the session (here, and in the guest's own session)."""
    if os.geteuid() != 0 or session.config.option.collectonly:
        return
    left = _lab_leftovers()
    if left:
        tr = session.config.pluginmanager.getplugin("terminalreporter")
        msg = "left behind by this session: " + "; ".join(left) + " (remove with `metrolab lab clean`)"
        if tr is not None:
            tr.write_line(msg, red=True)
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
