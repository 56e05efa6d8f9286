"""`metrolab tasks PLAN`: task-based scheduling and elastic bandwidth on a lab (white paper
§4.2.1-4.2.2): committed windows, slices reserved and released, rates changed mid-transfer.
The plan is played --repeat times on one lab, each play written as it ends; each commitment is
judged play by play (metrolab.harness.scenario.tasksummary: pass, fail or inconclusive)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metrolab.api import default_run_dir
from metrolab.harness.backends import create_lab
from metrolab.harness.cli.common import add_backend, add_json, add_verdict_flags, exit_code, fmt_rate, on_backend
from metrolab.harness.errors import SpecError
from metrolab.harness.lab.select import needs
from metrolab.harness.output import console, err_console, fmt, print_json, table
from metrolab.harness.runner.record import Record
from metrolab.harness.runner.tasks import Plan, RateChange, play
from metrolab.harness.scenario.schedule import Commitment, schedule
from metrolab.harness.scenario.taskplan import check_plan, load_plan
from metrolab.harness.scenario.tasksummary import summarize
from metrolab.harness.spec.loader import load_topology
from metrolab.reports.tasks import write_task_reports

RUNS_FILE, PLAN_FILE, RESULT_FILE = "runs.jsonl", "plan.json", "tasks.json"


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
    spec, file = load_plan(args.plan)
    topo = load_topology(spec.topology)
    check_plan(spec, topo, file)
    if args.plan_only:
        got = schedule(spec.request_models(), spec.path.capacity, spec.history_model(), time_scale=spec.time_scale,
                       guard_s=spec.guard)
        rows = [{"name": g.request.name, "committed": isinstance(g, Commitment),
                 "window_s": (g.start_s, g.end_s) if isinstance(g, Commitment) else None,
                 "rate_bps": g.rate_bps if isinstance(g, Commitment) else None,
                 "reason": "" if isinstance(g, Commitment) else g.reason} for g in got]
        if args.json:
            print_json({"plan": spec.name, "tasks": rows})
        else:
            _print_tasks(rows)
        return 0
    out, runs = _run_dir(args, spec)
    to_play = args.repeat - len(runs)  # a resumed run with every play recorded is only summarized
    if to_play > 0:
        code = on_backend(args, needs(topo), writes=(str(out / RESULT_FILE),))
        if code is not None:
            return code
    plan = Plan(link=spec.path.link, egress=spec.path.egress, src=spec.path.src, dst=spec.path.dst,
                capacity_bps=spec.path.capacity, history=spec.history_model(), requests=spec.request_models(),
                time_scale=spec.time_scale, changes=[RateChange(c.task, c.after, c.rate) for c in spec.changes],
                guard_s=spec.guard)

    def say(msg: str) -> None:
        if not args.json:
            err_console.print(msg, highlight=False)
    if to_play > 0:
        lab = create_lab(topo, "netns")
        say(f"building lab {lab.lab_id} ({topo.name}) for plan {spec.name} ...")
        lab.up()
        try:
            while len(runs) < args.repeat:
                say(f"repetition {len(runs) + 1} of {args.repeat}")
                runs.append(play(lab, plan, progress=say))
                Record(out).append(RUNS_FILE, runs[-1])  # written as measured: --resume keeps it
        finally:
            lab.down()
    res = {"plan": spec.name, "file": file, "run_dir": str(out)} | summarize(runs[:args.repeat]) | {"runs": runs}
    res["files"] = {k: str(v) for k, v in write_task_reports(out, res).items()}
    Record(out).write_json(RESULT_FILE, res, indent=1)
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
                      f"{out / RESULT_FILE}", highlight=False)
    return exit_code(res["status"], args.inconclusive)


def _run_dir(args, spec) -> tuple[Path, list[dict]]:
    """The run directory (made, and named to the guest's re-run of this command) and the repetitions
    it already holds (--resume: of this very plan, or an error naming what differs)."""
    plan = json.loads(spec.model_dump_json())
    out = Path(args.resume or args.out or default_run_dir(f"tasks-{spec.name}")).resolve()
    runs: list[dict] = []
    if args.resume:
        if not (out / PLAN_FILE).is_file():
            raise SpecError(str(out), "", PLAN_FILE, "not a tasks run directory (no plan.json)")
        was = json.loads((out / PLAN_FILE).read_text())
        if was != plan:
            diff = sorted(k for k in set(was) | set(plan) if was.get(k) != plan.get(k))
            raise SpecError(str(out / PLAN_FILE), ", ".join(diff), args.plan,
                            "the run directory holds another plan: resume it with the plan it was started with")
        runs = Record(out).lines(RUNS_FILE)
    else:
        if (out / RUNS_FILE).is_file() and (out / RUNS_FILE).read_text().strip():
            raise SpecError(str(out), "", RUNS_FILE, "holds the plays of an earlier run: --resume it, or give "
                                                     "another --out")
        out.mkdir(parents=True, exist_ok=True)
        Record(out).write_json(PLAN_FILE, plan, indent=1)
    if not args.out and not args.resume:
        args._argv = [*args._argv, "--out", str(out)]  # the guest writes where the host looks
    return out, runs


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
