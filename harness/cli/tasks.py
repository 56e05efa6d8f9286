"""`metrolab tasks PLAN`: task-based scheduling and elastic bandwidth on a lab (white paper
§4.2.1-4.2.2): committed windows, slices reserved and released, rates changed mid-transfer.
The plan is played --repeat times on one lab, each play written as it ends; each commitment is
judged play by play (metrolab.harness.scenario.tasksummary: pass, fail or inconclusive)."""

from __future__ import annotations

import argparse
from pathlib import Path

import metrolab
from metrolab.api import TASK_RESULT
from metrolab.harness.cli.common import add_backend, add_json, add_verdict_flags, exit_code, fmt_rate, teller
from metrolab.harness.output import console, err_console, fmt, print_json, table


def register(sub) -> None:
    p = sub.add_parser("tasks", help="commit transfer windows from a path's history and play them on a lab "
                                     "(slices reserved and released, rates changed mid-transfer)")
    p.add_argument("plan", help="a task plan file, or a built-in plan's name (task-scheduling)")
    p.add_argument("--out", metavar="DIR", help="run directory: plan.json, runs.jsonl (a line per repetition, "
                                                "as it ends), tasks.json, summary.md, junit.xml "
                                                "(default: ./metrolab-runs/tasks-PLAN-TIMESTAMP)")
    p.add_argument("--resume", metavar="DIR", help="continue a run: the repetitions recorded there are kept")
    p.add_argument("--repeat", type=_plays, default=3, metavar="N",
                   help="plays of the plan (default 3): a commitment passes when every play met it and the "
                        "prediction interval of one play's end is inside its window")
    p.add_argument("--plan-only", action="store_true", help="commit the windows and print them; build no lab")
    add_verdict_flags(p, run=False)
    add_backend(p)
    add_json(p)
    p.set_defaults(func=cmd_tasks)


def _plays(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"plays of the plan: a whole number, 1 or more (got {text!r})")
    return int(text)


def cmd_tasks(args) -> int:
    if args.plan_only:
        res = metrolab.task_windows(args.plan)
        if args.json:
            print_json(res)
        else:
            _print_tasks(res["tasks"])
        return 0
    def say(msg: str) -> None:
        if not args.json:
            err_console.print(msg, highlight=False)
    res = metrolab.tasks(args.plan, repeat=args.repeat, out=args.out, resume=args.resume, say=say,
                         backend=args.backend, on_backend=teller(args))
    out = Path(res["run_dir"])
    if args.json:
        print_json(res)
    else:
        _print_tasks(res["tasks"])
        console.print(table("utilization by slot (the link's bytes over its sold capacity; mean [95 % CI] "
                            f"over {res['repetitions']} repetition(s))", ["slot from s", "model", "measured", "error"],
                            [[fmt(s["start_s"], ".3g"), fmt(s["model"], ".0%"), _pct_iv(s["utilization"]),
                              fmt(s["error"], "+.0%")] for s in res["slots"]]))
        console.print(f"{res['status']}: {res['committed']} committed task(s), {res['refused']} refused; mean "
                      f"utilization {_pct_iv(res['utilization'])} of {fmt_rate(res['capacity_bps'])}; "
                      f"{out / TASK_RESULT}", highlight=False)
    return exit_code(res["status"], args.inconclusive)


def _pct_iv(iv: dict) -> str:
    if iv["n"] < 2:
        return fmt(iv["estimate"], ".0%")
    return f"{fmt(iv['estimate'], '.0%')} [{fmt(iv['low'], '.0%')}, {fmt(iv['high'], '.0%')}]"


def _print_tasks(rows: list[dict]) -> None:
    def window(r):
        return f"[{r['window_s'][0]:g}, {r['window_s'][1]:g}) s" if r.get("window_s") else "-"

    def end(r):
        iv = r.get("end_s")
        if not iv:
            return "-"
        return fmt(iv["estimate"], ".3f") + (f" [{iv['low']:.3f}, {iv['high']:.3f}]" if iv["n"] > 1 else "")

    def verdict(r):
        if not r["committed"]:
            return "refused: " + r["reason"]
        if "verdict" not in r:
            return "committed"
        return f"{r['verdict']}: met {r['met']} of {r['runs']}; {r['why']}"
    console.print(table("tasks", ["task", "window", "reserved", "first byte s", "last byte s [95 % CI]",
                                  "model's end s", "verdict"],
                        [[r["name"], window(r), fmt_rate(r.get("rate_bps")) if r.get("rate_bps") else "-",
                          fmt(r["start_s"]["estimate"], ".3f") if r.get("start_s") else "-", end(r),
                          fmt(r.get("predicted_end_s"), ".3f"), verdict(r)] for r in rows]))
