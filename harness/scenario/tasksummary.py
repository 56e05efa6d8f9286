"""A task plan played several times, summarized (pure; unit-tested without a lab).

Each repetition is one `metrolab.harness.runner.tasks.play` of the same plan (the schedule is
deterministic: the same windows, the same refusals). A commitment is a promise each transfer
keeps, so it is judged play by play, not on a mean: it **fails** when any play missed its window
or lost bytes (a broken promise is an observation, not an estimate); it **passes** when every play
met it and the 95 % prediction interval of one play's last byte (where the next transfer's falls)
is inside the window; otherwise (every play met it, but the spread reaches past the window's end,
or one play gives no interval) it is **inconclusive**. The mean end is reported with its interval
beside the model's end; each slot's utilization gets an interval beside the model's.
"""

from __future__ import annotations

import math

from metrolab.harness.scenario import stats as st


def _iv(values) -> dict:
    iv = st.mean_interval(values)
    return {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "n": iv.n}


def _mean(values) -> float | None:
    x = [float(v) for v in values if v is not None]
    return sum(x) / len(x) if x else None


def task_verdict(ends: list[float], received: list[int], size: int, window_end: float) -> tuple[str, str]:
    """(verdict, reason) of one committed task over its plays."""
    n = len(ends)
    short = [r for r in received if r != size]
    if short:
        return st.FAIL, f"{len(short)} of {n} plays received {short[0]} of {size} bytes"
    late = [e for e in ends if e > window_end]
    if late:
        return st.FAIL, f"{len(late)} of {n} plays ended after the window's end {window_end:g} s (latest {max(late):.3f} s)"
    if n < 2:
        return st.INCONCLUSIVE, "met in one play: no interval (play it more times)"
    lo, hi = st.prediction_interval(ends)
    text = f"all {n} plays met it; the 95 % prediction interval of one play's end [{lo:.3f}, {hi:.3f}] s"
    if hi <= window_end:
        return st.PASS, f"{text} is inside the window"
    return st.INCONCLUSIVE, f"{text} reaches past its end {window_end:g} s"


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
