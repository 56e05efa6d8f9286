"""`metrolab tasks PLAN`: task-based scheduling and elastic bandwidth on a lab (white paper
§4.2.1-4.2.2): committed windows, slices reserved and released, rates changed mid-transfer."""

from __future__ import annotations

from pathlib import Path

from harness.cli.common import add_backend, add_json, fmt_rate, on_backend
from harness.output import console, err_console, fmt, print_json, table


def register(sub) -> None:
    p = sub.add_parser("tasks", help="commit transfer windows from a path's history and play them on a lab "
                                     "(slices reserved and released, rates changed mid-transfer)")
    p.add_argument("plan", help="a task plan file, or a built-in plan's name (task-scheduling)")
    p.add_argument("--out", metavar="DIR", help="write tasks.json there")
    p.add_argument("--plan-only", action="store_true", help="commit the windows and print them; build no lab")
    add_backend(p)
    add_json(p)
    p.set_defaults(func=cmd_tasks)


def cmd_tasks(args) -> int:
    from harness.scenario.schedule import Commitment, schedule
    from harness.scenario.taskplan import check_plan, load_plan
    from harness.spec.loader import load_topology
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
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    from harness.lab.select import needs
    code = on_backend(args, needs(topo), writes=(str(out / "tasks.json"),) if out else ())
    if code is not None:
        return code
    from harness.lab import create_lab
    from harness.runner.tasks import Plan, RateChange, play
    plan = Plan(link=spec.path.link, egress=spec.path.egress, src=spec.path.src, dst=spec.path.dst,
                capacity_bps=spec.path.capacity, history=spec.history_model(), requests=spec.request_models(),
                time_scale=spec.time_scale, changes=[RateChange(c.task, c.after, c.rate) for c in spec.changes],
                guard_s=spec.guard)
    lab = create_lab(topo, "netns")
    if not args.json:
        err_console.print(f"building lab {lab.lab_id} ({topo.name}) for plan {spec.name} ...", highlight=False)
    lab.up()
    try:
        res = play(lab, plan, progress=lambda m: None if args.json else err_console.print(m, highlight=False))
    finally:
        lab.down()
    res = {"plan": spec.name, "file": file} | res
    if out is not None:
        import json
        (out / "tasks.json").write_text(json.dumps(res, indent=1))
    if args.json:
        print_json(res)
    else:
        _print_tasks(res["tasks"])
        console.print(table("utilization by slot (the link's bytes over its sold capacity)",
                            ["slot from s", "model", "measured"],
                            [[fmt(s["start_s"], ".3g"), fmt(s["model"], ".0%"),
                              fmt(s["utilization"], ".0%")] for s in res["slots"]]))
        console.print(f"{res['met']} of {res['committed']} committed task(s) met their window, {res['refused']} "
                      f"refused; mean utilization {fmt(res['utilization'], '.0%')} of "
                      f"{fmt_rate(res['capacity_bps'])}", highlight=False)
    return 0 if res["met"] == res["committed"] else 1


def _print_tasks(rows: list[dict]) -> None:
    def window(r):
        return f"[{r['window_s'][0]:g}, {r['window_s'][1]:g}) s" if r.get("window_s") else "-"

    def verdict(r):
        if not r["committed"]:
            return "refused: " + r["reason"]
        if "met" not in r:
            return "committed"
        return "met" if r["met"] else "MISSED"
    console.print(table("tasks", ["task", "window", "reserved", "first byte s", "last byte s", "model's end s",
                                  "verdict"],
                        [[r["name"], window(r), fmt_rate(r.get("rate_bps")) if r.get("rate_bps") else "-",
                          fmt(r.get("start_s"), ".3f"), fmt(r.get("end_s"), ".3f"), fmt(r.get("predicted_end_s"), ".3f"),
                          verdict(r)] for r in rows]))
