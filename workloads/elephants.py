"""Synchronized elephant flows: the traffic a load balancer or a flow-control policy is judged on.
The one generator metrolab has: the scenario workload (ElephantRank, under torch.distributed) and
a standalone sender/receiver pair for lab tests (`python -m metrolab.workloads.elephants send|recv`) both
run on `send_flows` and `receive_flows`.

A `victim` pair of rank hosts runs its own `flows` flows beside the incast (its sender to its
receiver, on a path that shares the incast's upstream links but not its congested egress): its
goodput shows head-of-line blocking, e.g. a port-level pause stopping traffic that was never
congested. Every other rank host but the last opens `flows` TCP connections to the last (one pair: the parallel
flows of a collective between two sites; several senders: an incast), or with `transport: rdma`
`flows` RC queue pairs (RoCEv2: UDP to 4791, one source port per QP), each step one RDMA WRITE
of `size` per QP, timed from the common start to its completion at the sender. The connections live for
the whole sweep point, like a collective library's, so a controller can learn their 5-tuples
from what the switches forward (metrolab.harness.policy.flows) and pin them to paths. Each step every flow sends `size`
bytes at once; the receiver times each flow from the common start.

Flow transmission efficiency (white paper section 4.2.4): the rate the flows' packets achieved
together (payload plus TCP/IP/Ethernet headers, what the links carry) over `capacity`, the sum
of the rates of the parallel links between the senders' and the receiver's sites (from the
topology unless given). A step ends when its last flow does, so a path that carries more than
its share sets the step time.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from dataclasses import asdict
from typing import Any, Literal

from pydantic import Field, field_validator

from metrolab.harness import settings
from metrolab.harness.errors import SpecError
from metrolab.harness.rdma.verbs import Connection, Device, PeerInfo, QPConfig
from metrolab.netem.units import parse_rate, parse_size
from metrolab.workloads.base import Size, StepRank, Workload, _Params

HEADERS = 14 + 20 + 20 + 12  # Ethernet, IPv4, TCP, TCP timestamps: per segment on the wire
ROCE_HEADERS = 14 + 20 + 8 + 12 + 4  # Ethernet, IPv4, UDP, BTH, ICRC: per RoCEv2 packet (RETH once per WRITE)


class ElephantParams(_Params):
    flows: int = Field(default=8, ge=1, le=256, description="connections per sending host")
    size: Size = Field(default=256 << 20, description="bytes per flow per step at full scale (divided by the scale)")
    iters: int = Field(default=1, ge=1, description="steps per repetition")
    tos: int = Field(default=0, ge=0, le=255, description="IP TOS byte of the flows (DSCP << 2)")
    transport: Literal["tcp", "rdma"] = Field(default="tcp", description="TCP connections or RoCEv2 RC QPs (RDMA WRITE)")
    qp_timeout: int = Field(default=18, ge=1, le=31, description="rdma: the QPs' local ACK timeout exponent "
                            "(4.096 us x 2^n; 18 ~ 1.07 s): above the queueing delay a deep buffer adds, "
                            "or every QP times out and retransmits what is still queued (Go-Back-N)")
    ecn: bool = Field(default=False, description="negotiate ECN on the flows (senders' tcp_ecn)")
    capacity: float | None = Field(default=None, description="bit/s the flows share; from the topology when omitted")
    victim: list[str] | None = Field(default=None, min_length=2, max_length=2,
                                     description="[sender, receiver]: two rank hosts whose `flows` flows run "
                                     "beside the incast, not through its congested egress (head-of-line "
                                     "blocking shows in their goodput)")
    victim_capacity: float | None = Field(default=None, description="bit/s the victim's path carries; from "
                                          "the topology (its receiver's link, its sites' links) when omitted")

    @field_validator("capacity", "victim_capacity", mode="before")
    @classmethod
    def _rate(cls, v):
        return None if v is None else parse_rate(v)


def site_capacity(topo, senders: list[str], receiver: str) -> float | None:
    """Sum of the rates of the links joining a sender's site to the receiver's (the parallel paths)."""
    site = {n.name: n.site for n in topo.nodes.values()}
    src_sites = {site[h] for h in senders} - {site[receiver]}
    total = 0.0
    for lk in topo.links:
        ends = {site.get(lk.a), site.get(lk.b)}
        if site[receiver] in ends and ends & src_sites:
            if not lk.rate_bps:
                return None
            total += lk.rate_bps
    return total or None


class ElephantFlows(Workload):
    rank_side = "ElephantRank"
    kind = "elephant-flows"
    params_model = ElephantParams
    metrics = ("flow_efficiency", "goodput_mbps", "fct_p50_s", "fct_max_s", "fct_spread",
               "victim_goodput_mbps", "victim_efficiency", "victim_fct_max_s")

    @classmethod
    def needs_rdma_for(cls, spec) -> bool:
        return spec.params.get("transport") == "rdma"

    @classmethod
    def resolve(cls, params: dict, hosts: list[str], topo) -> dict:
        p = ElephantParams.model_validate(params)
        out = dict(params)
        senders = [h for h in hosts[:-1] if h not in (p.victim or [])]
        if p.capacity is None:
            out["capacity"] = site_capacity(topo, senders, hosts[-1])
        if p.victim and p.victim_capacity is None:
            vs, vr = p.victim
            rates = [lk.rate_bps for lk in topo.links_of(vr) if lk.rate_bps]
            site = site_capacity(topo, [vs], vr)
            rates += [site] if site else []
            out["victim_capacity"] = min(rates) if rates else None
        return out

    @classmethod
    def validate(cls, spec, topo, scale: float) -> None:
        super().validate(spec, topo, scale)
        p = cls.params(spec, scale)
        if int(p.size / scale) < 1:
            raise SpecError("", "params.size", p.size, f"is less than one byte at scale {scale:g}")
        if p.victim:
            hosts = cls.hosts(spec, topo)
            for i, h in enumerate(p.victim):
                if h not in hosts[:-1]:
                    raise SpecError("", f"params.victim[{i}]", h, "is not one of the workload's hosts before the "
                                    f"receiver ({', '.join(hosts[:-1])})")
            if p.victim[0] == p.victim[1]:
                raise SpecError("", "params.victim", p.victim, "sender and receiver are one host")
            if len(hosts) - 3 < 1:
                raise SpecError("", "hosts", hosts, "the incast needs a sender besides the victim's two hosts")


# -- rank side -------------------------------------------------------------------------------
_SETUPS = [0]


def _recv_exactly(c: socket.socket, n: int | None) -> int:
    """Read `n` bytes (None: until the peer closes); the bytes read."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    got_all = 0
    while n is None or got_all < n:
        got = c.recv_into(view[:len(buf) if n is None else min(n - got_all, len(buf))])
        if not got:
            if n is None:
                break
            raise ConnectionError("a flow closed mid-step")
        got_all += got
    return got_all


