"""metrolab as a library: what the `metrolab` command does, for scripts and notebooks.

    import metrolab
    result = metrolab.run("load-balancing", quick=True)
    result.status, result.rows          # "pass" | "fail" | "inconclusive", a pandas DataFrame

Every function takes typed arguments; the CLI (harness/cli) is a thin layer over these.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from metrolab.harness.backends import create_lab
from metrolab.harness.bench import bench_noise as bench_noise  # re-exported: the API's, as the library has it
from metrolab.harness.capabilities import probe
from metrolab.harness.errors import GuestRunError, SpecError
from metrolab.harness.lab.select import choose, in_guest
from metrolab.harness.runner.engine import Budget, Engine
from metrolab.harness.runner.measure import MeasureRequest, Overrides
from metrolab.harness.runner.rdma_commands import RdmaTest as RdmaTest  # re-exported, as bench_noise
from metrolab.harness.runner.rdma_commands import gbn_experiment as gbn_experiment
from metrolab.harness.runner.rdma_commands import rdma_test as rdma_test
from metrolab.harness.runner.record import Record
from metrolab.harness.runner.results import ResultStore
from metrolab.harness.runner.run import run_scenario, soak_plan
from metrolab.harness.runner.tasks import Plan as TaskPlan
from metrolab.harness.runner.tasks import Plays, RateChange
from metrolab.harness.scenario.adhoc import workload_scenario
from metrolab.harness.scenario.needs import scenario_needs
from metrolab.harness.scenario.schedule import Commitment, schedule
from metrolab.harness.scenario.spec import builtin_scenarios
from metrolab.harness.scenario.spec import load_scenario as _load
from metrolab.harness.scenario.taskplan import check_plan, load_plan
from metrolab.harness.scenario.tasksummary import summarize as summarize_tasks
from metrolab.harness.spec.loader import load_topology
from metrolab.harness.testbed.resolve import load_testbed
from metrolab.harness.vm.qemu import GuestCrash
from metrolab.harness.vm.reexec import run_in_guest
from metrolab.harness.whitepaper import bundle as wb
from metrolab.reports.build import build_report, load_verdict, points_frame
from metrolab.reports.tasks import write_task_reports

if TYPE_CHECKING:
    import pandas as pd

    from metrolab.harness.capabilities import Capabilities
    from metrolab.harness.lab.netns import NetnsLab
    from metrolab.harness.scenario.spec import Scenario
    from metrolab.harness.scenario.verdict import Verdict

MAIN_SCENARIO = "allreduce-distance"  # the main job: AllReduce across the default lab's WAN, 0-500 km
TASK_RUNS, TASK_PLAN, TASK_RESULT = "runs.jsonl", "plan.json", "tasks.json"  # a tasks run directory
GUEST_CRASH_RESUMES = 2  # a guest kernel that crashes mid-run (metrolab.harness.vm.qemu.GuestCrash): resume that often
Progress = Callable[..., None]  # progress(advance=0, total=None, description=None)


@dataclass
class RunResult:
    """A run directory, judged: its verdict, its rows and the report files (where drawn)."""

    run_dir: Path
    status: str                                   # pass | fail | inconclusive
    verdict: Verdict
    backend: str = "netns"
    summary: dict[str, Any] = field(default_factory=dict)   # measured, skipped, wall_s, seed, headroom, …
    files: dict[str, str] = field(default_factory=dict)     # report files: html, markdown, junit, csv, parquet
    meta: dict[str, Any] = field(default_factory=dict)      # the run directory's meta.json, as judged

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def rows(self) -> pd.DataFrame:
        """Every measured row (one per workload, point and block), as recorded."""
        return ResultStore(self.run_dir).frame()

    @property
    def points(self) -> pd.DataFrame:
        """One row per point: degradation with its interval, the model's prediction, the verdict."""
        return points_frame(self.verdict)


def scenarios() -> dict[str, Path]:
    """The built-in scenarios: name -> file."""
    return builtin_scenarios()


