"""A testbed of namespaces, each machine with its own sshd on a management network: ansible
provisions it over SSH (idempotent; --check changes nothing), Ray forms a cluster across it whose
tasks land on the machine they are pinned to, `testbed check` judges it, `testbed clean` stops
what provisioning started, and nothing of it is left on this machine afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.lab.nsctx import NETNS_RUN_DIR, in_netns, netns_inode, pids_in_netns
from harness.spec.loader import load_topology
from harness.testbed.sandbox import Sandbox

pytestmark = pytest.mark.lab
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


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox(load_topology("metro-pair"), "metro-pair")
    sb.up()
    yield sb
    sb.down()
    assert not any((NETNS_RUN_DIR / ns).exists() for ns in sb.state.namespaces)
    assert not sb.dir.exists()


def test_check_mode_reports_what_would_change_and_changes_nothing(sandbox):
    rc, doc = cli(sandbox, "testbed", "provision", str(sandbox.testbed_file), "--check")
    assert rc == 0 and doc["ok"] and doc["check"], doc
    would = changed(doc)
    assert any("Create the bridge" in t for t in would["em-wan-ab"]), would
    assert any("Start the Ray node" in t for t in would["a1"]), would
    assert all(not pids for pids in ray_pids(sandbox).values())
    from harness.lab.nsctx import iproute
    h = iproute(sandbox.ns("em-wan-ab"))
    try:
        assert not h.link_lookup(ifname="br-metrolab")
    finally:
        h.close()


def test_provision_prepares_every_machine_and_a_second_run_changes_nothing(sandbox):
    rc, doc = cli(sandbox, "testbed", "provision", str(sandbox.testbed_file))
    assert rc == 0 and doc["ok"], doc
    from harness.lab.nsctx import iproute
    h = iproute(sandbox.ns("em-wan-ab"))
    try:  # the emulator bridges its two ports, which carry no address
        br = h.link_lookup(ifname="br-metrolab")
        assert br
        ports = {h.get_links(i)[0].get_attr("IFLA_IFNAME") for i in h.link_lookup(master=br[0])}
        assert ports == {"eth1", "eth2"}
    finally:
        h.close()
    assert sysctl(sandbox.ns("a1"), "net.ipv4.tcp_ecn") == "1"
    assert sysctl(sandbox.ns("gw-a"), "net.ipv4.ip_forward") == "1"
    assert sysctl(sandbox.ns("gw-a"), "net.ipv4.fib_multipath_hash_policy") == "1"
    assert all(len(p) >= 1 for p in ray_pids(sandbox).values()), ray_pids(sandbox)
    # nothing outside the sandbox's directory: persistent files went to each machine's own
    assert (sandbox.dir / "a1" / "90-metrolab-roce.conf").is_file()

    rc, again = cli(sandbox, "testbed", "provision", str(sandbox.testbed_file))
    assert rc == 0 and again["ok"], again
    assert changed(again) == {m.name: [] for m in sandbox.machines}


def test_check_finds_every_machine_fit_and_ray_tasks_land_on_their_machine(sandbox):
    rc, rep = cli(sandbox, "testbed", "check", str(sandbox.testbed_file))
    fails = [f for f in rep["findings"] if f["level"] == "fail"]
    assert rc == 0 and not fails, fails
    for m in sandbox.machines:
        mine = {f["check"]: f["level"] for f in rep["findings"] if f["machine"] == m.name}
        assert mine["reachable"] == mine["versions"] == mine["ray"] == "ok", (m.name, mine)
        assert mine["clock"] in ("ok", "warn")
    assert {f["machine"] for f in rep["findings"] if f["check"] == "mtu path"} == {"a1-gw-a", "b1-gw-b", "wan-ab"}
    # a Ray task pinned to a machine runs inside that machine (its namespace), through Ray Client
    code = ("import json, sys; from harness.testbed.resolve import load_testbed; "
            "from harness.testbed.cluster import TestbedRay, _where; tb = load_testbed(sys.argv[1]); "
            "c = TestbedRay(tb); print(json.dumps({m.name: c.on(m.name, _where)['netns'] for m in tb.ray_machines()})); "
            "c.close()")
    res = subprocess.run(sandbox.controller_argv([sys.executable, "-c", code, str(sandbox.testbed_file)]),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    where = json.loads(res.stdout.strip().splitlines()[-1])
    assert where == {m.name: netns_inode(sandbox.ns(m.name)) for m in sandbox.machines}


def test_clean_stops_the_ray_nodes_by_their_pid_files(sandbox):
    assert any(ray_pids(sandbox).values())
    rc, doc = cli(sandbox, "testbed", "clean", str(sandbox.testbed_file))
    assert rc == 0 and doc["ok"], doc
    assert all(any("Stop the Ray node" in t for t in c) for c in changed(doc).values()), doc
    assert ray_pids(sandbox) == {m.name: [] for m in sandbox.machines}
    rc, again = cli(sandbox, "testbed", "clean", str(sandbox.testbed_file))
    assert rc == 0 and changed(again) == {m.name: [] for m in sandbox.machines}
