"""Whether the emulated network, not the host, sets a workload's step time.

Before a sweep the runner takes the shaping off the lab's links and measures what this backend can carry between them with the workload's own transport (a bare TCP
bulk transfer, or verbs RDMA WRITEs), both directions at once where the workload's traffic flows
both ways (a ring). The ratio of the emulated line rate to that capacity says how close the
host's CPUs are to being the bottleneck: above `max_capacity_ratio` the step time measures the
host (a 2-core TCG guest moves Soft-RoCE at a few hundred Mbit/s), and `auto_scale` divides rates
and bytes by a further factor (delays kept) until the ratio holds.

The scale model (docs/statistics.md) preserves serialization and propagation times, hence
transfer and step times; it does not preserve packets in flight (k times fewer) or the number of
per-packet loss events, which is why Go-Back-N is modeled at full scale beside the lab.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from metrolab.harness.rdma.pair import run_pair
from metrolab.harness.scenario.predict import cross_site_pair, path_links
from metrolab.netem.profile import Impairment

CAPACITY_PORT = 47010
TCP_SECONDS = 2.0
NICE_FACTORS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
BIDIRECTIONAL = ("collective", "training-step")


@dataclass
class Headroom:
    workload: str
    transport: str                      # tcp | rdma
    pair: tuple[str, str]
    both_ways: bool
    line_rate_bps: float | None = None  # the path's bottleneck as emulated
    capacity_bps: float | None = None   # per direction, unshaped, this backend
    capacity_ratio: float | None = None
    max_capacity_ratio: float = 0.5
    cpu_load: float | None = None       # of the ranks at the baseline (filled by the runner)
    utilization: float | None = None    # request-driven workloads: offered / served
    max_utilization: float = 0.8
    max_cpu_load: float = 0.8
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def host_bound(self) -> bool:
        return self.capacity_ratio is not None and self.capacity_ratio > self.max_capacity_ratio

    @property
    def overloaded(self) -> bool:
        return self.utilization is not None and self.utilization > self.max_utilization

    @property
    def cpu_bound(self) -> bool:
        return self.cpu_load is not None and self.cpu_load > self.max_cpu_load

    def to_dict(self) -> dict:
        return asdict(self) | {"host_bound": self.host_bound, "overloaded": self.overloaded,
                               "cpu_bound": self.cpu_bound}


def transport_of(kind: str, params: dict) -> str:
    if kind == "disaggregated-training":
        return "rdma" if params.get("transport", "rdma") == "rdma" else "tcp"
    return "rdma" if params.get("backend") == "verbs" else "tcp"


def pair_of(kind: str, params: dict, hosts: list[str], topo) -> tuple[str, str]:
    if kind == "disaggregated-training":
        storage = params.get("storage") or hosts[-1]
        return storage, next(h for h in hosts if h != storage)
    if kind == "elephant-flows":
        return hosts[0], hosts[-1]
    return cross_site_pair(topo, hosts)


def line_rate(topo, a: str, b: str, rate_divisor: float = 1.0) -> float | None:
    rates = [lk.rate_bps / rate_divisor for lk in path_links(topo, a, b) if lk.rate_bps]
    return min(rates) if rates else None


def extra_scale(ratio: float, limit: float) -> float:
    """The smallest 1-2-5 factor that brings `ratio` under `limit`."""
    for f in NICE_FACTORS:
        if ratio / f <= limit:
            return float(f)
    return float(math.ceil(ratio / limit))


def run_scale(ratios: list[float], limit: float, auto_scale: bool, recorded: float | None,
              rows_recorded: bool) -> tuple[float, str | None]:
    """The run's extra scale factor and, on a resume, why it is what it is. A resumed run keeps the
    factor its rows were measured at; one resumed before any row (a guest lost during the warm
    passes) has nothing to keep it for and decides again on this attempt's headroom, which its
    rows will carry."""
    if recorded is not None and rows_recorded:
        return float(recorded), f"resumed: the recorded extra scale {float(recorded):g} kept (rows were measured at it)"
    extra = extra_scale(max(ratios), limit) if auto_scale and ratios else 1.0
    if recorded is not None:
        return extra, f"resumed before any row: extra scale {extra:g} decided again (was {float(recorded):g})"
    return extra, None


# -- measuring -----------------------------------------------------------------------------------
def tcp_receive(addr: str, port: int, ready_timeout: float = 30) -> float | None:
    """Accept one TCP stream on addr:port and count it past slow start; its payload bit/s."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1)
    srv.settimeout(ready_timeout)
    try:
        conn, _ = srv.accept()
    finally:
        srv.close()
    conn.settimeout(30)
    buf = bytearray(1 << 20)
    steady_after = time.monotonic() + 0.3  # past slow start
    counted, t0 = 0, None
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        now = time.monotonic()
        if now >= steady_after:
            if t0 is None:
                t0 = now
            counted += n
    conn.close()
    t = (time.monotonic() - t0) if t0 else None
    return counted * 8 / t if t else None


