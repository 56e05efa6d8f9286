"""Everything `metrolab report RUN_DIR` writes: report.html (tables and plots, self-contained),
summary.md (fit for a CI step summary), junit.xml (one testcase per criterion and sweep point,
plus one per failed point), points.csv (the per-point summary). The verdict is recomputed from
results.jsonl and the scenario saved in the run directory."""

from __future__ import annotations

import base64
import html
import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from harness.errors import SpecError
from harness.runner.results import ResultStore
from harness.scenario.criteria import parse_criterion
from harness.scenario.verdict import Verdict, evaluate, summarize
from reports import plots


def load_verdict(run_dir: Path) -> tuple[dict, dict, Verdict, ResultStore]:
    store = ResultStore(run_dir)
    meta_path, scen_path = run_dir / "meta.json", run_dir / "scenario.json"
    if not meta_path.exists() or not scen_path.exists():
        raise SpecError(str(run_dir), "", str(run_dir), "not a metrolab run directory (meta.json, scenario.json)")
    meta = json.loads(meta_path.read_text())
    scen = json.loads(scen_path.read_text())
    swept = tuple((scen["spec"].get("sweep") or {}).get("params") or {})
    criteria = [parse_criterion(t, scen.get("metrics", []), swept) for t in scen["spec"].get("acceptance", [])]
    verdict = evaluate(summarize(store.rows(), tuple(scen.get("metrics", []))), criteria)
    return meta, scen, verdict, store


def points_frame(verdict: Verdict) -> pd.DataFrame:
    rows = []
    for p in verdict.points:
        d = asdict(p)
        rows.append({"workload": p.workload, "point": p.label, "baseline": p.baseline, "status": p.status,
                     "error": p.error, "repetitions": p.repetitions, **p.fields, "params": p.params_key(),
                     "step_time_s": p.step_time_s, "step_time_iqr_s": p.step_time_iqr_s,
                     "efficiency": p.efficiency, "efficiency_degradation": p.efficiency_degradation,
                     **d["metrics"]})
    return pd.DataFrame(rows)


def criteria_frame(verdict: Verdict) -> pd.DataFrame:
    return pd.DataFrame([{"criterion": r.criterion, "workload": r.workload, "point": r.label,
                          "value": r.value, "result": "pass" if r.passed else "FAIL", "detail": r.message}
                         for r in verdict.results])


def write_junit(path: Path, meta: dict, verdict: Verdict) -> None:
    suites = ET.Element("testsuites", name=f"metrolab {meta['scenario']}")
    suite = ET.SubElement(suites, "testsuite", name=meta["scenario"])
    failures = 0
    cases = 0
    for r in verdict.results:
        cases += 1
        tc = ET.SubElement(suite, "testcase", classname=f"{meta['scenario']}.{r.workload}",
                           name=f"{r.criterion} @ {r.label}", time="0")
        if not r.passed:
            failures += 1
            ET.SubElement(tc, "failure", message=r.message, type="criterion").text = r.message
    for p in verdict.failed_points:
        cases += 1
        failures += 1
        tc = ET.SubElement(suite, "testcase", classname=f"{meta['scenario']}.{p.workload}",
                           name=f"point {p.label} runs", time="0")
        ET.SubElement(tc, "failure", message=p.error or "failed", type="point").text = p.error or "failed"
    if cases == 0:  # no criteria: one testcase that the run measured every point
        cases = 1
        ET.SubElement(suite, "testcase", classname=meta["scenario"], name="every point measured", time="0")
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    suites.set("tests", str(cases))
    suites.set("failures", str(failures))
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_\n"
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        out.append("| " + " | ".join(_cell(row[c]) for c in cols) + " |")
    return "\n".join(out) + "\n"


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


VERDICT_COLS = ["workload", "point", "status", "repetitions", "step_time_s", "step_time_iqr_s", "efficiency",
                "efficiency_degradation"]


def verdict_table(points: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in VERDICT_COLS + ["busbw_gbs"] if c in points]
    return points[cols] if not points.empty else points


def write_markdown(path: Path, meta: dict, verdict: Verdict, points: pd.DataFrame, crit: pd.DataFrame) -> None:
    status = "PASS" if verdict.passed else "FAIL"
    text = [f"# metrolab {meta['scenario']}: {status}\n",
            f"backend {meta['backend']}, kernel {meta['kernel']}, scale k = {meta['scale']:g}, "
            f"topology {meta['topology']}, git {str(meta.get('git_rev'))[:10]}\n",
            "## Points\n", _md_table(verdict_table(points)), "\n## Criteria\n", _md_table(crit)]
    path.write_text("\n".join(text))


def write_html(path: Path, meta: dict, verdict: Verdict, points: pd.DataFrame, crit: pd.DataFrame,
               rows: pd.DataFrame) -> None:
    figs = []
    if not points.empty:
        for title, png in (("Efficiency degradation", plots.degradation(points)),
                           ("Bus bandwidth", plots.busbw(points)),
                           ("Step-time distributions", plots.step_time_distributions(rows))):
            if png:
                figs.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,'
                            f'{base64.b64encode(png).decode()}"><figcaption>{html.escape(title)}</figcaption></figure>')
    status = "PASS" if verdict.passed else "FAIL"
    meta_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                        for k, v in meta.items())
    table_html = lambda df: df.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.4g}", border=0,  # noqa: E731
                                       classes="t") if not df.empty else "<p>none</p>"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>metrolab {html.escape(meta['scenario'])}: {status}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.verdict {{ font-size: 1.4em; font-weight: bold; color: {'#17803d' if verdict.passed else '#b3261e'}; }}
table.t {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }}
table.t th, table.t td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }}
table.t th {{ background: #f4f4f4; }}
figure {{ display: inline-block; margin: 0.5em; }}
figure img {{ max-width: 100%; }}
</style></head><body>
<h1>metrolab: {html.escape(meta['scenario'])}</h1>
<p class="verdict" id="verdict">{status}</p>
<p>{len(verdict.points)} points, {len(verdict.results)} criterion checks, {len(verdict.failed_points)} failed points;
scale factor k = {meta['scale']:g} (rates and message sizes divided by k, delays and loss unchanged).</p>
<h2>Points</h2>{table_html(verdict_table(points))}
<h2>Criteria</h2>{table_html(crit)}
<h2>Plots</h2>{''.join(figs) or '<p>no plots</p>'}
<h2>Run</h2><table class="t">{meta_rows}</table>
</body></html>
"""
    path.write_text(doc)


def build_report(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    meta, scen, verdict, store = load_verdict(run_dir)
    points = points_frame(verdict)
    crit = criteria_frame(verdict)
    rows = store.frame()
    out = {"html": run_dir / "report.html", "markdown": run_dir / "summary.md", "junit": run_dir / "junit.xml",
           "points_csv": run_dir / "points.csv", "results_parquet": run_dir / "results.parquet",
           "results_csv": run_dir / "results.csv"}
    write_html(out["html"], meta, verdict, points, crit, rows)
    write_markdown(out["markdown"], meta, verdict, points, crit)
    write_junit(out["junit"], meta, verdict)
    points.to_csv(out["points_csv"], index=False)
    return {"passed": verdict.passed, "files": {k: str(v) for k, v in out.items()}, "verdict": verdict,
            "points": points, "criteria": crit, "meta": meta}
