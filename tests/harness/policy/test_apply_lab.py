"""Policies applied to a netns lab on the host kernel (nftables)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from metrolab.harness.kernel import sh
from metrolab.harness.policy.apply import PolicyApplier
from metrolab.harness.policy.model import Allow, PolicySpec
from metrolab.harness.runner.transport_counts import tcp_stack_counters
from metrolab.workloads.elephants import await_ready, go
from tests.support.labs import in_ns, metro, rdma_sites, site, two_paths

pytestmark = pytest.mark.requires("netns")

SERVER = """
import socket, sys
s = socket.create_server(("0.0.0.0", int(sys.argv[1])))
while True:
    c, _ = s.accept()
    c.sendall(b"ok")
    c.close()
"""
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5) as c:
        print(c.recv(2).decode())
except OSError as exc:
    print(type(exc).__name__)
"""


def connects(lab, src: str, dst: str, port: int) -> bool:
    out = in_ns(lab, src, sys.executable, "-c", CLIENT, str(lab.topology.nodes[dst].address), str(port))
    return out.stdout.strip() == "ok"


def test_allow_list_admits_named_pairs_and_drops_the_rest(lab_factory):
    lab = lab_factory(rdma_sites((2, 1), rdma=False))
    servers = [sh.popen([sys.executable, "-c", SERVER, str(p)], netns=lab.ns("b1"), stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL) for p in (29500, 29600)]
    try:
        time.sleep(1.0)
        assert connects(lab, "a2", "b1", 29500) and connects(lab, "a1", "b1", 29600)  # open before
        applier = PolicyApplier(lab)
        applier.apply(PolicySpec(name="agents", allow=[Allow(a="a1", b="b1", ports=[29500], proto="tcp")]))
        assert connects(lab, "a1", "b1", 29500)            # the named pair and port
        assert not connects(lab, "a1", "b1", 29600)        # another port of the same pair
        assert not connects(lab, "a2", "b1", 29500)        # a pair not on the list
        applier.apply(None)                                # switching the policy off leaves nothing
        assert connects(lab, "a2", "b1", 29500)
        listed = in_ns(lab, "b1", "nft", "list", "tables").stdout
        assert "metrolab_acl" not in listed
    finally:
        for s in servers:
            s.kill()
            s.wait()


TWO_PATHS = two_paths()


