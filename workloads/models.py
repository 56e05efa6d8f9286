"""Analytical step-time models of the workloads (pure; unit-tested without a lab).

Every model takes the path the workload's traffic crosses at a sweep point (`Path`: bottleneck
rate, one-way delay, per-packet loss, hops, MTU) and returns a step time. Each has one free
constant, an overhead the network does not explain (the stack, Python, the emulator), fitted on
the baseline: `fit_overhead` solves model(baseline path, overhead) = measured baseline step, and
the same overhead predicts every other point before it runs (the white paper's pre-evaluation).

Transport:
- TCP: line rate x payload share (MSS over the wire bytes per segment), capped under loss by
  Mathis et al. (1.22 MSS / (RTT sqrt p)); after an idle longer than the RTO the congestion window
  restarts from 10 segments (RFC 2861, Linux's tcp_slow_start_after_idle), so a transfer pays
  slow-start round trips until its window covers the path's bandwidth-delay product.
- RoCEv2 (RC): Go-Back-N under loss (metrolab.harness.rdma.gbn): every loss resends a window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from metrolab.harness.rdma.gbn import gbn_efficiency

Transport = Literal["tcp", "roce"]
TCP_HEADERS = 20 + 32          # IPv4 + TCP with timestamps
ETH = 14
INIT_CWND = 10                 # segments (RFC 6928)
RTO_MIN_S = 0.2                # Linux's minimum retransmission timeout: the idle that restarts a window
ROCE_MTU = 1024                # the RoCE path MTU the verbs layer uses


@dataclass(frozen=True)
class Path:
    """What a workload's traffic crosses at one point (one direction)."""

    rate_bps: float | None            # bottleneck; None: unshaped
    one_way_s: float = 0.0
    loss: float = 0.0
    hops: int = 1
    mtu: int = 1500

    @property
    def rtt_s(self) -> float:
        return 2 * self.one_way_s

    def with_rate(self, rate_bps: float | None) -> Path:
        return replace(self, rate_bps=rate_bps)


UNSHAPED_BPS = 10e9  # what an unshaped path is taken to carry (its time is then mostly overhead)


def goodput_bps(path: Path, transport: Transport = "tcp") -> float:
    """Payload bit/s one flow gets on the path in steady state."""
    rate = path.rate_bps or UNSHAPED_BPS
    if transport == "roce":
        if path.loss <= 0:
            return rate * ROCE_MTU / (ROCE_MTU + 58)
        return rate * ROCE_MTU / (ROCE_MTU + 58) * gbn_efficiency(path.loss, rate, max(path.rtt_s, 1e-6), ROCE_MTU)
    mss = path.mtu - TCP_HEADERS
    line = rate * mss / (path.mtu + ETH)
    if path.loss > 0 and path.rtt_s > 0:
        return min(line, 1.22 * mss * 8 / (path.rtt_s * math.sqrt(path.loss)))
    return line


def slow_start_s(nbytes: float, path: Path, init_cwnd: int = INIT_CWND) -> float:
    """Extra time a TCP transfer of `nbytes` pays when its window starts from `init_cwnd` segments
    instead of being open: each round below the bandwidth-delay product costs an RTT in which
    only the window is sent."""
    if path.rtt_s <= 0 or nbytes <= 0:
        return 0.0
    rate = goodput_bps(path, "tcp")
    mss = path.mtu - TCP_HEADERS
    bdp = rate * path.rtt_s / 8
    sent, extra, cwnd = 0.0, 0.0, init_cwnd * mss
    while cwnd < bdp and sent < nbytes:
        chunk = min(cwnd, nbytes - sent)
        extra += path.rtt_s - chunk * 8 / rate  # the round took an RTT; at line rate it would take chunk/rate
        sent += chunk
        cwnd *= 2
    return max(0.0, extra)


def transfer_s(nbytes: float, path: Path, transport: Transport = "tcp", idle_restart: bool = False) -> float:
    """One message of `nbytes` from first byte sent to last byte received."""
    t = path.one_way_s + nbytes * 8 / goodput_bps(path, transport)
    if transport == "tcp" and idle_restart:
        t += slow_start_s(nbytes, path)
    return t


# -- collectives ------------------------------------------------------------------------------
def ring_steps(op: str, ranks: int) -> tuple[int, float]:
    """(sequential steps, share of the op's bytes each rank sends per step) of a ring algorithm."""
    n = max(1, ranks)
    if n == 1:
        return 0, 0.0
    if op == "all_reduce":
        return 2 * (n - 1), 1 / n
    if op in ("all_gather", "reduce_scatter"):
        return n - 1, 1 / n
    if op == "broadcast":
        return 1, 1.0
    if op == "all_to_all":  # pairwise: each rank sends a 1/n share to each of the others in turn
        return n - 1, 1 / n
    if op == "barrier":  # gloo's: a one-element all_reduce, its time all latency
        return 2 * (n - 1), 0.0
    raise ValueError(f"no model for collective {op!r}")


