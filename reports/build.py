"""Everything `metrolab report RUN_DIR` writes: report.html (tables and plots, self-contained),
summary.md (fit for a CI step summary), junit.xml (one testcase per criterion and sweep point,
plus one per failed point), points.csv (the per-point summary). The verdict is recomputed from
results.jsonl and the scenario saved in the run directory."""

from __future__ import annotations

import base64
import html
import math
import statistics
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from metrolab.harness.runner.results import ResultStore
from metrolab.harness.scenario import kpis
from metrolab.harness.scenario import stats as st
from metrolab.harness.scenario.verdict import Verdict
from metrolab.reports import plots


def load_verdict(run_dir: Path) -> tuple[dict, dict, Verdict, ResultStore]:
    store = ResultStore(run_dir)
    verdict = store.judge()
    return store.record.read_json("meta.json"), store.record.read_json("scenario.json"), verdict, store


def points_frame(verdict: Verdict) -> pd.DataFrame:
    rows = []
    for p in verdict.points:
        d = asdict(p)
        rows.append({"workload": p.workload, "point": p.label, "baseline": p.baseline, "status": p.status,
                     "error": p.error, "repetitions": p.repetitions, **p.fields, "params": p.params_key(),
                     "step_time_s": p.step_time_s, "step_time_iqr_s": p.step_time_iqr_s, "cv": p.cv,
                     "paired_cv": p.paired_cv, "efficiency": p.efficiency,
                     "efficiency_degradation": p.efficiency_degradation, "ci_low": p.ci_low, "ci_high": p.ci_high,
                     "ci_method": p.ci_method, "trend_tau": p.trend_tau, "trend_p": p.trend_p, "rank_p": p.rank_p,
                     "jct_ratio": p.jct_ratio, "jct_ratio_ci_low": p.jct_ratio_ci_low,
                     "jct_ratio_ci_high": p.jct_ratio_ci_high,
                     "predicted_step_s": p.predicted_step_s, "predicted_degradation": p.predicted_degradation,
                     "prediction_error": p.prediction_error, "cpu_load": p.cpu_load, "verdict": p.verdict,
                     "reason": p.reason,
                     "quality": "; ".join(p.quality), **d["metrics"],
                     # each metric's interval beside it (replay_ratio's is a trace replay's fidelity)
                     **{f"{m}_{end}": v for m, iv in p.intervals.items()
                        for end, v in (("ci_low", iv[0]), ("ci_high", iv[1])) if m in p.metrics}})
    return pd.DataFrame(rows)


def criteria_frame(verdict: Verdict) -> pd.DataFrame:
    return pd.DataFrame([{"criterion": r.criterion, "workload": r.workload, "point": r.label,
                          "value": r.value, "low": r.low, "high": r.high, "verdict": r.verdict, "reason": r.message}
                         for r in verdict.results])


@dataclass(frozen=True)
class Case:
    """One JUnit testcase: a verdict and why (fail: a failure of `kind`; inconclusive: skipped)."""

    classname: str
    name: str
    verdict: str
    message: str = ""
    kind: str = "criterion"


def write_junit_cases(path: Path, suite_name: str, cases: list[Case], empty: Case) -> None:
    """A JUnit file of one suite; `empty` stands in when there is no case (a passing one)."""
    suites = ET.Element("testsuites", name=f"metrolab {suite_name}")
    suite = ET.SubElement(suites, "testsuite", name=suite_name)
    for c in cases or [empty]:
        tc = ET.SubElement(suite, "testcase", classname=c.classname, name=c.name, time="0")
        if c.verdict == st.FAIL:
            ET.SubElement(tc, "failure", message=c.message, type=c.kind).text = c.message
        elif c.verdict == st.INCONCLUSIVE:  # neither passed nor failed: the data cannot decide
            ET.SubElement(tc, "skipped", message=f"inconclusive: {c.message}")
    tests, failures = len(cases or [empty]), sum(c.verdict == st.FAIL for c in cases)
    for el in (suite, suites):
        el.set("tests", str(tests))
        el.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(sum(c.verdict == st.INCONCLUSIVE for c in cases)))
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def write_junit(path: Path, meta: dict, verdict: Verdict) -> None:
    """A testcase per criterion and point, and one per point that failed to run."""
    name = meta["scenario"]
    cases = [Case(f"{name}.{r.workload}", f"{r.criterion} @ {r.label}", r.verdict, r.message) for r in verdict.results]
    cases += [Case(f"{name}.{p.workload}", f"point {p.label} runs", st.FAIL, p.error or "failed", "point")
              for p in verdict.failed_points]
    # no criteria: one testcase that the run measured every point
    write_junit_cases(path, name, cases, Case(name, "every point measured", st.PASS))


