"""A task plan played several times, summarized (pure; unit-tested without a lab).

Each repetition is one `harness.runner.tasks.play` of the same plan (the schedule is
deterministic: the same windows, the same refusals). A committed task's commitment holds when its
last byte arrives by its window's end: judged on the interval of the mean end over repetitions
(pass when the whole interval is inside the window, fail when none of it is, inconclusive when it
straddles the window's end; one repetition gives no interval), and failed outright when any
repetition lost bytes. Each slot's utilization gets an interval beside the model's.
"""

from __future__ import annotations

import math

from harness.scenario import stats as st


def _iv(values) -> dict:
    iv = st.mean_interval(values)
    return {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "n": iv.n}


def _mean(values) -> float | None:
    x = [float(v) for v in values if v is not None]
    return sum(x) / len(x) if x else None


def task_verdict(ends: list[float], received: list[int], size: int, window_end: float) -> tuple[str, str]:
    """(verdict, reason) of one committed task over its repetitions."""
    short = [r for r in received if r != size]
    if short:
        return st.FAIL, f"{len(short)} of {len(received)} repetitions received {short[0]} of {size} bytes"
    return st.judge(st.mean_interval(ends), "<=", window_end)


def summarize(runs: list[dict]) -> dict:
    """`runs`: play()'s results, in measurement order. Returns the tasks (each with its interval
    and verdict), the slots, the mean utilization's interval and the plan's status."""
    if not runs:
        raise ValueError("no repetition to summarize")
    n = len(runs)
    tasks = []
    for i, first in enumerate(runs[0]["tasks"]):
        row = {k: first[k] for k in ("name", "committed", "reason", "window_s", "rate_bps", "bytes")}
        if first["committed"]:
            per = [r["tasks"][i] for r in runs]
            ends = [t["end_s"] for t in per]
            errors = [t["end_s"] - t["predicted_end_s"] for t in per]
            verdict, why = task_verdict(ends, [t["received"] for t in per], first["bytes"], first["window_s"][1])
            row |= {"start_s": _iv([t["start_s"] for t in per]), "end_s": _iv(ends),
                    "predicted_end_s": _mean(t["predicted_end_s"] for t in per), "model_error_s": _iv(errors),
                    "met": sum(bool(t["met"]) for t in per), "runs": n, "verdict": verdict, "why": why}
        tasks.append(row)
    slots = []
    for k in range(min(len(r["slots"]) for r in runs)):  # a play's last slot may be cut short
        use = [r["slots"][k]["utilization"] for r in runs]
        model, measured = _mean(r["slots"][k]["model"] for r in runs), _mean(use)
        slots.append({"start_s": runs[0]["slots"][k]["start_s"], "utilization": _iv(use), "model": model,
                      "error": None if model is None or measured is None else measured - model})
    verdicts = [t["verdict"] for t in tasks if t["committed"]]
    status = st.FAIL if st.FAIL in verdicts else st.INCONCLUSIVE if st.INCONCLUSIVE in verdicts else st.PASS
    util = [r["utilization"] for r in runs if r["utilization"] is not None and math.isfinite(r["utilization"])]
    return {"repetitions": n, "status": status, "tasks": tasks, "slots": slots, "slot_s": runs[0]["slot_s"],
            "capacity_bps": runs[0]["capacity_bps"], "committed": len(verdicts),
            "refused": len(tasks) - len(verdicts), "utilization": _iv(util)}
