"""Run a metrolab command inside the guest (the vm backend: `metrolab measure DIR` makes there what
the host wrote into DIR), output streamed back, exit code returned."""

from __future__ import annotations

import logging
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from metrolab.harness.vm.kernel import prepare_kernel
from metrolab.harness.vm.qemu import Guest

KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")


def command_stderr(line: str) -> None:
    """The guest command's stderr to ours; the guest kernel's and init's own lines stay in its log."""
    if not KERNEL_LINE.match(line) and not line.startswith("metrolab-guest:"):
        print(line, file=sys.stderr, flush=True)


def verbosity() -> list[str]:
    """The flags that make the guest's command log as much as this process's console shows
    (metrolab -v / -vv; a --log-file's handler takes everything and says nothing of the console)."""
    shown = min((h.level for h in logging.getLogger().handlers if getattr(h, "_metrolab", False)
                 and not isinstance(h, logging.FileHandler)), default=logging.WARNING)
    return ["-vv"] if shown <= logging.DEBUG else ["-v"] if shown <= logging.INFO else []


def run_in_guest(argv: list[str], progress=None, timeout: float = 7200, shares: tuple[Path, ...] = (),
                 env: dict[str, str] | None = None,
                 on_line: Callable[[str], None] | None = None) -> int:
    """Run `metrolab ARGV` in the guest; its stdout lines go to ours (or to `on_line`)."""
    progress = progress or (lambda m: print(m, file=sys.stderr))
    kernel = prepare_kernel(progress)
    guest = Guest(kernel)
    progress(f"booting guest kernel {kernel.release} ({guest.accel}: {guest.accel_why}) ...")
    width = shutil.get_terminal_size((180, 40)).columns if sys.stdout.isatty() else 180
    env = {"COLUMNS": str(width), "METROLAB_NO_PROGRESS": "1", **(env or {})}  # the serial port: a tty of no
    # known size
    if not sys.stdout.isatty():
        env["METROLAB_PLAIN"] = "1"  # the guest's stdout is a tty; ours is a pipe or a file
    res = guest.run([sys.executable, "-m", "metrolab.harness.cli", *verbosity(), *argv], cwd=Path.cwd(), env=env,
                    timeout=timeout, on_line=on_line or (lambda line: print(line, flush=True)), on_log=command_stderr,
                    shares=shares)
    progress(f"guest finished: exit {res.exit_code}, booted in {res.boot_s:.1f} s, {res.wall_s:.1f} s in all")
    shutil.rmtree(res.results_dir, ignore_errors=True)
    return res.exit_code
