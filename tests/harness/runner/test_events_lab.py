"""Network events during a measurement, on the host's namespaces: links cut and restored under
ECMP, everything put back whatever the steps did, and a training step's outage charged to the
steps it overlapped (metrolab.harness.runner.events, metrolab.harness.scenario.events)."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from metrolab.harness.policy.apply import PolicyApplier
from metrolab.harness.policy.model import LoadBalancing, PolicySpec
from metrolab.harness.policy.planner import Flow
from metrolab.harness.runner.events import EventPlayer
from metrolab.harness.runner.run import run_scenario
from metrolab.harness.scenario.events import EventSpec
from metrolab.harness.scenario.spec import scenario_from_data
from metrolab.netem.profile import Impairment
from tests.support.labs import in_ns, two_paths

pytestmark = pytest.mark.requires("netns")

TOPO = two_paths()  # a1 -- gw-a == two 100 Mbit/s paths (ECMP) == gw-b -- b1


def network_state(lab) -> dict:
    """What a cut and a restore could disturb, read back with the real tools: routes (with their
    dead/linkdown flags), addresses, permanent neighbours, link states, qdiscs, nftables (loss)."""
    out = {}
    for node in lab.topology.nodes:
        got = {}
        for what, cmd in {"routes4": ["ip", "-j", "-4", "route"], "routes6": ["ip", "-j", "-6", "route"],
                          "addrs": ["ip", "-j", "addr"], "neigh": ["ip", "-j", "neigh", "show", "nud", "permanent"],
                          "qdiscs": ["tc", "-j", "qdisc", "show"], "nft": ["nft", "-j", "list", "ruleset"]}.items():
            res = in_ns(lab, node, *cmd)
            assert res.returncode == 0, res.stderr
            rows = json.loads(res.stdout or "[]")
            if what == "nft":
                rows = rows.get("nftables", []) if isinstance(rows, dict) else rows
                rows = [r for r in rows if "metainfo" not in r]
            if what == "addrs":  # counters and timers move; the addresses and states must not
                rows = [{"ifname": r["ifname"], "operstate": r.get("operstate"),
                         "addr": sorted(a["local"] for a in r.get("addr_info", []))} for r in rows]
            got[what] = sorted(json.dumps(r, sort_keys=True) for r in rows)
        out[node] = got
    return out


def ping(lab, src: str, dst: str, count: int = 1) -> bool:
    addr = str(lab.topology.nodes[dst].address)
    return in_ns(lab, src, "ping", "-c", str(count), "-i", "0.2", "-W", "1", addr).returncode == 0


@pytest.fixture(scope="module")
def lab(module_labs):
    return module_labs(TOPO)


def bases(lab) -> dict[str, Impairment]:
    return {lk.name: lk.impairment(lab.topology.group_index) for lk in lab.topology.links}


def test_one_path_down_ecmp_carries_on_both_down_is_a_cut_and_all_comes_back(lab):
    before = network_state(lab)
    seen: dict[str, bool] = {}

    def work() -> str:
        time.sleep(0.3)
        seen["one path down"] = ping(lab, "a1", "b1", count=3)   # wan-1 down since 0.1 s
        time.sleep(max(0.0, 1.2 - (time.monotonic() - t0)))
        seen["both down"] = ping(lab, "a1", "b1")                # wan-2 too, since 1.0 s
        time.sleep(max(0.0, 2.6 - (time.monotonic() - t0)))
        seen["restored"] = ping(lab, "a1", "b1")                 # both back at 2.5 s
        return "done"

    events = [EventSpec(kind="link-down", link="wan-1", at=0.1, duration=2.4),
              EventSpec(kind="link-down", link="wan-2", at=1.0, duration=1.5)]
    t0 = time.monotonic()
    result, applied = EventPlayer(lab, events, bases(lab), 1.0, lab.topology.group_index).run(work)
    assert result == "done" and seen == {"one path down": True, "both down": False, "restored": True}, seen
    # in force from the change to the end of its undo: as long as asked, or up to a few undos longer
    # (each is the loss taken off both ends and the routes put back: ~0.1 s here)
    assert [a.window.event for a in applied] == [0, 1], applied
    assert all(want - 0.05 < a.end - a.start < want + 0.4 for a, want in zip(applied, (2.4, 1.5))), applied
    assert network_state(lab) == before


def test_whatever_the_steps_do_every_change_goes_back(lab):
    before = network_state(lab)
    events = [EventSpec(kind="flap", link="wan-1", at=0.05, period=0.2, count=3),
              EventSpec(kind="loss", link="wan-2", at=0.1, loss=0.5),          # to the end
              EventSpec(kind="rate", link="wan-2", at=0.2, rate="10mbit"),     # to the end
              EventSpec(kind="node-down", node="gw-b", at=0.3, duration=5)]    # past the end

    def work():
        # mid-flight: once all six changes are made (the player runs late when the machine is busy:
        # the node went down 0.38 s after its planned 0.3 s here, after a fixed 0.45 s wait's ping)
        deadline = time.monotonic() + 20
        while not (len(player.applied) == 6 and player.applied[-1].apply_s > 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        mid["state"] = network_state(lab)  # the node is down, wan-2 lossy and slow
        mid["ping"] = ping(lab, "a1", "b1")
        raise RuntimeError("a rank died")

    mid: dict = {}

    player = EventPlayer(lab, events, bases(lab), 1.0, lab.topology.group_index)
    with pytest.raises(RuntimeError, match="a rank died"):
        player.run(work)
    assert mid["ping"] is False and mid["state"] != before
    assert mid["state"]["gw-a"]["qdiscs"] != before["gw-a"]["qdiscs"]  # the rate
    # three flaps, the loss, the rate, the node: all begun before the rank failed, all undone
    assert all(a.end is not None for a in player.applied) and len(player.applied) == 6, player.applied
    assert network_state(lab) == before and ping(lab, "a1", "b1")


def planned_links(lab, flows: list[Flow]) -> dict[int, str]:
    """Where gw-a forwards each flow from a1 (the kernel's own lookup, rules included): sport -> link."""
    iif = next(e.ifname for e in lab.plan.ends("a1-gw-a") if e.node == "gw-a")
    by_dev = {i.ifname: i.link for i in lab.plan.ifaces_of("gw-a")}
    out = {}
    for f in flows:
        res = in_ns(lab, "gw-a", "ip", "-j", "route", "get", f.dst, "from", f.src, "iif", iif, "ipproto", "tcp",
                    "sport", str(f.sport), "dport", str(f.dport))
        assert res.returncode == 0, res.stderr
        out[f.sport] = by_dev[json.loads(res.stdout)[0]["dev"]]
    return out


def test_planned_paths_leave_a_dead_link_and_come_back_as_planned(lab):
    a1, b1 = (str(lab.topology.nodes[h].address) for h in ("a1", "b1"))
    flows = [Flow(a1, b1, 41000 + i, 5201, bytes=1 << 20) for i in range(4)]
    applier = PolicyApplier(lab)
    applier.apply(PolicySpec(name="planned", switches=["gw-a"], load_balancing=LoadBalancing(kind="planned")),
                  flows=flows)
    try:
        planned = planned_links(lab, flows)
        assert sorted(planned.values()) == ["wan-1", "wan-1", "wan-2", "wan-2"], planned  # 2:2
        seen = {}

        def work() -> None:
            time.sleep(0.4)
            seen["down"] = planned_links(lab, flows)

        player = EventPlayer(lab, [EventSpec(kind="link-down", link="wan-1", at=0.1, duration=1.0)], bases(lab), 1.0,
                             lab.topology.group_index, on_links=applier.replan)
        player.run(work)
        assert set(seen["down"].values()) == {"wan-2"}, seen
        assert [r["down"] for r in player.replans] == [["wan-1"], []], player.replans
        assert all(0 < r["seconds"] < 1 for r in player.replans)
        assert planned_links(lab, flows) == planned  # the same plan, not the switch's hash
        # no controller: the flows pinned to the cut link still point at it (they are lost there)
        player = EventPlayer(lab, [EventSpec(kind="link-down", link="wan-1", at=0.1, duration=1.0)], bases(lab), 1.0,
                             lab.topology.group_index)
        player.run(work)
        assert seen["down"] == planned and not player.replans, seen
    finally:
        applier.clear()


def test_an_outage_is_charged_to_the_steps_it_overlaps(tmp_path):
    """Both paths cut for 1.2 s in the middle of a training step's repetition: the steps that
    overlap it are the slow ones (TCP waits out the cut and its retransmission timer), those before
    it set the steady state, and the second block finds the network as it was."""
    outage = 1.2
    data = {"name": "cut", "topology": TOPO,
            "workloads": [{"kind": "training-step", "hosts": ["a1", "b1"],
                           "params": {"backend": "gloo", "model": "gpt2-small", "micro_batches": 12,
                                      "bucket_size": "100m", "iters": 10}}],
            # the host kernel has no delay line: the point is the baseline's network, with the cut
            "sweep": {"links": ["wan-1", "wan-2"], "convergence": [1]}, "repetitions": 2, "warmups": 1,
            "scale": 1000,
            "events": [{"kind": "link-down", "link": "wan-1", "at": "1s", "duration": f"{outage}s"},
                       {"kind": "link-down", "link": "wan-2", "at": "1s", "duration": f"{outage}s"}]}
    scn = scenario_from_data(data, "cut.yaml", quick=True)
    out = run_scenario(scn, tmp_path / "run")
    assert not out.verdict.failed_points, [(p.label, p.error) for p in out.verdict.failed_points]
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    cut, base = rows[~rows["baseline"]], rows[rows["baseline"]]
    assert len(cut) == 2 and len(base) == 2 and base["event_steps"].isna().all()
    recs = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert len(recs) == 2
    for rec in recs:
        steps = [b - a for a, b in rec["steps"]]
        assert len(steps) == 10 and len(rec["applied"]) == 2
        start = min(a["start"] for a in rec["applied"])
        # in force as long as asked, or a little longer: applying a cut and undoing it take tens of
        # ms each, and the player's thread wakes late when the machine is busy (0.2 s seen)
        assert all(outage - 0.05 < a["end"] - a["start"] < outage + 0.4 for a in rec["applied"]), rec["applied"]
        # nothing crosses a cut: the step in flight waits it out (less what it had done before)
        assert rec["event_step_max_s"] >= 0.6 * outage, rec
        assert rec["steady_steps"] >= 1 and rec["zero_impact"] == 0.0 and rec["slow_steps"] >= 1, rec
        # a step far slower than the steady state is one the cut overlapped, never another
        for d, touched in zip(steps, rec["per_step"]):
            if d > 0.5 * outage:
                assert touched, (steps, rec["per_step"])
        assert all(d < 0.5 * outage for (a, b), d in zip(rec["steps"], steps) if b <= start), steps
    # the rows carry the same figures; the second block ran on the restored network
    assert (cut["event_steps"] >= 1).all() and (cut["zero_impact"] == 0).all()
    b1, b2 = base.sort_values("block")["step_time_s"]
    assert b2 < 1.5 * b1, (b1, b2)


def test_a_cut_holds_the_requests_in_flight_and_decodes_them_right(tmp_path):
    """PD inference through the same cut: the requests whose KV cache had to cross it are the slow
    ones, and every request still decodes the tokens one host would.

    A request every 0.125 s for 6 s, from a request trace: Poisson arrivals (8 a second) once left
    the cut's first 0.82 s empty (e^-4 = 1.8 % of runs leave its first half empty) and the slowest
    request waited 0.28 s of the 1 s outage. Evenly spaced, some request arrives within 0.125 s of
    the cut's start; 48 of them leave requests after the backlog to recover on."""
    outage = 1.0
    trace = tmp_path / "every-125ms.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i * 0.125},64,16\n" for i in range(48)))
    data = {"name": "pd-cut", "topology": TOPO,
            "workloads": [{"kind": "pd-inference", "hosts": ["a1", "b1"],
                           "params": {"backend": "gloo", "model": "tiny", "request_trace": str(trace),
                                      "requests": 48}}],
            "sweep": {"links": ["wan-1", "wan-2"], "convergence": [1]}, "repetitions": 1, "warmups": 1,
            "events": [{"kind": "link-down", "link": "wan-1", "at": "1500ms", "duration": f"{outage}s"},
                       {"kind": "link-down", "link": "wan-2", "at": "1500ms", "duration": f"{outage}s"}]}
    out = run_scenario(scenario_from_data(data, "pd-cut.yaml", quick=True), tmp_path / "run")
    assert not out.verdict.failed_points, [(p.label, p.error) for p in out.verdict.failed_points]
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert (rows["token_mismatches"] == 0).all()
    (rec,) = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    e2e = [b - a for a, b in rec["steps"]]
    assert len(e2e) == 48 and rec["steady_steps"] >= 1 and rec["zero_impact"] == 0.0, rec
    # a request held by the cut waits out most of it; none before it was slow, and the service came
    # back within the repetition (requests queued behind the held ones are its recovery)
    assert rec["event_step_max_s"] >= 0.5 * outage, e2e
    start = min(a["start"] for a in rec["applied"])
    # and none that arrived while both paths were down came back before one of them was up again
    # (its KV cache has to cross): the cut ends when its undo begins, at the latest
    down, up = max(a["start"] + a["apply_s"] for a in rec["applied"]), min(a["end"] - a["undo_s"] for a in rec["applied"])
    held = [(a, b) for a, b in rec["steps"] if down <= a < up]
    assert held and all(b >= up for a, b in held), (down, up, held)
    assert all(b - a < 0.5 * outage for a, b in rec["steps"] if b <= start), e2e
    assert rec["recovery_steps"] is not None, rec
