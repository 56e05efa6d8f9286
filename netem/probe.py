"""Measure each link with real traffic between its two namespaces: RTT (ICMP echo), rate
(TCP bulk: payload received, converted to wire bytes with per-segment headers, which is
what TBF/netem charge; a veth's tx_bytes counts a GSO super-packet's headers only once)
and loss (paced UDP, counted at the receiver).

Sockets are created inside the namespaces and pinned to the link's interfaces
(SO_BINDTODEVICE), so parallel links are measured one by one and traffic never leaves the lab.
"""

from __future__ import annotations

import re
import socket
import statistics
import struct
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field

from metrolab.harness.kernel import sh
from metrolab.harness.kernel.nsctx import in_netns
from metrolab.netem import tree
from metrolab.netem.models import binomial_interval

SO_RCVBUFFORCE = 33
RATE_PORT, LOSS_PORT = 47002, 47003


@dataclass
class LinkMeasurement:
    link: str
    src: str
    dst: str
    rtt_configured_ms: float
    rtt_ms: float | None = None
    rtt_p90_ms: float | None = None
    rtt_min_ms: float | None = None      # the floor: propagation + stack, without queueing or jitter
    rtt_base_ms: float | None = None     # the floor of this lab's undelayed links: the stack's own share
    rate_configured_bps: float | None = None
    rate_bps: float | None = None        # wire (L2) bytes/s on the sender's interface
    goodput_bps: float | None = None     # TCP payload
    loss_configured: float = 0.0
    loss: float | None = None
    loss_sent: int = 0
    loss_received: int = 0
    loss_interval: tuple[float, float] | None = None  # 99 % binomial interval of the loss *count*
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def rtt_excess_ms(self) -> float | None:
        """This link's RTT floor minus the lab's 0 km floor: what the link's delay added (floors, since
        queueing and emulator jitter only ever add; docs/vm.md)."""
        if self.rtt_min_ms is None or self.rtt_base_ms is None:
            return None
        return self.rtt_min_ms - self.rtt_base_ms

    @property
    def rate_error(self) -> float | None:
        if self.rate_bps is None or not self.rate_configured_bps:
            return None
        return self.rate_bps / self.rate_configured_bps - 1

    @property
    def loss_ok(self) -> bool | None:
        if self.loss_interval is None:
            return None
        lost = self.loss_sent - self.loss_received
        return self.loss_interval[0] <= lost <= self.loss_interval[1]


