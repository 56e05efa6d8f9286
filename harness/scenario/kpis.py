"""The benchmark KPIs labs compare, as the IETF BMWG drafts for AI fabrics define them
(draft-calabria-bmwg-ai-fabric-training-bench-02, draft-calabria-bmwg-ai-fabric-inference-bench),
mapped to the columns metrolab's rows and verdicts carry: `KPIS` is the table docs/kpis.md shows
(a test keeps the two equal), `derive` adds a row's KPIs that are ratios of what it counted, and
`jain` / `max_mean` are the drafts' load-balancing indices. The JCT ratio needs the paired
baseline and is the verdict's (metrolab.harness.scenario.verdict)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Kpi:
    draft: str    # training | inference
    kpi: str      # the draft's name
    metric: str   # metrolab's column ("" where not covered)
    unit: str     # metrolab's unit
    how: str      # how metrolab gets it, or why it does not


TRAIN, INFER = "training", "inference"
KPIS: tuple[Kpi, ...] = (
    Kpi(TRAIN, "Job Completion Time (JCT)", "step_time_s", "s", "a step (or a user program's reported step), the "
        "slowest rank's; any workload"),
    Kpi(TRAIN, "JCT Ratio", "jct_ratio", "ratio", "the point's step over its own block's 0 km lossless baseline (the "
        "ideal network, measured), with its interval; the model's prediction beside it"),
    Kpi(TRAIN, "Bus Bandwidth (BusBW)", "busbw_gbs", "GB/s", "nccl-tests' factors; kind collective"),
    Kpi(TRAIN, "BusBW / line rate", "busbw_line_ratio", "ratio", "busbw over the bottleneck rate of the path at the "
        "point (the model's path); kind collective"),
    Kpi(TRAIN, "Packet Drop Rate", "wan_loss", "ratio", "drops over packets on the swept links, judged on the counts; "
        "queue_loss for a policy's queues"),
    Kpi(TRAIN, "Tail Latency (P99)", "steady_p99_s", "s", "the steps' p99 outside an event's window (scenarios with "
        "events); p99 of requests for inference kinds"),
    Kpi(TRAIN, "Tail Latency (P99.9)", "", "", "not covered: a repetition has tens of steps, too few for a p99.9"),
    Kpi(TRAIN, "ECN Marking Ratio", "ecn_marked_ratio", "ratio", "CE-marked over sent packets on the swept links "
        "(the counts beside it: ecn_marks, wan_packets)"),
    Kpi(TRAIN, "PFC Pause Count", "pause_frames", "count", "pauses the flow-control policy's emulation sent per "
        "repetition (policies.md)"),
    Kpi(TRAIN, "PFC Pause Duration", "pause_s", "s", "time paused per repetition, same emulation"),
    Kpi(TRAIN, "RDMA Retransmission Rate", "rdma_retx_ratio", "ratio", "Soft-RoCE's requester retries over the "
        "packets it sent (per packet, not per second; the counts beside it: rdma_retries, rdma_sent_pkts)"),
    Kpi(TRAIN, "TCP Retransmission Rate", "tcp_retx_ratio", "ratio", "the rank hosts' TCP segments sent again over "
        "all they sent (tcp_retrans_segs, tcp_sent_segs; beside them tcp_timeouts and tcp_loss_probes, the "
        "recoveries that cost a step most); a testbed host's counts are its machine's"),
    Kpi(TRAIN, "ECMP Imbalance (MMR)", "ecmp_max_mean", "ratio", "the busiest parallel link's bytes over the mean, "
        "where the swept links are parallel"),
    Kpi(TRAIN, "Jain Fairness Index (JFI)", "jain_index", "0-1", "over the parallel swept links' bytes"),
    Kpi(TRAIN, "Link utilization", "link_util", "ratio", "bytes over line rate while the ranks run (link_samples)"),
    Kpi(TRAIN, "Link Failure Convergence", "recovery_s", "s", "steps back to steady after a link event (events)"),
    Kpi(TRAIN, "24h Stability", "", "", "metrolab run --soak: the step time's slope per hour and the ranks' "
        "resources (soak.json), not a row's column"),
    Kpi(TRAIN, "DCQCN Convergence, PFC deadlock, UET, DLB/spray", "", "", "not covered: switch ASIC and NIC "
        "congestion control this lab does not emulate"),
    Kpi(INFER, "TTFT", "ttft_p50_s", "s", "arrival to the first token at the decode host; p99 as ttft_p99_s; "
        "pd-inference"),
    Kpi(INFER, "TTFT_fabric", "kv_transfer_p50_s", "s", "prefill done to KV cache landed"),
    Kpi(INFER, "TTFT fabric share", "ttft_fabric_share", "ratio", "kv_transfer_p50_s over ttft_p50_s"),
    Kpi(INFER, "ITL", "tpot_p50_s", "s", "decode time per further token; p99 as tpot_p99_s"),
    Kpi(INFER, "E2E_latency", "e2e_p50_s", "s", "arrival to the last token; p99 as e2e_p99_s"),
    Kpi(INFER, "TPS_output", "tokens_per_s", "tokens/s", "output tokens over the repetition's span"),
    Kpi(INFER, "KV_BW / KV_xfer_bandwidth", "kv_transfer_gbs", "GB/s", "KV bytes over the summed transfer times"),
    Kpi(INFER, "Request_Rate (served)", "throughput_rps", "requests/s", "requests over the repetition's span; "
        "offered over served as utilization"),
    Kpi(INFER, "Prompt lengths and arrivals replayed", "kv_bytes_per_request", "bytes", "request_trace: the Azure "
        "LLM traces' layout, open-loop (workloads.md)"),
    Kpi(INFER, "EP AllToAll, prefix cache, KV-aware routing, autoscaling", "", "", "not covered: no MoE dispatch or "
        "serving framework is emulated"),
)


@dataclass(frozen=True)
class DraftCase:
    draft: str
    section: str   # the draft's test category and title
    runs: str      # what in metrolab runs it ("" where nothing does)
    metrics: str   # the columns it reports
    note: str = ""  # what is left out, or why it is not covered


TRAINING_CASES: tuple[DraftCase, ...] = (
    DraftCase(TRAIN, "1 RDMA transport: baseline throughput", "metrolab rdma bw (WRITE/READ/SEND, size sweep, QPs)",
             "bw_avg_gbps, bw_peak_gbps", "no RFC 2544 binary search for zero loss"),
    DraftCase(TRAIN, "1 RDMA transport: latency characterization", "metrolab rdma lat", "t_typical_us, p99_us, p999_us"),
    DraftCase(TRAIN, "1 RDMA transport: back-to-back burst absorption", "", "",
             "not covered: no search for the longest burst without loss (flow-control-roce measures a 3:1 incast)"),
    DraftCase(TRAIN, "1A UEC transport (all)", "", "", "not covered: no UET stack"),
    DraftCase(TRAIN, "2 Congestion: ECN marking accuracy and threshold", "flow-control (ECN policy)",
             "ecn_marks, ecn_marked_ratio", "marks counted; the marking threshold's accuracy is not measured"),
    DraftCase(TRAIN, "2 Congestion: PFC behaviour under incast", "flow-control-roce (port pause, flow backpressure)",
             "pause_frames, pause_s, congested_loss, queue_loss", "3:1 incast only; pause is emulated (policies.md)"),
    DraftCase(TRAIN, "2 Congestion: DCQCN convergence time", "", "", "not covered: no NIC congestion control emulated"),
    DraftCase(TRAIN, "2 Congestion: PFC storm and deadlock resilience", "", "", "not covered"),
    DraftCase(TRAIN, "3 Load balancing: ECMP entropy and polarization", "load-balancing, load-balancing-roce",
             "ecmp_max_mean, jain_index, path_imbalance"),
    DraftCase(TRAIN, "3 Load balancing: dynamic (flowlet)", "", "",
             "not covered: the planned per-flow paths of load-balancing are the alternative measured"),
    DraftCase(TRAIN, "3 Load balancing: packet spraying", "", "", "not covered"),
    DraftCase(TRAIN, "3 Load balancing: Jain fairness index", "load-balancing, load-balancing-roce", "jain_index"),
    DraftCase(TRAIN, "4 Collectives: AllReduce", "allreduce-distance, metrolab collectives",
             "busbw_gbs, algbw_gbs, busbw_line_ratio, jct_ratio"),
    DraftCase(TRAIN, "4 Collectives: AlltoAll", "", "", "not covered as a collective (kind a2a is agents, not MoE)"),
    DraftCase(TRAIN, "4 Collectives: AllGather", "kind collective, op all_gather", "busbw_gbs, busbw_line_ratio"),
    DraftCase(TRAIN, "4 Collectives: bus bandwidth summary", "metrolab collectives (size sweep)", "busbw_gbs"),
    DraftCase(TRAIN, "5 JCT: synthetic JCT under controlled conditions", "training-step, multi-aidc-training",
             "step_time_s, jct_ratio, predicted_step_s"),
    DraftCase(TRAIN, "5 JCT: MLPerf-aligned JCT", "kind command (docs/examples/command-train.yaml), trace-replay",
             "step_time_s, jct_ratio, replay_ratio", "the user's own training program, or its recorded Execution "
             "Trace replayed; no MLPerf harness ships"),
    DraftCase(TRAIN, "5 JCT: multi-tenant interference", "", "", "not covered: one workload runs at a time"),
    DraftCase(TRAIN, "6 Scale: fabric scale limits", "", "", "not covered: a few ranks on one machine"),
    DraftCase(TRAIN, "6 Scale: link failure convergence", "failover", "recovery_s, recovery_steps, event_step_max_s"),
    DraftCase(TRAIN, "6 Scale: zero-impact failover", "failover", "zero_impact, steady_p99_s"),
    DraftCase(TRAIN, "7 Soak: 24-hour sustained load", "metrolab run SCENARIO --soak 24h",
             "soak.json: step time slope per hour"),
    DraftCase(TRAIN, "7 Soak: resource leak detection", "metrolab run SCENARIO --soak",
             "soak.json: ranks' RSS, descriptors, threads per hour"),
)

INFERENCE_CASES: tuple[DraftCase, ...] = (
    DraftCase(INFER, "1 KV cache transfer: point-to-point throughput", "pd-inference, pd-inference-trace (verbs)",
             "kv_transfer_gbs, kv_bytes_per_request"),
    DraftCase(INFER, "1 KV cache transfer: latency", "pd-inference, pd-inference-trace",
             "kv_transfer_p50_s, kv_transfer_p99_s"),
    DraftCase(INFER, "1 KV cache transfer: concurrent transfer scaling", "", "", "not covered: one prefill-decode pair"),
    DraftCase(INFER, "1 KV cache transfer: multi-tier storage", "", "",
             "not covered (disaggregated-training pulls training batches from storage memory, not KV)"),
    DraftCase(INFER, "2 PD disaggregation: end-to-end disaggregated TTFT", "pd-inference, pd-inference-trace",
             "ttft_p50_s, ttft_p99_s, ttft_fabric_share"),
    DraftCase(INFER, "2 PD disaggregation: xPyD ratio", "", "", "not covered: 1 prefill, 1 decode host"),
    DraftCase(INFER, "2 PD disaggregation: heterogeneous parallelism", "", "", "not covered"),
    DraftCase(INFER, "2 PD disaggregation: prefill queue depth", "pd-inference (request_rate sweep), pd-inference-trace",
             "utilization, ttft_p99_s", "queueing shows in TTFT; the queue depth itself is not reported"),
    DraftCase(INFER, "3 MoE expert parallelism (all)", "", "", "not covered: no MoE dispatch"),
    DraftCase(INFER, "4 Congestion under inference traffic (all)", "", "",
             "not covered with inference traffic (flow-control runs elephant flows)"),
    DraftCase(INFER, "5 Request routing and load balancing (all)", "", "", "not covered: no serving router"),
    DraftCase(INFER, "6 Latency: TTFT under varying prompt lengths", "pd-inference-trace (request_trace)",
             "ttft_p50_s, ttft_p99_s", "over the trace's mix; not broken down by prompt length"),
    DraftCase(INFER, "6 Latency: ITL and tail latency", "pd-inference, pd-inference-trace", "tpot_p50_s, tpot_p99_s"),
    DraftCase(INFER, "6 Latency: end-to-end under multi-tenant load", "", "", "not covered"),
    DraftCase(INFER, "6 Latency: sensitivity to fabric congestion", "pd-inference (distance, loss; convergence)",
             "e2e_p50_s, jct_ratio"),
    DraftCase(INFER, "7 Throughput: aggregate tokens per second", "pd-inference, pd-inference-trace",
             "tokens_per_s, throughput_rps"),
    DraftCase(INFER, "7 Throughput: batching, goodput under preemption", "", "", "not covered: no serving framework"),
    DraftCase(INFER, "8 Scale and autoscaling (all)", "", "", "not covered"),
    DraftCase(INFER, "9 Soak: sustained load, KV cache memory leak", "metrolab run pd-inference --soak",
             "soak.json: ranks' RSS per hour"),
)


def markdown() -> str:
    """docs/kpis.md's tables (tests/harness/scenario/test_kpis_unit.py keeps the file equal to this)."""
    out = ["## KPIs", "", "| draft | KPI | metrolab column | unit | how |", "|---|---|---|---|---|"]
    out += [f"| {k.draft} | {k.kpi} | {f'`{k.metric}`' if k.metric else '—'} | {k.unit or '—'} | {k.how} |"
            for k in KPIS]
    for title, cases in (("training", TRAINING_CASES), ("inference", INFERENCE_CASES)):
        out += ["", f"## The {title} draft's test cases", "", "| test case | run by | columns | left out |", "|---|---|---|---|"]
        out += [f"| {c.section} | {c.runs or '—'} | {c.metrics or '—'} | {c.note or ''} |" for c in cases]
    return "\n".join(out) + "\n"


