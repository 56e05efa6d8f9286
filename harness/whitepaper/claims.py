"""The white paper's quantitative claims, each tied to the scenario that tests it, and how a claim
is judged from that scenario's measurements (pure: unit-tested without a lab).

A claim is judged on measurements only, at the points it is about (`at`: e.g. the flow-level
policy, with port-level pause measured beside it as context): it holds when every result of its
criteria passes there, does not hold when one fails after Holm's correction over all of them (a
claim over several points keeps its error at alpha), and is inconclusive otherwise (a result the
data cannot decide, nothing measured: a --quick sweep that leaves its points out). A run with
failed repetitions never makes a claim hold. Where metrolab has a model at full scale (Go-Back-N,
convergence), it is shown beside the measurement as "model: ...", never as the verdict. Each claim
says what the lab's scale model (rates and bytes / k, delays kept) preserves for it and what not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from metrolab.harness.errors import SpecError
from metrolab.harness.scenario import stats as st

VERDICTS = ("holds", "does not hold", "inconclusive")


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    text: str                 # the paper's words, shortened
    number: str               # the paper's figure
    scenario: str             # the built-in scenario that tests it ("rdma-gbn": metrolab rdma gbn)
    criteria: tuple[str, ...]  # the scenario's acceptance lines this claim is judged on (none for rdma-gbn)
    tier: str                 # host | guest: where the scenario runs
    preserves: str
    not_preserved: str
    full_scale: str = ""      # what a model says at full scale, where metrolab has one
    at: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # the points that decide (field, values); others are context
    # values the claim is about, each of which must have been measured: "< 5 % at 100-500 km" does
    # not hold from 100 km alone (the main job's --quick sweep)
    needs: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def key(self) -> str:  # a point of the claims' Experiment (metrolab.whitepaper)
        return self.id

    def decides(self, fields: dict) -> bool:
        """Is a point with these fields one the claim is about (not context)?"""
        return all(fields.get(k) in v for k, v in self.at)


CLAIMS: tuple[Claim, ...] = (
    Claim("upload", "2.3.1 (1)", "sample upload: sustained throughput over 90 % across all links", "> 90 %",
          "sample-upload", ("link_util_min > 0.9 where policy in {planned}",), "host",
          "per-link balance and the share of each link's rate the transfer uses (bytes and rates / k)",
          "TCP's ramp at full rate x distance (windows, slow start): the lab's links have no distance"),
    Claim("distance", "2.3.1 (2)", "< 5 % computing efficiency degradation across 100-500 km", "< 5 %",
          "allreduce-distance", ("efficiency_degradation <= 0.05 where distance_km in [100, 500] and loss == 0",),
          "guest", "the one-way delay per round (delays are real) and the ratio of delay to transfer time",
          "compute to overlap communication with (a bare AllReduce has none), the NIC's and switch's latency",
          needs=(("distance_km", (100.0, 250.0, 500.0)),)),
    Claim("gbn", "2.3.1 (2)", "even 0.1 % packet loss can degrade Go-Back-N RDMA by 50 %", "-50 % at 0.1 %",
          "rdma-gbn", (), "guest",
          "Go-Back-N's mechanics (rxe: window 128, NAK, one retry at a time, the QP timer) at lab rates",
          "packets in flight: the claim needs ~1000 (100 Gb/s x a few hundred us); the lab holds tens, so "
          "its lab-scale efficiency stays high: the verdict is the lab's, the full-scale model stands beside it "
          "as a model, not as evidence"),
    Claim("load-balancing", "4.2.4", "planned paths: end-to-end flow transmission efficiency over 95 %", "> 95 %",
          "load-balancing", ("flow_efficiency > 0.95 where policy in {planned, planned-srv6}",), "host",
          "flows per path and bytes per flow: balance is scale-free",
          "flow counts of a real fabric (thousands of flows make hashing better balanced)"),
    Claim("flow-control", "4.3.2", "flow-level flow control: loss below 0.001 %, throughput above 95 %",
          "< 0.001 %, > 95 %", "flow-control-roce",
          ("congested_loss < 0.00001 where policy in {pause, backpressure}",
           "flow_efficiency > 0.95 where policy in {deep-buffer, pause, backpressure}",
           "victim_efficiency > 0.9 where policy in {deep-buffer, backpressure}"), "guest",
          "an RDMA incast's queue in units of the bandwidth-delay product across 100 km, the pause's one-way "
          "delay, head-of-line blocking of a victim flow behind a paused port",
          "an ASIC's pause response (microseconds; the emulated controller's is tens of ms) and its packet "
          "counts: 1e-5 needs ~369,000 packets without a drop, more than a quick run moves",
          at=(("policy", ("backpressure",)),)),
    Claim("convergence", "4.3.3", "over 95 % computing efficiency at 32:1 and 64:1 convergence", "> 95 %",
          "high-convergence",
          ("efficiency >= 0.95 where convergence in [32, 64] and policy in {deep-prio} and algo in {hierarchical}",),
          "guest",
          "the ratio of modelled compute to transfer time per step (rates and gradient bytes / k); the three "
          "mechanisms as an ablation (hierarchical aggregation, deep buffers, strict priority for DSCP 46 "
          "control messages)",
          "a site's thousands of cards (two ranks a site: no incast for a deep buffer to absorb), buffers in "
          "packets (a buffer's bytes are not divided with the rates)", needs=(("convergence", (32, 64)),)),
)


def by_id(ids: list[str] | None) -> list[Claim]:
    if not ids:
        return list(CLAIMS)
    known = {c.id: c for c in CLAIMS}
    bad = [i for i in ids if i not in known]
    if bad:
        raise SpecError("metrolab run whitepaper", "--claims", bad[0], f"not a claim; known: {', '.join(known)}")
    return [known[i] for i in ids]


def missing_values(claim: Claim, measured: list[dict]) -> list[str]:
    """What the claim is about (`needs`) that no deciding point measured (`measured`: each point's
    fields), e.g. ["distance_km 250", "distance_km 500"]."""
    out = []
    for name, values in claim.needs:
        seen = {f.get(name) for f in measured}
        out += [f"{name} {v:g}" if isinstance(v, float) else f"{name} {v}" for v in values if v not in seen]
    return out


def verdict_of(results: list[dict], failed: list[str] | None = None,
               missing: list[str] | None = None) -> tuple[str, str]:
    """(verdict, why) from the claim's results (pass/fail/inconclusive each, Holm-corrected as one
    family), the run's failed points (`failed`: their labels), which keep a claim from holding, and
    what it is about that was not measured (`missing`), which does too."""
    if not results:
        return "inconclusive", "nothing measured for this criterion (a --quick sweep leaves its points out?)"
    v = [r["verdict"] for r in results]
    m = f" (Holm over its {len(v)} results)" if len(v) > 1 else ""
    if "fail" in v:
        return "does not hold", f"{v.count('fail')} of {len(v)} results fail{m}"
    if failed:
        return "inconclusive", f"the run has failed points ({', '.join(failed[:3])}): it proves nothing whole"
    if missing:
        return "inconclusive", (f"not measured at {', '.join(missing)} (a --quick sweep leaves them out); "
                                f"{v.count('pass')} of {len(v)} measured results pass")
    if all(x == "pass" for x in v):
        return "holds", f"all {len(v)} results pass"
    return "inconclusive", f"{v.count('inconclusive')} of {len(v)} results undecided by the data"


def gbn_verdict(summary: list[dict], loss: float = 1e-3, alpha: float = 0.05) -> tuple[str, str]:
    """The Go-Back-N claim from `metrolab rdma gbn`'s measurements alone: at `loss` from 100 km it
    holds where a point's efficiency interval lies at or under 0.5 (at alpha / points: the claim
    needs one such point, a union over them), does not hold where every point's lies above, and is
    inconclusive otherwise. Failed repetitions there fail it. The full-scale model is not evidence."""
    at = [r for r in summary if r["loss"] == loss and r["distance_km"] >= 100]
    if not at:
        return "inconclusive", f"no point at {loss:g} loss and 100 km or more"
    failed = [r for r in at if r.get("failed")]
    if failed:
        where = ", ".join(f"{r['distance_km']:g} km" for r in failed)
        return "does not hold", (f"{sum(r['failed'] for r in failed)} repetition(s) failed at {where}: a point "
                                 "that cannot be measured fails")

    def efficiency(r: dict, a: float) -> tuple[float, float]:
        if r.get("log_ratios"):
            iv = st.mean_interval(r["log_ratios"], 1 - a)
            return math.exp(-iv.high), math.exp(-iv.low)
        return (r["eff_low"], r["eff_high"]) if a == alpha else (-math.inf, math.inf)

    where = ", ".join(f"{r['distance_km']:g} km {r['efficiency']:.2f} [{r['eff_low']:.2f}, {r['eff_high']:.2f}]"
                      for r in at)
    if any(efficiency(r, alpha / len(at))[1] <= 0.5 for r in at):
        return "holds", f"measured at {loss:g} loss: {where}: halved at a point (alpha/{len(at)} each)"
    if all(efficiency(r, alpha)[0] > 0.5 for r in at):
        return "does not hold", f"measured at {loss:g} loss: {where}: above half at every point"
    return "inconclusive", f"measured at {loss:g} loss: {where}: the intervals reach across 0.5"


@dataclass
class ClaimRow:
    claim: Claim
    verdict: str
    why: str
    measured: list[dict] = field(default_factory=list)  # label, metric, value, low, high, verdict, model
    full_scale: str = ""
    run_dir: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        c = self.claim
        return {"id": c.id, "section": c.section, "claim": c.text, "paper": c.number, "scenario": c.scenario,
                "criteria": list(c.criteria), "tier": c.tier, "verdict": self.verdict, "why": self.why,
                "measured": self.measured, "full_scale": self.full_scale, "preserves": c.preserves,
                "not_preserved": c.not_preserved, "run_dir": self.run_dir, "error": self.error}


def _num(x: Any, spec: str = ".3g") -> str:
    return "—" if x is None else format(x, spec)


def markdown(rows: list[ClaimRow], quick: bool) -> str:
    """The report's summary: one table of claims, then per claim its points and what scale keeps."""
    lines = [f"# The white paper's claims, measured{' (--quick)' if quick else ''}", "",
             "| § | claim | paper | measured (95 % interval) | lab model | full scale (model, not evidence) | "
             "verdict (from the measurement) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r.claim
        m = r.measured
        if m:
            rank = {"fail": 0, "inconclusive": 1, "pass": 2, "context": 3}  # the point that decides the verdict
            worst = min(m, key=lambda x: rank.get(x["verdict"], 1))
            meas = f"{_num(worst['value'])} [{_num(worst['low'])}, {_num(worst['high'])}] at {worst['label']}" + \
                (f" (+{len(m) - 1} more)" if len(m) > 1 else "")
            model = _num(worst.get("model"))
        else:
            meas, model = ("error: " + r.error) if r.error else "—", "—"
        full = f"model: {r.full_scale}" if r.full_scale else "—"
        lines.append(f"| {c.section} | {c.text} | {c.number} | {meas} | {model} | {full} | **{r.verdict}** |")
    lines.append("")
    for r in rows:
        c = r.claim
        crit = "; ".join(f"`{x}`" for x in c.criteria)
        lines += [f"## {c.section}: {c.text}", "",
                  f"Scenario `{c.scenario}` ({c.tier} tier){f', judged on {crit}' if crit else ''}: "
                  f"**{r.verdict}** — {r.why}.", ""]
        if r.measured:
            lines += ["| point | metric | measured | 95 % interval | lab model | point verdict |", "|---|---|---|---|---|---|"]
            lines += [f"| {x['label']} | {x['metric']} | {_num(x['value'])} | [{_num(x['low'])}, {_num(x['high'])}] | "
                      f"{_num(x.get('model'))} | {x['verdict']} |" for x in r.measured]
            lines.append("")
        lines += [f"- the scale model preserves: {c.preserves}", f"- it does not: {c.not_preserved}"]
        if r.run_dir:
            lines.append(f"- run: `{r.run_dir}`")
        lines.append("")
    return "\n".join(lines)
