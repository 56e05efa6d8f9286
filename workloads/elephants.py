"""Synchronized elephant flows: the traffic a load balancer or a flow-control policy is judged on.

Every rank host but the last opens `flows` TCP connections to the last (one pair: the parallel
flows of a collective between two sites; several senders: an incast). The connections live for
the whole sweep point, like a collective library's, so a controller can learn their 5-tuples
from the sockets (harness.policy.flows) and pin them to paths. Each step every flow sends `size`
bytes at once; the receiver times each flow from the common start.

Flow transmission efficiency (white paper section 4.2.4): the rate the flows' packets achieved
together (payload plus TCP/IP/Ethernet headers, what the links carry) over `capacity`, the sum
of the rates of the parallel links between the senders' and the receiver's sites (from the
topology unless given). A step ends when its last flow does, so a path that carries more than
its share sets the step time.
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from typing import Any

from pydantic import Field, field_validator

from harness.errors import SpecError
from workloads.base import Size, Workload, _Params

HEADERS = 14 + 20 + 20 + 12  # Ethernet, IPv4, TCP, TCP timestamps: per segment on the wire


class ElephantParams(_Params):
    flows: int = Field(default=8, ge=1, le=256, description="connections per sending host")
    size: Size = Field(default=256 << 20, description="bytes per flow per step at full scale (divided by the scale)")
    iters: int = Field(default=1, ge=1, description="steps per repetition")
    tos: int = Field(default=0, ge=0, le=255, description="IP TOS byte of the flows (DSCP << 2)")
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


def _recv_exactly(c: socket.socket, n: int) -> None:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while n > 0:
        got = c.recv_into(view[:min(n, len(buf))])
        if not got:
            raise ConnectionError("a flow closed mid-step")
        n -= got


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
        if self.me == self.receiver:
            addr = os.environ.get("METROLAB_RDMA_IP", "0.0.0.0")
            srv = socket.create_server((addr, 0), backlog=self.senders * self.p.flows)
            store.set(key, f"{addr} {srv.getsockname()[1]}")
            srv.settimeout(120)
            for _ in range(self.senders * self.p.flows):
                c, _peer = srv.accept()
                self.socks.append(c)
            srv.close()
        else:
            if self.p.ecn:  # ECN-capable flows (the namespace's own sysctl; it goes with the lab)
                with open("/proc/sys/net/ipv4/tcp_ecn", "w") as f:
                    f.write("1")
            addr, port = store.get(key).decode().split()
            for _ in range(self.p.flows):
                s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
                if self.p.tos:
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, self.p.tos)
                s.connect((addr, int(port)))
                self.socks.append(s)
            self.mss = self.socks[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        dist.barrier()
        self.payload = b"\0" * (1 << 20)

    def _step(self) -> list[float]:
        """One synchronized step: every flow sends its bytes; the receiver's per-flow completion times."""
        self.dist.barrier()
        t0 = time.perf_counter()
        fct = [0.0] * len(self.socks)

        def run(i, s):
            if self.me == self.receiver:
                _recv_exactly(s, self.nbytes)
                fct[i] = time.perf_counter() - t0
            else:
                left = self.nbytes
                while left > 0:
                    left -= s.send(self.payload[:min(left, len(self.payload))])
        threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(self.socks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return fct

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
            out["flow_efficiency"] = goodput * (mss + HEADERS) / mss / self.p.capacity
        return out

    def close(self, final: bool = False) -> None:
        for s in self.socks:
            s.close()
        self.socks = []