def jain(values: Sequence[float]) -> float | None:
    """Jain's fairness index: (sum x)^2 / (n sum x^2); 1 when all equal, 1/n when one carries all."""
    sq = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * sq) if values and sq > 0 else None


def max_mean(values: Sequence[float]) -> float | None:
    """The busiest member over the mean (the drafts' MMR): 1 when balanced, n when one carries all."""
    total = sum(values)
    return max(values) * len(values) / total if values and total > 0 else None


# ratios of a row's own counts: the metric, from (events, of how many) columns of the same row
COUNTED = {"ecn_marked_ratio": ("ecn_marks", "wan_packets"), "rdma_retx_ratio": ("rdma_retries", "rdma_sent_pkts"),
           "tcp_retx_ratio": ("tcp_retrans_segs", "tcp_sent_segs")}


def derive(row: dict) -> dict:
    """The row's KPIs that are ratios of its own columns (absent where an input is)."""
    out: dict[str, float] = {}
    for metric, (events, trials) in COUNTED.items():
        if row.get(events) is not None and row.get(trials):
            out[metric] = row[events] / row[trials]
    if row.get("ttft_p50_s") and row.get("kv_transfer_p50_s") is not None:
        out["ttft_fabric_share"] = row["kv_transfer_p50_s"] / row["ttft_p50_s"]
    if row.get("busbw_gbs") is not None and row.get("line_rate_bps"):
        out["busbw_line_ratio"] = row["busbw_gbs"] * 8e9 / row["line_rate_bps"]
    return out


def jct_ratio(efficiency: float | None, low: float | None, high: float | None) -> tuple:
    """The JCT ratio (point over ideal network) and its interval, from efficiency's (ideal over
    point): the reciprocal, the interval's ends swapped; an end at 0 efficiency is unbounded."""
    def inv(x):
        return None if x is None else (float("inf") if x <= 0 else 1 / x)
    return inv(efficiency), inv(high), inv(low)


if __name__ == "__main__":  # python -m metrolab.harness.scenario.kpis: docs/kpis.md's tables
    print(markdown(), end="")
