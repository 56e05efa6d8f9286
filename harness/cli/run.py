"""`metrolab main`, `run`, `workload`, `report`, `scenarios`: scenarios run and judged."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import yaml

import metrolab
from metrolab.api import default_run_dir
from metrolab.harness.cli.common import (
    RunProgress,
    add_backend,
    add_json,
    add_testbed,
    add_verdict_flags,
    exit_code,
    teller,
)
from metrolab.harness.errors import SpecError
from metrolab.harness.output import console, err_console, print_json, table
from metrolab.harness.runner.soak import parse_duration
from metrolab.harness.scenario.spec import read_yaml
from metrolab.reports.build import points_frame, quality_lines, shown_metrics, verdict_table
from metrolab.whitepaper import run_whitepaper


def register(sub) -> None:
    mj = sub.add_parser("main", help="the main job on the embedded default lab (what the README's first command runs)")
    mj.add_argument("--quick", action="store_true", help="the CI-sized variant")
    mj.add_argument("--out", help="run directory (default: ./metrolab-runs/NAME-TIMESTAMP)")
    add_verdict_flags(mj)
    add_backend(mj)
    add_testbed(mj)
    add_json(mj)
    mj.set_defaults(func=cmd_main)
    rn = sub.add_parser("run", help="run a scenario: sweep, efficiency against the baseline, acceptance, report")
    rn.add_argument("scenario", nargs="?", help="built-in scenario name or YAML path (see `metrolab scenarios`), "
                    "or whitepaper: every claim of the white paper on its scenario, one report")
    rn.add_argument("--claims", help="whitepaper: only these claims, comma-separated (upload, distance, gbn, "
                    "load-balancing, flow-control, convergence)")
    rn.add_argument("--quick", action="store_true", help="the scenario's CI-sized variant")
    rn.add_argument("--out", help="run directory (default: ./metrolab-runs/NAME-TIMESTAMP)")
    rn.add_argument("--resume", metavar="RUN_DIR", help="continue a run; nothing recorded there is measured again")
    rn.add_argument("--ray-address", help="join this Ray cluster (real hosts) instead of starting one")
    rn.add_argument("--soak", metavar="DURATION", help="repeat one point for DURATION (45, 30s, 10m, 2h) and "
                    "track step time and the resources of every rank, the runner and the lab: slopes per hour, "
                    "a leak shows as one (soak.json, soak.jsonl)")
    rn.add_argument("--point", help="--soak: the point's label as the sweep names it (default: the first)")
    add_verdict_flags(rn)
    add_backend(rn)
    add_testbed(rn)
    add_json(rn)
    rn.set_defaults(func=cmd_run)
    me = sub.add_parser("measure", help="measure the request a run directory holds and judge nothing (what a vm "
                        "run starts in the guest kernel: the host judges the run directory)")
    me.add_argument("run_dir", metavar="RUN_DIR")
    me.set_defaults(func=cmd_measure)
    wk = sub.add_parser("workload", help="one workload alone: the baseline and the given network points, no "
                                         "scenario file (it is written into the run directory)")
    wk.add_argument("kind", help="collective, training-step, disaggregated-training, pd-inference")
    wk.add_argument("--hosts", help="rank hosts, comma-separated (default: the workload's choice)")
    wk.add_argument("--topology", default="default", help="built-in name or YAML path")
    wk.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a workload parameter (YAML value), repeatable: -p backend=verbs -p model=llama2-7b")
    wk.add_argument("--links", help="links to impair, comma-separated (default: the wan* links)")
    wk.add_argument("--distance-km", default="0", help="comma-separated distances")
    wk.add_argument("--loss", default="0", help="comma-separated loss probabilities")
    wk.add_argument("--convergence", default="1", help="comma-separated convergence ratios")
    wk.add_argument("--scale", type=float, default=1.0, help="time-preserving scale factor k")
    wk.add_argument("--repetitions", type=int, default=3)
    wk.add_argument("--warmups", type=int, default=1)
    wk.add_argument("--out", help="run directory (default: ./metrolab-runs/KIND-TIMESTAMP)")
    add_verdict_flags(wk)
    add_backend(wk)
    add_testbed(wk)
    add_json(wk)
    wk.set_defaults(func=cmd_workload)
    rep = sub.add_parser("report", help="HTML, Markdown, JUnit and CSV from a run directory; the docs page from a "
                                        "whitepaper bundle (--docs)")
    rep.add_argument("run_dir", help="a run directory, or a bundle of `metrolab run whitepaper` (with --docs)")
    rep.add_argument("--docs", metavar="PAGE", help="a bundle: draw the white paper's docs page from it into PAGE")
    rep.add_argument("--store", metavar="DIR", help="with --docs: keep the bundle's record in DIR/<bundle> (the "
                     "repository's docs/results) and name that copy on the page")
    add_verdict_flags(rep, run=False)
    add_json(rep)
    rep.set_defaults(func=cmd_report)
    sc = sub.add_parser("scenarios", help="the built-in scenarios")
    add_json(sc)
    sc.set_defaults(func=cmd_scenarios)


def _statistics(args) -> dict:
    return {"until_conclusive": getattr(args, "until_conclusive", None),
            "max_repetitions": getattr(args, "max_repetitions", None),
            "max_minutes": getattr(args, "max_minutes", None), "seed": getattr(args, "seed", None)}


def _run(args, run) -> int:
    """Run through the API (`run(progress=…, on_backend=…)`), then print the verdict."""
    with RunProgress(args.json) as progress:
        res: metrolab.RunResult = run(progress=progress, on_backend=teller(args))
    report = res.files.get("html") or str(res.run_dir / "report.html")
    print_verdict(res, args.json, extra=res.summary | {"report": report})
    return exit_code(res.status, args.inconclusive)


def cmd_run(args) -> int:
    if args.scenario == "whitepaper":
        return cmd_whitepaper(args)
    if args.claims:
        raise SpecError("metrolab run", "--claims", args.claims, "is for `metrolab run whitepaper`")
    if args.soak:
        return cmd_soak(args)
    if args.point:
        raise SpecError("metrolab run", "--point", args.point, "is for --soak")
    return _run(args, lambda **kw: metrolab.run(args.scenario, quick=args.quick, out=args.out, resume=args.resume,
                                                backend=args.backend, ray_address=args.ray_address,
                                                testbed=args.testbed, **_statistics(args), **kw))


def cmd_measure(args) -> int:
    out = metrolab.measure(args.run_dir)
    if "call" not in out:
        err_console.print(f"measured {out['measured']}, skipped {out['skipped']} in {out['wall_s']:.0f} s",
                          highlight=False)
    return 0


def cmd_soak(args) -> int:
    if args.resume:
        raise SpecError("metrolab run", "--resume", args.resume, "a soak is not resumed: start another")
    try:
        duration = parse_duration(args.soak)
    except ValueError as exc:
        raise SpecError("metrolab run", "--soak", args.soak, str(exc)) from None

    with RunProgress(args.json) as progress:
        res = metrolab.soak(args.scenario, duration, point=args.point, quick=args.quick, out=args.out,
                            backend=args.backend, progress=progress, on_backend=teller(args))
    if args.json:
        print_json(res)
    else:
        console.print(table(f"soak: {res['point']}, {res['samples']} repetitions in {res['wall_s']:.0f} s",
                            ["series", "first", "last", "slope / h [95 %]", "change", "tolerance", "verdict"],
                            [[t["series"], f"{t['first']:.4g}", f"{t['last']:.4g}",
                              f"{t['slope_per_h']:.3g} [{t['low_per_h']:.3g}, {t['high_per_h']:.3g}]",
                              f"{t['change']:.3g}", f"{t['tolerance']:.3g}", t["verdict"]] for t in res["trends"]]))
        console.print(f"{res['status']}: {res['run_dir']}/soak.json", highlight=False)
    return exit_code(res["status"], args.inconclusive)


def cmd_whitepaper(args) -> int:
    """Each white-paper claim on the scenario that tests it; one report (whitepaper.md, .json)."""
    out = Path(args.resume or args.out or default_run_dir("whitepaper")).resolve()
    res = run_whitepaper(out, quick=args.quick, claims=args.claims.split(",") if args.claims else None,
                         backend=args.backend, progress=lambda: RunProgress(args.json),
                         say=lambda m: None if args.json else err_console.print(m, highlight=False))
    if args.json:
        print_json(res)
    else:
        console.print(table(f"metrolab run whitepaper{' --quick' if args.quick else ''}",
                            ["§", "claim", "paper", "verdict", "why"],
                            [[c["section"], c["claim"], c["paper"], c["verdict"], c["error"] or c["why"]]
                             for c in res["claims"]]))
        console.print(f"report: {res['markdown']}", highlight=False)
    verdicts = {c["verdict"] for c in res["claims"]}
    errors = any(c.get("error") for c in res["claims"])  # a claim whose scenario could not run: not measured
    return exit_code("fail" if "does not hold" in verdicts or errors else "inconclusive" if "inconclusive" in verdicts
                     else "pass", args.inconclusive)


def cmd_main(args) -> int:
    """The main job: the default scenario (AllReduce across the default lab's WAN over a distance
    sweep, efficiency against the 0 km baseline), on whichever backend this machine supports."""
    return _run(args, lambda **kw: metrolab.run(metrolab.MAIN_SCENARIO, quick=args.quick, out=args.out,
                                                backend=args.backend, testbed=args.testbed, **_statistics(args),
                                                **kw))


def _numbers(flag: str, text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SpecError("metrolab workload", flag, text, "a comma-separated list of numbers") from None


def cmd_workload(args) -> int:
    """A one-workload scenario from the command line, run like any other (`metrolab run`)."""
    params = {}
    for item in args.param:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SpecError("metrolab workload", "--param", item, "write KEY=VALUE")
        params[key.strip()] = yaml.safe_load(value)
    return _run(args, lambda **kw: metrolab.run_workload(
        args.kind, params=params, hosts=args.hosts.split(",") if args.hosts else None, topology=args.topology,
        links=args.links.split(",") if args.links else None, distance_km=_numbers("--distance-km", args.distance_km),
        loss=_numbers("--loss", args.loss), convergence=_numbers("--convergence", args.convergence),
        repetitions=args.repetitions, warmups=args.warmups, scale=args.scale, out=args.out, backend=args.backend,
        testbed=args.testbed, **_statistics(args), **kw))


def cmd_report(args) -> int:
    if args.docs or args.store:
        return cmd_docs(args)
    res = metrolab.report(args.run_dir)
    if args.json:
        print_json({"status": res.status, "passed": res.passed, "files": res.files})
    else:
        print_verdict(res, False)
        for k, v in res.files.items():
            console.print(f"{k}: {v}", highlight=False)
    return exit_code(res.status, args.inconclusive)


def cmd_docs(args) -> int:
    """The white paper's docs page from a bundle (and the bundle's record kept beside the docs)."""
    if not args.docs:
        raise SpecError("metrolab report", "--store", args.store, "goes with --docs PAGE")
    res = metrolab.whitepaper_docs(args.run_dir, args.docs, store=args.store)
    if args.json:
        print_json(res)
    else:
        console.print(f"{res['page']}: drawn from {res['bundle']}", highlight=False)
    return 0


def cmd_scenarios(args) -> int:
    out = []
    for name, path in metrolab.scenarios().items():
        data = read_yaml(path) or {}
        out.append({"name": name, "description": data.get("description", ""),
                    "workloads": [w.get("name") or w.get("kind") for w in data.get("workloads", [])], "path": str(path)})
    if args.json:
        print_json(out)
    else:
        console.print(table("built-in scenarios (metrolab run NAME [--quick])", ["name", "workloads", "description"],
                            [[s["name"], ", ".join(s["workloads"]), s["description"]] for s in out]))
    return 0


def print_verdict(res: metrolab.RunResult, as_json: bool, extra: dict | None = None) -> None:
    verdict, run_dir = res.verdict, res.run_dir
    if as_json:
        print_json({"status": verdict.status, "passed": verdict.passed, "run_dir": str(run_dir), **(extra or {}),
                    "warnings": verdict.warnings,
                    "points": [{k: v for k, v in asdict(p).items() if k not in ("samples", "paired")}
                               for p in verdict.points],
                    "criteria": [asdict(r) for r in verdict.results]})
        return
    vt = verdict_table(points_frame(verdict), shown_metrics(verdict)).drop(columns="why", errors="ignore")  # below
    console.print(table("points (paired by block)", list(vt.columns), vt.astype(str).values.tolist()))
    if verdict.results:
        console.print(table("acceptance", ["criterion", "point", "verdict", "why"],
                            [[r.criterion, r.label, r.verdict.upper(), r.message] for r in verdict.results]))
    for line in quality_lines(res.meta, verdict):
        console.print(f"quality: {line}", highlight=False, markup=False)
    console.print(f"verdict: {verdict.status.upper()}   report: {run_dir / 'report.html'}", highlight=False)