def md_table(df: pd.DataFrame) -> str:
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


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _pct(v, digits: int = 2) -> str:
    v = _num(v)
    return "" if v is None else f"{v * 100:+.{digits}f}"


def _pct_iv(estimate, low, high) -> str:
    """A fraction as a percentage with its interval in one cell: "+0.46 [-0.52, +1.43]"."""
    if _num(estimate) is None:
        return ""
    return _pct(estimate) if _num(low) is None else f"{_pct(estimate)} [{_pct(low)}, {_pct(high)}]"


def _g(v, spec: str = ".4g", scale: float = 1.0) -> str:
    v = _num(v)
    return "" if v is None else format(v * scale, spec)


METRIC_HEADERS = {"busbw_gbs": "busbw (GB/s)", "algbw_gbs": "algbw (GB/s)"}
BOOKKEEPING = ("bytes", "gradient_bytes", "buckets", "cpu_load", "wan_bytes", "wan_drops")


def shown_metrics(verdict: Verdict, most: int = 2) -> list[str]:
    """The first workload metrics the points carry (busbw, exposed communication, TTFT, ...)."""
    shown: list[str] = []
    for p in verdict.points:
        shown += [m for m in p.metrics if m not in shown and m not in BOOKKEEPING]
    return shown[:most]


def verdict_table(points: pd.DataFrame, shown: list[str] | None = None) -> pd.DataFrame:
    """The points as a person reads them: units in the headers, the degradation with its interval,
    and the workload metrics `shown` (default: busbw where there is one)."""
    if points.empty:
        return points
    out = pd.DataFrame({
        "workload": points["workload"], "point": points["point"],
        "status": [s if s == "ok" else f"failed: {(e or '')[:80]}" for s, e in zip(points["status"], points["error"])],
        "blocks": points["repetitions"],
        "step time (ms)": [_g(v, ".1f", 1e3) for v in points["step_time_s"]],
        "degradation (%) [95 % CI]": [_pct_iv(*v) for v in zip(points["efficiency_degradation"], points["ci_low"],
                                                               points["ci_high"])],
        "model (%)": [_pct(v) for v in points["predicted_degradation"]]})
    for m in shown if shown is not None else [m for m in ("busbw_gbs",) if m in points]:
        if m not in points:
            continue
        if m in METRIC_HEADERS or not m.endswith("_s"):
            out[METRIC_HEADERS.get(m, m.replace("_", " "))] = [st.value_format(m)(v) if _num(v) is not None else "" for v in points[m]]
        else:  # seconds, read in milliseconds like the step time
            out[f"{m.removesuffix('_s').replace('_', ' ')} (ms)"] = [_g(v, ".4g", 1e3) for v in points[m]]
    out["verdict"] = points["verdict"].fillna("")
    out["why"] = points["reason"].fillna("")
    return out


RATIO_KPIS = ("wan_loss", "ecn_marked_ratio", "rdma_retx_ratio", "tcp_retx_ratio", "busbw_line_ratio",
              "ttft_fabric_share", "link_util")


def kpi_table(points: pd.DataFrame) -> pd.DataFrame:
    """The BMWG drafts' KPIs the run measured, in the drafts' order (docs/kpis.md): the job's JCT
    ratio with its interval, collectives against line rate, what the network dropped, marked,
    paused and retransmitted, how evenly parallel links shared the load, and the inference
    latencies and rates; a column only where some point has a value."""
    if points.empty:
        return points
    out = pd.DataFrame({"workload": points["workload"], "point": points["point"]})
    if points["jct_ratio"].notna().any():
        out["JCT ratio [95 % CI]"] = [
            "" if _num(v) is None else f"{v:.3f}" if _num(lo) is None else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
            for v, lo, hi in zip(points["jct_ratio"], points["jct_ratio_ci_low"], points["jct_ratio_ci_high"])]
    for k in kpis.KPIS:
        m = k.metric
        if m in ("", "step_time_s", "jct_ratio") or m not in points or not points[m].notna().any():
            continue
        if m in RATIO_KPIS:
            head, cells = f"{k.kpi} (%)", [_g(v, ".3g", 100) for v in points[m]]
        elif k.unit == "s":
            head, cells = f"{k.kpi} (ms)", [_g(v, ".4g", 1e3) for v in points[m]]
        else:
            head, cells = f"{k.kpi} ({k.unit})", [_g(v, ".4g") for v in points[m]]
        out[head] = cells
    return out if len(out.columns) > 2 else pd.DataFrame()


