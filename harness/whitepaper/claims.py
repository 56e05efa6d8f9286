"""The white paper's quantitative claims, each tied to the scenario that tests it, and how a claim
is judged from that scenario's verdict (pure: unit-tested without a lab).

A claim holds when every result of its criterion passes, does not hold when any fails, and is
inconclusive otherwise (a result the data cannot decide, or nothing measured: e.g. a --quick
sweep that leaves out the points the claim is about). Each claim says what the lab's scale model
(rates and bytes / k, delays kept) preserves for it and what it does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


CLAIMS: tuple[Claim, ...] = (
    Claim("upload", "2.3.1 (1)", "sample upload: sustained throughput over 90 % across all links", "> 90 %",
          "sample-upload", ("link_util_min > 0.9 where policy in {planned}",), "host",
          "per-link balance and the share of each link's rate the transfer uses (bytes and rates / k)",
          "TCP's ramp at full rate x distance (windows, slow start): the lab's links have no distance"),
    Claim("distance", "2.3.1 (2)", "< 5 % computing efficiency degradation across 100-500 km", "< 5 %",
          "allreduce-distance", ("efficiency_degradation <= 0.05 where distance_km in [100, 500] and loss == 0",),
          "guest", "the one-way delay per round (delays are real) and the ratio of delay to transfer time",
          "compute to overlap communication with (a bare AllReduce has none), the NIC's and switch's latency"),
    Claim("gbn", "2.3.1 (2)", "even 0.1 % packet loss can degrade Go-Back-N RDMA by 50 %", "-50 % at 0.1 %",
          "rdma-gbn", (), "guest",
          "Go-Back-N's mechanics (rxe: window 128, NAK, one retry at a time, the QP timer) at lab rates",
          "packets in flight: the claim needs ~1000 (100 Gb/s x a few hundred us); the lab holds tens, so "
          "its lab-scale efficiency stays high and the full-scale column carries the claim"),
    Claim("load-balancing", "4.2.4", "planned paths: end-to-end flow transmission efficiency over 95 %", "> 95 %",
          "load-balancing", ("flow_efficiency > 0.95 where policy in {planned, planned-srv6}",), "host",
          "flows per path and bytes per flow: balance is scale-free",
          "flow counts of a real fabric (thousands of flows make hashing better balanced)"),
    Claim("flow-control", "4.3.2", "flow-level flow control: loss below 0.001 %, throughput above 95 %",
          "< 0.001 %, > 95 %", "flow-control", ("wan_loss < 0.00001 where policy in {deep-buffer, per-flow}",
                                            "flow_efficiency > 0.95 where policy in {deep-buffer, ecn, per-flow}"),
          "guest",
          "queue depth in units of the bandwidth-delay product (buffers scale with rates)",
          "an ASIC's pause response (microseconds; the emulated controller's is tens of ms)"),
    Claim("convergence", "4.3.3", "over 95 % computing efficiency at 32:1 and 64:1 convergence", "> 95 %",
          "high-convergence",
          ("efficiency >= 0.95 where convergence in [32, 64] and policy in {deep-prio} and algo in {hierarchical}",),
          "guest",
          "the ratio of modelled compute to transfer time per step (rates and gradient bytes / k); the three "
          "mechanisms as an ablation (hierarchical aggregation, deep buffers, strict priority for DSCP 46 "
          "control messages)",
          "a site's thousands of cards (two ranks a site: no incast for a deep buffer to absorb), buffers in "
          "packets (a buffer's bytes are not divided with the rates)"),
)


def by_id(ids: list[str] | None) -> list[Claim]:
    from harness.errors import SpecError
    if not ids:
        return list(CLAIMS)
    known = {c.id: c for c in CLAIMS}
    bad = [i for i in ids if i not in known]
    if bad:
        raise SpecError("metrolab run whitepaper", "--claims", bad[0], f"not a claim; known: {', '.join(known)}")
    return [known[i] for i in ids]


def verdict_of(results: list[dict]) -> tuple[str, str]:
    """(verdict, why) from the results of the claim's criterion: pass/fail/inconclusive each."""
    if not results:
        return "inconclusive", "nothing measured for this criterion (a --quick sweep leaves its points out?)"
    v = [r["verdict"] for r in results]
    if "fail" in v:
        return "does not hold", f"{v.count('fail')} of {len(v)} points fail"
    if all(x == "pass" for x in v):
        return "holds", f"all {len(v)} points pass"
    return "inconclusive", f"{v.count('inconclusive')} of {len(v)} points undecided by the data"


def gbn_verdict(summary: list[dict], loss: float = 1e-3) -> tuple[str, str]:
    """The Go-Back-N claim from `metrolab rdma gbn`'s summary: it holds where the model, inside the
    lab's intervals at every lossy point (each narrower than its estimate, or it checks nothing),
    gives <= 0.5 at full scale at `loss` from 100 km."""
    lossy = [r for r in summary if r["loss"] > 0]
    if not lossy:
        return "inconclusive", "no lossy point measured"
    missed = [r for r in lossy if r.get("within") is False]
    # an interval wider than its estimate agrees with any model: it checks nothing (few blocks)
    undecided = [r for r in lossy if r.get("within") is None or r.get("eff_high") is None
                 or r["eff_high"] - r["eff_low"] > r["efficiency"]]
    at = [r for r in summary if r["loss"] == loss and r["distance_km"] >= 100]
    if not at:
        return "inconclusive", f"no point at {loss:g} loss and 100 km or more"
    full = max(r["full_scale_efficiency"] for r in at)
    if missed or undecided:
        return "inconclusive", (f"the model misses the lab's interval at {len(missed)} and cannot be checked at "
                                f"{len(undecided)} of {len(lossy)} lossy points (an interval wider than its "
                                "estimate: more blocks)")
    if full <= 0.5:
        return "holds", (f"the model agrees with the lab at all {len(lossy)} lossy points and keeps <= {full:.2f} "
                         f"at full scale (100 Gb/s, 4 KiB) from 100 km at {loss:g}")
    return "does not hold", f"the validated model keeps {full:.2f} at full scale at {loss:g} from 100 km"


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
             "| § | claim | paper | measured (95 % interval) | lab model | full scale | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r.claim
        m = r.measured
        if m:
            rank = {"fail": 0, "inconclusive": 1, "pass": 2}  # show the point that decides the verdict
            worst = min(m, key=lambda x: rank.get(x["verdict"], 1))
            meas = f"{_num(worst['value'])} [{_num(worst['low'])}, {_num(worst['high'])}] at {worst['label']}" + \
                (f" (+{len(m) - 1} more)" if len(m) > 1 else "")
            model = _num(worst.get("model"))
        else:
            meas, model = ("error: " + r.error) if r.error else "—", "—"
        lines.append(f"| {c.section} | {c.text} | {c.number} | {meas} | {model} | {r.full_scale or '—'} | "
                     f"**{r.verdict}** |")
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
