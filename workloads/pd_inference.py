"""PD-separated inference: a prefill host runs prompts through the model and sends each request's
KV cache to a decode host, which generates the remaining tokens.

Models: `tiny` is a real torch transformer (metrolab.workloads.tiny_lm), so the decode host's tokens can be
checked against a single-host run; a named profile (llama2-7b, …) moves KV caches of the
profile's size (divided by the scale factor) and spends modeled prefill and decode times.

The KV path is the process group's point-to-point send/recv: backend `verbs` moves it by RDMA
WRITE (WRITE_WITH_IMM chunks, metrolab.harness.dist.mesh), `gloo` over TCP. The decode host posts the next
request's receive before decoding the current one, so transfers overlap decoding.

Requests arrive as a Poisson process at `request_rate` per second (0: back to back), prefill
serves them in order. Both hosts share a time origin (a barrier; the lab's hosts share a clock,
real hosts would need PTP). Per repetition: TTFT (arrival to the first token at the decode host),
TPOT, KV-transfer time (prefill done to KV landed), end-to-end latency, p50/p99 of each, KV bytes
per request, and whether the generated tokens equal the single-host run (`token_mismatches`).
`step_time_s` is the mean end-to-end latency, so efficiency is the ideal network's latency over
the measured one.
"""

from __future__ import annotations

import random
import time
from typing import Any, Literal

from pydantic import Field

from metrolab.harness.errors import SpecError
from metrolab.workloads import profiles as pf
from metrolab.workloads.base import Workload, _Params
from metrolab.workloads.request_trace import Request, arrival_rate, read_trace


class PDParams(_Params):
    backend: Literal["gloo", "verbs"] = "gloo"
    model: str = Field(default="tiny", description=f"tiny (real torch) or a profile: {', '.join(pf.PROFILES)}")
    layers: int = Field(default=2, ge=1, description="tiny model layers")
    d_model: int = Field(default=64, ge=8)
    heads: int = Field(default=4, ge=1)
    prompt_tokens: int = Field(default=64, ge=1)
    output_tokens: int = Field(default=16, ge=1)
    requests: int = Field(default=8, ge=1, description="requests per repetition")
    request_rate: float = Field(default=0.0, ge=0, description="Poisson arrivals per second; 0 = back to back")
    device: str = "h100"
    mfu: float = Field(default=0.5, gt=0, le=1)
    check: bool = True
    seed: int = 0
    request_trace: str | None = Field(default=None, description="a CSV in the Azure LLM inference traces' layout "
                                      "(TIMESTAMP, ContextTokens, GeneratedTokens), relative to the scenario's "
                                      "folder: its arrivals, prompt and output lengths in place of request_rate, "
                                      "prompt_tokens and output_tokens")
    trace_start: int = Field(default=0, ge=0, description="the trace's first row replayed (0: its first)")
    trace_speed: float = Field(default=1.0, gt=0, description="the trace's arrival times are divided by this")


class PDInference(Workload):
    """Prefill on the first host, decode on the second, KV cache across the network."""

    rank_side = "PDInferenceRank"
    kind = "pd-inference"
    params_model = PDParams
    metrics = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "kv_transfer_p50_s", "kv_transfer_p99_s",
               "e2e_p50_s", "e2e_p99_s", "kv_bytes_per_request", "throughput_rps", "token_mismatches",
               "service_s", "utilization", "tokens_per_s", "kv_transfer_gbs")
    logs_steps = True  # a request is a step: its arrival and its last token (events are charged to them)
    path_params = ("request_trace",)

    @classmethod
    def validate(cls, spec, topo, scale: float) -> None:
        super().validate(spec, topo, scale)
        p = cls.params(spec, scale)
        if len(cls.hosts(spec, topo)) != 2:
            raise SpecError("", "hosts", cls.hosts(spec, topo), "PD inference takes two hosts: [prefill, decode]")
        if p.model != "tiny" and p.model not in pf.PROFILES:
            raise SpecError("", "params.model", p.model, f"unknown model (tiny, {', '.join(pf.PROFILES)})")
        if p.model == "tiny" and p.d_model % p.heads:
            raise SpecError("", "params.d_model", p.d_model, f"must be divisible by heads ({p.heads})")
        if p.model == "tiny" and p.request_trace is None and p.prompt_tokens + p.output_tokens > 512:
            raise SpecError("", "params.prompt_tokens", p.prompt_tokens, "prompt + output exceed the tiny "
                            "model's 512 positions")
        if p.device not in pf.DEVICES:
            raise SpecError("", "params.device", p.device, f"unknown device ({', '.join(pf.DEVICES)})")
        if p.request_trace is not None:
            given = [k for k in ("request_rate", "prompt_tokens", "output_tokens") if k in spec.params]
            if given:
                raise SpecError("", f"params.{given[0]}", spec.params[given[0]], "the request trace gives every "
                                "request's arrival, prompt and output lengths")
            try:
                reqs = read_trace(p.request_trace, p.trace_start, p.requests, p.trace_speed)
            except SpecError as exc:
                raise SpecError("", "params.request_trace", p.request_trace,
                                f"{exc.path + ': ' if exc.path else ''}{exc.message}") from None
            worst = max(reqs, key=lambda r: r.prompt_tokens + r.output_tokens)
            if p.model == "tiny" and worst.prompt_tokens + worst.output_tokens > 512:
                raise SpecError("", "params.request_trace", p.request_trace,
                                f"a request of {worst.prompt_tokens} + {worst.output_tokens} tokens exceeds the tiny "
                                "model's 512 positions (use a profile model)")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        raise ValueError("no values")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def requests_of(p: PDParams, first_id: int, n: int, window: list[Request] | None = None) -> list[Request]:
    """A repetition's n requests: the trace's window (the same every repetition: every point replays
    the same work; `window`, where the caller read it once), or Poisson arrivals at request_rate with
    the fixed lengths."""
    if p.request_trace is not None:
        return (window or read_trace(p.request_trace, p.trace_start, p.requests, p.trace_speed))[:n]
    return [Request(t, p.prompt_tokens, p.output_tokens)
            for t in arrivals(n, p.request_rate, p.seed * 7919 + first_id)]


