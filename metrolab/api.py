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
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError, validate_call
from pydantic_core import to_jsonable_python

from metrolab.harness import bench
from metrolab.harness.backends import attach, clean_all, create_lab, find_state
from metrolab.harness.capabilities import probe
from metrolab.harness.errors import CapabilityError, GuestRunError, LabError, SpecError
from metrolab.harness.lab.plan import build_plan
from metrolab.harness.lab.select import RDMA_NEEDS, choose, in_guest, needs
from metrolab.harness.lab.state import all_states, pid_alive
from metrolab.harness.policy import sonic_spec
from metrolab.harness.policy.sonic import diff
from metrolab.harness.policy.sonic_push import HostOutcome, push, running_tables
from metrolab.harness.policy.sonic_spec import SonicSpec
from metrolab.harness.runner import collective_commands, rdma_commands
from metrolab.harness.runner.collective_commands import CollectivesTest as CollectivesTest  # re-exported: the API's
from metrolab.harness.runner.engine import Budget, Engine
from metrolab.harness.runner.measure import REQUEST, MeasureRequest, Overrides
from metrolab.harness.runner.measure import measure as measure_run
from metrolab.harness.runner.rdma_commands import RdmaTest as RdmaTest  # re-exported: the API's
from metrolab.harness.runner.record import Record
from metrolab.harness.runner.results import ResultStore
from metrolab.harness.runner.run import run_scenario, soak_plan
from metrolab.harness.runner.tasks import Plan as TaskPlan
from metrolab.harness.runner.tasks import Plays, RateChange
from metrolab.harness.scenario.adhoc import workload_scenario
from metrolab.harness.scenario.needs import scenario_needs
from metrolab.harness.scenario.schedule import Commitment, schedule
from metrolab.harness.scenario.sequential import rates as sequential_rates
from metrolab.harness.scenario.spec import builtin_scenarios
from metrolab.harness.scenario.spec import load_scenario as _load
from metrolab.harness.scenario.taskplan import check_plan, load_plan
from metrolab.harness.scenario.tasksummary import summarize as summarize_tasks
from metrolab.harness.spec.loader import errors_from_pydantic, load_topology
from metrolab.harness.spec.resolve import Topology
from metrolab.harness.testbed.check import CheckReport, run_check
from metrolab.harness.testbed.derive import inventory, ray_cluster_config
from metrolab.harness.testbed.hosts import clean_journals
from metrolab.harness.testbed.ops import PlaybookRun, clean, provision
from metrolab.harness.testbed.resolve import Testbed, load_testbed
from metrolab.harness.testbed.sandbox import Sandbox
from metrolab.harness.testbed.sandbox import remove as remove_sandbox
from metrolab.harness.vm.kernel import prepare_kernel
from metrolab.harness.vm.qemu import Guest, GuestCrash, choose_accel
from metrolab.harness.vm.reexec import command_stderr, run_in_guest
from metrolab.harness.whitepaper import bundle as wb
from metrolab.netem.probe import probe_lab
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
CALL_RESULT = "result.json"  # beside a call's request.json: what the guest made of it
Progress = Callable[..., None]  # progress(advance=0, total=None, description=None)
Teller = Callable[[str, str], None]  # on_backend(backend, why): told which kernel runs it
Say = Callable[[str], None]


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
            code = run_in_guest(["measure", str(run_dir)], shares=(run_dir,))
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


def _placed(needed: dict[str, str] | None, backend: str, on_backend: Teller | None) -> bool:
    """Whether a call goes to the guest kernel: `backend` says (auto: only where this kernel lacks
    what it needs; `needed` None: a testbed's machines run it), and `on_backend` is told."""
    if needed is None:
        return False
    chosen, why = choose(backend, needed)
    if on_backend is not None:
        on_backend(chosen, why)
    return chosen == "vm" and not in_guest()


def _call_in_guest(name: str, shares: tuple[Path, ...] = (), **kwargs: Any) -> Any:
    """CALLS[name](**kwargs) in the guest kernel: the call and its typed arguments go into a
    directory both kernels see, the guest's `metrolab measure` makes it and writes its result
    beside it (`measure`); `shares`: where the call writes, made writable in the guest."""
    with tempfile.TemporaryDirectory(prefix="metrolab-call-") as d:
        Record(d).write_json(REQUEST, {"call": name, "kwargs": to_jsonable_python(kwargs)})
        code = run_in_guest(["measure", d], shares=(Path(d), *shares))
        result = Record(d).read_json(CALL_RESULT)
    if code != 0 or result is None:
        raise GuestRunError(f"metrolab {name}", code or 1)
    return result


