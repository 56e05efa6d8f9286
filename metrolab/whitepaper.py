"""Run the white paper's claims: each claim's scenario (or `metrolab rdma gbn`) into its own
directory of a results bundle, then `claims.json`, `bundle.json` (commit, seeds, machine facts;
metrolab.harness.whitepaper.bundle) and `whitepaper.md` beside them. The claims are an Experiment on
the one Engine (a claim a point, one block): claims.jsonl says which ran and why one could not
(the others still run); a resumed bundle runs only the claims that did not. Every claim is then
judged from its directory's record, never from an earlier judgement. An API-level driver: it runs
each scenario as `metrolab.run` does (the claims and the bundle are metrolab.harness.whitepaper's)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from metrolab import api
from metrolab.harness.runner.engine import Budget, Engine, Experiment
from metrolab.harness.runner.record import Record
from metrolab.harness.scenario.criteria import parse_criterion
from metrolab.harness.scenario.spec import load_scenario
from metrolab.harness.scenario.verdict import Settings, family_results
from metrolab.harness.whitepaper import bundle
from metrolab.harness.whitepaper.claims import Claim, ClaimRow, by_id, gbn_verdict, markdown, missing_values, verdict_of
from metrolab.harness.whitepaper.scale import convergence_full_scale
from metrolab.reports.build import load_verdict

ProgressFactory = Callable[[], AbstractContextManager]


@dataclass(frozen=True)
class GbnPlan:
    distances: tuple[float, ...]
    losses: tuple[float, ...]
    blocks: int
    iters: int


GBN_SUMMARY, CLAIM_RUNS = "summary.json", "claims.jsonl"
GBN_QUICK = GbnPlan((0.0, 100.0), (0.0, 1e-3, 1e-2), blocks=3, iters=100)
GBN_FULL = GbnPlan((0.0, 100.0, 500.0), (0.0, 1e-3, 1e-2), blocks=8, iters=200)


def _model(metric: str, point) -> float | None:
    d = point.predicted_degradation if point is not None else None
    if d is None:
        return None
    return {"efficiency_degradation": d, "efficiency": 1 - d}.get(metric)


def _scenario_claim(claim, run_dir: Path, quick: bool, backend: str, progress: ProgressFactory | None) -> None:
    with progress() if progress else nullcontext() as update:  # each claim's run counts its own points
        api.run(claim.scenario, quick=quick, out=run_dir, resume=run_dir if (run_dir / "meta.json").exists() else None,
                backend=backend, progress=update)


def _record(path: Path, quick: bool, rows: list[ClaimRow]) -> None:
    Record(path.parent).write_json(path.name, {"quick": quick, "claims": [r.as_dict() for r in rows]}, indent=1)


def _judge_claim(claim, run_dir: Path) -> ClaimRow:
    """The claim from its scenario run's record (judged with the code of the day: the record, not
    an earlier judgement, is the evidence)."""
    meta, scn, run_verdict, _store = load_verdict(run_dir)  # the record read once
    settings = Settings.from_dict(scn["spec"], meta)
    swept = tuple((scn["spec"].get("sweep") or {}).get("params") or {})
    criteria = [parse_criterion(t, scn.get("metrics", []), swept) for t in claim.criteria]
    points = {p.point_key: p for p in run_verdict.points}
    # the claim's criteria at the points it is about, one Holm family; the other points as context
    deciding = family_results(run_verdict.points, criteria, settings, where=lambda p: claim.decides(p.where_fields()))
    context = [r for r in run_verdict.results if r.criterion.strip() in set(claim.criteria)
               and not claim.decides(points[r.point_key].where_fields())]
    measured = [{"label": r.label, "metric": r.metric, "value": r.value, "low": r.low, "high": r.high,
                 "verdict": r.verdict, "why": r.message, "model": _model(r.metric, points.get(r.point_key))}
                for r in deciding]
    measured += [{"label": r.label, "metric": r.metric, "value": r.value, "low": r.low, "high": r.high,
                  "verdict": "context", "why": r.message, "model": _model(r.metric, points.get(r.point_key))}
                 for r in context]
    failed = [p.label for p in run_verdict.failed_points]
    missing = missing_values(claim, [points[r.point_key].where_fields() for r in deciding])
    verdict, why = verdict_of([{"verdict": r.verdict} for r in deciding], failed, missing)
    full = ""
    if claim.id == "convergence":  # the scenario as written (not --quick): the model at full scale
        full = convergence_full_scale(load_scenario(claim.scenario))
    return ClaimRow(claim, verdict, why, measured, full_scale=full, run_dir=str(run_dir))


def _gbn_claim(claim, run_dir: Path, quick: bool, backend: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = GBN_QUICK if quick else GBN_FULL
    res = api.gbn_experiment(losses=cfg.losses, distances=cfg.distances, blocks=cfg.blocks, iters=cfg.iters, seed=20,
                             out=str(run_dir / "rows.jsonl"), backend=backend)
    Record(run_dir).write_json(GBN_SUMMARY, res, indent=None)


def _judge_gbn(claim, run_dir: Path) -> ClaimRow:
    res = json.loads((run_dir / GBN_SUMMARY).read_text())
    summary = res["summary"]
    verdict, why = gbn_verdict(summary)
    # every lossy point, measured: those at 0.1 % from 100 km decide, the rest are context; the lab
    # model's figure beside each (its agreement is the model's check, not the claim's)
    measured = [{"label": f"{r['distance_km']:g} km, loss {r['loss']:g}", "metric": "RDMA WRITE efficiency",
                 "value": r["efficiency"], "low": r["eff_low"], "high": r["eff_high"],
                 "verdict": ("decides" if r["loss"] == 1e-3 and r["distance_km"] >= 100 else "context"),
                 "why": "model inside the interval" if r["within"] else "model outside the interval"
                 if r["within"] is False else "too few blocks to check the model",
                 "model": r["model_efficiency"]} for r in summary if r["loss"] > 0]
    full = ", ".join(f"{r['full_scale_efficiency']:.2f} at {r['distance_km']:g} km" for r in summary
                     if r["loss"] == 1e-3)
    return ClaimRow(claim, verdict, why, measured, full_scale=f"0.1 %: {full}" if full else "", run_dir=str(run_dir))


@dataclass
class _Claims(Experiment):
    """The claims as an Experiment: a claim's measurement is its run into its own directory."""

    out: Path
    chosen: list[Claim]
    quick: bool
    backend: str
    progress: ProgressFactory | None
    say: Callable[[str], None]
    name: str = "claims"
    stream: str = CLAIM_RUNS

    def __post_init__(self) -> None:
        self.record = Record(self.out)

    def points(self) -> list[Claim]:
        return self.chosen

    def recorded(self, row: dict) -> tuple[str, int, bool]:
        return row["key"], row["block"], row["error"] is None

    def measure(self, claim: Claim, block: int) -> dict:
        self.say(f"claim {claim.id} (§{claim.section}): {claim.scenario}{' --quick' if self.quick else ''}")
        error = None
        try:
            if claim.scenario == "rdma-gbn":
                _gbn_claim(claim, self.out / claim.id, self.quick, self.backend)
            else:
                _scenario_claim(claim, self.out / claim.id, self.quick, self.backend, self.progress)
        except Exception as exc:  # noqa: BLE001 — one claim that cannot run is reported; the rest still run
            error = f"{type(exc).__name__}: {exc}"[:400]
        row = {"key": claim.key, "block": block, "error": error}
        self.record.append(self.stream, row)
        return row


