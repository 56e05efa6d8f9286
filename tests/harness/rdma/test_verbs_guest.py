"""The verbs layer and `metrolab rdma` between two lab hosts over Soft-RoCE (guest kernel)."""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest

from metrolab.harness.kernel import sh
from metrolab.harness.kernel.nsctx import in_netns
from metrolab.harness.rdma import perftest
from metrolab.harness.rdma.pair import run_pair
from metrolab.harness.rdma.verbs import Connection, Device, RdmaError, connect_oob
from metrolab.netem.profile import Impairment, LossModel

pytestmark = pytest.mark.requires("netem", "rxe")
# one byte (inline), an odd size across MTU-sized packets, a message of thousands of packets
# (Go-Back-N resends inside it at 0.1 % loss); 64 KiB and 1 MiB added nothing these do not cover
SIZES = [(1, 20), (4099, 20), (8 << 20, 2)]


@pytest.fixture(scope="module")
def pair(module_labs):
    return module_labs("rdma-pair")


@pytest.mark.parametrize("loss", [0.0, 1e-3])
@pytest.mark.parametrize("op", ["write", "read"])
def test_data_arrives_intact(pair, op, loss):
    pair.impair("wan", Impairment(loss=LossModel(p=loss) if loss else None, limit_packets=10000))
    for i, (size, iters) in enumerate(SIZES):
        res = run_pair(pair, "b1", "a1", op=op, size=size, iters=iters, port=19000 + i,
                       extra=["--checksum", "--op-timeout", "120"])
        assert res["client"]["sha256"] == res["server"]["sha256"], f"{op} {size} B with loss {loss}"
    pair.impair("wan", Impairment())


# the bandwidth rounds' link: 500 km (2.5 ms one way), where one message in flight cannot fill it.
# A tool keeping one in flight gets size / (RTT + size / R) of the rate R the link carries (here
# Soft-RoCE's CPU under TCG: 0.05-0.24 Gbit/s seen), a ratio 1 / (1 + RTT * R / size): at 16 KiB,
# 0.34 at the slowest R and 0.12 at the fastest. A tool that keeps 128 in flight gets R, up to what
# rxe's own window lets through (128 unacknowledged packets of 1 KiB a round trip: 0.21 Gbit/s at
# 5 ms). At 64 KiB a message is half that window, and one in flight read 0.53 of perftest here
BW_DELAY_S, BW_SIZE, BW_ITERS = 0.0025, 16384, 1600
LAT_ITERS, LAT_MAX_ROUNDS = 2000, 6


def test_tool_and_perftest_agree_on_the_same_link(pair):
    # each tool's floor: its fastest round trip of LAT_ITERS, best of interleaved rounds. A waiter
    # that blocks adds its block to every message, so its floor rises by it: one sleeping 1 ms per
    # message read 588-640 us against perftest's 151-203 (half the round trip; this tool's own:
    # 164-284). Noise only adds, and a burst of host load must hit every round of one tool to move
    # its best. Twice perftest's floor leaves the tool's Python its room and fails that waiter while
    # perftest's floor is under ~500 us (94 us quiet, 151-205 under a slower host). Not the median
    # (this check's until CI read ours 728 us against perftest's 212): medians swing 2-4x run to run
    # (ours 695-1794 us, perftest's 310-1586; both spin on both vCPUs, where rxe's kernel work must
    # find one), and the blocking waiter's best median, 653, passed 3x perftest's 230. What this
    # misses: a waiter that sleeps only while the reply is not there yet (its floor is perftest's).
    # A failing check measures more rounds, up to LAT_MAX_ROUNDS: a best only falls toward the
    # tool's floor as rounds are added, and the blocking waiter's floor is its block
    floor: dict[str, list[float]] = {"ours": [], "perftest": []}
    typical: dict[str, list[float]] = {"ours": [], "perftest": []}
    for i in range(LAT_MAX_ROUNDS):
        if i >= 2 and min(floor["ours"]) <= 2 * min(floor["perftest"]):
            break
        ours = run_pair(pair, "b1", "a1", mode="lat", size=2, iters=LAT_ITERS, port=19130 + 2 * i)["client"]
        ref = perftest.run(pair, "b1", "a1", "ib_write_lat", size=2, iters=LAT_ITERS,
                           port=19131 + 2 * i).values
        for name, res in (("ours", ours), ("perftest", ref)):
            floor[name].append(res["t_min_us"])
            typical[name].append(res["t_typical_us"])
    print(json.dumps({"t_min_us": floor, "t_typical_us": typical}))
    assert min(floor["ours"]) <= 2 * min(floor["perftest"]), floor

    # interleaved rounds, best of each: one run of either swings 2x under TCG with the emulator's
    # scheduling (best-of ratios 0.70-1.1 seen, one perftest round of three at 1.45x its others).
    # Half of perftest's best fails a tool that cannot keep the queue full (at most 0.34, above) and
    # leaves that noise its room; the tool itself at one message in flight is the control, every run
    pair.impair("wan", Impairment(delay_s=BW_DELAY_S, limit_packets=10000))
    try:
        ours, ref = [], []
        for i in range(3):
            ours.append(run_pair(pair, "b1", "a1", size=BW_SIZE, iters=BW_ITERS, port=19110 + 2 * i)["client"]["bw_avg_gbps"])
            ref.append(perftest.run(pair, "b1", "a1", "ib_write_bw", size=BW_SIZE, iters=BW_ITERS,
                                    port=19111 + 2 * i).values["bw_avg_gbps"])
        one = run_pair(pair, "b1", "a1", size=BW_SIZE, iters=200, port=19120,
                       extra=["--tx-depth", "1"])["client"]["bw_avg_gbps"]
    finally:
        pair.impair("wan", Impairment())
    print(json.dumps({"ours_gbps": ours, "perftest_gbps": ref, "one_in_flight_gbps": one}))
    assert max(ours) >= 0.5 * max(ref), (ours, ref)
    assert one < 0.5 * max(ref), (one, ref)  # the control: one in flight is caught