def criteria_table(crit: pd.DataFrame) -> pd.DataFrame:
    if crit.empty:
        return crit
    def measured(criterion: str, v, lo, hi) -> str:
        f = st.value_format(criterion.split()[0] if criterion else None)
        if _num(v) is None:
            return ""
        return f"{f(v)} [{f(lo)}, {f(hi)}]" if _num(lo) is not None and _num(hi) is not None else f(v)
    shown = [measured(*r) for r in zip(crit["criterion"], crit["value"], crit["low"], crit["high"])]
    return pd.DataFrame({"criterion": crit["criterion"], "workload": crit["workload"], "point": crit["point"],
                         "measured [95 % CI]": shown, "verdict": crit["verdict"], "why": crit["reason"]})


def quality_table(points: pd.DataFrame) -> pd.DataFrame:
    """Each point's measurement quality: spread, drift, the interval's method, the model's error."""
    if points.empty:
        return points
    return pd.DataFrame({
        "workload": points["workload"], "point": points["point"], "blocks": points["repetitions"],
        "CV (%)": [_g(v, ".1f", 100) for v in points["cv"]],
        "paired CV (%)": [_g(v, ".1f", 100) for v in points["paired_cv"]],
        "trend tau (p)": [f"{_g(t, '+.2f')} ({_g(q, '.2g')})" if _num(t) is not None else ""
                          for t, q in zip(points["trend_tau"], points["trend_p"])],
        "signed-rank p": [_g(v, ".2g") for v in points["rank_p"]],
        "interval": points["ci_method"].fillna(""),
        "model step (ms)": [_g(v, ".1f", 1e3) for v in points["predicted_step_s"]],
        "measured - model (pp)": [_pct(v) for v in points["prediction_error"]],
        "notes": points["quality"].fillna("")})


