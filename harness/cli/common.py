"""What the command groups share: common flags, the exit code of a verdict, saying which kernel
runs a command, progress, and printing benchmark figures (a run's verdict: cli/run.py)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from metrolab.harness.errors import EXIT_FAIL, EXIT_INCONCLUSIVE
from metrolab.harness.output import console, err_console, fmt, print_json, show_progress, table
from metrolab.netem.units import format_rate


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON only")


def add_verdict_flags(p: argparse.ArgumentParser, run: bool = True) -> None:
    """How a run's verdict maps to the exit code, and (for runs) how long it may measure."""
    p.add_argument("--inconclusive", choices=("exit", "pass", "fail"), default="exit",
                   help=f"what an inconclusive verdict exits with: its own code ({EXIT_INCONCLUSIVE}, default), "
                        f"or pass (0) / fail ({EXIT_FAIL}) for CI gates that must be binary")
    if not run:
        return
    p.add_argument("--until-conclusive", action="store_true",
                   help="add blocks while a criterion is inconclusive, within --max-repetitions / --max-minutes")
    p.add_argument("--max-repetitions", type=int, metavar="N", help="block budget per workload (until-conclusive)")
    p.add_argument("--max-minutes", type=float, metavar="M", help="time budget of the run (until-conclusive)")
    p.add_argument("--seed", type=int, help="block order seed (default: drawn, recorded in the run directory)")


def exit_code(status: str, inconclusive: str) -> int:
    if status == "pass":
        return 0
    if status == "fail":
        return EXIT_FAIL
    return {"pass": 0, "fail": EXIT_FAIL}.get(inconclusive, EXIT_INCONCLUSIVE)


def add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=("auto", "netns", "vm"),
                   help="netns (host kernel), vm (guest kernel: netem, Soft-RoCE), auto: vm only where needed")


def add_testbed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--testbed", metavar="TESTBED", help="run on a real testbed's machines (a testbed file mapping "
                   "the scenario's topology; see `metrolab testbed`)")


def teller(args):
    """on_backend for the API: says which backend runs it (always for the guest; otherwise not under --json)."""
    def told(backend: str, why: str) -> None:
        if backend == "vm" or not args.json:
            err_console.print(f"backend: {backend} ({why})", highlight=False)
    return told


def fmt_rate(bps):
    return format_rate(bps) if bps else "unshaped"


def print_bench(title: str, res: dict, as_json: bool, spec: str = ".4g") -> None:
    if as_json:
        print_json(res)
    else:
        console.print(table(title, ["metric", "value"],
                            [[k, fmt(v, spec) if isinstance(v, float) else v] for k, v in res.items()]))


class RunProgress:
    """A rich progress bar (points done, ETA) for a person at a terminal; plain lines otherwise.
    The bar appears on the first update: a run moved to the guest streams the guest's own lines
    and never draws one."""

    def __init__(self, json_mode: bool):
        self.live = show_progress(json_mode)
        self.json_mode = json_mode
        self.done = 0
        self.total: int | None = None
        self.bar: Any = None  # a rich Progress once started

    def __enter__(self):
        return self.update

    def _start(self) -> None:
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=err_console)
        self.bar.__enter__()
        self.task = self.bar.add_task("starting", total=None)

    def update(self, advance: int = 0, total: int | None = None, description: str | None = None) -> None:
        if total is not None:
            self.total = total
        self.done += advance
        if self.live:
            if self.bar is None:
                self._start()
            self.bar.update(self.task, advance=advance, total=self.total, description=description or None)
        elif description and not self.json_mode:
            err_console.print(f"[{self.done}/{self.total or '?'}] {description}", highlight=False)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