def _resources(dev: str) -> tuple[int, int]:
    """(QPs, MRs) the kernel holds for dev."""
    qp = sh.run(["rdma", "-j", "resource", "show", "qp"], check=False).stdout or "[]"
    mr = sh.run(["rdma", "-j", "resource", "show", "mr"], check=False).stdout or "[]"
    return (sum(1 for q in json.loads(qp) if q.get("ifname", "").startswith(dev)),
            sum(1 for m in json.loads(mr) if m.get("ifname", "").startswith(dev)))


def test_bad_input_is_a_clear_error_and_leaves_nothing(pair):
    dev = pair.rxe_device("a1")
    before = _resources(dev)
    with pytest.raises(RdmaError, match="no RDMA device 'rxe-nowhere'"):
        Device("rxe-nowhere")
    with pytest.raises(RdmaError, match="GID index 99"):
        Device(dev, gid_index=99)
    with Device(dev, ip=str(pair.topology.nodes["a1"].address)) as d:
        buf = np.zeros(4096, dtype=np.uint8)
        with Connection(d, buf) as conn, pytest.raises(RdmaError, match="exceeds the registered buffer"):
            conn.post_send(0, 8192)
        with in_netns(pair.ns("a1")), pytest.raises(RdmaError, match="cannot reach the peer"):
            connect_oob(str(pair.topology.nodes["b1"].address), 19999, timeout=2)
    assert _resources(dev) == before  # no QP or MR left behind
    # the tool itself: a clear message and a non-zero exit
    res = sh.run([sys.executable, "-m", "metrolab.harness.rdma.tool", "client", "--dev", "rxe-nowhere", "--peer",
                  "10.2.0.1"], netns=pair.ns("a1"), check=False)
    assert res.rc == 5 and "no RDMA device 'rxe-nowhere'" in res.stderr
    assert json.loads(res.stdout)["error"].startswith("no RDMA device")


