"""Synchronized elephant flows: the traffic a load balancer or a flow-control policy is judged on.
The one generator metrolab has: the scenario workload (ElephantRank, under torch.distributed) and
a standalone sender/receiver pair for lab tests (`python -m workloads.elephants send|recv`) both
run on `send_flows` and `receive_flows`.

Every rank host but the last opens `flows` TCP connections to the last (one pair: the parallel
flows of a collective between two sites; several senders: an incast), or with `transport: rdma`
`flows` RC queue pairs (RoCEv2: UDP to 4791, one source port per QP), each step one RDMA WRITE
of `size` per QP, timed from the common start to its completion at the sender. The connections live for
the whole sweep point, like a collective library's, so a controller can learn their 5-tuples
from what the switches forward (harness.policy.flows) and pin them to paths. Each step every flow sends `size`
bytes at once; the receiver times each flow from the common start.

Flow transmission efficiency (white paper section 4.2.4): the rate the flows' packets achieved
together (payload plus TCP/IP/Ethernet headers, what the links carry) over `capacity`, the sum
of the rates of the parallel links between the senders' and the receiver's sites (from the
topology unless given). A step ends when its last flow does, so a path that carries more than
its share sets the step time.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from typing import Any, Literal

from pydantic import Field, field_validator

from harness import settings
from harness.errors import SpecError
from workloads.base import Size, Workload, _Params

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

    @field_validator("capacity", mode="before")
    @classmethod
    def _rate(cls, v):
        from netem.units import parse_rate
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
    kind = "elephant-flows"
    params_model = ElephantParams
    metrics = ("flow_efficiency", "goodput_mbps", "fct_p50_s", "fct_max_s", "fct_spread")

    @classmethod
    def needs_rdma_for(cls, spec) -> bool:
        return spec.params.get("transport") == "rdma"

    @classmethod
    def resolve(cls, params: dict, hosts: list[str], topo) -> dict:
        p = ElephantParams.model_validate(params)
        if p.capacity is None:
            return {**params, "capacity": site_capacity(topo, hosts[:-1], hosts[-1])}
        return params

    @classmethod
    def validate(cls, spec, topo, scale: float) -> None:
        super().validate(spec, topo, scale)
        p = cls.params(spec, scale)
        if int(p.size / scale) < 1:
            raise SpecError("", "params.size", p.size, f"is less than one byte at scale {scale:g}")


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


def receive_flows(socks: list[socket.socket], nbytes: int | None,
                  t0: float | list[float]) -> list[tuple[int, float]]:
    """Per flow: the bytes received (`nbytes` each, or until the peer closes) and the completion
    time since the common start `t0` (time.perf_counter), or since each flow's own start."""
    out: list[tuple[int, float]] = [(0, 0.0)] * len(socks)
    starts = t0 if isinstance(t0, list) else [t0] * len(socks)

    def drain(i: int, s: socket.socket) -> None:
        n = _recv_exactly(s, nbytes)
        out[i] = (n, time.perf_counter() - starts[i])
    _together(drain, socks)
    return out


def connect_flows(dst: str, port: int, flows: int, sport: int | None = None, tos: int = 0) -> list[socket.socket]:
    """`flows` TCP connections to dst:port (from source ports sport.. when given: known 5-tuples)."""
    socks = []
    for i in range(flows):
        s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
        if tos:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        if sport is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", sport + i))
        s.connect((dst, port))
        socks.append(s)
    return socks