PAYLOAD = b"\0" * (1 << 20)


def _together(work, socks: list[socket.socket]) -> None:
    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def send_flows(socks: list[socket.socket], nbytes: int | None, seconds: float = 0.0, close: bool = False) -> None:
    """Every flow sends at once: `nbytes` each, or as much as it can for `seconds`."""
    start = threading.Barrier(len(socks))

    def blast(_i: int, s: socket.socket) -> None:
        start.wait()
        if seconds:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s.send(PAYLOAD[:1 << 16])
        else:
            left = nbytes or 0
            while left > 0:
                left -= s.send(PAYLOAD[:min(left, len(PAYLOAD))])
        if close:
            s.close()
    _together(blast, socks)


def receive_flows(socks: list[socket.socket], nbytes: int | None, t0: float | None,
                  walls: list[tuple[float, float]] | None = None) -> list[tuple[int, float]]:
    """Per flow: the bytes received (`nbytes` each, or until the peer closes) and the completion
    time since the common start `t0` (time.perf_counter), or with None since the flow's first byte.
    `walls`, when given, gets each flow's (first byte, last byte) on the wall clock (time.time)."""
    out: list[tuple[int, float]] = [(0, 0.0)] * len(socks)
    if walls is not None:
        walls[:] = [(0.0, 0.0)] * len(socks)

    def drain(i: int, s: socket.socket) -> None:
        if t0 is None:
            s.recv(1, socket.MSG_PEEK)  # blocks until the first byte (or the peer's close)
        start, wall = (time.perf_counter() if t0 is None else t0), time.time()
        n = _recv_exactly(s, nbytes)
        out[i] = (n, time.perf_counter() - start)
        if walls is not None:
            walls[i] = (wall, time.time())
    _together(drain, socks)
    return out