def rdma_test(t: RdmaTest, mode: str, *, backend: str = "auto", on_backend: Teller | None = None,
              progress: Say | None = None) -> dict[str, Any]:
    """`mode` (bw, lat, send_bw, ..., as perftest names them) between two lab hosts over RoCEv2,
    on a lab of the kernel `backend` picks, or on a testbed's machines (`t.testbed`)."""
    if _placed(None if t.testbed else RDMA_NEEDS, backend, on_backend):
        return _call_in_guest("rdma_test", t=t, mode=mode)
    return rdma_commands.rdma_test(t, mode, progress=progress or (lambda m: None))


def gbn_experiment(*, backend: str = "auto", on_backend: Teller | None = None, progress: Say | None = None,
                   **sweep: Any) -> dict[str, Any]:
    """RDMA WRITE goodput over distance x loss in shuffled blocks beside the Go-Back-N model
    (`sweep`: metrolab.harness.runner.rdma_commands.gbn_experiment's arguments), on the kernel
    `backend` picks; `out` (a JSON-lines file) keeps its rows and resumes."""
    if _placed(RDMA_NEEDS, backend, on_backend):
        shares = (Path(sweep["out"]).resolve().parent,) if sweep.get("out") else ()
        return _call_in_guest("gbn_experiment", shares=shares, **sweep)
    return rdma_commands.gbn_experiment(**sweep, progress=progress or (lambda m: None))


def collectives_test(t: CollectivesTest, *, backend: str = "auto", on_backend: Teller | None = None,
                     progress: Say | None = None) -> dict[str, Any]:
    """nccl-tests' collectives over torch.distributed between lab hosts (busbw, algbw, #wrong) on
    the kernel `backend` picks, or on a testbed's machines (`t.testbed`). A wrong option is refused
    here, naming it, before a lab is built or a guest booted."""
    plan = collective_commands.planned(t)
    if _placed(None if t.testbed else collective_commands.collectives_needs(t), backend, on_backend):
        return _call_in_guest("collectives_test", t=t)
    return collective_commands.collectives_test(t, plan, progress=progress or (lambda m: None))


def bench_rdma(rounds: int = 5, seed: int | None = None, *, backend: str = "auto",
               on_backend: Teller | None = None, progress: Say | None = None) -> dict[str, Any]:
    """Our verbs tool against perftest on one link: bandwidth and latency ratios over paired rounds,
    each with its interval and verdict."""
    rdma_commands.check_bench_rounds(rounds)  # before a guest boots for it
    if _placed(RDMA_NEEDS, backend, on_backend):
        return _call_in_guest("bench_rdma", rounds=rounds, seed=seed)
    return rdma_commands.bench_rdma(rounds, seed, progress=progress or (lambda m: None))


def bench_collectives(iters: int = 5, *, backend: str = "auto", on_backend: Teller | None = None) -> dict[str, Any]:
    """verbs and gloo AllReduce busbw against ib_write_bw on one two-host link."""
    if _placed(RDMA_NEEDS, backend, on_backend):
        return _call_in_guest("bench_collectives", iters=iters)
    return collective_commands.bench_collectives(iters)


def bench_noise(scenario: str = MAIN_SCENARIO, blocks: int = 8, *, co_tenant: bool = False, backend: str = "auto",
                on_backend: Teller | None = None, progress: Say | None = None) -> dict[str, Any]:
    """The noise floor: the scenario's baseline against an identical 0 km point in shuffled blocks;
    `co_tenant`: beside one busy process on this machine (a user's other job), and what the tool saw of it."""
    with bench.co_tenant(co_tenant and not in_guest()):  # on the host, beside the guest where it runs there
        if _placed(bench.noise_needs(scenario), backend, on_backend):
            res = _call_in_guest("bench_noise", scenario=scenario, blocks=blocks)
        else:
            res = bench.bench_noise(scenario, blocks=blocks, progress=progress)
    return res | {"co_tenant": co_tenant}