def run_whitepaper(out: Path, *, quick: bool = False, claims: list[str] | None = None, backend: str = "auto",
                   progress: ProgressFactory | None = None, say: Callable[[str], None] = lambda m: None) -> dict:
    """`progress`: makes a fresh progress context per claim (its value is the scenario run's
    progress callback)."""
    chosen = by_id(claims)  # a bad id is refused before anything is made
    out.mkdir(parents=True, exist_ok=True)
    bundle.start(out, quick, [c.id for c in chosen])
    exp = _Claims(out, chosen, quick, backend, progress, say)
    # a claim a point (their order, drawn from seed 0, matters to none: each is its own run); one
    # that could not run is run again by a resumed bundle
    Engine(exp.record, 0).run(exp, Budget(1, allowed_failures=sys.maxsize))
    errors = {r["key"]: r["error"] for r in exp.rows()}  # each claim's latest run
    rows = [ClaimRow(c, "inconclusive", "its scenario did not run", error=errors[c.id]) if errors.get(c.id)
            else _judge_gbn(c, out / c.id) if c.scenario == "rdma-gbn" else _judge_claim(c, out / c.id)
            for c in chosen]
    _record(out / "claims.json", quick, rows)
    (out / "whitepaper.md").write_text(markdown(rows, quick))
    meta = bundle.finish(out, [r.as_dict() for r in rows])
    return {"quick": quick, "run_dir": str(out), "bundle": meta, "claims": [r.as_dict() for r in rows],
            "markdown": str(out / "whitepaper.md")}
