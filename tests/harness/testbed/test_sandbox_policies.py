"""Policies on a testbed's Linux switches: the sandbox plays a lab of five servers, two Linux
switches and two WAN emulators over ssh (provisioned by ansible, a Ray cluster across it). The
flow-control and load-balancing runs apply each point's policy on the switch machines (queues on
gw-b's port, the ECMP hash and planned paths on gw-a and gw-b, the controller's flow learning),
read the counters back there into the rows, and leave every machine as it was; a run killed with
a policy in force is undone by `testbed clean` from the journal."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import EXIT_INCONCLUSIVE
from harness.lab.nsctx import NETNS_RUN_DIR
from harness.lab.state import all_states
from harness.scenario.spec import load_scenario
from harness.testbed.sandbox import Sandbox
from tests.support.testbed import cli, lab_state, start_and_signal, sysctl

pytestmark = pytest.mark.lab
HERE = Path(__file__).parent
FLOW_CONTROL = HERE / "flow-control-host.yaml"
LOAD_BALANCING = HERE / "load-balancing-host.yaml"


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox(load_scenario(str(FLOW_CONTROL)).topology)
    sb.up()
    try:
        rc, doc = cli(sb, "testbed", "provision", str(sb.testbed_file))
        assert rc == 0 and doc["ok"], doc
        yield sb
    finally:
        sb.down()
    assert not any((NETNS_RUN_DIR / ns).exists() for ns in sb.state.namespaces)


def rows(run_dir: Path) -> pd.DataFrame:
    r = pd.read_parquet(run_dir / "results.parquet")
    return r[r["status"] == "ok"]


def flows_learned(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "flows.jsonl").read_text().splitlines()]


def test_flow_control_queues_are_built_on_the_switch_and_counted_there(sandbox, tmp_path):
    before = lab_state(sandbox)
    rc, doc = cli(sandbox, "run", str(FLOW_CONTROL), "--testbed", str(sandbox.testbed_file), "--out",
                  str(tmp_path / "run"))
    # lossless is a pass only on enough packets (a Clopper-Pearson bound): a quick run's few
    # thousand leave it inconclusive, never failed
    assert (rc, doc["status"]) in ((0, "pass"), (EXIT_INCONCLUSIVE, "inconclusive")), doc
    assert lab_state(sandbox) == before  # every policy and the lab undone on every machine
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["backend"] == "hosts"
    r = rows(tmp_path / "run")
    by = {p: g for p, g in r.groupby("policy")}
    assert set(by) >= {"tail-drop", "deep-buffer", "per-flow"} and all(len(g) == 2 for p, g in by.items()
                                                                       if p != "none"), r["policy"].value_counts()
    # the counters come from gw-b's port (and b1's), read on those machines: what the queue sent
    # (GSO's segments, fewer than the ~2,100 frames) and dropped. Six flows start at once into
    # 50 Mbit/s from at least 100: their first windows (60 packets) overflow a 16 KiB buffer in
    # every block; 4 MiB holds the whole incast (3 MiB), and a queue per flow does too
    assert (by["tail-drop"]["queue_drops"] > 0).all(), by["tail-drop"][["repetition", "queue_drops"]]
    for p in ("deep-buffer", "per-flow"):
        assert (by[p]["queue_drops"] == 0).all() and (by[p]["queue_packets"] > 100).all(), by[p]
    assert by["tail-drop"]["flow_efficiency"].median() < by["deep-buffer"]["flow_efficiency"].median()
    # per-flow queues were built for the flows the controller learned on the switches: the six
    # connections a1-a3 -> b1, each direction (the senders' bytes and the receiver's acks)
    learned = [f for f in flows_learned(tmp_path / "run") if f["policy"] == "per-flow"]
    assert learned and {(f["src"], f["dst"]) for f in learned[0]["flows"] if f["bytes"] > 1 << 20} == {
        (f"10.1.0.{i}", "10.2.0.1") for i in (1, 2, 3)}, learned[0]


def test_load_balancing_hash_and_planned_paths_are_set_on_the_switches(sandbox, tmp_path):
    before = lab_state(sandbox)
    rc, doc = cli(sandbox, "run", str(LOAD_BALANCING), "--testbed", str(sandbox.testbed_file), "--out",
                  str(tmp_path / "run"))
    # two blocks: a planned block reads 1.01 and the next 1.08 (a testbed run), whose interval at
    # one degree of freedom straddles 1.10; what each block must show is asserted below
    assert (rc, doc["status"]) in ((0, "pass"), (EXIT_INCONCLUSIVE, "inconclusive")), doc
    assert lab_state(sandbox) == before
    r = rows(tmp_path / "run")
    imb = {p: g["path_imbalance"] for p, g in r.groupby("policy")}
    # the mechanism, in every block: one address pair hashed over L3 takes one path (the other
    # carries nothing of it: infinite); four flows planned two to a path split the bytes evenly
    assert (imb["ecmp-l3"] > 10).all() and (imb["planned"] <= 1.10).all(), imb
    learned = [f for f in flows_learned(tmp_path / "run") if f["policy"] == "planned"]
    placed = [f["links"]["gw-a"] for f in learned[0]["flows"] if f["src"] == "10.1.0.1" and f["bytes"] > 1 << 20]
    assert sorted(placed) == ["wan-1", "wan-1", "wan-2", "wan-2"], learned[0]  # gw-a's plan, two to a path


def test_a_killed_run_with_a_policy_in_force_is_undone_by_testbed_clean(sandbox, tmp_path):
    before = lab_state(sandbox)
    assert sysctl(sandbox.ns("gw-a"), "net.ipv4.fib_multipath_hash_policy") == "1"  # the linux-switch role's

    def policy_in_force() -> bool:  # the L3 hash set, or planned paths' rules installed, on gw-a
        rules = subprocess.run(["ip", "-n", sandbox.ns("gw-a"), "rule"], capture_output=True, text=True).stdout
        return sysctl(sandbox.ns("gw-a"), "net.ipv4.fib_multipath_hash_policy") == "0" or "1000:" in rules

    rc, _ = start_and_signal(sandbox, LOAD_BALANCING, tmp_path / "run", signal.SIGKILL, ready=policy_in_force)
    assert rc == -signal.SIGKILL
    assert lab_state(sandbox) != before
    journal = next(s for s in all_states() if s.backend == "hosts")
    assert "gw-a" in journal.extra["policy"], journal.extra.get("policy")
    rc, doc = cli(sandbox, "testbed", "clean", str(sandbox.testbed_file))
    assert rc == 0 and doc["ok"] and len(doc["labs"]) == 1, doc
    assert lab_state(sandbox) == before  # the hash policy back to the role's, rules and tables gone
    assert not any(s.backend == "hosts" for s in all_states())
