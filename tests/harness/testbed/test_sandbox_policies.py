"""Policies on a testbed's switches: the sandbox plays a lab of five servers, two Linux switches,
a SONiC switch and two WAN emulators over ssh (provisioned by ansible, a Ray cluster across all
but the SONiC switch, which is reached over ssh only). The flow-control and load-balancing runs
apply each point's policy on the Linux switch machines (queues on gw-b's port, the ECMP hash and
planned paths on gw-a and gw-b, the controller's flow learning), read the counters back there
into the rows, and leave every machine as it was. The SONiC run writes each point's config_db on
gw-c (its PFC lossless class, its hash) through its management plane, puts the switch's own
tables back after each point, and puts gw-c's counters in the rows; a run killed with a policy in
force on both kinds of switch is undone by `testbed clean` from the journal, and resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest

from metrolab.harness.errors import EXIT_INCONCLUSIVE
from metrolab.harness.kernel.nsctx import NETNS_RUN_DIR
from metrolab.harness.lab.plan import build_plan
from metrolab.harness.policy import sonic_db
from metrolab.harness.scenario.spec import load_scenario
from metrolab.harness.testbed.hosts import machine_plan
from metrolab.harness.testbed.resolve import load_testbed
from metrolab.harness.testbed.sandbox import Sandbox
from tests.support.sonic import config_db, hset, redis
from tests.support.testbed import METROLAB, cli, journals, lab_state, start_and_signal, sysctl

pytestmark = pytest.mark.requires("netns")
HERE = Path(__file__).parent
FLOW_CONTROL = HERE / "flow-control-host.yaml"
LOAD_BALANCING = HERE / "load-balancing-host.yaml"
SONIC = HERE / "sonic-host.yaml"


@pytest.fixture(scope="module")
def sandbox():
    # wan-c stays plain (shaped at gw-b's port): one WAN emulator less, one Ray node less on 2 cores
    sb = Sandbox(load_scenario(str(FLOW_CONTROL)).topology, sonic={"gw-c"}, emulate={"wan-1", "wan-2"})
    sb.up()
    try:
        rc, doc = cli(sb, "testbed", "provision", str(sb.testbed_file))
        assert rc == 0 and doc["ok"], [h for h in doc.get("hosts", []) if not h["ok"]] or doc
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
    # (GSO's segments, fewer than the ~1,100 frames) and dropped. Six flows start at once into
    # 50 Mbit/s from at least 100: their first windows (60 packets) overflow a 16 KiB buffer in
    # every block; 4 MiB holds the whole incast (1.5 MiB), and each flow's own 312 KB queue holds
    # all of that flow (256 KiB)
    assert (by["tail-drop"]["queue_drops"] > 0).all(), by["tail-drop"][["repetition", "queue_drops"]]
    for p in ("deep-buffer", "per-flow"):
        assert (by[p]["queue_drops"] == 0).all() and (by[p]["queue_packets"] > 100).all(), by[p]
    assert by["tail-drop"]["flow_efficiency"].median() < by["deep-buffer"]["flow_efficiency"].median()
    # per-flow queues were built for the flows the controller learned on the switches: the six
    # connections a1-a3 -> b1, each direction (the senders' bytes and the receiver's acks)
    learned = [f for f in flows_learned(tmp_path / "run") if f["policy"] == "per-flow"]
    assert learned and {(f["src"], f["dst"]) for f in learned[0]["flows"] if f["bytes"] > 1 << 17} == {
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
    # carries nothing of it: infinite); four flows planned two to a path split the bytes evenly but
    # for the resends of the drops at b1's congested port, which land on one path or the other
    # (1.01-1.12 read; the scenario's criterion judges the mean). The nearest wrong placement,
    # three flows to one path, reads 3
    assert (imb["ecmp-l3"] > 10).all() and (imb["planned"] < 1.5).all(), imb
    learned = [f for f in flows_learned(tmp_path / "run") if f["policy"] == "planned"]
    placed = [f["links"]["gw-a"] for f in learned[0]["flows"] if f["src"] == "10.1.0.1" and f["bytes"] > 1 << 20]
    assert sorted(placed) == ["wan-1", "wan-1", "wan-2", "wan-2"], learned[0]  # gw-a's plan, two to a path


def test_testbed_check_reads_the_sonic_switchs_management_plane_and_ports(sandbox):
    rc, rep = cli(sandbox, "testbed", "check", str(sandbox.testbed_file))
    assert rc == 0, [f for f in rep["findings"] if f["level"] == "fail"]
    mine = {f["check"]: f for f in rep["findings"] if f["machine"] == "gw-c"}
    assert mine["sonic"]["level"] == "ok" and "ray" not in mine, mine  # ssh only: no Ray node asked for
    ports = {k: f for k, f in mine.items() if k.startswith("port ")}
    assert len(ports) == 2 and all(f["level"] == "ok" and "100 Gb/s" in f["detail"] for f in ports.values()), ports


class Switch:
    """gw-c's Redis, read on its own socket; the test stands in for its ASIC's counting (a real
    switch's counters move by themselves): while it polls, each poll adds to the PFC frames its
    wan-c port sent and the packets c1's lossless queue passed, and records which of metrolab's
    tables CONFIG_DB holds."""

    def __init__(self, sb: Sandbox):
        tb = load_testbed(sb.testbed_file)
        plan = machine_plan(build_plan(tb.topology), tb)
        self.c1_port, self.wan_port = plan.ifaces[("gw-c", "c1-gw-c")].ifname, plan.ifaces[("gw-c", "wan-c")].ifname
        self.where = f"unix:{sb.redis_socket('gw-c')}"
        self.seen: list[tuple] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with redis(self.where, sonic_db.COUNTERS_DB) as r:
            hset(r, "COUNTERS_PORT_NAME_MAP", {self.c1_port: "oid:0x1000000000001", self.wan_port: "oid:0x1000000000002"})
            hset(r, "COUNTERS_QUEUE_NAME_MAP", {f"{self.c1_port}:3": "oid:0x1500000000013"})
            hset(r, "COUNTERS:oid:0x1000000000002", {"SAI_PORT_STAT_PFC_3_TX_PKTS": "0"})
            hset(r, "COUNTERS:oid:0x1500000000013", {"SAI_QUEUE_STAT_PACKETS": "0", "SAI_QUEUE_STAT_DROPPED_PACKETS": "0"})

    def config_db(self) -> dict[str, dict[str, str]]:
        return config_db(self.where)

    def state(self) -> tuple:
        """(PFC on c1's port, SWITCH_HASH's fields): what of metrolab's is in force."""
        db = self.config_db()
        return (db.get(f"PORT_QOS_MAP|{self.c1_port}", {}).get("pfc_enable"),
                db.get("SWITCH_HASH|GLOBAL", {}).get("ecmp_hash@"))

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            state = self.state()
            if not self.seen or self.seen[-1] != state:
                self.seen.append(state)
            with redis(self.where, sonic_db.COUNTERS_DB) as r:
                r.call("HINCRBY", "COUNTERS:oid:0x1000000000002", "SAI_PORT_STAT_PFC_3_TX_PKTS", "1")
                r.call("HINCRBY", "COUNTERS:oid:0x1500000000013", "SAI_QUEUE_STAT_PACKETS", "100")

    def __enter__(self) -> Switch:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()


def test_a_sonic_switch_in_the_run_gets_each_points_config_and_a_killed_run_is_undone_and_resumed(sandbox, tmp_path):
    sw = Switch(sandbox)
    before, own = lab_state(sandbox), sw.config_db()
    assert sw.state() == (None, None)  # the switch's own config: no lossless class on c1's port, its own hash

    def hashing() -> bool:  # ecmp-l3 on both switches: gw-a's sysctl and gw-c's SWITCH_HASH
        return (sysctl(sandbox.ns("gw-a"), "net.ipv4.fib_multipath_hash_policy") == "0"
                and sw.state()[1] == "SRC_IP,DST_IP")

    with sw:
        rc, _ = start_and_signal(sandbox, SONIC, tmp_path / "run", signal.SIGKILL, ready=hashing)
        assert rc == -signal.SIGKILL
        assert lab_state(sandbox) != before and sw.config_db() != own
        (journal,) = journals(sandbox)
        assert "gw-a" in journal.extra["policy"] and "gw-c" in journal.extra["sonic"], journal.extra
        # a new run would take the killed one's hash for the switch's own: refused until it is undone
        res = subprocess.run(sandbox.controller_argv([METROLAB, "run", "--resume", str(tmp_path / "run"), "--testbed",
                                                      str(sandbox.testbed_file)]),
                             capture_output=True, text=True, timeout=300)
        assert res.returncode != 0 and f"lab {journal.lab_id} is still on the machines" in res.stderr, res.stderr
        rc, doc = cli(sandbox, "testbed", "clean", str(sandbox.testbed_file), "--keep-nodes")
        assert rc == 0 and doc["ok"] and len(doc["labs"]) == 1, doc
        assert lab_state(sandbox) == before  # the hash policy back to the role's, the lab gone
        assert sw.config_db() == own  # every key of CONFIG_DB, every field, as the switch had it
        assert not journals(sandbox)
        # the killed run's ranks were stopped too: the resumed one's rendezvous ports are free
        rc, doc = cli(sandbox, "run", "--resume", str(tmp_path / "run"), "--testbed", str(sandbox.testbed_file))
    assert rc in (0, EXIT_INCONCLUSIVE), doc  # no acceptance criteria: the rows are the subject
    assert lab_state(sandbox) == before and sw.config_db() == own
    # one policy at a time on the switch (each point's put back before the next), its own config
    # between them
    assert set(sw.seen) <= {(None, None), ("3,4", None), (None, "SRC_IP,DST_IP")}, sw.seen
    assert ("3,4", None) in sw.seen and (None, None) in sw.seen
    r = rows(tmp_path / "run")
    assert r["flow_efficiency"].notna().all() and r["policy"].value_counts().to_dict() == {
        "none": 2, "pfc": 2, "ecmp-l3": 2}, r[["policy", "repetition"]]
    # gw-c's counters, read there, under the names the namespace lab's pause emulation gives them
    pfc = r[r["policy"] == "pfc"]
    assert (pfc["pause_frames"] > 0).all() and (pfc["congested_packets"] > 0).all(), pfc
    assert (pfc["congested_drops"] == 0).all() and (pfc["congested_loss"] == 0).all()
    assert (pfc["switch_pfc_tx"] == pfc["pause_frames"]).all()  # one switch, one lossless port sending
    assert r[r["policy"] == "none"]["switch_pfc_tx"].isna().all()  # no policy there: nothing of the switch read