class ElephantRank:
    def __init__(self, params: dict[str, Any], scale: float, sites=None, hosts=None, **_):
        import torch.distributed as dist
        self.p = ElephantParams.model_validate(params)
        self.dist = dist
        self.me, world = dist.get_rank(), dist.get_world_size()
        self.receiver = world - 1
        self.nbytes = max(1, int(self.p.size / scale))
        self.senders = world - 1
        _SETUPS[0] += 1
        store = dist.distributed_c10d._get_default_store()
        key = f"elephants/{_SETUPS[0]}"
        self.socks: list[socket.socket] = []
        self.qps: _Qps | None = None
        if self.p.transport == "rdma":
            from harness.rdma.verbs import QPConfig
            self.qps = _Qps(store, key, self.me, self.receiver, world, self.p.flows, self.nbytes,
                            QPConfig(traffic_class=self.p.tos, timeout=self.p.qp_timeout))
            self.mss = self.qps.payload
        elif self.me == self.receiver:
            addr = (settings.get("METROLAB_RDMA_IP") or "0.0.0.0")
            srv = socket.create_server((addr, 0), backlog=self.senders * self.p.flows)
            store.set(key, f"{addr} {srv.getsockname()[1]}")
            srv.settimeout(120)
            for _i in range(self.senders * self.p.flows):  # (`_` is **kwargs here)
                c, _peer = srv.accept()
                self.socks.append(c)
            srv.close()
        else:
            if self.p.ecn:  # ECN-capable flows (the namespace's own sysctl; it goes with the lab)
                with open("/proc/sys/net/ipv4/tcp_ecn", "w") as f:
                    f.write("1")
            addr, port = store.get(key).decode().split()
            self.socks = connect_flows(addr, int(port), self.p.flows, tos=self.p.tos)
            self.mss = self.socks[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        dist.barrier()

    def _step(self) -> list[float]:
        """One synchronized step: every flow sends its bytes; the receiver's per-flow completion times."""
        self.dist.barrier()
        t0 = time.perf_counter()
        if self.qps is not None:
            return self._rdma_fcts(self.qps.step(t0) if self.me != self.receiver else [])
        if self.me == self.receiver:
            return [fct for _, fct in receive_flows(self.socks, self.nbytes, t0)]
        send_flows(self.socks, self.nbytes)
        return []

    def _rdma_fcts(self, mine: list[float]) -> list[float]:
        """Every sender's completion times, on the receiver (the one that reports them for TCP)."""
        import torch
        t = torch.tensor(mine or [0.0] * self.p.flows, dtype=torch.float64)
        parts = [torch.zeros_like(t) for _ in range(self.dist.get_world_size())]
        self.dist.all_gather(parts, t)
        if self.me != self.receiver:
            return []
        return [x for r, part in enumerate(parts) if r != self.receiver for x in part.tolist()]

    def warm(self, steps: int) -> None:
        for _ in range(steps):
            self._step()

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        import torch
        self.warm(warmups)
        fcts: list[float] = []
        steps: list[float] = []
        for _ in range(iters or self.p.iters):
            f = self._step()
            if self.me == self.receiver:
                fcts += f
                steps.append(max(f))
        # the receiver's figures, the senders' MSS (for the header share), to every rank
        mss = float(getattr(self, "mss", 0))
        t = torch.tensor([mss], dtype=torch.float64)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        mss = t.item() or 1448.0
        stats = [statistics.mean(steps), statistics.median(fcts), max(fcts)] if fcts else [0.0, 0.0, 0.0]
        s = torch.tensor(stats, dtype=torch.float64)
        self.dist.broadcast(s, src=self.receiver)
        step, p50, fmax = s.tolist()
        total = self.nbytes * self.p.flows * self.senders
        goodput = total * 8 / step
        # fct_spread: the last flow's completion over the median's (1: the flows shared fairly)
        out = {"step_time_s": step, "fct_p50_s": p50, "fct_max_s": fmax, "fct_spread": fmax / p50 if p50 else None,
               "goodput_mbps": goodput / 1e6}
        if self.p.capacity:
            headers = ROCE_HEADERS if self.qps is not None else HEADERS
            out["flow_efficiency"] = goodput * (mss + headers) / mss / self.p.capacity
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

    def __init__(self, store, key: str, me: int, receiver: int, world: int, flows: int, nbytes: int, cfg):
        import json
        from dataclasses import asdict

        from harness.dist.mesh import pick_device
        from harness.rdma.verbs import Connection, Device, PeerInfo
        self.flows, self.nbytes = flows, nbytes
        self.buf = bytearray(nbytes)
        self.conns: list = []
        self.dev = None
        self.wrs: list = []
        try:
            name, ip = pick_device()
            self.dev = Device(name, ip=ip)
            self.payload = min(cfg.mtu, self.dev.active_mtu)  # bytes per RoCEv2 packet
            pairs = [(s, me) for s in range(world) if s != receiver] if me == receiver else [(me, receiver)]
            for sender, _ in pairs:
                conn = Connection(self.dev, self.buf, cfg, num_qps=flows)
                self.conns.append(conn)
                side = "recv" if me == receiver else "send"
                store.set(f"{key}/{side}/{sender}", json.dumps(asdict(conn.local_info())))
            for (sender, _), conn in zip(pairs, self.conns):
                other = "send" if me == receiver else "recv"
                conn.connect(PeerInfo(**json.loads(store.get(f"{key}/{other}/{sender}"))))
            if me != receiver:
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
def main(argv: list[str] | None = None) -> int:
    """python -m workloads.elephants recv --port 5201 --flows 8
    python -m workloads.elephants send --dst 10.2.0.1 --port 5201 --flows 8 --bytes 1m --sport 41000

    The receiver prints {"flows": {source port: {"bytes", "fct_s"}}}."""
    import argparse
    import json

    from netem.units import parse_size
    ap = argparse.ArgumentParser(prog="python -m workloads.elephants")
    ap.add_argument("mode", choices=("send", "recv"))
    ap.add_argument("--dst")
    ap.add_argument("--port", type=int, default=5201)
    ap.add_argument("--flows", type=int, default=8)
    ap.add_argument("--bytes", default="1m")
    ap.add_argument("--sport", type=int, default=41000)
    ap.add_argument("--seconds", type=float, default=0.0, help="send for this long instead of --bytes")
    ap.add_argument("--tos", type=int, default=0, help="IP TOS byte (DSCP << 2)")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args(argv)
    if a.mode == "send":
        t0 = time.monotonic()
        send_flows(connect_flows(a.dst, a.port, a.flows, a.sport, a.tos), parse_size(a.bytes), a.seconds, close=True)
        print(json.dumps({"sent_s": time.monotonic() - t0}))
        return 0
    srv = socket.create_server(("0.0.0.0", a.port), backlog=a.flows)
    srv.settimeout(a.timeout)
    conns, starts = [], []
    for _ in range(a.flows):  # senders in several processes start apart: each flow is timed from its accept
        conns.append(srv.accept())
        starts.append(time.perf_counter())
    srv.close()
    got = receive_flows([c for c, _ in conns], None, starts)
    print(json.dumps({"flows": {str(peer[1]): {"bytes": n, "fct_s": fct}
                                for (_, peer), (n, fct) in sorted(zip(conns, got), key=lambda x: x[0][1][1])}}))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