def quality_lines(meta: dict, verdict: Verdict) -> list[str]:
    """The measurement's own credentials: design, warm-up, interference, noise floor, headroom,
    scale, the model's error, outliers, physics checks, and why a run stopped where it did."""
    design: dict = meta["design"] if isinstance(meta.get("design"), dict) else {}
    looks = design.get("describe") or f"{meta.get('confidence', st.CONFIDENCE):.0%} intervals"
    out = [f"design: randomized blocks (seed {meta.get('seed')}), each point paired with its own block's "
           f"baseline; {looks}; " + ("Holm's correction over each criterion's points before one fails"
                                     if verdict.family == "holm" else
                                     "each point judged alone: the family-wise error of a criterion over several "
                                     "points is NOT controlled")]
    for w, passes in (meta.get("warm_passes") or {}).items():
        if passes:
            moved = ", ".join("-" if m is None else f"{m:.1%}" for m in passes)
            out.append(f"warm-up: {w}: {len(passes)} discarded pass(es) through every point before the first block "
                       f"(median move from the pass before: {moved})")
    guest = (meta.get("guest") or {}).get("scheduling")
    for w, i in (meta.get("interference") or {}).items():
        taken, wait, hit = i.get("interference_median"), i.get("guest_wait_median"), i.get("blocks_interfered") or []
        if taken is None:
            continue
        line = f"interference: {w}: other processes took {taken:.0%} of the machine (median per block)"
        if wait is not None:
            line += f"; the guest's threads waited {wait:.0%} of the time"
        if guest:
            line += f" ({guest})"
        gone = i.get("blocks_replaced") or []
        if hit:
            line += f"; {len(hit)} block(s) under interference"
            if gone:
                line += f", {len(gone)} left out and replaced"
            if len(gone) < len(hit):
                line += (f"; {len(hit) - len(gone)} kept once the replacements were spent: INTERFERENCE, not the "
                         "network, may have set the intervals")
        out.append(line)
    for p in verdict.points:
        if p.is_null and p.ci_low is not None:
            out.append(f"noise floor: {p.workload} {p.label} against its baseline: degradation "
                       f"[{p.ci_low:+.2%}, {p.ci_high:+.2%}] over {p.repetitions} blocks")
        if p.failed_repetitions:
            out.append(f"failed repetitions: {p.workload} {p.label}: {p.failed_repetitions} ({p.error})")
    for w, h in (meta.get("headroom") or {}).items():
        if h.get("capacity_ratio") is not None and h.get("line_rate_bps") and h.get("capacity_bps"):
            out.append(f"headroom: {w}: emulated line rate {h['line_rate_bps'] / 1e6:.4g} Mbit/s over an unshaped "
                       f"{h['transport']} capacity of {h['capacity_bps'] / 1e6:.4g} Mbit/s = "
                       f"{h['capacity_ratio']:.2f} (limit {h['max_capacity_ratio']:g})"
                       + (": HOST-BOUND, the host may set the step time" if h.get("host_bound") else ""))
        if h.get("error"):
            out.append(f"headroom: {w}: {h['error']}")
        if h.get("cpu_load") is not None:
            out.append(f"CPU load of {w}'s ranks at the baseline: {h['cpu_load']:.0%} of the machine"
                       + (f" (limit {h['max_cpu_load']:.0%}): CPU-BOUND, the CPU may set the step time"
                          if h.get("cpu_bound") else ""))
        if h.get("utilization") is not None:
            out.append(f"offered load / service rate of {w}: {h['utilization']:.2f}"
                       + (" — OVERLOADED: it measures its own queue" if h.get("overloaded") else ""))
    if meta.get("extra_scale", 1) != 1:
        out.append(f"auto scale: rates and bytes divided by a further {meta['extra_scale']:g} (k = {meta['scale']:g})")
    errs = [p.prediction_error for p in verdict.points if p.prediction_error is not None and not p.baseline]
    if errs:
        out.append(f"model: measured - predicted degradation, median {_median(errs):+.2%}, "
                   f"largest {max(errs, key=abs):+.2%}")
    out += tcp_recovery_lines(verdict)
    few = sorted({p.repetitions for p in verdict.points if not p.baseline and 0 < p.repetitions < st.TREND_MIN_N})
    if few:
        out.append(f"trend over measurement order: not testable with {', '.join(map(str, few))} blocks "
                   f"(Kendall's tau needs {st.TREND_MIN_N})")
    for w, b in (meta.get("budget") or {}).items():
        for note in b.get("notes") or []:
            out.append(f"blocks: {w}: {note}")
    return out + [f"outlier: {x}" for x in verdict.outliers] + [f"warning: {w}" for w in verdict.warnings]


def tcp_recovery_lines(verdict: Verdict) -> list[str]:
    """Where the ranks' TCP stacks resent segments, how, summed over the kept blocks: a timeout (200 ms
    at the least) or a tail-loss probe is where a loss costs a step most. The TCP model charges loss
    through Mathis's rate cap alone, which binds only above 1.22 MSS / (RTT sqrt p): seldom at a
    scaled lab's rates (docs/statistics.md)."""
    out = []
    for p in verdict.points:
        resent, timeouts, probes = (int(sum(p.block_values.get(m) or [])) for m in
                                    ("tcp_retrans_segs", "tcp_timeouts", "tcp_loss_probes"))
        if not resent:
            continue
        line = (f"TCP recovery: {p.workload} {p.label}, {p.repetitions} blocks: segments resent {resent}, "
                f"retransmission timeouts {timeouts}, tail-loss probes {probes}")
        dropped = p.block_values.get("wan_drops")
        if dropped and not any(dropped):  # e.g. a probe sent before a late ACK: it resends what had arrived
            line += "; the swept links dropped nothing: spurious, or lost elsewhere"
        out.append(line)
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values)