def collective_s(op: str, nbytes: float, wan: Path, *, ranks: int, sites: int = 1,
                 algo: str = "flat", transport: Transport = "tcp", overhead_s: float = 0.0) -> float:
    """One collective across the WAN: ring steps, each one WAN crossing (one-way delay) plus its
    share of the bytes at the flow's goodput. Hierarchical: only the site leaders' ring crosses the
    WAN (the in-site phases run on access links and sit in the overhead)."""
    crossing = sites if algo == "hierarchical" and sites > 1 else ranks
    if op == "reduce_scatter" and transport == "tcp":
        op = "all_reduce"  # gloo (the TCP backend) reduce-scatters by all-reducing the whole input
    steps, share = ring_steps(op, crossing)
    if sites <= 1:  # nothing crosses the WAN: the overhead is the whole time
        return overhead_s
    per_step = transfer_s(nbytes * share, wan, transport)
    return overhead_s + steps * per_step


# -- training step --------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingShape:
    compute_s: float                 # forward + backward of all micro-batches (measured or modeled)
    micro_batches: int
    layers: int
    bucket_bytes: tuple[float, ...]  # in backward order
    bucket_layers: tuple[int, ...]   # layers in each bucket
    ranks: int
    sites: int
    algo: str = "flat"
    transport: Transport = "tcp"
    control: bool = False            # a control handshake (one round trip to rank 0) before each bucket


def training_step_s(shape: TrainingShape, wan: Path, overhead_s: float = 0.0) -> float:
    """DDP-style overlap: during the last micro-batch's backward, each bucket is all-reduced once
    its layers' gradients are ready, one at a time on a communication thread; the step ends when
    the last bucket is reduced (or compute ends, if later). `overhead_s` is per bucket. With
    `control`, a bucket's reduction also waits for its handshake, started when the bucket is full
    (beside the reductions before it): one round trip of the path, unqueued (what a strict-priority
    slice gives it; behind a backlog it waits longer)."""
    per_mb = shape.compute_s / shape.micro_batches
    before = per_mb * (shape.micro_batches - 1)
    per_layer = per_mb * 2 / 3 / max(1, shape.layers)
    ready, done, t = 0, 0.0, per_mb / 3
    handshake = wan.rtt_s if shape.control and shape.sites > 1 else 0.0
    for nbytes, nlayers in zip(shape.bucket_bytes, shape.bucket_layers):
        ready += nlayers
        t_ready = per_mb / 3 + ready * per_layer
        done = max(done, t_ready + handshake) + collective_s("all_reduce", nbytes, wan, ranks=shape.ranks, sites=shape.sites,
                                                 algo=shape.algo, transport=shape.transport, overhead_s=overhead_s)
        t = max(per_mb, done)
    return before + t


# -- a recorded step, replayed (metrolab.workloads.exec_trace) ----------------------------------
def trace_step_s(actions: list[tuple[tuple, ...]], colls: tuple[tuple[str, float], ...], wan: Path, *, sites: int,
                 transport: Transport = "tcp", compute_scale: float = 1.0, overhead_s: float = 0.0) -> float:
    """One recorded step replayed on every rank at once: each rank runs its own actions
    (("compute", s), ("issue", j), ("wait", j)); collective j (op, bytes) starts once every rank has
    issued it and the one before it has ended (a backend runs a group's collectives one at a time,
    in issue order), and lasts collective_s; a wait holds its rank until j has ended. The step
    ends with its slowest rank. `overhead_s` is per collective."""
    ranks, n = len(actions), len(colls)
    issued: list[list[float | None]] = [[None] * n for _ in actions]
    end: list[float | None] = [None] * n
    pos, t = [0] * ranks, [0.0] * ranks
    moved = True
    while moved:
        moved = False
        for r, acts in enumerate(actions):
            while pos[r] < len(acts):
                kind, v = acts[pos[r]]
                if kind == "compute":
                    t[r] += v * compute_scale
                elif kind == "issue":
                    issued[r][v] = t[r]
                else:
                    done = end[v]
                    if done is None:
                        break
                    t[r] = max(t[r], done)
                pos[r] += 1
                moved = True
        for j in range(n):
            ready = [issued[r][j] for r in range(ranks)]
            if end[j] is None and None not in ready and (j == 0 or end[j - 1] is not None):
                op, nbytes = colls[j]
                start = max([x for x in ready if x is not None] + [end[j - 1] or 0.0 if j else 0.0])
                end[j] = start + collective_s(op, nbytes, wan, ranks=ranks, sites=sites, transport=transport,
                                              overhead_s=overhead_s)
                moved = True
    if any(p < len(a) for p, a in zip(pos, actions)):
        raise ValueError("the ranks' steps do not match: a rank waits for a collective another never issues")
    return max(t)



