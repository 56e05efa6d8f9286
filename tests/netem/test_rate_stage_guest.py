"""The rate stage of a link without a policy (netem's own rate) delivers at the link's rate and
never faster: a burst sent after an idle spell takes at least its bytes at the rate plus the
delay, at 0 km and at 500 km. TBF, the stage before, lets its bucket's worth through at once
after an idle spell, by an amount that depends on when packets reach it; under TCG that made the
main job read distant points faster than its baseline (docs/statistics.md, "contradicts physics").

UDP, so no congestion control shapes the burst: each datagram leaves the sender at once as IP
fragments, and what paces them is the link. The unshaped link, measured in the same blocks, is
what the lab's own path costs a datagram."""

from __future__ import annotations

import math
import random
import socket
import statistics
import threading
import time

import pytest

from metrolab.netem.models import fiber_delay_s, netem_limit_packets
from metrolab.netem.probe import ns_socket
from metrolab.netem.profile import Impairment
from tests.support.labs import wan_pair

pytestmark = pytest.mark.requires("netem")

RATE = 200e6
DATAGRAMS, PAYLOAD = 20, 60_000   # 1.2 MB on the wire: 49 ms at the rate, in 820 fragments
FRAGMENT = 1500 - 20              # IP payload per fragment at a 1500-byte MTU
WIRE = DATAGRAMS * (PAYLOAD + 8 + math.ceil((PAYLOAD + 8) / FRAGMENT) * (20 + 14))  # + UDP, IP, Ethernet
LINE = WIRE * 8 / RATE
BLOCKS, IDLE_S, PORT = 5, 0.2, 5299
POINTS = {"free": None, "0 km": 0.0, "500 km": fiber_delay_s(500)}


def impairment(delay: float | None) -> Impairment:
    """A sweep's point on the link (metrolab.harness.scenario.points): the raw delay, the rate, the
    packet limit for the delay line plus 1000 packets of queue."""
    if delay is None:
        return Impairment()
    return Impairment(delay_s=delay, rate_bps=RATE, limit_packets=netem_limit_packets(RATE, delay, queue_packets=1000),
                      extra={"raw_delay": True})


def burst(lab, dst: str) -> tuple[float, float, int]:
    """Seconds from the first datagram's send to the first and to the last one's arrival, and
    datagrams received."""
    a, b = lab.plan.ifaces_of("a1")[0], lab.plan.ifaces_of("b1")[0]
    rx = ns_socket(lab.ns("b1"), socket.SOCK_DGRAM, b.ifname, bind=(dst, PORT))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.settimeout(2.0)
    tx = ns_socket(lab.ns("a1"), socket.SOCK_DGRAM, a.ifname)
    got: list[float] = []

    def receive() -> None:
        try:
            while len(got) < DATAGRAMS:
                rx.recv(PAYLOAD + 1)
                got.append(time.perf_counter())
        except TimeoutError:
            pass

    t = threading.Thread(target=receive)
    t.start()
    time.sleep(IDLE_S)  # idle: a TBF's bucket is full now
    payload = b"\0" * PAYLOAD
    try:
        t0 = time.perf_counter()
        for _ in range(DATAGRAMS):
            tx.sendto(payload, (dst, PORT))
        t.join()
    finally:
        tx.close()
        rx.close()
    return (got[0] - t0 if got else math.inf), (got[-1] - t0 if got else math.inf), len(got)


def test_a_burst_after_idle_takes_its_bytes_at_the_rate_plus_the_delay(lab_factory):
    lab = lab_factory(wan_pair())
    dst = str(lab.topology.nodes["b1"].address)
    rng = random.Random(11)
    took: dict[str, list[float]] = {p: [] for p in POINTS}
    first: dict[str, list[float]] = {p: [] for p in POINTS}
    stages = set()
    for _ in range(BLOCKS):
        for point in rng.sample(list(POINTS), len(POINTS)):
            lab.impair("wan", impairment(POINTS[point]))
            if POINTS[point] is not None:
                stages.add(lab.rate_stage(["wan"]))
            one, seconds, received = burst(lab, dst)
            assert received == DATAGRAMS, (point, received)  # nothing lost: the queue holds the burst
            took[point].append(seconds)
            first[point].append(one)
    print(f"line {LINE * 1e3:.2f} ms; rounds (ms):", {p: [round(x * 1e3, 2) for x in v] for p, v in took.items()},
          "first arrivals (ms):", {p: [round(x * 1e3, 2) for x in v] for p, v in first.items()})
    free = statistics.median(first["free"])
    for point in ("0 km", "500 km"):
        floor = LINE + (POINTS[point] or 0.0)
        # never faster: every round, the last fragment leaves after all the bytes before it were
        # serialised at the rate, and arrives a delay later (1 %: the clocks' and netem's rounding)
        assert min(took[point]) >= 0.99 * floor, (point, took[point], floor)
        # and at the rate: after the shaper the last datagram pays the path's own latency, what the
        # first datagram took unshaped (send, forwarding, reassembly, the receiver's wake-up; twice:
        # its jitter). A stage delivering 92 % of its rate is slower than this
        assert statistics.median(took[point]) <= floor + 2 * free, (point, took[point], floor, free)
    assert stages == {"netem"}, stages
