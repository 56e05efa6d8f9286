"""A testbed of namespaces, each machine with its own sshd on a management network: ansible
provisions it over SSH (idempotent; --check changes nothing), Ray forms a cluster across it whose
tasks land on the machine they are pinned to, `testbed check` judges it, the hosts backend builds
the topology on it and runs the main job's host-kernel variant with rows that agree with the netns
backend's, a killed run is undone by `testbed clean`, which also stops what provisioning started,
and nothing of it is left on this machine afterwards."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from metrolab.harness import capabilities
from metrolab.harness.kernel.nsctx import NETNS_RUN_DIR, netns_inode
from metrolab.harness.scenario.spec import load_scenario
from metrolab.harness.testbed.sandbox import Sandbox
from tests.support.testbed import (
    METROLAB,
    changed,
    cli,
    journals,
    lab_state,
    ray_machines,
    ray_pids,
    start_and_signal,
    sysctl,
)

pytestmark = pytest.mark.requires("netns")
SCENARIO = Path(__file__).with_name("main-host-kernel.yaml")


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox(load_scenario(str(SCENARIO)).topology)
    sb.up()
    yield sb
    sb.down()
    assert not any((NETNS_RUN_DIR / ns).exists() for ns in sb.state.namespaces)
    assert not sb.dir.exists()


def test_check_mode_reports_what_would_change_and_changes_nothing(sandbox):
    rc, doc = cli(sandbox, "testbed", "provision", str(sandbox.testbed_file), "--check")
    assert rc == 0 and doc["ok"] and doc["check"], doc
    # the host keys it would pin were used for its connections, and not written
    assert {k["state"] for k in doc["host_keys"]} == {"would pin"} and not known_hosts(sandbox).exists()
    would = changed(doc)
    assert any("Create the bridge" in t for t in would["em-wan-ab"]), would
    assert any("Start the Ray node" in t for t in would["a1"]), would
    assert all(not pids for pids in ray_pids(sandbox).values())
    from metrolab.harness.kernel.nsctx import iproute
    h = iproute(sandbox.ns("em-wan-ab"))
    try:
        assert not h.link_lookup(ifname="br-metrolab")
    finally:
        h.close()


def test_provision_prepares_every_machine_and_a_second_run_changes_nothing(sandbox):
    rc, doc = cli(sandbox, "testbed", "provision", str(sandbox.testbed_file))
    assert rc == 0 and doc["ok"], doc
    from metrolab.harness.kernel.nsctx import iproute
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
    # Ray on the machines that run ranks; switches and emulators are reached over ssh only
    ray = ray_machines(sandbox)
    assert ray == {"a1", "b1"}
    assert {m for m, p in ray_pids(sandbox).items() if p} == ray, ray_pids(sandbox)
    assert not any("venv" in t or "Ray" in t for m in ("gw-a", "em-wan-ab") for t in changed(doc)[m]), changed(doc)
    # nothing outside the sandbox's directory: persistent files went to each machine's own
    assert (sandbox.dir / "a1" / "90-metrolab-roce.conf").is_file()

    # each machine's host key pinned beside the testbed file (sshd's own key: ed25519 here)
    assert {k["machine"]: k["state"] for k in doc["host_keys"]} == {m.name: "pinned" for m in sandbox.machines}
    lines = known_hosts(sandbox).read_text().splitlines()
    assert sorted(ln.split()[0] for ln in lines) == sorted(m.mgmt for m in sandbox.machines)
    for m in sandbox.machines:
        key = (sandbox.dir / m.name / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        assert f"{m.mgmt} {' '.join(key)}" in lines, m.name

    rc, again = cli(sandbox, "testbed", "provision", str(sandbox.testbed_file))
    assert rc == 0 and again["ok"], again
    assert changed(again) == {m.name: [] for m in sandbox.machines}
    assert {k["state"] for k in again["host_keys"]} == {"pinned before"}


def test_check_finds_every_machine_fit_and_ray_tasks_land_on_their_machine(sandbox):
    rc, rep = cli(sandbox, "testbed", "check", str(sandbox.testbed_file))
    fails = [f for f in rep["findings"] if f["level"] == "fail"]
    assert rc == 0 and not fails, fails
    for m in sandbox.machines:
        mine = {f["check"]: f["level"] for f in rep["findings"] if f["machine"] == m.name}
        if m.name in ray_machines(sandbox):
            assert mine["reachable"] == mine["versions"] == mine["ray"] == "ok", (m.name, mine)
            assert mine["clock"] in ("ok", "warn") and "agent" not in mine
        else:  # the system's python3 runs the operations from the ssh agent's bundle
            assert mine["reachable"] == mine["agent"] == "ok" and not {"versions", "ray", "clock"} & set(mine), mine
    assert {f["machine"] for f in rep["findings"] if f["check"] == "mtu path"} == {"a1-gw-a", "b1-gw-b", "wan-ab"}
    assert [f["level"] for f in rep["findings"] if f["machine"] == "em-wan-ab" and f["check"] == "netem"] in (
        ["ok"], ["warn"])  # a kernel without netem still runs rate and loss points
    # a Ray task pinned to a machine runs inside that machine (its namespace), through Ray Client
    code = ("import json, sys; from metrolab.harness.testbed.resolve import load_testbed; "
            "from metrolab.harness.testbed.cluster import TestbedRay, _where; tb = load_testbed(sys.argv[1]); "
            "c = TestbedRay(tb); print(json.dumps({m.name: c.on(m.name, _where)['netns'] for m in tb.ray_machines()})); "
            "c.close()")
    res = subprocess.run(sandbox.controller_argv([sys.executable, "-c", code, str(sandbox.testbed_file)]),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    where = json.loads(res.stdout.strip().splitlines()[-1])
    assert where == {m: netns_inode(sandbox.ns(m)) for m in ray_machines(sandbox)}


def test_the_ray_cluster_admits_only_who_holds_its_token(sandbox):
    """Ray's token authentication across the testbed: provisioning made one token (owner-only,
    beside the testbed file) and gave it to every node; the controller's connections present it
    (the check above connected); a client with another token, or none, is refused."""
    token = sandbox.testbed_file.with_name(f"sandbox-{sandbox.lab_id}.ray_token")
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64
    copies = list(sandbox.dir.glob("r*/auth_token"))  # each node's (ray_node_dir: r0, r1, ... here)
    assert len(copies) == len(ray_machines(sandbox)) and {c.read_text() for c in copies} == {token.read_text()}
    head = next(m for m in sandbox.machines if m.name == "a1")
    code = ("import sys; from ray.util.client import ray as client\n"
            "try:\n    client.connect(sys.argv[1], connection_retries=1)\nexcept Exception as e:\n"
            "    print('refused', type(e).__name__)\nelse:\n    print('admitted')")
    for env in ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}, {"RAY_AUTH_MODE": "disabled"}):
        res = subprocess.run(sandbox.controller_argv([sys.executable, "-c", code, f"{head.mgmt}:10001"]),
                             capture_output=True, text=True, timeout=300,
                             env={k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | env)
        assert res.stdout.strip().splitlines()[-1].startswith("refused"), (env, res.stdout[-500:], res.stderr[-1500:])


def known_hosts(sb: Sandbox) -> Path:
    return sb.testbed_file.with_name(f"sandbox-{sb.lab_id}.known_hosts")


def test_a_machine_whose_host_key_changed_is_refused_by_name(sandbox):
    """Another machine answering at a1's address (here: b1's key pinned for a1): `testbed check`
    fails that machine's host key, and provisioning stops before running anything, naming it."""
    pinned = known_hosts(sandbox).read_text()
    a1, b1 = (next(m for m in sandbox.machines if m.name == n) for n in ("a1", "b1"))
    b1_key = next(ln for ln in pinned.splitlines() if ln.split()[0] == b1.mgmt).split(None, 1)[1]
    forged = "\n".join(f"{a1.mgmt} {b1_key}" if ln.split()[0] == a1.mgmt else ln for ln in pinned.splitlines())
    known_hosts(sandbox).write_text(forged + "\n")
    try:
        rc, rep = cli(sandbox, "testbed", "check", str(sandbox.testbed_file))
        keys = {f["machine"]: (f["level"], f["detail"]) for f in rep["findings"] if f["check"] == "host key"}
        assert rc == 1 and keys["a1"][0] == "fail" and "differs" in keys["a1"][1], keys
        assert all(level == "ok" for m, (level, _) in keys.items() if m != "a1"), keys
        # ansible's connections carry the inventory's ssh arguments: with them, ssh itself refuses
        # a1 and only a1 (ansible reuses a connection it verified within the last minute,
        # ControlPersist, so a fresh ssh shows what its next connection does)
        from metrolab.harness.testbed.derive import inventory
        from metrolab.harness.testbed.resolve import load_testbed
        hosts = inventory(load_testbed(sandbox.testbed_file))["all"]["hosts"]
        for m, refused in ((a1, True), (b1, False)):
            args = hosts[m.name]["ansible_ssh_common_args"].split()
            res = subprocess.run(sandbox.controller_argv(["ssh", *args, "-i", str(sandbox.key), "-o", "BatchMode=yes",
                                                          f"root@{m.mgmt}", "true"]),
                                 capture_output=True, text=True, timeout=60)
            assert (res.returncode != 0 and "Host key verification failed" in res.stderr) == refused, (m.name, res.stderr)
        res = subprocess.run(sandbox.controller_argv([METROLAB, "testbed", "provision", str(sandbox.testbed_file)]),
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 3 and "of a1 (" in res.stderr and "differs" in res.stderr, res.stderr[-2000:]
        assert known_hosts(sandbox).read_text() == forged + "\n"  # nothing written
    finally:
        known_hosts(sandbox).write_text(pinned)
    rc, rep = cli(sandbox, "testbed", "check", str(sandbox.testbed_file))
    assert rc == 0 and all(f["level"] == "ok" for f in rep["findings"] if f["check"] == "host key"), rep


def test_lab_up_builds_the_topology_on_the_machines_and_down_leaves_them_as_they_were(sandbox):
    before = lab_state(sandbox)
    rc, up = cli(sandbox, "lab", "up", "--testbed", str(sandbox.testbed_file))
    assert rc == 0 and up["backend"] == "hosts", up
    during = lab_state(sandbox)
    assert ("eth0", "10.1.0.1") in during["a1"][0] and ("main", "10.2.0.0/24") in during["a1"][1]
    assert ("main", "default") not in during["a1"][1] - before["a1"][1]  # the machine's default route is its owner's
    # the WAN's rate on the emulator: TBF without netem, netem's own rate with it (docs/lab.md)
    stage = "netem" if capabilities.probe().has("netem") else "tbf"
    assert {("eth1", stage), ("eth2", stage)} <= {(d, k) for d, k, _ in during["em-wan-ab"][2]}
    ping = subprocess.run(["ip", "netns", "exec", sandbox.ns("a1"), "ping", "-c", "1", "-W", "2", "10.2.0.1"],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr  # across both switches and the emulator's bridge
    res = subprocess.run(sandbox.controller_argv([METROLAB, "lab", "down", "--lab", up["lab"]]),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert lab_state(sandbox) == before


def points(run_dir: Path) -> dict[str, tuple[float, float, float]]:
    """Each point by what it is: its rate as "rate", since auto-scale may still add a factor on one
    backend and not the other (the label carries the scaled rate), the physics being the same."""
    import pandas as pd
    p = pd.read_csv(run_dir / "points.csv")
    return {re.sub(r"[\d.]+ Mbit/s", "rate", r["point"]): (r["efficiency_degradation"], r["ci_low"], r["ci_high"])
            for _, r in p.iterrows()}


def step_times(run_dir: Path) -> dict[str, float]:
    import pandas as pd
    return dict(pd.read_csv(run_dir / "points.csv")[["point", "step_time_s"]].itertuples(index=False))


def test_the_main_job_runs_on_the_testbed_and_agrees_with_the_netns_backend(sandbox, tmp_path):
    before = lab_state(sandbox)
    rc, tb = cli(sandbox, "run", str(SCENARIO), "--testbed", str(sandbox.testbed_file), "--out",
                 str(tmp_path / "testbed"))
    assert rc == 0 and tb["status"] == "pass", tb
    assert lab_state(sandbox) == before  # the lab is undone on success
    res = subprocess.run([METROLAB, "run", str(SCENARIO), "--backend", "netns", "--out", str(tmp_path / "netns"),
                          "--json"], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, METROLAB_NO_PROGRESS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    on_tb, on_ns = points(tmp_path / "testbed"), points(tmp_path / "netns")
    assert set(on_tb) == set(on_ns) and len(on_tb) == 5
    meta = json.loads((tmp_path / "testbed" / "meta.json").read_text())
    assert meta["backend"] == "hosts"
    for point, (d, lo, hi) in on_tb.items():
        nd, nlo, nhi = on_ns[point]
        # the same physics on both backends: each point's 95 % intervals overlap, or the two
        # estimates lie within 0.1 of each other. Three repetitions' interval is itself noisy: three
        # close values give one far narrower than the step's noise (a CI run read the unimpaired
        # point 0.030 [0.001, 0.057] on the testbed, 0.098 [0.079, 0.116] on netns; here the same
        # point reads [-0.18, 0.18]); 0.1 is a fifth of what the half-rate point must show
        assert (lo <= nhi and nlo <= hi) or abs(d - nd) < 0.1, (point, (d, lo, hi), (nd, nlo, nhi))
    # half the WAN's rate: the step time clearly longer on the testbed too (the model: 1.75x; 1.9x
    # measured here). The medians over the blocks, not the paired interval's low end: with three
    # blocks one odd block widens it (a CI run read it at -0.02; here it reads 0.43)
    steps = step_times(tmp_path / "testbed")
    rate = next(p for p in steps if p.endswith("Mbit/s") and "loss" not in p)
    assert steps[rate] > 1.4 * steps[next(p for p in steps if p.startswith("baseline"))], steps


def test_collectives_run_one_rank_per_machine(sandbox):
    rc, res = cli(sandbox, "collectives", "--testbed", str(sandbox.testbed_file), "--collective-backend", "gloo",
                  "--hosts", "a1,b1", "-b", "1k", "-e", "64k", "-f", "8", "-w", "1", "-n", "3")
    assert rc == 0 and res["hosts"] == ["a1", "b1"] and res["nranks"] == 2, res
    assert [r["size"] for r in res["rows"]] == [1024, 8192, 65536]
    assert all(r["oop_wrong"] == 0 and r["oop_busbw_gbs"] > 0 for r in res["rows"]), res["rows"]


def test_ctrl_c_during_a_testbed_run_leaves_the_machines_as_they_were(sandbox, tmp_path):
    before = lab_state(sandbox)
    rc, out = start_and_signal(sandbox, SCENARIO, tmp_path / "run", signal.SIGINT)
    assert rc == 130 and "interrupted" in out, out[-3000:]
    assert lab_state(sandbox) == before
    assert not journals(sandbox)


def test_a_killed_run_is_undone_by_testbed_clean(sandbox, tmp_path):
    before = lab_state(sandbox)
    rc, _ = start_and_signal(sandbox, SCENARIO, tmp_path / "run", signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert lab_state(sandbox) != before  # left behind
    assert journals(sandbox)
    assert {m for m, p in ray_pids(sandbox).items() if p} == ray_machines(sandbox)
    rc, doc = cli(sandbox, "testbed", "clean", str(sandbox.testbed_file))
    assert rc == 0 and doc["ok"] and len(doc["labs"]) == 1, doc
    assert lab_state(sandbox) == before
    assert not journals(sandbox)
    # and what provisioning started: the Ray nodes, stopped by their PID files
    assert {m for m, c in changed(doc).items() if any("Stop the Ray node" in t for t in c)} == ray_machines(sandbox), doc
    assert ray_pids(sandbox) == {m.name: [] for m in sandbox.machines}


def test_a_second_clean_changes_nothing(sandbox):
    rc, again = cli(sandbox, "testbed", "clean", str(sandbox.testbed_file))
    assert rc == 0 and changed(again) == {m.name: [] for m in sandbox.machines}
    assert again["labs"] == []


def test_the_sandbox_commands_build_one_for_a_person_and_remove_it():
    res = subprocess.run([METROLAB, "testbed", "sandbox", "up", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    sb = json.loads(res.stdout)
    try:
        show = subprocess.run([METROLAB, "testbed", "show", sb["testbed"], "--json"], capture_output=True, text=True,
                              timeout=120)
        assert show.returncode == 0 and json.loads(show.stdout)["topology"] == "metro-pair", show.stderr
        ssh = subprocess.run(["ip", "netns", "exec", sb["controller"], "ssh", "-i", str(Path(sb["testbed"]).parent /
                              "id_ed25519"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              "-o", "BatchMode=yes", f"root@{sb['machines']['a1']}", "cat /proc/net/dev"],
                             capture_output=True, text=True, timeout=60)
        assert ssh.returncode == 0 and "eth0" in ssh.stdout  # a1's own interfaces, through its own sshd
    finally:
        down = subprocess.run([METROLAB, "testbed", "sandbox", "down", "--lab", sb["lab"], "--json"],
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and not Path(sb["testbed"]).exists()
    assert not any((NETNS_RUN_DIR / f"{sb['lab']}-{m}").exists() for m in [*sb["machines"], "ctl", "mgmt"])