def trace_steps_s(steps: list[tuple[list[tuple[tuple, ...]], tuple[tuple[str, float], ...]]], wan: Path, *,
                  sites: int, transport: Transport = "tcp", compute_scale: float = 1.0,
                  overhead_s: float = 0.0) -> float:
    """The mean step of recorded steps ((every rank's actions, the step's collectives), in order)
    replayed back to back: a rank starts its next step when its own last one ends, not when the
    slowest rank's does (no barrier between steps), so a rank's short tail lends its next step a
    head start that a step-by-step sum of slowest ranks would not give it."""
    ranks = len(steps[0][0])
    actions: list[list[tuple]] = [[] for _ in range(ranks)]
    colls: list[tuple[str, float]] = []
    for acts, cs in steps:
        if len(acts) != ranks:
            raise ValueError("the ranks' steps do not match: a step has another number of ranks")
        for r, a in enumerate(acts):
            actions[r] += [(k, v if k == "compute" else v + len(colls)) for k, v in a]
        colls += cs
    return trace_step_s([tuple(a) for a in actions], tuple(colls), wan, sites=sites, transport=transport,
                        compute_scale=compute_scale, overhead_s=overhead_s) / len(steps)

# -- disaggregated training -------------------------------------------------------------------
def disaggregated_step_s(train_s: float, batch_bytes: float, pullers: int, prefetch: int, path: Path,
                         transport: Transport, overhead_s: float = 0.0) -> float:
    """A step trains (train_s) while `prefetch` pulls per rank are in flight: it stalls when the
    storage link cannot deliver a batch per rank per step (bandwidth), or when a pull's latency
    (request round trip + transfer + overhead) exceeds `prefetch` steps."""
    link = pullers * batch_bytes * 8 / goodput_bps(path, transport)
    latency = path.rtt_s + link + overhead_s
    return max(train_s, link, latency / prefetch)


# -- PD-separated inference ---------------------------------------------------------------------
def pd_request_s(kv_bytes: float, path: Path, transport: Transport, request_rate: float,
                 overhead_s: float = 0.0) -> float:
    """Mean end-to-end latency: prefill, decode and queueing sit in the overhead (measured at the
    baseline); the KV cache crosses the path once per request. Requests further apart than the RTO
    find a TCP connection whose window restarted."""
    idle = request_rate > 0 and 1 / request_rate > RTO_MIN_S
    return overhead_s + transfer_s(kv_bytes, path, transport, idle_restart=idle)


# -- pipeline parallelism ---------------------------------------------------------------------
def pipeline_step_s(stage_s: list[tuple[float, float]], micro_batches: int, boundary_bytes: float,
                    boundaries: list[Path], transport: Transport = "tcp", overhead_s: float = 0.0) -> float:
    """A GPipe step: each phase (forward, then backward) fills the pipeline once (every stage's
    compute and every boundary's delay and serialisation, in series) and then delivers a micro-batch
    per beat, the beat being the slowest stage or boundary (a link slower than the compute binds).
    `stage_s`: (forward, backward) seconds of one micro-batch per stage; `boundaries`: the path
    between consecutive stages (stages - 1 of them)."""
    if len(boundaries) != len(stage_s) - 1:
        raise ValueError(f"{len(stage_s)} stages have {len(stage_s) - 1} boundaries, not {len(boundaries)}")
    wire = [boundary_bytes * 8 / goodput_bps(b, transport) for b in boundaries]
    fill = sum(b.one_way_s for b in boundaries) + sum(wire)
    t = overhead_s
    for phase in (0, 1):
        compute = [s[phase] for s in stage_s]
        t += sum(compute) + fill + (micro_batches - 1) * max([*compute, *wire])
    return t


def ideal_bubble(stages: int, micro_batches: int) -> float:
    """GPipe's idle share of a step with equal stages and a free network: (p - 1) / (m + p - 1)."""
    return (stages - 1) / (micro_batches + stages - 1)


# -- federated learning -----------------------------------------------------------------------
def federated_round_s(model_bytes: float, paths: list[Path], local_s: list[float], overhead_s: float = 0.0) -> float:
    """A round: the global model to every participant at once, local training, the update back.
    `paths[i]` is participant i's path with the rate its flow gets (a link shared by several
    participants' flows divided among them); `local_s[i]` its training. Every transfer follows an
    idle longer than the RTO (TCP restarts its window). The round ends with the last update."""
    if len(paths) != len(local_s):
        raise ValueError(f"{len(paths)} paths for {len(local_s)} participants")
    return overhead_s + max(2 * transfer_s(model_bytes, p, "tcp", idle_restart=True) + t
                            for p, t in zip(paths, local_s))


