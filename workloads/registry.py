"""The workloads a scenario can name: their parameters (validated, scaled), default rank hosts,
metrics, and the rank-side object that measures one repetition.

A rank-side workload lives in a long-lived rank process (metrolab.harness.runner.rank_agent) with the
torch.distributed group already up: `setup(point)` once per sweep point, `measure(warmups, iters)`
once per repetition, returning metrics that include `step_time_s` (the slowest rank's mean step).
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

from pydantic import Field

from metrolab.workloads.a2a import A2A
from metrolab.workloads.base import Size, StepRank, Workload, _Params, site_groups, slowest
from metrolab.workloads.colls import COLLS, Ctx
from metrolab.workloads.command import Command
from metrolab.workloads.delivery import InferenceDelivery
from metrolab.workloads.disaggregated import Disaggregated
from metrolab.workloads.elephants import ElephantFlows
from metrolab.workloads.federated import Federated
from metrolab.workloads.pd_inference import PDInference
from metrolab.workloads.pipeline import Pipeline
from metrolab.workloads.trace import TraceReplay
from metrolab.workloads.training_step import TrainingStep


class CollectiveParams(_Params):
    backend: Literal["gloo", "verbs", "nccl"] = "gloo"
    op: Literal["all_reduce", "all_gather", "reduce_scatter", "broadcast"] = "all_reduce"
    size: Size = Field(default=1 << 20, description="bytes per step at full scale (divided by the scale factor)")
    dtype: Literal["float32", "bfloat16", "float16", "int64"] = "float32"
    algo: Literal["flat", "hierarchical"] = "flat"
    iters: int = Field(default=5, ge=1, description="collectives per repetition")


class Collective(Workload):
    rank_side = "CollectiveRank"
    """One collective per step (nccl-tests semantics: busbw with nccl-tests' factors)."""

    kind = "collective"
    params_model = CollectiveParams
    metrics = ("busbw_gbs", "algbw_gbs", "bytes")


def _all() -> dict[str, type[Workload]]:
    return {w.kind: w for w in (Collective, TrainingStep, Disaggregated, PDInference, ElephantFlows, Pipeline,
                                          Federated, A2A, InferenceDelivery, Command, TraceReplay)}


WORKLOADS: dict[str, type[Workload]] = _all()


# measured by the runner around each repetition: the swept links, the policy's queues and pause
# emulation (metrolab.harness.policy.apply), the RDMA devices and TCP stacks (metrolab.harness.runner.transport_counts)
RUNNER_METRICS = ("wan_bytes", "wan_drops", "wan_packets", "wan_loss", "ecn_marks", "path_imbalance",
                  "queue_drops", "queue_packets", "queue_loss", "pause_frames", "pause_s", "congested_drops",
                  "congested_packets", "congested_loss",
                  "congested_max_backlog", "pause_reaction_max_s", "pause_starved_s",
                  "rdma_sent_pkts", "rdma_seq_naks", "rdma_out_of_seq", "rdma_retries", "rdma_retry_exceeded",
                  "rdma_send_errors", "tcp_sent_segs", "tcp_retrans_segs", "tcp_timeouts", "tcp_loss_probes",
                  "backlog_drops", "link_util", "link_util_min", "busy_s", "link_sample_gap_s",
                  # a repetition with events (metrolab.harness.scenario.events.Impact)
                  "steady_steps", "event_steps", "event_step_max_s", "steady_p99_s", "slow_steps", "recovery_steps", "recovery_s",
                  "zero_impact", "replan_s", "event_late_s",
                  # the BMWG drafts' KPIs derived from the row's own columns (metrolab.harness.scenario.kpis)
                  "ecn_marked_ratio", "rdma_retx_ratio", "tcp_retx_ratio", "ttft_fabric_share", "busbw_line_ratio", "ecmp_max_mean",
                  "jain_index", "line_rate_bps")


# rates judged on their counts (metrolab.harness.scenario.stats.rate_interval): metric -> (events, packets
# that got through); the runner writes both counts into each row beside the rate
COUNT_RATES = {"wan_loss": ("wan_drops", "wan_packets"), "queue_loss": ("queue_drops", "queue_packets"),
               "congested_loss": ("congested_drops", "congested_packets")}

# what a repetition checks for correctness, or how much it was asked to move, not how fast it went:
# no limit of the host bounds these. Every other metric is a performance figure that the host's
# capacity, the ranks' CPU, the offered load or interference can bound as surely as the network,
# and a point where one does is not judged on it (metrolab.harness.scenario.verdict)
INTEGRITY_METRICS = frozenset({"bad_batches", "disk_write_bytes", "token_mismatches", "activations_wrong",
                               "aggregate_wrong", "integrity_failures", "intruder_reached", "intruder_attempts",
                               "reconnects", "bytes", "batch_bytes", "model_bytes", "gradient_bytes", "buckets",
                               "boundary_bytes", "stages", "round_bytes", "kv_bytes_per_request", "sites",
                               "ideal_bubble_fraction", "reported_steps", "line_rate_bps",
                               "recorded_step_s", "comm_bytes", "collectives"})


def workload_metrics(kinds: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for k in kinds:
        out += [m for m in WORKLOADS[k].metrics if m not in out]
    return tuple(out) + RUNNER_METRICS


# -- rank side -------------------------------------------------------------------------------
class CollectiveRank(StepRank):
    """Runs inside a rank process with the group up: the collectives table's operation, in place,
    on the table's data (workloads/colls.py), as the benchmark runs it."""

    def __init__(self, params: dict[str, Any], scale: float, sites: list[str] | None, **_):
        import torch  # deferred: torch (40 s under TCG) on the rank side only
        import torch.distributed as dist
        self.p = CollectiveParams.model_validate(params)
        self.torch, self.dist = torch, dist
        self.coll = COLLS[self.p.op]
        dtype = getattr(torch, self.p.dtype)
        esize = torch.empty(0, dtype=dtype).element_size()
        n = dist.get_world_size()
        groups = site_groups(sites or [], self.p.backend) if self.p.algo == "hierarchical" else None
        self.ctx = Ctx(torch, dist, dist.get_rank(), n, dtype, torch.device("cpu"), self.p.algo, groups)
        count = self.coll.count(max(n * esize, int(self.p.size / scale)), n, esize)
        self.nbytes = count * esize
        self.state = self.coll.init(self.ctx, count, True)

    def step(self) -> None:
        self.coll.run(self.ctx, self.state)

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        iters = iters or self.p.iters
        self.warm(warmups)
        step = slowest({"step": self.timed(iters)[0] / iters})["step"]
        algbw = self.nbytes / step / 1e9
        return {"step_time_s": step, "algbw_gbs": algbw,
                "busbw_gbs": algbw * self.coll.factor(self.ctx.n), "bytes": self.nbytes}


def rank_workload(kind: str):
    """The rank-side class of a workload (imported when a rank needs it)."""
    cls = WORKLOADS[kind]
    return getattr(importlib.import_module(cls.__module__), cls.rank_side)