def elephants(lab, flows: int = 8, size: str = "2m", port: int = 5201) -> dict[str, int]:
    """Run synchronized elephants a1 -> b1; bytes each WAN link carried from gw-a."""
    import json

    from metrolab.harness.kernel.counters import if_counters
    ends = {lk: lab.plan.ends(lk)[0] for lk in ("wan-1", "wan-2")}
    before = {lk: if_counters(lab.handle("gw-a"), e.ifname)["tx_bytes"] for lk, e in ends.items()}
    rx = sh.popen([sys.executable, "-m", "metrolab.workloads.elephants", "recv", "--port", str(port), "--flows",
                   str(flows)], netns=lab.ns("b1"), stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    tx = in_ns(lab, "a1", sys.executable, "-m", "metrolab.workloads.elephants", "send", "--dst",
               str(lab.topology.nodes["b1"].address), "--port", str(port), "--flows", str(flows), "--bytes", size,
               timeout=120)
    assert tx.returncode == 0, tx.stderr
    out, _ = rx.communicate(timeout=120)
    got = json.loads(out)["flows"]
    assert len(got) == flows and all(f["bytes"] > 0 for f in got.values())
    return {lk: if_counters(lab.handle("gw-a"), e.ifname)["tx_bytes"] - before[lk] for lk, e in ends.items()}


def test_l4_hash_spreads_elephants_better_than_l3_and_planned_paths_balance_them(lab_factory):
    from metrolab.harness.policy import ecmp
    from metrolab.harness.policy.planner import Flow, imbalance, plan
    lab = lab_factory(TWO_PATHS)
    ecmp.set_hash(lab, ["gw-a", "gw-b"], "l3")
    l3 = imbalance(elephants(lab, port=5201))
    ecmp.set_hash(lab, ["gw-a", "gw-b"], "l4")
    # L4 hashes each connection at random: one draw puts all 8 flows on one path with p = 2/256,
    # the better of two fresh draws with p = 6e-5
    l4 = min(imbalance(elephants(lab, port=5202)), imbalance(elephants(lab, port=5204)))
    a1, b1 = str(lab.topology.nodes["a1"].address), str(lab.topology.nodes["b1"].address)
    flows = [Flow(a1, b1, 41000 + i, 5203, 6, 2 << 20) for i in range(8)]
    inst = ecmp.install_planned(lab, "gw-a", flows, plan(flows, ["wan-1", "wan-2"]))
    try:
        planned = imbalance(elephants(lab, port=5203))
    finally:
        ecmp.remove_planned(lab, inst)
    assert l3 > 10 and l4 < l3, (l3, l4)   # one address pair: L3 puts every flow on one path
    assert planned <= 1.05, planned
    assert not lab.handle("gw-a").get_rules(priority=ecmp.RULE_PRIORITY)  # nothing left behind


THREE_HOSTS = metro(site("aidc-a", "a1", "a2", "a3"), site("aidc-b", "b1"), wan={"wan": ("gw-a", "gw-b")}, name="slices",
                    rate="100mbit")


def flows_at_once(lab, senders: list[tuple[str, list[str]]], port: int) -> dict[str, float]:
    """Start every sender (host, extra args) at once towards b1; returns each host's goodput (bit/s)."""
    import json
    total = sum(int(args[args.index("--flows") + 1]) for _, args in senders)
    rx = sh.popen([sys.executable, "-m", "metrolab.workloads.elephants", "recv", "--port", str(port), "--flows",
                   str(total)], netns=lab.ns("b1"), stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    # each sender connects, then waits for its word: they start sending together, however long each
    # took to start (a sender that started alone had the link to itself meanwhile: a suite run read
    # the single flow at 40 Mbit/s against six, a seventh of 100 being 14)
    procs = {h: sh.popen([sys.executable, "-m", "metrolab.workloads.elephants", "send", "--dst",
                          str(lab.topology.nodes["b1"].address), "--port", str(port), *args, "--wait-go"],
                         netns=lab.ns(h), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True) for h, args in senders}
    await_ready(list(procs.values()))
    for p in procs.values():
        go(p)
    for p in procs.values():
        p.communicate(timeout=120)
    out, _ = rx.communicate(timeout=120)
    flows = json.loads(out)["flows"]
    rates: dict[str, float] = {}
    for h, args in senders:
        base, n = int(args[args.index("--sport") + 1]), int(args[args.index("--flows") + 1])
        mine = [flows[str(base + i)] for i in range(n)]
        rates[h] = sum(f["bytes"] for f in mine) * 8 / max(f["fct_s"] for f in mine)
    return rates


def test_a_tenant_slice_keeps_its_guaranteed_rate_while_another_floods(lab_factory):
    from metrolab.harness.policy.model import PolicySpec, Slice
    lab = lab_factory(THREE_HOSTS)
    train = ["--flows", "1", "--seconds", "4", "--sport", "42000", "--tos", str(26 << 2)]
    flood = ["--flows", "6", "--seconds", "4", "--sport", "43000"]
    without = flows_at_once(lab, [("a1", train), ("a2", flood)], 5301)
    applier = PolicyApplier(lab)
    applier.apply(PolicySpec(name="tenants", links=["wan"], slices=[
        Slice(name="train", dscp=26, guaranteed=60e6, ceiling=100e6),
        Slice(name="bulk", source="a2", guaranteed=20e6)]))
    try:
        sliced = flows_at_once(lab, [("a1", train), ("a2", flood)], 5302)
    finally:
        applier.apply(None)
    # one flow against six: without slices it gets about a seventh of the link
    assert without["a1"] < 40e6, without
    assert sliced["a1"] >= 0.85 * 60e6, sliced
    assert sliced["a2"] >= 0.85 * 20e6, sliced


def control_rtts_under_flood(lab, port: int) -> list[float]:
    """Round trips (s) of small DSCP 46 messages a1 -> b1 while a2 floods b1 with 6 TCP flows."""
    import json
    import re
    rx = sh.popen([sys.executable, "-m", "metrolab.workloads.elephants", "recv", "--port", str(port), "--flows", "6"],
                  netns=lab.ns("b1"), stdout=subprocess.PIPE, text=True)
    tx = sh.popen([sys.executable, "-m", "metrolab.workloads.elephants", "send", "--dst", str(lab.topology.nodes["b1"].address),
                   "--port", str(port), "--flows", "6", "--seconds", "5", "--sport", "46000"],
                  netns=lab.ns("a2"), stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)  # the flows have filled the queue
        ping = sh.run(["ping", "-n", "-Q", str(46 << 2), "-c", "10", "-i", "0.1", "-s", "64",
                       str(lab.topology.nodes["b1"].address)], netns=lab.ns("a1"), check=False)
    finally:
        tx.communicate(timeout=120)
        out, _ = rx.communicate(timeout=120)
    assert json.loads(out)["flows"], out  # the flood ran
    rtts = [float(m) / 1e3 for m in re.findall(r"time=([0-9.]+) ms", ping.stdout)]
    assert len(rtts) >= 8, ping.stdout + ping.stderr
    return rtts


def test_a_strict_slice_carries_control_messages_past_a_deep_buffers_backlog(lab_factory):
    """White paper 4.3.3: large buffers absorb the bulk's bursts, priority scheduling keeps the
    control messages timely. Behind a deep buffer's backlog a small message waits the queue's
    depth; in a strict slice it does not."""
    import statistics

    from metrolab.harness.policy.model import FlowControl, PolicySpec, Slice
    lab = lab_factory(THREE_HOSTS)
    applier = PolicyApplier(lab)
    deep = FlowControl(kind="deep-buffer")
    rtt = {}
    try:
        applier.apply(PolicySpec(name="deep", links=["wan"], flow_control=deep))
        rtt["deep"] = statistics.median(control_rtts_under_flood(lab, 5350))
        applier.apply(PolicySpec(name="deep-prio", links=["wan"], flow_control=deep, slices=[
            Slice(name="control", dscp=46, guaranteed=2e6, strict=True)]))
        rtt["prio"] = statistics.median(control_rtts_under_flood(lab, 5351))
    finally:
        applier.apply(None)
    # 6 TCP flows keep a standing queue in the deep buffer (their windows, not its 4 MiB, bound it:
    # 12 ms here); the strict class is served first at every dequeue, so its messages see the lab's
    # own hops only (0.07 ms here)
    assert rtt["deep"] > 0.005, rtt
    assert rtt["prio"] < 0.1 * rtt["deep"], rtt


def test_deep_buffer_removes_the_tail_drops_of_a_shallow_one_under_incast(lab_factory):
    from metrolab.harness.policy.model import FlowControl, PolicySpec
    from metrolab.netem.tree import counts, read_tree
    lab = lab_factory(THREE_HOSTS)
    end = lab.plan.ends("wan")[0]  # gw-a's side: the incast towards b1 queues here
    applier = PolicyApplier(lab)
    senders = tcp_stack_counters(lab, ["a1", "a2", "a3"])  # read in each sender's namespace
    drops, resent = {}, {}
    for i, kind in enumerate(("tail-drop", "deep-buffer")):
        applier.apply(PolicySpec(name=kind, links=["wan"], flow_control=FlowControl(kind=kind)))
        before, stacks = counts(read_tree(lab.handle("gw-a"), lab.ns("gw-a"), end.ifname))[1], senders.read()
        burst = ["--flows", "4", "--bytes", "96k"]
        flows_at_once(lab, [(h, burst + ["--sport", str(44000 + 100 * j)]) for j, h in
                            enumerate(("a1", "a2", "a3"))], 5400 + i)
        drops[kind] = counts(read_tree(lab.handle("gw-a"), lab.ns("gw-a"), end.ifname))[1] - before
        resent[kind] = senders.metrics(stacks, senders.read())
    applier.apply(None)
    assert drops["tail-drop"] > 0 and drops["deep-buffer"] == 0, drops
    # every segment the queue dropped was the senders' data (b1's ACKs leave by the other side), and
    # the flows finished: each was sent again, so the senders' stacks count at least that many
    tail = resent["tail-drop"]
    assert tail["tcp_retrans_segs"] >= drops["tail-drop"], (tail, drops)
    # and sent the bursts' data once besides (segments of an MTU at most)
    assert tail["tcp_sent_segs"] - tail["tcp_retrans_segs"] >= 3 * 4 * 96 * 1024 / 1500, tail


def test_switching_policies_leaves_nothing_stale(lab_factory):
    """Slices + allow-list + planned paths, then a deep buffer, then none: after each switch only
    what the policy in force needs is there (qdiscs, classes, rules, tables, nft)."""
    from metrolab.harness.policy import ecmp
    from metrolab.harness.policy.model import FlowControl, LoadBalancing, PolicySpec, Slice
    from metrolab.harness.policy.planner import Flow
    lab = lab_factory(TWO_PATHS)
    a1, b1 = str(lab.topology.nodes["a1"].address), str(lab.topology.nodes["b1"].address)
    flows = [Flow(a1, b1, 45000 + i, 5500, 6, 1 << 20) for i in range(4)]
    busy = PolicySpec(name="busy", links=["wan-1", "wan-2"], switches=["gw-a"],
                      slices=[Slice(name="t", dscp=26, guaranteed=50e6)],
                      load_balancing=LoadBalancing(kind="planned"),
                      allow=[Allow(a="a1", b="b1")])
    applier = PolicyApplier(lab)

    def state():
        h = lab.handle("gw-a")
        idx = h.link_lookup(ifname=lab.plan.ends("wan-1")[0].ifname)[0]
        return {"qdiscs": sorted(q.get_attr("TCA_KIND") for q in h.get_qdiscs(idx)),
                "classes": len(h.get_classes(idx)),
                "rules": len([r for r in h.get_rules() if r.get_attr("FRA_PRIORITY") and
                              ecmp.RULE_PRIORITY <= r.get_attr("FRA_PRIORITY") < ecmp.RULE_PRIORITY + 1000]),
                "nft": "metrolab_acl" in in_ns(lab, "b1", "nft", "list", "tables").stdout}
    plain = state()
    applier.apply(busy, flows=flows)
    s = state()
    assert "htb" in s["qdiscs"] and s["classes"] >= 3 and s["rules"] == 4 and s["nft"], s
    applier.apply(PolicySpec(name="deep", links=["wan-1"], flow_control=FlowControl(kind="deep-buffer")))
    s = state()
    assert s == plain, (s, plain)  # the deep buffer changes a TBF limit only: the same tree as without a policy
    applier.apply(None)
    assert state() == plain


@pytest.mark.requires("srv6")  # the seg6 lightweight tunnel: some host kernels lack it
def test_planned_paths_in_srv6_balance_elephants_and_carry_them_encapsulated(lab_factory):
    """Planned paths as SRv6: each flow leaves gw-a in IPv6 towards a segment only its planned link
    leads to (seen on the wire: an SRH, the IPv4 flow inside), gw-b decapsulates (End.DX4)."""
    import threading

    from scapy.all import IPv6, IPv6ExtHdrSegmentRouting, sniff
    from scapy.layers.inet import IP

    from metrolab.harness.kernel.nsctx import in_netns
    from metrolab.harness.policy import ecmp
    from metrolab.harness.policy.planner import Flow, imbalance, plan
    spec = {**TWO_PATHS, "links": [dict(lk, mtu=1600) for lk in TWO_PATHS["links"]]}
    lab = lab_factory(spec)
    a1, b1 = str(lab.topology.nodes["a1"].address), str(lab.topology.nodes["b1"].address)
    flows = [Flow(a1, b1, 41000 + i, 5211, 6, 2 << 20) for i in range(8)]
    inst = ecmp.install_planned(lab, "gw-a", flows, plan(flows, ["wan-1", "wan-2"]), encap="srv6")
    seen = []
    far_if = lab.plan.ends("wan-1")[1].ifname

    def capture():
        with in_netns(lab.ns("gw-b")):
            seen.extend(sniff(iface=far_if, count=5, timeout=20, lfilter=lambda p: p.haslayer(IPv6)))
    t = threading.Thread(target=capture)
    t.start()
    time.sleep(0.5)
    try:
        balance = imbalance(elephants(lab, port=5211))
    finally:
        ecmp.remove_planned(lab, inst)
    t.join()
    assert balance <= 1.05, balance
    pkt = next(p for p in seen if p.haslayer(IPv6ExtHdrSegmentRouting))
    assert str(pkt[IPv6].dst).startswith("fc00:") and pkt[IP].dst == b1, pkt.summary()
    left = [r for node in ("gw-a", "gw-b") for r in lab.handle(node).get_routes(family=10)
            if str(r.get_attr("RTA_DST") or "").startswith("fc00:")]
    assert not left and not lab.handle("gw-a").get_rules(priority=ecmp.RULE_PRIORITY)  # nothing left behind


def test_srv6_needs_room_for_its_header(lab_factory):
    from metrolab.harness.errors import LabError
    from metrolab.harness.policy import ecmp
    from metrolab.harness.policy.planner import Flow
    lab = lab_factory(TWO_PATHS)  # mtu 1500 on the WAN
    a1, b1 = str(lab.topology.nodes["a1"].address), str(lab.topology.nodes["b1"].address)
    with pytest.raises(LabError, match="mtu >= 1564"):
        ecmp.install_planned(lab, "gw-a", [Flow(a1, b1, 41000, 5212)], {(a1, b1, 41000, 5212, 6): "wan-1"},
                             encap="srv6")
    assert not lab.handle("gw-a").get_rules(priority=ecmp.RULE_PRIORITY)


@pytest.mark.requires("srv6")  # the seg6 lightweight tunnel: some host kernels lack it
def test_per_flow_queues_and_srv6_paths_leave_nothing_stale(lab_factory):
    """Per-flow HTB classes (one per flow, plus the default) and SRv6 planned paths, then ECMP L3,
    then none: the plain tree, no rules, no SIDs, the L4 hash back."""
    from metrolab.harness.kernel.nsctx import in_netns
    from metrolab.harness.policy.model import FlowControl, LoadBalancing, PolicySpec
    from metrolab.harness.policy.planner import Flow
    spec = {**TWO_PATHS, "links": [dict(lk, mtu=1600) for lk in TWO_PATHS["links"]]}
    lab = lab_factory(spec)
    a1, b1 = str(lab.topology.nodes["a1"].address), str(lab.topology.nodes["b1"].address)
    flows = [Flow(a1, b1, 46000 + i, 5600, 6, 1 << 20) for i in range(4)]
    applier = PolicyApplier(lab)

    def state():
        out = {}
        for node in ("gw-a", "gw-b"):
            h = lab.handle(node)
            idx = h.link_lookup(ifname=lab.plan.ends("wan-1")[0 if node == "gw-a" else 1].ifname)[0]
            with in_netns(lab.ns(node)):
                hash_policy = Path("/proc/sys/net/ipv4/fib_multipath_hash_policy").read_text().strip()
            out[node] = {"qdiscs": sorted(q.get_attr("TCA_KIND") for q in h.get_qdiscs(idx)),
                         # HTB's own: under netem (the guest) its class 1:1 is listed too
                         "classes": len([c for c in h.get_classes(idx) if c.get_attr("TCA_KIND") == "htb"]),
                         "rules": len([r for r in h.get_rules() if (r.get_attr("FRA_PRIORITY") or 0) >= 1000 and
                                       r.get_attr("FRA_PRIORITY") < 2000]),
                         "sids": len([r for r in h.get_routes(family=10)
                                      if str(r.get_attr("RTA_DST") or "").startswith("fc00:")]),
                         "hash": hash_policy}
        return out
    plain = state()
    applier.apply(PolicySpec(name="pf", links=["wan-1", "wan-2"], switches=["gw-a"],
                             flow_control=FlowControl(kind="per-flow"),
                             load_balancing=LoadBalancing(kind="planned", encap="srv6")), flows=flows)
    s = state()
    assert "htb" in s["gw-a"]["qdiscs"] and s["gw-a"]["classes"] == 1 + 4 + 1, s  # root, 4 flows, default
    assert s["gw-a"]["rules"] == 4 and s["gw-a"]["sids"] >= 1 and s["gw-b"]["sids"] >= 1, s
    applier.apply(PolicySpec(name="l3", switches=["gw-a", "gw-b"], load_balancing=LoadBalancing(kind="ecmp-l3")))
    s = state()
    assert s["gw-a"]["hash"] == "0" and {k: v for k, v in s["gw-a"].items() if k != "hash"} == \
        {k: v for k, v in plain["gw-a"].items() if k != "hash"}, (s, plain)
    applier.apply(None)
    assert state() == plain


UDP_QPS = """
import socket, sys, time
dst, base, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", base + i))
    socks.append(s)
for k in range(count):
    for s in socks:
        s.sendto(b"\\0" * 1000, (dst, 4791))
    if k % 20 == 19:
        time.sleep(0.01)  # ~64 Mbit/s for 8 flows: under one link's 100 Mbit/s, nothing dropped
"""


def udp_qps(lab, base: int, n: int = 8, count: int = 200) -> dict[str, int]:
    """n UDP flows a1 -> b1:4791 (what RoCEv2 QPs look like on the wire: one source port each);
    bytes each WAN link carried from gw-a."""
    from metrolab.harness.kernel.counters import if_counters
    ends = {lk: lab.plan.ends(lk)[0] for lk in ("wan-1", "wan-2")}
    before = {lk: if_counters(lab.handle("gw-a"), e.ifname)["tx_bytes"] for lk, e in ends.items()}
    out = in_ns(lab, "a1", sys.executable, "-c", UDP_QPS, str(lab.topology.nodes["b1"].address), str(base),
                str(n), str(count), timeout=60)
    assert out.returncode == 0, out.stderr
    return {lk: if_counters(lab.handle("gw-a"), e.ifname)["tx_bytes"] - before[lk] for lk, e in ends.items()}


def test_switches_learn_udp_and_tcp_flows_and_planned_paths_pin_the_udp_ones(lab_factory):
    """RoCEv2-like flows (UDP to 4791, a source port per QP) are learned where they are forwarded,
    like TCP ones; planned paths then pin them by 5-tuple, both links within 5 %."""
    from metrolab.harness.policy import ecmp, flows
    from metrolab.harness.policy.planner import imbalance, plan
    lab = lab_factory(TWO_PATHS)
    ecmp.set_hash(lab, ["gw-a", "gw-b"], "l3")  # unplanned, every flow of the pair on one path
    a1, b1 = str(lab.topology.nodes["a1"].address), str(lab.topology.nodes["b1"].address)
    with flows.learning(lab, ["gw-a", "gw-b"], ["a1", "b1"]) as learned:
        l3 = imbalance(udp_qps(lab, 49152))
        elephants(lab, flows=2, size="256k", port=5601)
    udp = [f for f in learned if f.proto == 17]
    tcp = [f for f in learned if f.proto == 6]
    assert sorted(f.sport for f in udp) == list(range(49152, 49160)), udp
    assert all((f.src, f.dst, f.dport) == (a1, b1, 4791) for f in udp), udp
    # 200 datagrams of 1000 B + 28 B of UDP/IP headers each, counted at the switches' egress
    assert all(f.bytes == 200 * 1028 for f in udp), udp
    # each TCP connection is two flows: the data one way (>= 256 KiB), the ACKs back
    assert {(f.src, f.dport) for f in tcp if f.bytes >= 256 << 10} == {(a1, 5601)}, tcp
    assert len([f for f in tcp if f.src == b1]) == 2, tcp
    for node in ("gw-a", "gw-b"):  # the learning tables went with the pass
        assert flows.TABLE not in in_ns(lab, node, "nft", "list", "tables").stdout
    inst = ecmp.install_planned(lab, "gw-a", udp, plan(udp, ["wan-1", "wan-2"]))
    try:
        planned = imbalance(udp_qps(lab, 49152))
    finally:
        ecmp.remove_planned(lab, inst)
    # L3: one path carries the pair's every flow (the other only the odd control packet: 5557:1 once)
    assert l3 > 100 and planned <= 1.05, (l3, planned)