def test_players_on_torch_tensors_with_two_qps_and_write_with_imm(pair):
    """Both ends in this process: zero-copy torch tensors, two QPs, an immediate that the peer sees."""
    import torch
    ips = {n: str(pair.topology.nodes[n].address) for n in ("a1", "b1")}
    with Device(pair.rxe_device("a1"), ip=ips["a1"]) as da, Device(pair.rxe_device("b1"), ip=ips["b1"]) as db:
        src = torch.arange(16384, dtype=torch.int32)  # 64 KiB, registered where it lies
        dst = torch.zeros_like(src)
        half = src.numel() * src.element_size() // 2
        with Connection(da, src, num_qps=2) as ca, Connection(db, dst, num_qps=2) as cb:
            assert ca.addr == src.data_ptr()  # zero-copy: the tensor's own memory
            ca.connect(cb.local_info())
            cb.connect(ca.local_info())
            cb.post_recv(0, 4, qp=1)  # WRITE_WITH_IMM consumes a receive on the responder
            ca.post_write(0, half, remote_offset=0, qp=0)
            ca.post_write(half, half, remote_offset=half, qp=1, imm=0xBEEF)
            ca.poll(2)
            (wc,) = cb.poll(1)
            assert socket.ntohl(wc.imm_data) == 0xBEEF or wc.imm_data == 0xBEEF
            assert torch.equal(src, dst)


@pytest.mark.parametrize("op", ["write", "read"])
def test_rdma_cm_connects_two_qps_and_data_arrives_intact(pair, op):
    """QPs connected through rdma_cm (address/route resolution, REQ/REP/RTU, memory in private data)."""
    for i, (size, iters) in enumerate([(4099, 20), (1 << 20, 4)]):
        res = run_pair(pair, "b1", "a1", op=op, size=size, iters=iters, qps=2, port=19200 + 10 * (op == "read") + i,
                       extra=["--cm", "--checksum"])
        assert res["client"]["connect"] == res["server"]["connect"] == "rdma_cm"
        assert res["client"]["qps"] == 2
        assert res["client"]["sha256"] == res["server"]["sha256"], f"{op} {size} B over rdma_cm"


def test_rdma_cm_without_a_listener_is_a_clear_error_and_leaves_nothing(pair):
    from metrolab.harness.rdma.cm import cm_connect
    dev = pair.rxe_device("a1")
    before = _resources(dev)
    ips = {n: str(pair.topology.nodes[n].address) for n in ("a1", "b1")}
    buf = np.zeros(4096, dtype=np.uint8)
    with in_netns(pair.ns("a1")):
        with pytest.raises(RdmaError, match=r"rdma_cm: RDMA_CM_EVENT_(REJECTED|UNREACHABLE)|no event within"):
            cm_connect(ips["a1"], ips["b1"], 19299, buf, timeout=3)
        with pytest.raises(RdmaError, match=r"rdma_cm: RDMA_CM_EVENT_ADDR_ERROR|no event within"):
            cm_connect(ips["a1"], "10.99.0.1", 19299, buf, timeout=3, resolve_ms=500)  # no route there
    assert _resources(dev) == before


def test_testbed_check_reads_the_soft_roce_device_and_its_nics_lossless_state(pair):
    """`testbed check`'s facts script on a machine with a real RDMA device (here rxe on a veth):
    the device with its RoCE v2 GID on that interface, and what the NIC exposes of a lossless path
    (a veth has no DCB and no DCQCN sysfs: read as absent, not as off), judged as Soft-RoCE."""
    from pathlib import Path

    from metrolab.harness.testbed import check, machine_facts
    iface = pair.plan.ifaces_of("a1")[0].ifname
    # `ip netns exec` mounts the namespace's own /sys, as a machine's sysfs is its own
    res = sh.run(["ip", "netns", "exec", pair.ns("a1"), "/usr/bin/python3", "-I", machine_facts.__file__, sys.prefix,
                  iface], timeout=120)
    facts = json.loads(res.stdout)
    dev = next(d for d in facts["rdma"] if d["device"] == pair.rxe_device("a1"))
    a = pair.topology.nodes["a1"].address.packed
    mapped = f"ffff:{a[0]:02x}{a[1]:02x}:{a[2]:02x}{a[3]:02x}"  # the address's IPv4-mapped GID
    assert dev["netdev"] == iface and any(g["gid"].endswith(mapped) for g in dev["rocev2_gids"]), dev
    nic = facts["interfaces"][iface]
    assert nic["exists"] and nic["driver"] is None and nic["pfc"] is None and nic["ecn"] is None, nic
    assert facts["os"]["id"] == "debian" and Path("/etc/os-release").exists()
    finding = check._lossless("a1", iface, "soft-roce", nic)
    assert finding.level == "ok" and "Soft-RoCE" in finding.detail
    # the same NIC named as a hardware device is flagged: nothing shows it lossless
    assert check._lossless("a1", iface, "mlx5_0", nic).level == "warn"
