"""`metrolab rdma gbn`: RDMA WRITE goodput over distance x loss, measured in shuffled blocks, beside
the Go-Back-N model (metrolab.harness.rdma.gbn) whose constants come from the configuration and the
lossless baseline, never from the lossy points.

Each block measures every (distance, loss) point once, in a fresh order; a point's efficiency is
its goodput over the lossless goodput at the same distance *in the same block* (paired, so the
machine's drift cancels), with an interval over blocks (metrolab.harness.scenario.stats). The model gets:
the line rate the requester reaches (the link's, or the CPU's: the lossless goodput at that distance), the
round trip (2 x fiber delay + the hosts' own turnaround, from a 0 km latency run), rxe's window
(128 unacknowledged packets), the QP timeout (4.096 us x 2^t, in the kernel's 4 ms ticks), rxe's one retry at a time
(NAKs ignored until the next ACK; its interval from the message size) and the
transfer length. The sweep is an Experiment on the one Engine (metrolab.harness.runner.engine): rows
are written to the Record as they are measured, and a sweep resumes from them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from metrolab.harness.rdma.gbn import ROCE_HEADERS, GbnModel, ib_timeout_s, packets_in_flight, rxe_ack_interval
from metrolab.harness.rdma.pair import run_pair
from metrolab.harness.runner.engine import Budget, Engine, Experiment
from metrolab.harness.runner.record import Record
from metrolab.harness.scenario import stats
from metrolab.netem.models import fiber_delay_s
from metrolab.netem.profile import Impairment, LossModel

KERNEL_HZ = 250  # Debian's kernels (CONFIG_HZ_250): rxe's retransmission timer ticks


@dataclass(frozen=True)
class GbnPoint:
    distance_km: float
    loss: float

    @property
    def key(self) -> str:
        return f"{self.distance_km:g}km/{self.loss:g}"


def lab_model(baseline_gbps: float, link_rate_bps: float, distance_km: float, base_rtt_s: float, *,
              mtu: int = 1024, timeout: int = 14, transfer_packets: int | None = None,
              message_bytes: int = 65536) -> GbnModel:
    """The model of one distance at lab scale: the line rate is the link's or what the lossless
    0 km run reached (its goodput on the wire), whichever is lower; rxe's window, its timer in the
    kernel's ticks and its one-retry-at-a-time rule with the message's ACK interval."""
    wire_bps = baseline_gbps * 1e9 * (mtu + ROCE_HEADERS) / mtu
    return GbnModel(rate_bps=min(link_rate_bps, wire_bps), rtt_s=base_rtt_s + 2 * fiber_delay_s(distance_km),
                    mtu=mtu, timeout_s=ib_timeout_s(timeout, KERNEL_HZ), transfer_packets=transfer_packets,
                    ack_interval=rxe_ack_interval(message_bytes, mtu))


def full_scale_model(distance_km: float, rate_bps: float = 100e9, mtu: int = 4096,
                     window: int | None = None) -> GbnModel:
    """A NIC at full scale: the window is the BDP (a NIC keeps a path full) unless given."""
    rtt = 2 * fiber_delay_s(distance_km) + 10e-6  # a NIC's own turnaround: microseconds
    return GbnModel(rate_bps=rate_bps, rtt_s=rtt, mtu=mtu, window=window or packets_in_flight(rate_bps, rtt, mtu),
                    timeout_s=ib_timeout_s(14))


def summarize(rows: list[dict], link_rate_bps: float, base_rtt_s: float, *, mtu: int = 1024, timeout: int = 14,
              transfer_packets: int | None = None, full_rate_bps: float = 100e9,
              message_bytes: int = 65536) -> list[dict]:
    """One row per (distance, loss): the measured efficiency with its interval (paired with the
    block's lossless run at that distance), the model's at lab scale and its error, full scale."""
    ok = [r for r in rows if r.get("goodput_gbps")]
    out = []
    for d in sorted({r["distance_km"] for r in rows}):
        base = {r["block"]: 1 / r["goodput_gbps"] for r in ok if r["distance_km"] == d and r["loss"] == 0}
        if not base:
            continue
        # the line rate at this distance, lossless: under emulation the delay line itself costs CPU
        # (a netem qdisc with timers where 0 km has none), so each distance has its own
        model = lab_model(statistics.median(1 / t for t in base.values()), link_rate_bps, d, base_rtt_s, mtu=mtu,
                          timeout=timeout, transfer_packets=transfer_packets, message_bytes=message_bytes)
        full = full_scale_model(d, full_rate_bps)
        for p in sorted({r["loss"] for r in rows if r["distance_km"] == d}):
            mine = [r for r in rows if r["distance_km"] == d and r["loss"] == p]
            good = {r["block"]: 1 / r["goodput_gbps"] for r in mine if r.get("goodput_gbps")}
            row: dict[str, Any] = {"distance_km": d, "loss": p, "blocks": len(good),
                                   "failed": sum(1 for r in mine if not r.get("goodput_gbps")),
                                   "goodput_gbps": statistics.median(1 / t for t in good.values()) if good else None,
                                   "in_flight": model.in_flight, "window_bound": model.window_bound,
                                   "model_efficiency": model.efficiency(p),
                                   "model_timeout_share": model.breakdown(p)["timeout"],
                                   "model_timeouts_per_loss": model.timeout_probability(p) if p else 0.0,
                                   "full_scale_efficiency": full.efficiency(p),
                                   "full_scale_in_flight": full.in_flight}
            for k in ("seq_naks", "out_of_seq", "duplicates", "retries", "qdisc_drops"):
                vals = [r[k] for r in mine if r.get(k) is not None]
                row[k] = statistics.median(vals) if vals else None
            if p == 0:
                row |= {"efficiency": 1.0, "eff_low": 1.0, "eff_high": 1.0, "within": True,
                        "model_error": 0.0}
            else:
                deg = stats.degradation(good, base)
                e = deg.efficiency
                row |= {"efficiency": e.estimate, "eff_low": e.low, "eff_high": e.high,
                        "within": bool(e.low <= row["model_efficiency"] <= e.high) if e.n >= 2 else None,
                        "model_error": row["model_efficiency"] - e.estimate if e.n else None,
                        # ln(lossless / lossy time) per block: an interval at any level (a claim's family)
                        "log_ratios": [deg.log_ratios[b] for b in sorted(deg.log_ratios)]}
            out.append(row)
    return out


@dataclass
class GbnSweep(Experiment):
    """The sweep as an Experiment: a point's row is its WRITE goodput and the QPs' and the link's
    counters, or the reason it failed (a failed point is not measured again in its block)."""

    lab: Any
    pts: list[GbnPoint]
    record: Record
    rate_bps: float
    size: int
    iters: int
    stream: str = "gbn.jsonl"
    link: str = "wan"
    server: str = "b1"
    client: str = "a1"
    say: Callable[[str], None] = lambda m: None
    name: str = "gbn"
    blocks: int = 1
    port: int = field(default=18900, init=False)
    measured: int = field(default=0, init=False)  # rows in the Record, this invocation's included

    def points(self) -> list[GbnPoint]:
        return self.pts

    def prepare(self, engine: Engine) -> None:
        self.measured = len(self.rows())
        self.port += self.measured  # a resumed sweep's QPs do not meet the old ones' ports

    def measure(self, pt: GbnPoint, b: int) -> dict:
        self.measured += 1
        self.say(f"block {b + 1}/{self.blocks}: {pt.distance_km:g} km, loss {pt.loss:g} "
                 f"({self.measured}/{self.blocks * len(self.pts)})")
        self.lab.impair(self.link, Impairment(delay_s=fiber_delay_s(pt.distance_km),
                                              loss=LossModel(p=pt.loss) if pt.loss else None,
                                              rate_bps=self.rate_bps, limit_packets=10000))
        drops0 = _link_drops(self.lab, self.link)
        row: dict[str, Any] = {"block": b, "key": pt.key, "distance_km": pt.distance_km, "loss": pt.loss}
        try:
            res = run_pair(self.lab, self.server, self.client, mode="bw", size=self.size, iters=self.iters,
                           port=self.port, extra=["--op-timeout", "120"])
            c = res["counters"]["rdma"]
            row |= {"goodput_gbps": res["client"]["bw_avg_gbps"],
                    "seq_naks": c[self.client].get("rcvd_seq_err", 0),
                    "retries": c[self.client].get("completer_retry_err", 0),
                    "out_of_seq": c[self.server].get("out_of_seq_request", 0),
                    "duplicates": c[self.server].get("duplicate_request", 0),
                    "qdisc_drops": _link_drops(self.lab, self.link) - drops0}
        except Exception as exc:  # noqa: BLE001 — a point that fails is a row with the reason; the sweep goes on
            row["error"] = str(exc)[:300]
        self.port += 1
        self.record.append(self.stream, row)  # on disk before the next point: a killed sweep resumes
        return row


def run_sweep(sweep: GbnSweep, *, blocks: int, seed: int) -> list[dict]:
    """Every point once per block, in each block's order, on the Engine; rows the Record already
    holds are kept (a resumed sweep measures only what is missing)."""
    sweep.blocks = blocks
    Engine(sweep.record, seed).run(sweep, Budget(blocks))
    return sweep.rows()


def _link_drops(lab, link: str) -> int:
    """Packets the link's qdiscs dropped, both ends: the lab's own count, each tree's root (a
    classful parent counts its children's drops: summing every qdisc counted them twice)."""
    return lab.link_counters(link, ecn=False)[1]
