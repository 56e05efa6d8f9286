"""What the sandbox testbed's tests share: the CLI run on its controller, the machines' state read
back (what a hosts lab and its policies may change), a run interrupted by a signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from metrolab.harness.kernel.nsctx import in_netns, pids_in_netns
from metrolab.harness.lab.state import LabState, all_states
from metrolab.harness.testbed.resolve import RAY_ROLES
from metrolab.harness.testbed.sandbox import Sandbox

METROLAB = str(Path(sys.executable).parent / "metrolab")


def cli(sb: Sandbox, *args: str, timeout: float = 600) -> tuple[int, dict]:
    """`metrolab ARGS --json` run on the sandbox's controller."""
    res = subprocess.run(sb.controller_argv([METROLAB, *args, "--json"]), capture_output=True, text=True,
                         timeout=timeout, env=dict(os.environ, METROLAB_NO_PROGRESS="1"))
    try:
        return res.returncode, json.loads(res.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"metrolab {' '.join(args)} ({res.returncode}): {res.stdout[-2000:]} {res.stderr[-3000:]}") from None


def changed(doc: dict) -> dict[str, list[str]]:
    return {h["host"]: h["changed"] for h in doc["hosts"]}


def frozen_holds(proc: subprocess.Popen, ready, settle_s: float = 1.0) -> bool:
    """`ready()` with `proc` stopped and `settle_s` passed for what it had in flight (left stopped
    where it holds, to be signalled; running again where not)."""
    proc.send_signal(signal.SIGSTOP)
    time.sleep(settle_s)
    if ready():
        return True
    proc.send_signal(signal.SIGCONT)
    return False


def journals(sb: Sandbox) -> list[LabState]:
    """The journals of labs on this sandbox's machines (not another testbed's, nor a lab someone
    else runs on this machine)."""
    mine = str(sb.testbed_file.resolve())
    return [s for s in all_states() if s.backend == "hosts" and s.extra.get("testbed") == mine]


def ray_machines(sb: Sandbox) -> set[str]:
    """The sandbox's machines that run a Ray node (ranks'); switches and emulators are ssh only."""
    return {m.name for m in sb.machines if RAY_ROLES & set(m.roles)}


def ray_pids(sb: Sandbox) -> dict[str, list[int]]:
    out = {}
    for m in sb.machines:
        pids = []
        for pid in pids_in_netns(sb.ns(m.name)):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"ray" in cmd and b"sshd" not in cmd:
                pids.append(pid)
        out[m.name] = pids
    return out


def sysctl(ns: str, key: str) -> str:
    with in_netns(ns):
        return Path("/proc/sys", *key.split(".")).read_text().strip()


def _json(argv: list[str]) -> list:
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout or "[]")


HASH = ("net/ipv4/fib_multipath_hash_policy", "net/ipv6/fib_multipath_hash_policy", "net/ipv4/fib_multipath_hash_seed")


def lab_state(sb: Sandbox) -> dict:
    """What a hosts lab and its policies may change on the machines, read back: addresses, routes
    (every table), links up, qdiscs of its own (a device's default queue, attached the first time
    it goes up, is the kernel's), policy rules, nft tables, the ECMP hash sysctls."""
    out = {}
    default = {"noqueue", "noop", "pfifo_fast", "fq_codel", "mq"}
    for m in sb.machines:
        ns = sb.ns(m.name)
        addrs = _json(["ip", "-n", ns, "-4", "-j", "addr"])
        routes = _json(["ip", "-n", ns, "-j", "route", "show", "table", "all"])
        routes += _json(["ip", "-n", ns, "-6", "-j", "route", "show", "table", "all"])
        qd = _json(["tc", "-n", ns, "-j", "qdisc"])
        links = _json(["ip", "-n", ns, "-j", "link"])
        rules = _json(["ip", "-n", ns, "-j", "rule"]) + _json(["ip", "-n", ns, "-6", "-j", "rule"])
        nft = json.loads(subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "tables"], capture_output=True,
                                        text=True, check=True).stdout or "{}").get("nftables", [])
        with in_netns(ns):
            sysctls = tuple(Path("/proc/sys", k).read_text().strip() if Path("/proc/sys", k).exists() else None
                            for k in HASH)
        out[m.name] = ({(i["ifname"], a["local"]) for i in addrs for a in i["addr_info"]},
                       {(r.get("table", "main"), r["dst"]) for r in routes if r.get("type") != "local"
                        and not str(r["dst"]).startswith(("fe80:", "ff00:"))},
                       {(q["dev"], q["kind"], q["handle"]) for q in qd if q["kind"] not in default},
                       {i["ifname"] for i in links if "UP" in i["flags"]},
                       {json.dumps(r, sort_keys=True) for r in rules},
                       {(t["table"]["family"], t["table"]["name"]) for t in nft if "table" in t},
                       sysctls)
    return out


def start_and_signal(sb: Sandbox, scenario: Path, run_dir: Path, sig: int, ready=None) -> tuple[int, str]:
    """A testbed run of `scenario`, sent `sig` once it measures (its lab is up) and `ready()` holds;
    its exit code and what it printed. `ready()` is asked of the run frozen (SIGSTOP), once what it
    had already sent has landed: a run killed the moment a point ended would otherwise have the
    point's restore in flight (an ssh the kill does not stop) and undo what the kill was to leave."""
    log = run_dir.with_suffix(".log")
    with open(log, "w") as f:
        proc = subprocess.Popen(sb.controller_argv([METROLAB, "run", str(scenario), "--testbed", str(sb.testbed_file),
                                                    "--out", str(run_dir)]),
                                stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, METROLAB_NO_PROGRESS="1"),
                                # as from a terminal: a suite started in the background (nohup …  &)
                                # hands its children SIGINT ignored, and Python then keeps ignoring it
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it measured"
            if (run_dir / "results.jsonl").exists() and (ready is None or (ready() and frozen_holds(proc, ready))):
                break
            time.sleep(0.5)
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)  # a frozen run takes its SIGINT once it runs again
        rc = proc.wait(timeout=300)
    return rc, log.read_text()