def connect_flows(dst: str, port: int, flows: int, sport: int | None = None, tos: int = 0) -> list[socket.socket]:
    """`flows` TCP connections to dst:port (from source ports sport.. when given: known 5-tuples)."""
    socks: list[socket.socket] = []
    try:
        for i in range(flows):
            s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            if tos:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
            if sport is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("", sport + i))
            s.connect((dst, port))
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


class ElephantRank(StepRank):
    def __init__(self, params: dict[str, Any], scale: float, sites=None, hosts=None, **_):
        import torch.distributed as dist  # deferred: torch (40 s under TCG) on the rank side only
        self.p = ElephantParams.model_validate(params)
        self.dist = dist
        self.me, world = dist.get_rank(), dist.get_world_size()
        self.receiver = world - 1
        self.nbytes = max(1, int(self.p.size / scale))
        # the victim's two ranks (by host name), and the incast's senders: every other rank
        self.vs = self.vr = -1
        if self.p.victim:
            self.vs, self.vr = (list(hosts).index(h) for h in self.p.victim)
        self.incast = [r for r in range(world - 1) if r not in (self.vs, self.vr)]
        self.senders = len(self.incast)
        # whom each sender sends to; each receiver's senders
        self.dst = {r: self.receiver for r in self.incast} | ({self.vs: self.vr} if self.vs >= 0 else {})
        froms = [s for s, d in self.dst.items() if d == self.me]
        _SETUPS[0] += 1
        store = dist.distributed_c10d._get_default_store()
        key = f"elephants/{_SETUPS[0]}"
        self.socks: list[socket.socket] = []
        self.qps: _Qps | None = None
        if self.p.transport == "rdma":
            self.qps = _Qps(store, key, self.me, self.dst, world, self.p.flows, self.nbytes,
                            QPConfig(traffic_class=self.p.tos, timeout=self.p.qp_timeout))
            self.mss = self.qps.payload
        elif froms:
            addr = (settings.get("METROLAB_RDMA_IP") or "0.0.0.0")
            srv = socket.create_server((addr, 0), backlog=len(froms) * self.p.flows)
            store.set(f"{key}/{self.me}", f"{addr} {srv.getsockname()[1]}")
            srv.settimeout(120)
            for _i in range(len(froms) * self.p.flows):  # (`_` is **kwargs here)
                c, _peer = srv.accept()
                self.socks.append(c)
            srv.close()
        elif self.me in self.dst:
            if self.p.ecn:  # ECN-capable flows (the namespace's own sysctl; it goes with the lab)
                with open("/proc/sys/net/ipv4/tcp_ecn", "w") as f:
                    f.write("1")
            addr, port = store.get(f"{key}/{self.dst[self.me]}").decode().split()
            self.socks = connect_flows(addr, int(port), self.p.flows, tos=self.p.tos)
            self.mss = self.socks[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        dist.barrier()

    def step(self) -> tuple[list[float], list[float]]:
        """One synchronized step: every flow sends its bytes; on the receiver, the incast's and
        the victim's per-flow completion times (TCP: timed by the receivers, RDMA: by the senders)."""
        self.dist.barrier()
        t0 = time.perf_counter()
        mine: list[float] = []
        if self.qps is not None:
            if self.me in self.dst:
                mine = self.qps.step(t0)
        elif self.me in self.dst:
            send_flows(self.socks, self.nbytes)
        elif self.socks:
            mine = [fct for _, fct in receive_flows(self.socks, self.nbytes, t0)]
        return self._fcts(mine)

    def _fcts(self, mine: list[float]) -> tuple[list[float], list[float]]:
        """Everyone's completion times to the receiver: (the incast's, the victim's)."""
        import torch  # deferred: torch (40 s under TCG) on the rank side only
        t = torch.tensor(mine + [0.0] * (self.p.flows * max(1, self.senders) - len(mine)), dtype=torch.float64)
        parts = [torch.zeros_like(t) for _ in range(self.dist.get_world_size())]
        self.dist.all_gather(parts, t)
        if self.me != self.receiver:
            return [], []
        victim_at = self.vs if self.qps is not None else self.vr  # who timed the victim's flows
        victim = parts[victim_at].tolist()[:self.p.flows] if self.vs >= 0 else []
        if self.qps is not None:
            return [x for r in self.incast for x in parts[r].tolist()[:self.p.flows]], victim
        return parts[self.receiver].tolist()[:self.p.flows * self.senders], victim

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        import torch  # deferred: torch (40 s under TCG) on the rank side only
        self.warm(warmups)
        fcts: list[float] = []
        steps: list[float] = []
        victim: list[float] = []  # the victim's step times (its last flow's completion)
        for f, v in self.timed(iters or self.p.iters)[1]:
            if self.me == self.receiver:
                fcts += f
                steps.append(max(f))
                if v:
                    victim.append(max(v))
        # the receiver's figures, the senders' MSS (for the header share), to every rank
        mss = float(getattr(self, "mss", 0))
        t = torch.tensor([mss], dtype=torch.float64)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        mss = t.item() or 1448.0
        stats = [statistics.mean(steps), statistics.median(fcts), max(fcts)] if fcts else [0.0, 0.0, 0.0]
        stats.append(statistics.mean(victim) if victim else 0.0)
        s = torch.tensor(stats, dtype=torch.float64)
        self.dist.broadcast(s, src=self.receiver)
        step, p50, fmax, vstep = s.tolist()
        total = self.nbytes * self.p.flows * self.senders
        goodput = total * 8 / step
        # fct_spread: the last flow's completion over the median's (1: the flows shared fairly)
        out = {"step_time_s": step, "fct_p50_s": p50, "fct_max_s": fmax, "fct_spread": fmax / p50 if p50 else None,
               "goodput_mbps": goodput / 1e6}
        headers = ROCE_HEADERS if self.qps is not None else HEADERS
        if self.p.capacity:
            out["flow_efficiency"] = goodput * (mss + headers) / mss / self.p.capacity
        if vstep:  # the victim: its goodput, and its share of what its own path carries
            vgood = self.nbytes * self.p.flows * 8 / vstep
            out |= {"victim_goodput_mbps": vgood / 1e6, "victim_fct_max_s": vstep}
            if self.p.victim_capacity:
                out["victim_efficiency"] = vgood * (mss + headers) / mss / self.p.victim_capacity
        return out

    def close(self, final: bool = False) -> None:
        for s in self.socks:
            s.close()
        self.socks = []
        if self.qps is not None:
            self.qps.close()
            self.qps = None


class _Qps:
    """The RDMA side of a rank: a sender's `flows` RC QPs to the receiver, or the receiver's QPs
    towards every sender, each over one registered buffer of `nbytes` (every QP of a sender writes
    the same remote region: the traffic is what counts, not where it lands)."""

    def __init__(self, store, key: str, me: int, dst: dict[int, int], world: int, flows: int, nbytes: int, cfg):
        from metrolab.harness.dist.mesh import pick_device  # deferred: imports torch, rank side only
        self.flows, self.nbytes = flows, nbytes
        self.buf = bytearray(nbytes)
        self.conns: list = []
        self.dev = None
        self.wrs: list = []
        try:
            name, ip = pick_device()
            self.dev = Device(name, ip=ip)
            self.payload = min(cfg.mtu, self.dev.active_mtu)  # bytes per RoCEv2 packet
            sending = me in dst  # a sender has one receiver; a receiver, its senders
            pairs = [me] if sending else [s for s, d in sorted(dst.items()) if d == me]
            for sender in pairs:
                conn = Connection(self.dev, self.buf, cfg, num_qps=flows)
                self.conns.append(conn)
                side = "send" if sending else "recv"
                store.set(f"{key}/{side}/{sender}", json.dumps(asdict(conn.local_info())))
            for sender, conn in zip(pairs, self.conns):
                other = "recv" if sending else "send"
                conn.connect(PeerInfo(**json.loads(store.get(f"{key}/{other}/{sender}"))))
            if sending:
                conn = self.conns[0]
                self.wrs = [conn.prepare("write", 0, nbytes, 0, signaled=True, wr_id=q) for q in range(flows)]
        except BaseException:
            self.close()
            raise

    def step(self, t0: float, timeout: float = 300.0) -> list[float]:
        """A sender's step: one WRITE per QP at once; each QP's completion time since `t0`."""
        conn = self.conns[0]
        for q, wr in enumerate(self.wrs):
            conn.post_prepared(wr, qp=q)
        fcts = [0.0] * self.flows
        for _ in range(self.flows):
            wc = conn.poll(1, timeout=timeout)[0]
            fcts[wc.wr_id] = time.perf_counter() - t0
        return fcts

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.conns = []
        if self.dev is not None:
            self.dev.close()
            self.dev = None


# -- standalone: one sender and one receiver process, for lab tests --------------------------------
def await_ready(senders: list) -> None:
    """Wait for each `send --wait-go` process (a Popen with text stdout) to say it is connected;
    one that ends first is an error carrying its stderr."""
    for p in senders:
        line = p.stdout.readline()
        if not json.loads(line or "{}").get("ready"):
            p.kill()
            raise RuntimeError(f"an elephant sender did not connect (exit {p.wait()}): {p.stderr.read()[-500:]}")


def go(sender) -> None:
    """A `send --wait-go` process's word: it sends from now."""
    sender.stdin.write("go\n")
    sender.stdin.flush()


def main(argv: list[str] | None = None) -> int:
    """python -m metrolab.workloads.elephants recv --port 5201 --flows 8
    python -m metrolab.workloads.elephants send --dst 10.2.0.1 --port 5201 --flows 8 --bytes 1m --sport 41000

    The receiver prints {"flows": {source port: {"bytes", "fct_s", "start", "end"}}}: each flow timed
    from its first byte; start and end on the wall clock."""
    ap = argparse.ArgumentParser(prog="python -m metrolab.workloads.elephants")
    ap.add_argument("mode", choices=("send", "recv"))
    ap.add_argument("--dst")
    ap.add_argument("--port", type=int, default=5201)
    ap.add_argument("--flows", type=int, default=8)
    ap.add_argument("--bytes", default="1m")
    ap.add_argument("--sport", type=int, default=41000)
    ap.add_argument("--seconds", type=float, default=0.0, help="send for this long instead of --bytes")
    ap.add_argument("--tos", type=int, default=0, help="IP TOS byte (DSCP << 2)")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--wait-go", action="store_true",
                    help="once connected, print {\"ready\": true} and send only after a line on stdin (senders "
                         "in several processes start together however long each took to start)")
    a = ap.parse_args(argv)
    if a.mode == "send":
        t0 = time.monotonic()
        while True:  # the receiver, started beside it, may not listen yet (a slow guest)
            try:
                socks = connect_flows(a.dst, a.port, a.flows, a.sport, a.tos)
                break
            except ConnectionRefusedError:
                if time.monotonic() - t0 > a.timeout:
                    raise
                time.sleep(0.1)
        if a.wait_go:
            print(json.dumps({"ready": True}), flush=True)
            sys.stdin.readline()
        t0 = time.monotonic()
        send_flows(socks, parse_size(a.bytes), a.seconds, close=True)
        print(json.dumps({"sent_s": time.monotonic() - t0}))
        return 0
    srv = socket.create_server(("0.0.0.0", a.port), backlog=a.flows)
    srv.settimeout(a.timeout)
    conns = []
    for _ in range(a.flows):
        conns.append(srv.accept())
    srv.close()
    # senders in several processes start apart (or wait for their word once connected): each flow is
    # timed from its first byte
    walls: list[tuple[float, float]] = []
    got = receive_flows([c for c, _ in conns], None, None, walls)
    print(json.dumps({"flows": {str(peer[1]): {"bytes": n, "fct_s": fct, "start": w[0], "end": w[1]}
                                for (_, peer), (n, fct), w in sorted(zip(conns, got, walls),
                                                                     key=lambda x: x[0][1][1])}}))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