def write_markdown(path: Path, meta: dict, verdict: Verdict, points: pd.DataFrame, crit: pd.DataFrame) -> None:
    status = verdict.status.upper()
    text = [f"# metrolab {meta['scenario']}: {status}\n",
            f"backend {meta['backend']}, kernel {meta['kernel']}, scale k = {meta['scale']:g}, "
            f"topology {meta['topology']}, git {str(meta.get('git_rev'))[:10]}\n",
            "## Points\n", md_table(verdict_table(points, shown_metrics(verdict))), "\n## Criteria\n", md_table(criteria_table(crit)),
            "\n## KPIs (IETF BMWG AI-fabric drafts, docs/kpis.md)\n", md_table(kpi_table(points)),
            "\n## Measurement quality\n", "\n".join(f"- {x}" for x in quality_lines(meta, verdict)) + "\n",
            md_table(quality_table(points))]
    path.write_text("\n".join(text))


def html_table(df: pd.DataFrame) -> str:
    """A table that wraps to the page: figures right-aligned on one line, text wrapping."""
    if df.empty:
        return "<p>none</p>"

    def numeric(v) -> bool:
        text = str(v).strip()
        return bool(text) and (text[0].isdigit() or text[0] in "+-[") and not any(c.isalpha() for c in text)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    def cls(v) -> str:  # figures on one line; a long text (a reason) wraps anywhere but keeps some width
        return " class=n" if numeric(v) else " class=w" if len(_text(v)) > 40 else ""
    body = "".join("<tr>" + "".join(f"<td{cls(v)}>{html.escape(_text(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<table class="t"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}" if isinstance(v, float) \
        else str(v)


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
    status = verdict.status.upper()
    color = {"PASS": "#17803d", "FAIL": "#b3261e"}.get(status, "#9a6700")
    meta_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                        for k, v in meta.items() if not isinstance(v, (dict, list)))
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>metrolab {html.escape(meta['scenario'])}: {status}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.verdict {{ font-size: 1.4em; font-weight: bold; color: {color}; }}
table.t {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; max-width: 100%; }}
table.t th, table.t td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; vertical-align: top;
  text-align: left; }}
table.t td {{ overflow-wrap: break-word; }}
table.t td.w {{ overflow-wrap: anywhere; min-width: 10em; }}
table.t td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
table.t th {{ background: #f4f4f4; }}
figure {{ display: inline-block; margin: 0.5em; max-width: 100%; }}
figure img {{ max-width: 100%; }}
</style></head><body>
<h1>metrolab: {html.escape(meta['scenario'])}</h1>
<p class="verdict" id="verdict">{status}</p>
<p>{len(verdict.points)} points, {len(verdict.results)} criterion checks, {len(verdict.failed_points)} failed points;
scale factor k = {meta['scale']:g} (rates and message sizes divided by k, delays and loss unchanged).</p>
<h2>Points</h2>{html_table(verdict_table(points, shown_metrics(verdict)))}
<h2>Criteria</h2>{html_table(criteria_table(crit))}
<h2>KPIs <small>(IETF BMWG AI-fabric drafts: docs/kpis.md)</small></h2>{html_table(kpi_table(points))}
<h2>Measurement quality</h2><ul>{''.join(f"<li>{html.escape(x)}</li>" for x in quality_lines(meta, verdict))}</ul>
{html_table(quality_table(points))}
<h2>Plots</h2>{''.join(figs) or '<p>no plots</p>'}
<h2>Run</h2><table class="t">{meta_rows}</table>
</body></html>
"""
    path.write_text(doc)


def build_report(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    meta, _scen, verdict, store = load_verdict(run_dir)
    points = points_frame(verdict)
    crit = criteria_frame(verdict)
    rows = store.frame()
    if store.jsonl.exists():
        store.write_tables()  # the record's tables, whole (a killed run may have left them behind)
    out = {"html": run_dir / "report.html", "markdown": run_dir / "summary.md", "junit": run_dir / "junit.xml",
           "points_csv": run_dir / "points.csv", "results_parquet": run_dir / "results.parquet",
           "results_csv": run_dir / "results.csv"}
    write_html(out["html"], meta, verdict, points, crit, rows)
    write_markdown(out["markdown"], meta, verdict, points, crit)
    write_junit(out["junit"], meta, verdict)
    points.to_csv(out["points_csv"], index=False)
    return {"status": verdict.status, "passed": verdict.passed, "files": {k: str(v) for k, v in out.items()}, "verdict": verdict,
            "points": points, "criteria": crit, "meta": meta}
