"""A task plan's report files: summary.md (its tables, fit for a CI step summary) and junit.xml
(one testcase per committed task; inconclusive is skipped, as for scenario runs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from metrolab.harness.scenario import stats as st
from metrolab.reports.build import Case, md_table, write_junit_cases


def _window(t: dict) -> str:
    return f"[{t['window_s'][0]:g}, {t['window_s'][1]:g}) s"


def tasks_frame(res: dict) -> pd.DataFrame:
    rows = []
    for t in res["tasks"]:
        if not t["committed"]:
            rows.append({"task": t["name"], "window": "refused", "verdict": "", "reason": t["reason"]})
            continue
        rows.append({"task": t["name"], "window": _window(t), "reserved_mbps": t["rate_bps"] / 1e6,
                     "first_byte_s": t["start_s"]["estimate"], "last_byte_s": t["end_s"]["estimate"],
                     "ci_low": t["end_s"]["low"], "ci_high": t["end_s"]["high"],
                     "model_end_s": t["predicted_end_s"], "model_error_s": t["model_error_s"]["estimate"],
                     "met": f"{t['met']} of {t['runs']}", "verdict": t["verdict"], "reason": t["why"]})
    return pd.DataFrame(rows)


def slots_frame(res: dict) -> pd.DataFrame:
    return pd.DataFrame([{"slot_from_s": s["start_s"], "model": s["model"], "utilization": s["utilization"]["estimate"],
                          "ci_low": s["utilization"]["low"], "ci_high": s["utilization"]["high"], "error": s["error"]}
                         for s in res["slots"]])


def write_markdown(path: Path, res: dict) -> None:
    u = res["utilization"]
    path.write_text("\n".join([
        f"# metrolab tasks {res['plan']}: {res['status']}\n",
        f"{res['repetitions']} play(s); {res['committed']} task(s) committed, {res['refused']} refused; mean "
        f"utilization {u['estimate']:.1%} of {res['capacity_bps'] / 1e6:g} Mbit/s. A commitment fails when any play "
        "missed it, passes when every play met it and the 95 % prediction interval of one play's end is inside "
        "the window.\n",
        "## Tasks\n", md_table(tasks_frame(res)), "\n## Utilization by slot\n", md_table(slots_frame(res))]))


def write_junit(path: Path, res: dict) -> None:
    name = f"tasks {res['plan']}"
    # a refusal is the scheduler's answer, not a broken promise: no testcase
    cases = [Case(name, f"{t['name']} within {_window(t)}", t["verdict"], t["why"], "commitment")
             for t in res["tasks"] if t["committed"]]
    write_junit_cases(path, name, cases, Case(name, "every request answered", st.PASS))


def write_task_reports(run_dir: Path, res: dict) -> dict[str, Path]:
    out = {"markdown": run_dir / "summary.md", "junit": run_dir / "junit.xml"}
    write_markdown(out["markdown"], res)
    write_junit(out["junit"], res)
    return out