def fair_share_paths(link_paths: list[list[Path]]) -> list[Path]:
    """Each flow's path through links some of them share: per link (one Path per link, the same
    object where flows share it) the rate divided by the flows crossing it, then the flow's
    bottleneck, summed delay and combined loss."""
    users: dict[int, int] = {}
    for links in link_paths:
        for lk in {id(x): x for x in links}.values():
            users[id(lk)] = users.get(id(lk), 0) + 1
    out = []
    for links in link_paths:
        rates = [lk.rate_bps / users[id(lk)] for lk in links if lk.rate_bps]
        keep = math.prod(1 - lk.loss for lk in links)
        out.append(Path(min(rates) if rates else None, sum(lk.one_way_s for lk in links), 1 - keep,
                        len(links), min([lk.mtu for lk in links], default=1500)))
    return out


# -- model delivery -----------------------------------------------------------------------------
def delivery_s(nbytes: float, mode: str, paths: list[Path], overhead_s: float = 0.0) -> float:
    """The model at every site. `paths`: unicast, the source's path to each site at its fair share
    of the links the copies share; chain, each hop's path (the copies run at once, pipelined).
    Unicast ends with the slowest copy; a chain moves at its slowest hop and pays every hop's delay
    once. Each transfer opens a fresh connection (slow start)."""
    if not paths:
        raise ValueError("no sites")
    if mode == "unicast":
        return overhead_s + max(transfer_s(nbytes, p, "tcp", idle_restart=True) for p in paths)
    if mode != "chain":
        raise ValueError(f"unknown delivery mode {mode!r}")
    slowest = min(paths, key=lambda p: goodput_bps(p))
    through = replace(slowest, one_way_s=sum(p.one_way_s for p in paths))
    return overhead_s + transfer_s(nbytes, through, "tcp", idle_restart=True)


# -- multi-agent delegation --------------------------------------------------------------------
def a2a_task_s(hops: list[Path], agents: int, think_s: float, request_bytes: float, response_bytes: float,
               task_rate: float, overhead_s: float = 0.0) -> float:
    """A task delegated down a chain: every agent thinks, each hop carries a request forward and a
    response back on its long-lived connection (an idle longer than the RTO between tasks restarts
    TCP's window: small messages fit the first window anyway)."""
    idle = task_rate > 0 and 1 / task_rate > RTO_MIN_S
    return overhead_s + agents * think_s + sum(
        transfer_s(request_bytes, h, "tcp", idle_restart=idle) + transfer_s(response_bytes, h, "tcp", idle_restart=idle)
        for h in hops)


# -- elephant flows ----------------------------------------------------------------------------
def elephants_step_s(total_bytes: float, capacity_bps: float, balance: float, path: Path,
                     wire_share: float = 1.0, idle_restart: bool = True, iters: int = 1,
                     overhead_s: float = 0.0, transport: Transport = "tcp") -> float:
    """Synchronized flows finish when the most loaded path has carried its share: the bytes over
    the capacity times the balance the path choice achieves (1: perfectly spread); a step whose
    TCP flows start on idle connections pays slow start once per measurement (RDMA WRITEs start at
    line rate: no window to open), and a WRITE completes when its last ACK is back (one more way)."""
    per_flow_path = path.with_rate(capacity_bps * balance)
    t = path.one_way_s + total_bytes * 8 / (goodput_bps(per_flow_path, transport) * wire_share)
    if transport == "roce":
        return overhead_s + t + path.one_way_s
    if idle_restart:
        t += slow_start_s(total_bytes, per_flow_path) / max(1, iters)
    return overhead_s + t


# -- fitting ----------------------------------------------------------------------------------
def fit_overhead(model: Callable[[float], float], measured_s: float, upper: float | None = None) -> float:
    """The overhead o with model(o) == measured_s (model non-decreasing in o). Where the model
    without overhead already exceeds the measurement, the overhead is negative: model(0) + o."""
    lo = 0.0
    base = model(lo)
    if base >= measured_s:
        return measured_s - base  # additive: the model over-predicts the ideal network by this much
    hi = upper or max(measured_s, 1e-3)
    while model(hi) < measured_s:
        hi *= 2
        if hi > 1e6:
            return measured_s - base
    for _ in range(60):
        mid = (lo + hi) / 2
        if model(mid) < measured_s:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def apply_overhead(model: Callable[[float], float], overhead: float) -> float:
    """model at a fitted overhead; a negative overhead is additive (see fit_overhead)."""
    return model(0.0) + overhead if overhead < 0 else model(overhead)