def tcp_send(addr: str, port: int, seconds: float) -> None:
    """One bulk TCP stream to addr:port for `seconds` (connecting as soon as the receiver listens)."""
    deadline = time.monotonic() + 20
    while True:
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        cli.settimeout(30)
        try:
            cli.connect((addr, port))
            break
        except (ConnectionRefusedError, TimeoutError):
            cli.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    data = bytes(1 << 20)
    end = time.monotonic() + seconds + 0.3
    while time.monotonic() < end:
        cli.sendall(data)
    cli.shutdown(socket.SHUT_WR)
    cli.recv(1)  # the receiver closes once it has counted everything
    cli.close()


def _tcp_stream(lab, src: str, dst: str, port: int, seconds: float, out: dict) -> None:
    """src -> dst bulk TCP inside the lab (each end where its node lives); out[(src, dst)] = bit/s."""
    addr = str(lab.topology.nodes[dst].address)
    got: dict[str, Any] = {}

    def receive() -> None:
        try:
            got["bps"] = lab.on(dst, tcp_receive, addr, port)
        except Exception as exc:  # noqa: BLE001 — the sender's error says more; keep this one too
            got["error"] = exc

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    lab.on(src, tcp_send, addr, port, seconds)
    rx.join(timeout=90)
    if "error" in got:
        raise got["error"]
    out[(src, dst)] = got.get("bps")


def tcp_capacity(lab, a: str, b: str, both_ways: bool, seconds: float = TCP_SECONDS) -> float:
    out: dict = {}
    jobs = [threading.Thread(target=_tcp_stream, args=(lab, a, b, CAPACITY_PORT, seconds, out))]
    if both_ways:
        jobs.append(threading.Thread(target=_tcp_stream, args=(lab, b, a, CAPACITY_PORT + 1, seconds, out)))
    for j in jobs:
        j.start()
    for j in jobs:
        j.join()
    rates = [v for v in out.values() if v]
    if not rates:
        raise RuntimeError(f"no TCP transfer completed between {a} and {b}")
    return min(rates)


def rdma_capacity(lab, a: str, b: str, both_ways: bool) -> float:
    kw: dict[str, Any] = dict(mode="bw", op="write", size=65536, iters=400)
    if not both_ways:
        return run_pair(lab, b, a, port=18700, **kw)["client"]["bw_avg_gbps"] * 1e9
    with ThreadPoolExecutor(2) as pool:
        fwd = pool.submit(run_pair, lab, b, a, port=18700, **kw)
        rev = pool.submit(run_pair, lab, a, b, port=18701, **kw)
        return min(fwd.result()["client"]["bw_avg_gbps"], rev.result()["client"]["bw_avg_gbps"]) * 1e9


def measure(lab, wname: str, kind: str, params: dict, hosts: list[str], spec_headroom,
            rate_divisor: float = 1.0, cache: dict | None = None) -> Headroom:
    """The headroom of one workload. Every shaped link of the lab is unshaped while the transfer
    runs (not only one path between the two hosts: with parallel paths ECMP may hash either
    direction onto any of them) and put back as the topology has them (divided by `rate_divisor`)."""
    topo = lab.topology
    a, b = pair_of(kind, params, hosts, topo)
    transport = transport_of(kind, params)
    both = kind in BIDIRECTIONAL
    h = Headroom(wname, transport, (a, b), both, line_rate(topo, a, b, rate_divisor),
                 max_capacity_ratio=spec_headroom.max_capacity_ratio, max_utilization=spec_headroom.max_utilization,
                 max_cpu_load=spec_headroom.max_cpu_load)
    key = (a, b, transport, both)
    if cache is not None and key in cache:
        h.capacity_bps = cache[key]
    else:
        links = [lk for lk in topo.links if not lk.impairment(topo.group_index).is_empty]
        try:
            for lk in links:
                lab.impair(lk.name, Impairment())
            h.capacity_bps = (rdma_capacity if transport == "rdma" else tcp_capacity)(lab, a, b, both)
        except Exception as exc:  # noqa: BLE001 — the sweep still runs; the report says what is unknown
            h.error = f"capacity not measured: {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            for lk in links:
                restore(lab, lk, rate_divisor)
        if cache is not None and h.capacity_bps:
            cache[key] = h.capacity_bps
    if h.capacity_bps and h.line_rate_bps:
        h.capacity_ratio = h.line_rate_bps / h.capacity_bps
    return h


def restore(lab, link, rate_divisor: float = 1.0) -> None:
    imp = link.impairment(lab.topology.group_index)
    if rate_divisor != 1 and imp.rate_bps:
        imp = dataclasses.replace(imp, rate_bps=imp.rate_bps / rate_divisor)
    lab.impair(link.name, imp)