def arrivals(n: int, rate: float, seed: int) -> list[float]:
    """Arrival offsets (s) of n requests: Poisson at `rate`, or all at 0 when rate is 0."""
    if rate <= 0:
        return [0.0] * n
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


# -- rank side -------------------------------------------------------------------------------
class PDInferenceRank:
    def __init__(self, params: dict[str, Any], scale: float, sites=None, **_):
        import torch  # deferred: torch (40 s under TCG) on the rank side only
        import torch.distributed as dist
        self.torch, self.dist = torch, dist
        self.p = p = PDParams.model_validate(params)
        self.rank = dist.get_rank()
        self.reps = 0
        self.scale = scale
        # the trace's window, read once: every repetition replays it
        self.window = read_trace(p.request_trace, p.trace_start, p.requests, p.trace_speed) \
            if p.request_trace is not None else None
        if p.model == "tiny":
            from metrolab.workloads.tiny_lm import TinyLM  # deferred: imports torch, rank side only
            self.model: TinyLM | None = TinyLM(p.layers, p.d_model, p.heads, seed=p.seed)
            self.kv_dtype = torch.float32
        else:
            self.model = None
            self.kv_dtype = torch.uint8
            self.prof, self.dev = pf.PROFILES[p.model], pf.DEVICES[p.device]
            self.decode_s = pf.decode_step_s(self.prof.params, 2, self.dev)

    def kv_shape(self, prompt_tokens: int) -> tuple[int, ...]:
        """The KV cache of a prompt: the tiny model's own, or the profile's bytes divided by the scale."""
        p = self.p
        if self.model is not None:
            return (p.layers, 2, p.heads, prompt_tokens, p.d_model // p.heads)
        return (max(1, int(pf.kv_bytes_per_token(self.prof) * prompt_tokens / self.scale)),)

    def kv_bytes(self, prompt_tokens: int) -> int:
        return int(self.torch.empty(self.kv_shape(prompt_tokens), dtype=self.kv_dtype).nbytes)

    def _prompt(self, i: int, tokens: int):
        g = self.torch.Generator().manual_seed(self.p.seed * 100003 + i)
        return self.torch.randint(0, 256, (tokens,), generator=g)

    # prefill host --------------------------------------------------------------------------
    def _prefill_all(self, t0: float, reqs: list[Request], first_id: int) -> list[dict]:
        torch, dist, p = self.torch, self.dist, self.p
        works, keep, out = [], [], []
        for i, rq in enumerate(reqs):
            wait = t0 + rq.arrival_s - time.perf_counter()
            if wait > 0:  # open loop: a request arrives when it does, whatever is still in flight
                time.sleep(wait)
            start = time.perf_counter()
            if self.model is not None:
                cache = self.model.new_cache()
                first = self.model.prefill(self._prompt(first_id + i, rq.prompt_tokens), cache)
                kv = cache[:, :, :, :rq.prompt_tokens].contiguous()
            else:
                time.sleep(2 * self.prof.params * rq.prompt_tokens / (self.dev.tflops * 1e12 * p.mfu))
                first = 0
                kv = torch.full(self.kv_shape(rq.prompt_tokens), (first_id + i) % 251, dtype=torch.uint8)
            done = time.perf_counter()
            head = torch.tensor([first_id + i, first], dtype=torch.int64)
            keep += [head, kv]  # alive until their sends complete
            works += [dist.isend(head, 1), dist.isend(kv, 1)]
            out.append({"arrival": t0 + rq.arrival_s, "prefill_start": start, "prefill_done": done})
        for w in works:
            w.wait()
        return out

    # decode host ---------------------------------------------------------------------------
    def _decode_all(self, reqs: list[Request]) -> list[dict]:
        torch, dist = self.torch, self.dist

        def post(rq: Request):  # both hosts read the same requests: the decode host knows each size
            head = torch.empty(2, dtype=torch.int64)
            kv = torch.empty(self.kv_shape(rq.prompt_tokens), dtype=self.kv_dtype)
            return head, kv, dist.irecv(head, 0), dist.irecv(kv, 0)
        out = []
        pending = post(reqs[0])
        for i, rq in enumerate(reqs):
            head, kv, wh, wk = pending
            wh.wait()
            wk.wait()
            landed = time.perf_counter()
            if i + 1 < len(reqs):
                pending = post(reqs[i + 1])  # the next KV transfer runs while this request decodes
            rid, first = int(head[0]), int(head[1])
            if self.model is not None:
                cache = self.model.new_cache()
                cache[:, :, :, :rq.prompt_tokens] = kv
                tokens = self.model.decode(cache, rq.prompt_tokens, first, rq.output_tokens)
            else:
                for _ in range(rq.output_tokens - 1):
                    time.sleep(self.decode_s)
                tokens = [] if int(kv[0]) == rid % 251 and int(kv[-1]) == rid % 251 else [-1]
            out.append({"id": rid, "landed": landed, "done": time.perf_counter(), "tokens": tokens,
                        "prompt_tokens": rq.prompt_tokens, "output_tokens": rq.output_tokens,
                        "kv_bytes": int(kv.nbytes)})
        return out

    def _run(self, n: int, first_id: int) -> list[dict]:
        """n requests; every rank returns the joined per-request records."""
        reqs = requests_of(self.p, first_id, n, self.window)
        self.dist.barrier()
        t0 = time.perf_counter()
        mine = self._prefill_all(t0, reqs, first_id) if self.rank == 0 else self._decode_all(reqs)
        both: list = [None, None]
        self.dist.all_gather_object(both, mine)
        return [{**a, **b} for a, b in zip(both[0], both[1])]

    def warm(self, steps: int) -> None:
        """`steps` requests (at most a repetition's), not measured."""
        base = 1_000_000 * self.reps
        self.reps += 1
        self._run(min(steps, self.p.requests), base + 900_000)

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        """A repetition of `requests` requests (`iters`, where given, of that many: the runner's
        warm-up steps are single requests)."""
        p = self.p
        if warmups:
            self.warm(warmups)
        base = 1_000_000 * self.reps
        self.reps += 1
        recs = self._run(iters or p.requests, base)
        wall = time.time() - time.perf_counter()  # the records' clock onto the runner's (events)
        ttft = [r["landed"] - r["arrival"] for r in recs]
        tpot = [(r["done"] - r["landed"]) / max(1, r["output_tokens"] - 1) for r in recs]
        kvt = [r["landed"] - r["prefill_done"] for r in recs]
        e2e = [r["done"] - r["arrival"] for r in recs]
        span = max(r["done"] for r in recs) - min(r["arrival"] for r in recs)
        # the slower stage's mean service time: a request keeps the prefill host busy from its start
        # to its prefill, the decode host from when both its KV cache and the host are ready
        prefill = [r["prefill_done"] - r["prefill_start"] for r in recs]
        decode, free = [], -1e18
        for r in recs:
            decode.append(r["done"] - max(r["landed"], free))
            free = r["done"]
        service = max(sum(prefill) / len(prefill), sum(decode) / len(decode))
        offered = arrival_rate(self.window[:len(recs)]) if self.window is not None else p.request_rate
        mismatches = 0
        if p.check and self.rank == 0:
            for r in recs:
                want = (self.model.generate(self._prompt(r["id"], r["prompt_tokens"]), r["output_tokens"])
                        if self.model is not None else [])
                mismatches += r["tokens"] != want
        kv_total = sum(r["kv_bytes"] for r in recs)
        return {"step_time_s": sum(e2e) / len(e2e),
                "ttft_p50_s": percentile(ttft, 50), "ttft_p99_s": percentile(ttft, 99),
                "tpot_p50_s": percentile(tpot, 50), "tpot_p99_s": percentile(tpot, 99),
                "kv_transfer_p50_s": percentile(kvt, 50), "kv_transfer_p99_s": percentile(kvt, 99),
                "e2e_p50_s": percentile(e2e, 50), "e2e_p99_s": percentile(e2e, 99),
                "kv_bytes_per_request": kv_total / len(recs), "throughput_rps": len(recs) / span if span > 0 else 0.0,
                # BMWG inference KPIs: output tokens a second over the repetition, KV-cache transfer bandwidth
                "tokens_per_s": sum(r["output_tokens"] for r in recs) / span if span > 0 else 0.0,
                "kv_transfer_gbs": kv_total / sum(kvt) / 1e9 if sum(kvt) > 0 else 0.0,
                "token_mismatches": mismatches, "service_s": service,
                # offered over served: above ~0.8 the requests measure their own queue, not the network
                "utilization": offered * service if offered and offered > 0 else None,
                "_steps": [(r["arrival"] + wall, r["done"] + wall) for r in recs]}
