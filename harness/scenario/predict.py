"""A model beside every point: the path a workload's traffic crosses at each sweep point, and the
workload's step-time model (metrolab.workloads.models) fitted on the baseline and evaluated at the point.

The path is the topology's shortest path (by hops) between two rank hosts in different sites (the
storage host and a compute rank, the prefill and decode hosts): its bottleneck rate, one-way delay
and loss, with the swept links at the point's distance, loss, rate and convergence.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from itertools import pairwise

from metrolab.harness.policy.planner import hash_efficiency
from metrolab.netem.models import fiber_delay_s
from metrolab.workloads import models as wm
from metrolab.workloads.a2a import A2AParams, chain_of
from metrolab.workloads.delivery import DeliveryParams
from metrolab.workloads.disaggregated import DisaggParams
from metrolab.workloads.elephants import ElephantParams
from metrolab.workloads.federated import FederatedParams
from metrolab.workloads.pipeline import PipelineParams
from metrolab.workloads.registry import CollectiveParams
from metrolab.workloads.request_trace import arrival_rate, read_trace
from metrolab.workloads.trace import TraceParams, load, replayed
from metrolab.workloads.training_step import TrainingParams, training_shape


def path_links(topo, a: str, b: str) -> list:
    """Links on a shortest path (hops) from node a to node b."""
    adj: dict[str, list] = {}
    for lk in topo.links:
        adj.setdefault(lk.a, []).append((lk.b, lk))
        adj.setdefault(lk.b, []).append((lk.a, lk))
    prev: dict[str, tuple[str, object] | None] = {a: None}
    q = deque([a])
    while q:
        n = q.popleft()
        if n == b:
            break
        for m, lk in adj.get(n, []):
            if m not in prev:
                prev[m] = (n, lk)
                q.append(m)
    if b not in prev:
        raise ValueError(f"no path from {a} to {b}")
    out, n = [], b
    step = prev[n]
    while step is not None:
        n, lk = step
        out.append(lk)
        step = prev[n]
    return list(reversed(out))


def point_path(topo, links: list, point, swept: set[str], rate_divisor: float = 1.0) -> wm.Path:
    """The path at a sweep point: swept links take the point's delay, loss, rate and convergence;
    the others their topology values (rates divided by the run's extra scale factor)."""
    rate, delay, keep, mtu = math.inf, 0.0, 1.0, 1500
    for lk in links:
        r = lk.rate_bps / rate_divisor if lk.rate_bps else None
        if lk.name in swept:
            if not point.baseline:
                delay += fiber_delay_s(point.distance_km, topo.group_index)
                keep *= 1 - point.loss
                if point.rate_bps:
                    r = point.rate_bps / rate_divisor
                if r and point.convergence > 1:
                    r /= point.convergence
        else:
            delay += lk.one_way_delay_s(topo.group_index)
            if lk.props.loss is not None:
                keep *= 1 - lk.props.loss.p
        if r:
            rate = min(rate, r)
        mtu = min(mtu, lk.props.mtu)
    return wm.Path(None if math.isinf(rate) else rate, delay, 1 - keep, len(links), min(mtu, 1500))


def cross_site_pair(topo, hosts: list[str]) -> tuple[str, str]:
    site = {h: topo.nodes[h].site for h in hosts}
    for h in hosts[1:]:
        if site[h] != site[hosts[0]]:
            return hosts[0], h
    return hosts[0], hosts[-1]


@dataclass
class Predictor:
    """One workload's model: `fit` on the baseline (its step time and metrics), then `predict`."""

    kind: str
    params: dict
    hosts: list[str]
    topo: object
    swept: set
    scale: float
    rate_divisor: float = 1.0
    policies: dict | None = None
    # elephant-flows: the scenario names the flows' own bottleneck (`capacity` given explicitly: a
    # port beyond the swept links, such as the receiver's)
    named_bottleneck: bool = False
    overhead: float | None = None
    extra: dict | None = None

    # -- what each workload model needs ---------------------------------------------------
    def _pair(self) -> tuple[str, str]:
        if self.kind == "disaggregated-training":
            storage = self.params.get("storage") or self.hosts[-1]
            other = next(h for h in self.hosts if h != storage)
            return storage, other
        if self.kind == "elephant-flows":
            return self.hosts[0], self.hosts[-1]
        return cross_site_pair(self.topo, self.hosts)

    def path(self, point) -> wm.Path:
        a, b = self._pair()
        return point_path(self.topo, path_links(self.topo, a, b), point, self.swept, self.rate_divisor)

    def _transport(self) -> wm.Transport:
        if self.kind == "disaggregated-training":
            return "roce" if self.params.get("transport", "rdma") == "rdma" else "tcp"
        return "roce" if self.params.get("backend") == "verbs" else "tcp"

    def _model(self, point):
        """model(overhead) -> step seconds at `point`."""
        path, kind, p, tr = self.path(point), self.kind, self.params, self._transport()
        sites = len({self.topo.nodes[h].site for h in self.hosts})
        if kind == "collective":
            cp = CollectiveParams.model_validate(p)
            nbytes = cp.size / self.scale
            return lambda o: wm.collective_s(cp.op, nbytes, path, ranks=len(self.hosts), sites=sites, algo=cp.algo,
                                             transport=tr, overhead_s=o)
        if kind == "training-step":
            shape = self._training_shape(p, len(self.hosts), sites, tr)
            return lambda o: wm.training_step_s(shape, path, o)
        if kind == "disaggregated-training":
            dp = DisaggParams.model_validate(p)
            train = self.extra["train_s"]
            return lambda o: wm.disaggregated_step_s(train, dp.batch_size / self.scale, len(self.hosts) - 1,
                                                     dp.prefetch, path, tr, o)
        if kind == "pd-inference":
            kv = self.extra["kv_bytes"]  # a trace's: the mean over its window (transfer time is ~linear in it)
            rate = float(p.get("request_rate", 0.0))
            if p.get("request_trace"):
                rate = arrival_rate(read_trace(p["request_trace"], p.get("trace_start", 0), p.get("requests", 8),
                                               p.get("trace_speed", 1.0)))
            return lambda o: wm.pd_request_s(kv, path, tr, rate, o)
        if kind == "elephant-flows":
            return self._elephants(point, path)
        if kind == "pipeline":
            return self._pipeline(point, tr)
        if kind == "federated":
            return self._federated(point)
        if kind == "a2a":
            return self._a2a(point)
        if kind == "inference-delivery":
            return self._delivery(point)
        if kind == "trace":
            return self._trace(path, sites, tr)
        raise KeyError(kind)

    def _trace(self, path: wm.Path, sites: int, tr):
        """The recorded steps a repetition replays, every rank's own actions, the mean step."""
        tp = TraceParams.model_validate(self.params)
        traces = load(tp.trace)
        steps = [([t.steps[k].actions for t in traces], tuple((c.op, c.nbytes / self.scale) for c in traces[0].steps[k].colls))
                 for k in replayed(traces, tp.steps)]
        return lambda o: wm.trace_steps_s(steps, path, sites=sites, transport=tr, compute_scale=tp.compute_scale,
                                          overhead_s=o)

    def _shared(self, pairs: list[tuple[str, str]], point) -> list[wm.Path]:
        """Flows between host pairs at once, each at its fair share of the links it shares with
        the others in the same direction (links are full duplex). One path per pair, the shortest:
        ECMP's split over parallel links is not modeled."""
        per_link: dict[tuple[str, bool], wm.Path] = {}
        flows = []
        for a, b in pairs:
            at, hops = a, []
            for lk in path_links(self.topo, a, b):
                forward = lk.a == at
                at = lk.b if forward else lk.a
                key = (lk.name, forward)
                per_link.setdefault(key, point_path(self.topo, [lk], point, self.swept, self.rate_divisor))
                hops.append(per_link[key])
            flows.append(hops)
        return wm.fair_share_paths(flows)

    def _delivery(self, point):
        dp = DeliveryParams.model_validate(self.params)
        src, sites = self.hosts[0], self.hosts[1:]
        pairs = [(src, h) for h in sites] if dp.mode == "unicast" else list(pairwise(self.hosts))
        paths = self._shared(pairs, point)
        size = dp.sizes(self.scale)[0]
        return lambda o: wm.delivery_s(size, dp.mode, paths, o)

    def _a2a(self, point):
        ap = A2AParams.model_validate(self.params)
        chain = chain_of(ap, self.hosts)
        hops = [point_path(self.topo, path_links(self.topo, a, b), point, self.swept, self.rate_divisor)
                for a, b in pairwise(chain)]
        req, resp = ap.sizes(self.scale)
        return lambda o: wm.a2a_task_s(hops, len(chain), ap.think_s, req, resp, ap.task_rate, o)

    def _federated(self, point):
        fp = FederatedParams.model_validate(self.params)
        agg, parts = self.hosts[0], self.hosts[1:]
        local = [fp.local_s * (fp.lag_slowdown if h in fp.lagging else 1.0) for h in parts]
        paths = self._shared([(agg, h) for h in parts], point)
        nbytes = fp.model_bytes(self.scale)
        return lambda o: wm.federated_round_s(nbytes, paths, local, o)

    def _pipeline(self, point, tr):
        pp = PipelineParams.model_validate(self.params)
        stages = pp.stage_compute_s(len(self.hosts))
        # each boundary its own path: within a site it is the LAN, across sites the WAN
        bounds = [point_path(self.topo, path_links(self.topo, a, b), point, self.swept, self.rate_divisor)
                  for a, b in pairwise(self.hosts)]
        nbytes = pp.boundary_bytes(self.scale)
        return lambda o: wm.pipeline_step_s(stages, pp.micro_batches, nbytes, bounds, tr, o)

    def _training_shape(self, p: dict, ranks: int, sites: int, tr) -> wm.TrainingShape:
        return training_shape(TrainingParams.model_validate(p), self.scale, ranks, sites, tr,
                              compute_s=(self.extra or {}).get("compute_s"))

    def _elephants(self, point, path: wm.Path):
        ep = ElephantParams.model_validate(self.params)
        senders = len(self.hosts) - 1
        flows = ep.flows * senders
        parallel = max(1, len(self.swept))
        kind = self._policy_kind(point)
        if parallel == 1 or kind in ("planned",):
            balance = 1.0
        elif kind == "ecmp-l3":
            balance = hash_efficiency(senders, parallel)  # one path per host pair
        else:  # the kernel's default hash, L4
            balance = hash_efficiency(flows, parallel)
        share = 1.0
        if kind == "planned" and self._policy_encap(point) == "srv6":
            share = (path.mtu + wm.ETH) / (path.mtu + wm.ETH + 64)
        # what the flows get: the paths' capacity times how evenly they are spread, or the
        # bottleneck the scenario names where that is less (then the spread does not matter)
        rate = (path.rate_bps or wm.UNSHAPED_BPS) * parallel * balance
        if self.named_bottleneck and ep.capacity:
            rate = min(rate, ep.capacity / self.rate_divisor)
        total = ep.size / self.scale * flows
        transport: wm.Transport = "roce" if ep.transport == "rdma" else "tcp"
        return lambda o: wm.elephants_step_s(total, rate, 1.0, path, share, iters=ep.iters, overhead_s=o,
                                             transport=transport)

    def _policy(self, point):
        if point.baseline or point.policy == "none" or not self.policies:
            return None
        return self.policies.get(point.policy)

    def _policy_kind(self, point) -> str | None:
        pol = self._policy(point)
        lb = getattr(pol, "load_balancing", None) if pol is not None else None
        return lb.kind if lb is not None else None

    def _policy_encap(self, point) -> str | None:
        pol = self._policy(point)
        lb = getattr(pol, "load_balancing", None) if pol is not None else None
        return getattr(lb, "encap", None) if lb is not None else None

    # -- fit and predict ---------------------------------------------------------------------
    def fit(self, base_point, base_step_s: float, base_metrics: dict | None = None) -> float:
        m = base_metrics or {}
        self.extra = {"compute_s": m.get("compute_s"), "kv_bytes": m.get("kv_bytes_per_request") or 0.0,
                      "train_s": max(0.0, base_step_s - (m.get("stall_s") or 0.0))}
        self.overhead = wm.fit_overhead(self._model(base_point), base_step_s)
        return self.overhead

    def predict(self, point) -> float:
        if self.overhead is None:
            raise RuntimeError("fit the model on the baseline first")
        return wm.apply_overhead(self._model(point), self.overhead)


def make_predictor(scn, wspec, hosts: list[str], params: dict, swept: list[str], scale: float,
                   rate_divisor: float = 1.0) -> Predictor | None:
    """The predictor of a workload at one combination of its swept parameters (None if its kind
    has no model)."""
    if wspec.kind not in ("collective", "training-step", "disaggregated-training", "pd-inference",
                          "elephant-flows", "pipeline", "federated", "a2a", "inference-delivery", "trace"):
        return None
    return Predictor(wspec.kind, params, hosts, scn.topology, set(swept), scale, rate_divisor,
                     {p.name: p for p in scn.spec.policies},
                     named_bottleneck=wspec.kind == "elephant-flows" and "capacity" in wspec.params)