def load_scenario(ref: str | Path, quick: bool = False) -> Scenario:
    """A scenario by built-in name or YAML path, validated (SpecError names file, field and value)."""
    return _load(str(ref), quick=quick)


def capabilities() -> Capabilities:
    """What this machine offers (qdiscs the kernel accepts, nft, rxe, KVM, pyverbs, torch, Ray, GPUs)."""
    return probe()


def default_run_dir(name: str, base: Path | None = None) -> Path:
    return ((base or Path.cwd()) / "metrolab-runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()


def run(scenario: str | Path | None = None, *, quick: bool = False, out: str | Path | None = None,
        resume: str | Path | None = None, backend: str = "auto", ray_address: str | None = None,
        until_conclusive: bool | None = None, max_repetitions: int | None = None,
        max_minutes: float | None = None, seed: int | None = None, report: bool = True,
        progress: Progress | None = None, on_backend: Callable[[str, str], None] | None = None,
        testbed: str | Path | None = None) -> RunResult:
    """Run a scenario (built-in name or YAML path) and judge it: shuffled blocks, each point paired
    with its own block's baseline, intervals, the model beside each point, a verdict per criterion.
    With `testbed` (a testbed file mapping the scenario's topology) it runs on those machines.

    `resume` continues a run directory (nothing recorded there is measured again). `backend`: auto
    runs in the guest kernel only where this kernel lacks what the scenario needs. `report` draws
    HTML, Markdown, JUnit and CSV into the run directory. `on_backend(backend, why)` is told the choice.
    """
    if scenario is None and resume is None:
        raise SpecError("metrolab run", "scenario", None, "name a scenario (see `metrolab scenarios`) or resume a "
                        "run directory")
    ref = str(scenario) if scenario is not None else None
    if ref is None:  # resume: the scenario the run directory was made from
        assert resume is not None
        meta_file = Path(resume) / "meta.json"
        if not meta_file.exists():
            raise SpecError(str(resume), "", str(resume), "not a run directory (no meta.json); nothing to resume")
        meta = json.loads(meta_file.read_text())
        ref = meta["scenario_source"]
        quick = quick or meta.get("quick", False)
    overrides = Overrides(until_conclusive=until_conclusive, max_repetitions=max_repetitions,
                          max_minutes=max_minutes, seed=seed)
    scn = overrides.apply(load_scenario(ref, quick=quick))
    run_dir = Path(resume or out or default_run_dir(scn.name)).resolve()
    if testbed is not None:
        return _run_on_testbed(scn, testbed, run_dir, resume=resume is not None, report=report, progress=progress,
                               on_backend=on_backend)
    chosen, why = choose(backend, scenario_needs(scn))
    if on_backend is not None:
        on_backend(chosen, why)
    if chosen == "vm":
        _measure_in_guest(MeasureRequest(scenario=ref, quick=quick, resume=resume is not None, overrides=overrides),
                          run_dir)
        return _judged(run_dir, "vm", report)
    here = "vm" if in_guest() else "netns"
    run_scenario(scn, run_dir, resume=resume is not None, ray_address=ray_address, backend=here, progress=progress)
    return _judged(run_dir, here, report and not in_guest())  # no plots drawn under TCG


def soak(scenario: str | Path, duration_s: float, *, point: str | None = None, quick: bool = False,
         out: str | Path | None = None, backend: str = "auto", progress: Progress | None = None,
         on_backend: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Repeat one point of a scenario (its label; default: the sweep's first) for `duration_s` and
    track the step time and every rank's, the runner's and the lab's resources: each series' slope
    per hour with its 95 % interval and a verdict (grows / stable / inconclusive). Returns the
    summary written to RUN_DIR/soak.json (status pass, fail or inconclusive); the samples are in
    soak.jsonl, the repetitions' rows in results.jsonl as in any run."""
    ref = str(scenario)
    scn = load_scenario(ref, quick=quick)
    plan = soak_plan(scn, duration_s, point)  # a bad point or duration is refused before anything is built
    run_dir = Path(out or default_run_dir(f"{scn.name}-soak")).resolve()
    chosen, why = choose(backend, scenario_needs(scn))
    if on_backend is not None:
        on_backend(chosen, why)
    if chosen == "vm":
        _measure_in_guest(MeasureRequest(scenario=ref, quick=quick, soak_s=duration_s, point=point), run_dir,
                          resumes=0)  # a soak's clock is not resumed
        if not (run_dir / "soak.json").exists():
            raise GuestRunError(f"metrolab run {ref} --soak", 1)
    else:
        run_scenario(scn, run_dir, backend="vm" if in_guest() else "netns", progress=progress, soak=plan)
    return json.loads((run_dir / "soak.json").read_text()) | {"run_dir": str(run_dir)}


def _run_on_testbed(scn, testbed: str | Path, run_dir: Path, *, resume: bool, report: bool, progress,
                    on_backend) -> RunResult:
    tb = load_testbed(testbed)
    if tb.topology.digest != scn.topology.digest:
        raise SpecError(str(testbed), "topology", tb.spec.topology,
                        f"testbed {tb.name} maps topology {tb.topology.name}, scenario {scn.spec.name} runs on "
                        f"{scn.topology.name}: a testbed runs the scenarios of the topology it maps")
    if on_backend is not None:
        on_backend("hosts", f"testbed {tb.name} ({len(tb.spec.machines)} machines)")
    run_scenario(scn, run_dir, resume=resume, backend="hosts", progress=progress, testbed=tb)
    return _judged(run_dir, "hosts", report, testbed=tb.name)


def _judged(run_dir: Path, backend: str | None, report: bool, **extra: Any) -> RunResult:
    """The Judge's verdict on the run directory's Record (the rows whichever kernel measured them),
    with what the run that wrote it did; the report drawn from it unless `report` is off."""
    if not report:
        meta, _spec, verdict, _store = load_verdict(run_dir)
        return RunResult(run_dir, verdict.status, verdict, backend or meta.get("backend", "netns"),
                         (meta.get("outcome") or {}) | extra, meta=meta)
    rep = build_report(run_dir)
    meta = rep["meta"]
    return RunResult(run_dir, rep["status"], rep["verdict"], backend or meta.get("backend", "netns"),
                     {"headroom": meta.get("headroom")} | (meta.get("outcome") or {}) | extra
                     | {"report": rep["files"]["html"]}, rep["files"], meta)


def _measure_in_guest(request: MeasureRequest, run_dir: Path, resumes: int = GUEST_CRASH_RESUMES) -> None:
    """The request measured in the guest kernel into `run_dir` (a share): the host judges the Record
    and draws the report (statistics and plots are quick here, slow under TCG). A guest that
    crashes mid-run leaves what it measured on the share: a fresh one resumes the run."""
    for attempt in range(resumes + 1):
        request.write(run_dir)
        try:
            code = run_in_guest(["measure", str(run_dir)], shares=(run_dir,), backend=None)
        except GuestCrash as exc:
            if attempt == resumes or not (run_dir / "meta.json").exists():
                raise
            print(f"metrolab: {exc}; resuming the run in a fresh guest ({attempt + 1} of {resumes})",
                  file=sys.stderr, flush=True)
            request = request.model_copy(update={"resume": True})
            continue
        if code != 0:
            raise GuestRunError(f"metrolab run {request.scenario}", code)
        return


def task_windows(plan: str | Path) -> dict[str, Any]:
    """A task plan's windows, committed from its path's bandwidth history and the reservations
    before each (or refused, with the reason); no lab is built."""
    spec, file = load_plan(str(plan))
    check_plan(spec, load_topology(spec.topology), file)
    got = schedule(spec.request_models(), spec.path.capacity, spec.history_model(), time_scale=spec.time_scale,
                   guard_s=spec.guard)
    return {"plan": spec.name, "tasks": [
        {"name": g.request.name, "committed": isinstance(g, Commitment),
         "window_s": (g.start_s, g.end_s) if isinstance(g, Commitment) else None,
         "rate_bps": g.rate_bps if isinstance(g, Commitment) else None,
         "reason": "" if isinstance(g, Commitment) else g.reason} for g in got]}


def tasks(plan: str | Path, *, repeat: int = 3, out: str | Path | None = None, resume: str | Path | None = None,
          say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Task-based scheduling and elastic bandwidth (white paper §4.2.1-4.2.2) on a lab of this
    kernel: the plan's windows committed, then played `repeat` times (slices reserved as windows
    open and released as transfers end, rates changed mid-transfer), each play written to the run
    directory as it ends (runs.jsonl: `resume` keeps them); each commitment judged play by play.
    Returns the summary written to tasks.json (status pass, fail or inconclusive)."""
    if repeat < 1:
        raise SpecError("metrolab tasks", "repeat", repeat, "plays of the plan: 1 or more")
    say = say or (lambda msg: None)
    spec, file = load_plan(str(plan))
    topo = load_topology(spec.topology)
    check_plan(spec, topo, file)
    run_dir, runs = _task_run_dir(spec, str(plan), out, resume)
    if len(runs) < repeat:  # a resumed run with every play recorded is only summarized
        player = TaskPlan(link=spec.path.link, egress=spec.path.egress, src=spec.path.src, dst=spec.path.dst,
                          capacity_bps=spec.path.capacity, history=spec.history_model(),
                          requests=spec.request_models(), time_scale=spec.time_scale,
                          changes=[RateChange(c.task, c.after, c.rate) for c in spec.changes], guard_s=spec.guard)
        lab = create_lab(topo, "netns")
        say(f"building lab {lab.lab_id} ({topo.name}) for plan {spec.name}: {repeat} plays ...")
        lab.up()
        try:
            plays = Plays(lab, player, Record(run_dir), TASK_RUNS, say)
            Engine(plays.record, 0).run(plays, Budget(repeat))  # one point: the seed orders nothing
            runs = plays.rows()
        finally:
            lab.down()
    res = {"plan": spec.name, "file": file, "run_dir": str(run_dir)} | summarize_tasks(runs[:repeat]) | {"runs": runs}
    res["files"] = {k: str(v) for k, v in write_task_reports(run_dir, res).items()}
    Record(run_dir).write_json(TASK_RESULT, res, indent=1)
    return res


def task_run_dir(plan: str | Path, out: str | Path | None = None, resume: str | Path | None = None) -> Path:
    """Where `tasks` writes: `resume`, `out`, or a new directory named for the plan."""
    spec, _file = load_plan(str(plan))
    return _task_dir(spec.name, out, resume)


def _task_dir(name: str, out, resume) -> Path:
    return Path(resume or out or default_run_dir(f"tasks-{name}")).resolve()


def _task_run_dir(spec, ref: str, out, resume) -> tuple[Path, list[dict]]:
    """The run directory and the plays it already holds (resume: of this very plan, or an error
    naming what differs)."""
    plan = json.loads(spec.model_dump_json())
    run_dir = _task_dir(spec.name, out, resume)
    if resume:
        if not (run_dir / TASK_PLAN).is_file():
            raise SpecError(str(run_dir), "", TASK_PLAN, "not a tasks run directory (no plan.json)")
        was = json.loads((run_dir / TASK_PLAN).read_text())
        if was != plan:
            diff = sorted(k for k in set(was) | set(plan) if was.get(k) != plan.get(k))
            raise SpecError(str(run_dir / TASK_PLAN), ", ".join(diff), ref,
                            "the run directory holds another plan: resume it with the plan it was started with")
        return run_dir, Record(run_dir).lines(TASK_RUNS)
    if (run_dir / TASK_RUNS).is_file() and (run_dir / TASK_RUNS).read_text().strip():
        raise SpecError(str(run_dir), "", TASK_RUNS, "holds the plays of an earlier run: resume it (--resume), or "
                                                     "write another directory (--out)")
    Record(run_dir).write_json(TASK_PLAN, plan, indent=1)
    return run_dir, []


def run_workload(kind: str, *, params: dict[str, Any] | None = None, hosts: list[str] | None = None,
                 topology: str = "default", links: list[str] | None = None, distance_km: Sequence[float] = (0.0,),
                 loss: Sequence[float] = (0.0,), convergence: Sequence[float] = (1.0,), repetitions: int = 3,
                 warmups: int = 1, scale: float = 1.0, out: str | Path | None = None, **run_options) -> RunResult:
    """One workload alone: its baseline and the given network points, no scenario file (the one
    built is written into the run directory as workload-scenario.yaml)."""
    data = workload_scenario(kind, params=params, hosts=hosts, topology=topology, links=links,
                             distance_km=distance_km, loss=loss, convergence=convergence, repetitions=repetitions,
                             warmups=warmups, scale=scale)
    run_dir = Path(out or default_run_dir(kind)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "workload-scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return run(path, out=run_dir, **run_options)


def load_run(run_dir: str | Path) -> RunResult:
    """A run directory judged again from its rows (nothing is measured or written)."""
    run_dir = Path(run_dir)
    if not (run_dir / "meta.json").exists():
        raise SpecError(str(run_dir), "", str(run_dir), "not a run directory (no meta.json)")
    meta, _, verdict, _ = load_verdict(run_dir)
    files = {k: str(run_dir / f) for k, f in (("html", "report.html"), ("markdown", "summary.md"),
                                              ("junit", "junit.xml")) if (run_dir / f).exists()}
    return RunResult(run_dir, verdict.status, verdict, meta.get("backend", "netns"),
                     {"headroom": meta.get("headroom")}, files, meta)


def report(run_dir: str | Path) -> RunResult:
    """Draw (again) a run directory's HTML, Markdown, JUnit and CSV; the judged result."""
    run_dir = Path(run_dir)
    if not (run_dir / "meta.json").exists():
        raise SpecError(str(run_dir), "", str(run_dir), "not a run directory (no meta.json)")
    return _judged(run_dir, None, True)


def whitepaper_docs(bundle: str | Path, page: str | Path, *, store: str | Path | None = None) -> dict[str, str]:
    """Draw the white paper's docs page from a `metrolab run whitepaper` bundle into `page`; with
    `store`, keep the bundle's record in store/<bundle> first and name that copy on the page."""
    src = Path(bundle)
    if not (src / "bundle.json").exists() or not (src / "claims.json").exists():
        raise SpecError(str(src), "", str(src), "not a bundle of `metrolab run whitepaper` (bundle.json, claims.json)")
    page = Path(page)
    if store is not None:
        src = wb.store(src, Path(store))
    shown = os.path.relpath(src, page.resolve().parent.parent) if store is not None else str(src)
    page.write_text(wb.docs_page(src, shown))
    return {"page": str(page), "bundle": str(src)}


def build_lab(topology: str | Path = "default", *, strict: bool = True) -> NetnsLab:
    """Build a lab (namespaces, links, routes, impairments) on this kernel; `lab.down()` removes it.
    `strict`: refuse what this kernel cannot apply (False: apply the rest, report it as skipped)."""
    lab = create_lab(load_topology(str(topology)), "netns", strict=strict)
    lab.up()
    return lab


@contextlib.contextmanager
def lab(topology: str | Path = "default", *, strict: bool = True) -> Iterator[NetnsLab]:
    """`with metrolab.lab("default") as lab:` — the lab is removed on exit, error and Ctrl-C."""
    built = build_lab(topology, strict=strict)
    try:
        yield built
    finally:
        built.down()