def ns_socket(ns: str, kind: int, ifname: str, bind: tuple[str, int] | None = None) -> socket.socket:
    """An IPv4 socket made in namespace `ns` (it stays there) and bound to its `ifname`."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    if bind:
        s.bind(bind)
    return s


SEGMENT_HEADERS = 14 + 20 + 32  # Ethernet + IPv4 + TCP with timestamps, per segment on the wire


def measure_rtt(ns_a: str, if_a: str, target: str, count: int = 30, interval: float = 0.01) -> list[float]:
    """RTT samples (ms) from ns_a to `target` out of if_a: iputils ping, whose kernel
    timestamps keep the prober's own speed (slow under TCG) out of the figure; the far end
    is the peer's kernel, no user space at all. Give a link-local target (fe80::…) so the
    reply comes back over the same link even where parallel links join the same two nodes."""
    dest = f"{target}%{if_a}" if target.startswith("fe80:") else target
    res = sh.run(["ping", "-n", "-c", str(count + 3), "-i", f"{interval:g}", "-W", "2", "-I", if_a, dest],
                 netns=ns_a, check=False, timeout=30 + count * (interval + 0.1))
    samples = [float(m) for m in re.findall(r"icmp_seq=(?:\d+) .*?time=([0-9.]+) ms", res.stdout)]
    return samples[3:]  # the first replies pay for ARP/ND


FLOOR_PERCENTILE = 5


def rtt_floor(samples: list[float]) -> float:
    """The floor of RTT samples: their 5th percentile. Propagation is a floor that emulator jitter and
    queueing only add to; a low percentile estimates it with a third less scatter than the minimum
    (under TCG, 500 pings: +-20 us instead of +-30 us per window; docs/vm.md)."""
    import numpy as np  # deferred: seconds to import under TCG, and most probes never ask for a floor
    if not samples:
        raise ValueError("no RTT samples")
    return float(np.percentile(samples, FLOOR_PERCENTILE))


def concurrent_rtts(targets: dict, count: int = 300, interval: float = 0.01) -> dict:
    """RTT samples per target {key: (ns, ifname, dest)}, all pinged at the same time: slow drifts of
    the machine (an emulator's timer latency moves with its load) then hit every target alike."""
    procs = {}
    for k, (ns, ifname, dest) in targets.items():
        dest = f"{dest}%{ifname}" if dest.startswith("fe80:") else dest
        procs[k] = sh.popen(["ping", "-n", "-c", str(count + 3), "-i", f"{interval:g}", "-W", "2", "-I", ifname,
                             dest], netns=ns, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = {}
    for k, p in procs.items():
        text, _ = p.communicate(timeout=60 + count * (interval + 0.1))
        out[k] = [float(m) for m in re.findall(r"icmp_seq=(?:\d+) .*?time=([0-9.]+) ms", text)][3:]
    return out


def _overlimits(ipr, ifname: str) -> int | None:
    """How often a TBF on ifname held packets back (0: nothing throttled; None: no TBF to ask, as
    where netem carries the rate)."""
    tbfs = [q for q in tree.read_tree(ipr, None, ifname, netlink_only=True) if q.kind == "tbf"]
    return sum(q.overlimits for q in tbfs) if tbfs else None


def measure_rate(lab, a, b, addr_a, addr_b, duration: float = 1.0,
                 window: int | None = None) -> tuple[float, float]:
    """(wire bit/s, TCP goodput bit/s) for a -> b over `duration` s.

    `window` caps the receiver's window (bytes), so the flow keeps no more in flight than that.
    """
    lst = ns_socket(lab.ns(b.node), socket.SOCK_STREAM, b.ifname)
    if window:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)  # inherited by the accepted socket
    lst.bind((addr_b, RATE_PORT))
    lst.listen(1)
    received = [0]

    def sink():
        conn, _ = lst.accept()
        buf = bytearray(1 << 20)
        with conn:
            while True:
                n = conn.recv_into(buf)
                if n == 0:
                    return
                received[0] += n

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    cli = ns_socket(lab.ns(a.node), socket.SOCK_STREAM, a.ifname)
    payload = b"\0" * (256 * 1024)
    try:
        cli.connect((addr_b, RATE_PORT))
        mss = cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        warm = time.monotonic() + min(0.3, duration / 3)
        while time.monotonic() < warm:  # past slow start and the TBF bucket
            cli.sendall(payload)
        rx0, t0 = received[0], time.monotonic()
        end = t0 + duration
        while time.monotonic() < end:
            cli.sendall(payload)
        rx1, t1 = received[0], time.monotonic()
    finally:
        cli.close()
        t.join(timeout=10)
        lst.close()
    goodput = (rx1 - rx0) * 8 / (t1 - t0)
    return goodput * (mss + SEGMENT_HEADERS) / mss, goodput


def measure_loss(ns_a, if_a, addr_a, ns_b, if_b, addr_b, packets: int, pace_bps: float,
                 size: int = 200, settle: float = 0.5) -> tuple[int, int]:
    """Send `packets` UDP datagrams a -> b paced at `pace_bps`; (sent, received)."""
    rx = ns_socket(ns_b, socket.SOCK_DGRAM, if_b)
    rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    rx.bind((addr_b, LOSS_PORT))
    tx = ns_socket(ns_a, socket.SOCK_DGRAM, if_a, (addr_a, 0))
    got = set()
    stop = threading.Event()

    def sink():
        rx.settimeout(0.1)
        while not stop.is_set():
            try:
                data = rx.recv(2048)
            except TimeoutError:
                continue
            got.add(struct.unpack_from("!I", data)[0])

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    pad = b"\0" * (size - 4)
    gap = (size + 42) * 8 / pace_bps
    try:
        t0 = time.perf_counter()
        for i in range(packets):
            tx.sendto(struct.pack("!I", i) + pad, (addr_b, LOSS_PORT))
            ahead = t0 + (i + 1) * gap - time.perf_counter()
            if ahead > 2e-4:  # sleeping also hands the GIL to the receiving thread
                time.sleep(ahead)
        time.sleep(settle)
    finally:
        stop.set()
        t.join()
        rx.close()
        tx.close()
    return packets, len(got)


def probe_link(lab, link_name: str, duration: float = 1.0, rtt_count: int = 100,
               loss_packets: int = 2000) -> LinkMeasurement:
    topo = lab.topology
    link = next(x for x in topo.links if x.name == link_name)
    a, b = lab.plan.ends(link_name)
    addr_a, addr_b = str(topo.nodes[a.node].address), str(topo.nodes[b.node].address)
    imp = link.impairment(topo.group_index)
    applied = lab.applied.get(link_name, [])
    skipped = sorted({s for end in applied for s in end.get("skipped", [])})
    m = LinkMeasurement(link_name, a.node, b.node, rtt_configured_ms=2 * imp.delay_s * 1e3,
                        rate_configured_bps=imp.rate_bps, loss_configured=imp.loss.mean_loss if imp.loss else 0.0)
    if skipped:
        m.notes.append("not applied (kernel lacks netem): " + ", ".join(s.split(" ")[0] for s in skipped))
    v6 = topo.spec.ipv6
    rtts = measure_rtt(lab.ns(a.node), a.ifname, a.peer_ll6 if v6 else addr_b, rtt_count)
    if rtts:
        m.rtt_ms = statistics.median(rtts)
        m.rtt_min_ms = min(rtts)
        m.rtt_p90_ms = statistics.quantiles(rtts, n=10)[-1] if len(rtts) >= 10 else max(rtts)
    else:
        m.notes.append("no RTT sample came back")
    ipr = lab.handle(a.node)
    held0 = _overlimits(ipr, a.ifname)
    m.rate_bps, m.goodput_bps = measure_rate(lab, a, b, addr_a, addr_b, duration)
    if imp.rate_bps and m.rate_bps < 0.95 * imp.rate_bps and held0 is not None and \
            _overlimits(ipr, a.ifname) == held0:
        m.notes.append("the sender could not fill the link (the shaper never throttled): CPU-bound")
    # pace the loss probe at a third of the link so queues never drop: what is lost is the impairment's
    pace = min(imp.rate_bps or 1e9, 1e9) / 3
    one_way_loss = m.loss_configured
    m.loss_sent, m.loss_received = measure_loss(lab.ns(a.node), a.ifname, addr_a, lab.ns(b.node), b.ifname,
                                                addr_b, loss_packets, pace, settle=0.3 + 2 * imp.delay_s)
    m.loss = 1 - m.loss_received / m.loss_sent
    m.loss_interval = binomial_interval(m.loss_sent, one_way_loss)
    return m


def probe_lab(lab, links: list[str] | None = None, on_done=None, **kw) -> list[LinkMeasurement]:
    out = []
    for link in links or [x.name for x in lab.topology.links]:
        m = probe_link(lab, link, **kw)
        out.append(m)
        if on_done:
            on_done(m)
    base = [m.rtt_min_ms for m in out if m.rtt_configured_ms == 0 and m.rtt_min_ms is not None]
    for m in out:
        m.rtt_base_ms = statistics.median(base) if base else None
    return out