def bench_lab(repeat: int = 5) -> dict[str, Any]:
    """Build and tear down a 4-site x 4-host lab `repeat` times: the medians."""
    return bench.bench_lab(repeat=repeat)


def bench_vm(windows: int = 5) -> dict[str, Any]:
    """The guest's boot-to-command (cold, warm) and its RTT fidelity at 100/250/500 km, with 95 %
    intervals over `windows` windows, each with a fresh calibration."""
    return bench.bench_vm(windows=windows)


def bench_harness(rounds: int = 3) -> dict[str, Any]:
    """One collective timed bare and through `metrolab run`, alternating: the harness's overhead ratio."""
    return bench.bench_harness(rounds=rounds)


def bench_sequential(sims: int = 20_000) -> list[dict[str, Any]]:
    """Wrong-verdict rates of the sequential design against a fixed interval re-read at every look,
    for 1 to 16 looks (seeded Monte Carlo of `sims` runs each: docs/statistics.md's table)."""
    return sequential_rates(sims)


def probe_links(topology: str | Path = "default", *, links: list[str] | None = None, duration: float = 1.0,
                loss_packets: int = 2000, strict: bool = True, backend: str = "auto",
                on_backend: Teller | None = None, on_done: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """A lab of `topology` built, each link's (or `links`') RTT, rate and loss measured against
    its configuration, the lab removed; `strict` off: on this kernel, what it cannot apply skipped."""
    topo = load_topology(str(topology))
    if strict and _placed(needs(topo), backend, on_backend):
        return _call_in_guest("probe_links", topology=str(topology), links=links, duration=duration,
                              loss_packets=loss_packets)
    with lab(topo, strict=strict) as built:
        return probed(built, links, duration=duration, loss_packets=loss_packets, on_done=on_done)


def probed(built: Any, links: list[str] | None = None, *, duration: float = 1.0, loss_packets: int = 2000,
           on_done: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """A built (or attached) lab's links measured: configured vs measured, a row each."""
    known = {x.name for x in built.topology.links}
    for name in links or []:
        if name not in known:
            raise SpecError("--links", "", name, f"no such link (have: {', '.join(sorted(known))})")
    rows = [m.to_dict() | {"rate_error": m.rate_error, "loss_ok": m.loss_ok, "rtt_excess_ms": m.rtt_excess_ms}
            for m in probe_lab(built, links, duration=duration, loss_packets=loss_packets,
                               on_done=(lambda m: on_done(m.to_dict())) if on_done else None)]
    return {"lab": built.lab_id, "netem_offset_us": (built.netem_offset_s or 0) * 1e6, "links": rows}


def testbed(path: str | Path) -> Testbed:
    """A testbed file validated against its topology: its machines, and the machine or ports each
    topology node and link maps onto (SpecError naming file, field and value otherwise)."""
    return load_testbed(str(path))


def testbed_inventory(path: str | Path) -> dict[str, Any]:
    """The testbed's ansible inventory: its machines grouped by role."""
    return inventory(load_testbed(str(path)))


def testbed_ray_config(path: str | Path) -> dict[str, Any]:
    """A Ray cluster launcher config (provider local) for the testbed's machines."""
    return ray_cluster_config(load_testbed(str(path)))


def testbed_provision(path: str | Path, *, check: bool = False, progress: Say | None = None) -> PlaybookRun:
    """ansible/site.yml on every machine (RDMA, metrolab, Ray nodes, ...), each machine's ssh host key
    pinned first; `check`: what would change, nothing changed."""
    return provision(load_testbed(str(path)), check=check, progress=progress)


def testbed_check(path: str | Path, *, scenario: str | Path | None = None, progress: Say | None = None) -> CheckReport:
    """Is every machine fit for a run (reachable, kernel, netem where `scenario` needs it, RDMA and
    RoCEv2, Ray): findings and a verdict (ok, warn or fail)."""
    needs_netem = scenario is not None and "netem" in scenario_needs(load_scenario(scenario))
    return run_check(load_testbed(str(path)), needs_netem=needs_netem, progress=progress)


def testbed_clean(path: str | Path, *, keep_nodes: bool = False,
                  progress: Say | None = None) -> tuple[list[str], PlaybookRun | None]:
    """What killed runs left on the machines: their labs undone first (this controller's journals,
    while their Ray nodes still run; what could not be, first and marked), then Ray nodes and
    impairments (ansible/clean.yml; not with `keep_nodes`)."""
    tb = load_testbed(str(path))
    if progress is not None:
        progress("undoing labs that killed runs left on the machines")
    undone = clean_journals(tb)
    return undone, None if keep_nodes else clean(tb, progress=progress)


def sonic_config(spec: str | Path) -> tuple[SonicSpec, dict[str, Any]]:
    """A SONiC port spec and the config_db it renders (a lossless RoCE class: PFC, ECN, buffer
    headroom from each port's distance and speed), checked for consistency."""
    return sonic_spec.load(spec)


def sonic_diff(spec: str | Path, running: str | Path) -> list[tuple]:
    """What applying the spec would add, remove or change in a running config_db (a JSON file):
    (op, table, key, running, desired) each."""
    db = sonic_spec.load(spec)[1]
    try:
        return diff(running_tables(Path(running).read_text(), db), db)
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(str(running), "", str(running), f"not a readable config_db JSON ({exc})") from None


def sonic_apply(spec: str | Path, inventory_file: str, *, check: bool = False, reload: bool = False,
                limit: str | None = None, dest: str | None = None,
                extra: dict[str, str] | None = None) -> list[HostOutcome]:
    """The spec's config_db pushed to the inventory's SONiC hosts through ansible (config load, or
    `reload`; `check`: a dry run), each host's outcome with its diff against what ran there."""
    hosts = push(sonic_spec.load(spec)[1], inventory_file, check=check, reload=reload, limit=limit, dest=dest,
                 extra=extra)
    if not hosts:
        raise SpecError(inventory_file, "", inventory_file, "the inventory names no host (or --limit matched none)")
    return hosts


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
          say: Say | None = None, backend: str = "auto", on_backend: Teller | None = None) -> dict[str, Any]:
    """Task-based scheduling and elastic bandwidth (white paper §4.2.1-4.2.2) on a lab of the
    kernel `backend` picks: the plan's windows committed, then played `repeat` times (slices
    reserved as windows open and released as transfers end, rates changed mid-transfer), each play
    written to the run directory as it ends (runs.jsonl: `resume` keeps them); each commitment
    judged play by play. Returns the summary written to tasks.json (status pass, fail or inconclusive)."""
    if repeat < 1:
        raise SpecError("metrolab tasks", "repeat", repeat, "plays of the plan: 1 or more")
    say = say or (lambda msg: None)
    spec, file = load_plan(str(plan))
    topo = load_topology(spec.topology)
    check_plan(spec, topo, file)
    run_dir, runs = _task_run_dir(spec, str(plan), out, resume)
    if len(runs) < repeat and _placed(needs(topo), backend, on_backend):
        return _call_in_guest("tasks", shares=(run_dir,), plan=str(plan), repeat=repeat, resume=run_dir)
    if len(runs) < repeat:  # a resumed run with every play recorded is only summarized
        player = TaskPlan(link=spec.path.link, egress=spec.path.egress, src=spec.path.src, dst=spec.path.dst,
                          capacity_bps=spec.path.capacity, history=spec.history_model(),
                          requests=spec.request_models(), time_scale=spec.time_scale,
                          changes=[RateChange(c.task, c.after, c.rate) for c in spec.changes], guard_s=spec.guard)
        lab = create_lab(topo, "netns")
        say(f"building lab {lab.lab_id} ({topo.name}) for plan {spec.name}: {repeat} plays ...")
        with lab:
            plays = Plays(lab, player, Record(run_dir), TASK_RUNS, say)
            Engine(plays.record, 0).run(plays, Budget(repeat))  # one point: the seed orders nothing
            runs = plays.rows()
    res = {"plan": spec.name, "file": file, "run_dir": str(run_dir)} | summarize_tasks(runs[:repeat]) | {"runs": runs}
    res["files"] = {k: str(v) for k, v in write_task_reports(run_dir, res).items()}
    Record(run_dir).write_json(TASK_RESULT, res, indent=1)
    return res


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


def build_lab(topology: str | Path | Topology = "default", *, strict: bool = True) -> NetnsLab:
    """Build a lab (namespaces, links, routes, impairments) on this kernel of a topology (a built-in's
    name, a file, or one already loaded); `lab.down()` removes it. `strict`: refuse what this kernel
    cannot apply (False: apply the rest, report it as skipped)."""
    topo = topology if isinstance(topology, Topology) else load_topology(str(topology))
    lab = create_lab(topo, "netns", strict=strict)
    lab.up()
    return lab


@contextlib.contextmanager
def lab(topology: str | Path | Topology = "default", *, strict: bool = True) -> Iterator[NetnsLab]:
    """`with metrolab.lab("default") as lab:` — the lab is removed on exit, error and Ctrl-C."""
    built = build_lab(topology, strict=strict)
    try:
        yield built
    finally:
        built.down()


def topology_plan(topology: str | Path = "default") -> dict[str, Any]:
    """A topology validated and planned: its nodes and their addresses, its links (rate, one-way
    delay, distance) and how many routes the lab installs."""
    topo = load_topology(str(topology))
    return {"name": topo.name, "source": topo.source, "digest": topo.digest,
            "nodes": [{"name": n.name, "kind": n.kind, "site": n.site, "role": n.role, "address": str(n.address),
                       "address6": str(n.address6) if n.address6 else None} for n in topo.nodes.values()],
            "links": [{"name": lk.name, "a": lk.a, "b": lk.b, "rate_bps": lk.rate_bps,
                       "delay_ms": lk.one_way_delay_s(topo.group_index) * 1e3, "distance_km": lk.props.distance_km}
                      for lk in topo.links],
            "hosts": len(topo.hosts()), "switches": len(topo.switches()), "routes": len(build_plan(topo).routes)}


def lab_up(topology: str | Path | None = None, *, testbed: str | Path | None = None, strict: bool = True,
           backend: str = "auto", say: Say | None = None) -> dict[str, Any]:
    """A lab built and left up after this process (`lab_down` removes it): namespaces on this kernel,
    or `testbed`'s machines (the topology it maps). The guest cannot hold a lab beyond its command:
    where this kernel lacks what the topology needs, refused (`strict` off: built without it)."""
    if testbed is not None:
        tb = load_testbed(str(testbed))
        if topology is not None:
            raise CapabilityError(f"a testbed builds the topology it maps ({tb.topology.name}): drop {topology!r}")
        built = create_lab(tb.topology, "hosts", testbed=tb)
    else:
        topo = load_topology(str(topology or "default"))
        chosen, why = choose(backend, needs(topo))
        if chosen == "vm" and strict:
            raise CapabilityError(f"`lab up` leaves a lab running, which the vm backend does not do ({why}); run "
                                  "the whole job in the guest instead: `metrolab lab probe --backend vm`, "
                                  "`metrolab vm run -- metrolab …`, or pass --best-effort to build it here without them")
        built = create_lab(topo, "netns", strict=strict)
    if say is not None:
        say(f"building lab {built.lab_id} ({built.topology.name}, backend {built.backend}) ...")
    built.up()
    built.close_handles()
    if testbed is not None:
        return {"lab": built.lab_id, "backend": "hosts", "topology": built.topology.name, "testbed": tb.name,
                "machines": sorted(built.journal().extra["configured"])}
    skipped = {k: sorted({s for e in v for s in e["skipped"]}) for k, v in built.applied.items()}
    return {"lab": built.lab_id, "backend": built.backend, "topology": built.topology.name,
            "namespaces": built.state.namespaces, "skipped": {k: v for k, v in skipped.items() if v}}


def labs() -> list[dict[str, Any]]:
    """The labs on this machine (whatever their backend), with whether the process that built them lives."""
    return [{"lab": s.lab_id, "backend": s.backend, "status": s.status, "topology": s.topology,
             "namespaces": len(s.namespaces), "pid": s.pid, "owner_alive": pid_alive(s.pid)} for s in all_states()]


def lab_status(lab_id: str | None = None) -> dict[str, Any]:
    """A running lab (default: the only one up): its nodes, interfaces, addresses, qdiscs and links."""
    built = attach(find_state(lab_id))
    try:
        return built.status()
    finally:
        built.close_handles()


def lab_down(lab_id: str | None = None) -> str:
    """Tear a running lab down (default: the only one up); its id."""
    state = find_state(lab_id)
    attach(state).down()
    return state.lab_id


def lab_clean() -> list[str]:
    """Every lab on this machine and what killed runs left of theirs, removed: the namespaces."""
    return clean_all()


def sandbox_up(topology: str | Path = "metro-pair", *, scenario: str | Path | None = None) -> dict[str, Any]:
    """A testbed of namespaces on this machine for `topology` (or `scenario`'s), each machine with its
    own sshd, left up (`sandbox_down` removes it): its testbed file, controller namespace, machines."""
    topo = load_scenario(scenario).topology if scenario is not None else load_topology(str(topology))
    sb = Sandbox(topo)
    sb.up()  # its sshd processes outlive this process; sandbox_down removes them with the namespaces
    return {"lab": sb.lab_id, "testbed": str(sb.testbed_file), "controller": sb.controller_ns,
            "machines": {m.name: m.mgmt for m in sb.machines}}


def sandbox_down(lab_id: str | None = None) -> list[str]:
    """Remove a sandbox (default: every one): what was removed."""
    states = [s for s in all_states() if s.backend == "sandbox" and (lab_id is None or s.lab_id == lab_id)]
    if lab_id and not states:
        raise LabError(f"no sandbox {lab_id} on this machine")
    return [x for s in states for x in remove_sandbox(s)]


def vm_prepare(say: Say | None = None) -> dict[str, Any]:
    """The guest kernel fetched and its initramfs built (cached), and the accelerator that will run it."""
    k = prepare_kernel(say or (lambda m: None))
    accel, why = choose_accel()
    return {"release": k.release, "suite": k.suite, "vmlinuz": k.vmlinuz, "initrd": k.initrd,
            "rxe_netns": k.rxe_netns, "accel": accel, "accel_why": why}


def vm_run(argv: list[str], *, timeout: float = 3600, on_line: Say | None = None, say: Say | None = None) -> int:
    """`argv` run in the guest kernel (this tree mounted, read-only): its exit status; each line it
    prints goes to `on_line`, its stderr to ours, the kernel's first fetch (if any) to `say`."""
    if not argv:
        raise CapabilityError("give the command to run after --, e.g. metrolab vm run -- uname -r")
    res = Guest(prepare_kernel(say or (lambda m: None))).run(argv, timeout=timeout, on_line=on_line or (lambda line: None),
                                      on_log=command_stderr)
    shutil.rmtree(res.results_dir, ignore_errors=True)
    return res.exit_code


# what the guest's `metrolab measure` makes of a call (the name _call_in_guest wrote), and the
# argument its progress lines go to (the guest's stderr, which the host shows)
CALLS: dict[str, tuple[Callable[..., Any], str | None]] = {
    "rdma_test": (rdma_commands.rdma_test, "progress"), "gbn_experiment": (rdma_commands.gbn_experiment, "progress"),
    "collectives_test": (collective_commands.collectives_test, "progress"),
    "bench_rdma": (rdma_commands.bench_rdma, "progress"), "bench_collectives": (collective_commands.bench_collectives, None),
    "bench_noise": (bench.bench_noise, "progress"), "tasks": (tasks, "say"), "probe_links": (probe_links, None)}


def measure(run_dir: str | Path) -> dict[str, Any]:
    """The guest's half of the vm backend: what the host asked in `run_dir` (its request.json), made
    on this kernel. A scenario run is measured into the directory's Record (the host's Judge
    judges it); a call of CALLS writes its result beside the request."""
    doc: Any = Record(run_dir).read_json(REQUEST)
    if not (isinstance(doc, dict) and "call" in doc):
        return measure_run(run_dir).summary()
    if doc["call"] not in CALLS:
        raise SpecError(str(Path(run_dir) / REQUEST), "call", doc["call"], f"not a call of {', '.join(CALLS)}")
    fn, say = CALLS[doc["call"]]
    said = {say: lambda m: print(m, file=sys.stderr, flush=True)} if say else {}
    try:
        made = validate_call(fn)(**doc.get("kwargs", {}), **said)
    except ValidationError as exc:  # the call's arguments, not what it measured (its own errors are typed)
        if exc.title != fn.__name__:
            raise
        raise errors_from_pydantic(exc, f"{Path(run_dir) / REQUEST}: kwargs") from None
    Record(run_dir).write_json(CALL_RESULT, made)
    return {"call": doc["call"]}
