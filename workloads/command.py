"""`kind: command` — the user's own program, one process per rank host, across the lab's network.

Every repetition starts the command afresh on each rank host (inside that host's namespace: it is
the rank process's child) with the rendezvous torchrun would give a one-process-per-node job:
`MASTER_ADDR` (rank 0's lab address), `MASTER_PORT` (a free port there, new each repetition),
`RANK`, `WORLD_SIZE`, `LOCAL_RANK=0`, `LOCAL_WORLD_SIZE=1`; so `torch.distributed.init_process_group`
with the env:// default finds its peers across the emulated WAN. The command's step times come
from the metrics file it may write (`METROLAB_METRICS`, JSON lines, one object per step with
`step_time_s`); without one the repetition's step is the command's wall time.

A non-zero exit, a bad metrics line or a run past `timeout_s` on any rank fails the repetition on
every rank at once (the others' commands are stopped, not left to wait for a peer that is gone),
with each rank's reason and the end of its output; the rank's whole output goes to its log in the
run directory (logs/NAME-rankR-HOST.log). The command dies with its rank process.

No model: metrolab does not know what the program sends; `kind: trace` replays a recorded job with
one built from its operations.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from metrolab.harness.errors import SpecError
from metrolab.harness.kernel import sh
from metrolab.workloads.base import Workload, _Params, slowest

POLL_S = 0.25  # how often the ranks compare notes while their commands run (a few bytes over the lab)
MIN_CPU_WINDOW_S = 0.5  # steps shorter than this in all are too short to sample the program's CPU over
OUTPUT_TAIL = 400  # characters of a failed rank's output in the repetition's error


class CommandParams(_Params):
    command: str | list[str] = Field(description="the program and its arguments, the same on every rank host "
                                                 "(a string is split as a shell would, but no shell runs it)")
    host_commands: dict[str, str | list[str]] = Field(default_factory=dict,
                                                      description="a rank host's own command, in place of `command`")
    cwd: str | None = Field(default=None, description="working directory; default: the scenario file's folder "
                                                      "where the rank's machine has it")
    env: dict[str, str] = Field(default_factory=dict, description="added to the command's environment")
    timeout_s: float = Field(default=300, gt=0, description="a repetition past this is failed, its commands killed")
    warmup_steps: int = Field(default=1, ge=0, description="reported steps left out of the step time "
                                                           "(the first one connects and allocates)")

    @field_validator("command")
    @classmethod
    def _not_empty(cls, v):
        if not argv_of(v):
            raise ValueError("an empty command")
        return v


def argv_of(cmd: str | list[str]) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]


def expand(argv: list[str], base_dir: str | None) -> list[str]:
    """`{python}`: the interpreter the ranks run on (torch is there); `{scenario_dir}`: the scenario
    file's folder. Nothing else is substituted: a shell's braces in an argument stay as written."""
    return [a.replace("{python}", sys.executable).replace("{scenario_dir}", base_dir or ".") for a in argv]


class Command(Workload):
    """The user's program on every rank host; its step times or wall time."""

    rank_side = "CommandRank"
    kind = "command"
    params_model = CommandParams
    metrics = ("command_wall_s", "reported_steps")
    # each repetition is the program afresh, leaving its own first steps out (warmup_steps): there is
    # no trend across runs to wait out, and a run costs seconds of start-up. The warm-up is the
    # scenario's `warmups` runs (at least one)
    warmup_window = 1

    @classmethod
    def validate(cls, spec, topo, scale: float) -> None:
        super().validate(spec, topo, scale)
        p = cls.params(spec, scale)
        hosts = cls.hosts(spec, topo)
        for h in p.host_commands:
            if h not in hosts:
                raise SpecError("", f"params.host_commands.{h}", h, f"not one of the rank hosts ({', '.join(hosts)})")
        if spec.params.get("backend") not in (None, "gloo"):
            raise SpecError("", "params.backend", spec.params["backend"], "the command picks its own backend")


def free_port(addr: str) -> int:
    """A port free on `addr` now (the command binds it a moment later: a race only another
    process binding ports at that moment could lose)."""
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def session_cpu_s(sid: int) -> float:
    """CPU seconds of every process in session `sid` (a command and what it started), from /proc,
    including children they reaped."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # ended meanwhile
            continue
        rest = stat[stat.rindex(b")") + 2:].split()  # after the command name, which may hold spaces
        if int(rest[3]) == sid:
            total += sum(int(x) for x in rest[11:15])  # utime, stime, cutime, cstime
    return total / tick


def children_cpu_s() -> float:
    """CPU seconds of this process's reaped children (a finished command and what it reaped)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def read_steps(path: Path) -> list[float]:
    """Each line's `step_time_s`, in order; a line that is not such an object is an error naming it."""
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            v = json.loads(line)["step_time_s"]
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise TypeError(v)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"METROLAB_METRICS line {i}: not a JSON object with step_time_s >= 0 "
                             f"({type(exc).__name__}: {line[:80]!r})") from None
        out.append(float(v))
    return out


class CommandRank:
    """One rank's side: start the command, watch it beside the other ranks, read its steps."""

    def __init__(self, params: dict[str, Any], scale: float, sites=None, hosts: list[str] | None = None,
                 base_dir: str | None = None, **_):
        import torch  # deferred: torch (40 s under TCG) on the rank side only
        import torch.distributed as dist
        self.p = CommandParams.model_validate(params)
        self.torch, self.dist = torch, dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.host = hosts[self.rank] if hosts else socket.gethostname()
        self.argv = expand(argv_of(self.p.host_commands.get(self.host, self.p.command)), base_dir)
        cwd = self.p.cwd or base_dir
        self.cwd = cwd if cwd and Path(cwd).is_dir() else None
        self.runs = 0
        self.samples: list[tuple[float, float, int]] = []  # (time, the program's CPU s, metrics lines)

    def warm(self, steps: int) -> None:
        """Nothing to warm: each repetition starts the program, and its connections, afresh
        (`warmup_steps` leaves its own first steps out instead)."""

    def _port(self) -> int:
        box = [free_port(os.environ["MASTER_ADDR"]) if self.rank == 0 else 0]
        self.dist.broadcast_object_list(box, src=0)
        return int(box[0])

    def measure(self, warmups: int = 0, iters: int | None = None) -> dict:
        self.runs += 1
        port = self._port()
        cpu0 = children_cpu_s()
        with tempfile.TemporaryDirectory(prefix="metrolab-command-") as tmp:
            metrics, output = Path(tmp) / "metrics.jsonl", Path(tmp) / "output.log"
            env = os.environ | self.p.env | {
                "MASTER_ADDR": os.environ["MASTER_ADDR"], "MASTER_PORT": str(port), "RANK": str(self.rank),
                "WORLD_SIZE": str(self.world), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                "GROUP_RANK": str(self.rank), "METROLAB_METRICS": str(metrics)}
            t0 = time.perf_counter()
            proc: subprocess.Popen | None = None
            reason: str | None = None
            with open(output, "wb") as out:
                try:
                    # its own session: killing it takes what it started; it dies with this rank
                    proc = sh.start_program(self.argv, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=lambda: sh.die_with_parent(signal.SIGTERM))
                except OSError as exc:
                    reason = f"did not start: {exc}"
                reason = self._watch(proc, t0, reason, metrics)  # one whose command did not start still tells
            wall = time.perf_counter() - t0
            text = output.read_bytes().decode(errors="replace")
            self._log(text, proc, wall, reason)
            steps: list[float] = []
            if reason is None:
                try:
                    steps = read_steps(metrics)
                except ValueError as exc:
                    reason = str(exc)
            if reason is not None and text.strip():
                reason += f"; its output ends: {text.strip()[-OUTPUT_TAIL:]}"
        reasons: list = [None] * self.world
        self.dist.all_gather_object(reasons, reason)  # every rank fails alike, naming each rank's cause
        failed = [f"rank {r}: {why}" for r, why in enumerate(reasons) if why]
        if failed:
            raise RuntimeError(f"command failed (run {self.runs}): " + " | ".join(failed))
        kept = steps[self.p.warmup_steps:] or steps
        step = sum(kept) / len(kept) if kept else wall
        m = slowest({"step_time_s": step, "command_wall_s": wall})
        return m | {"reported_steps": float(len(kept))} | self._cpu(bool(kept), wall, cpu0)

    def _cpu(self, reported: bool, wall: float, cpu0: float) -> dict:
        """The program's CPU over what the step time covers, for the runner's CPU-bound check: its
        whole run where it reported no steps; the span of its measured steps where it did (from the
        samples: start-up, an import's seconds of CPU, is no part of a step), or nothing (the rank's
        own account stands) where that span was too short to sample."""
        if not reported:
            return {"_cpu_s": children_cpu_s() - cpu0, "_wall_s": wall}
        window = [(t, c) for t, c, lines in self.samples if lines >= self.p.warmup_steps]
        if len(window) >= 2 and window[-1][0] - window[0][0] >= MIN_CPU_WINDOW_S:
            return {"_cpu_s": window[-1][1] - window[0][1], "_wall_s": window[-1][0] - window[0][0]}
        return {}

    def _watch(self, proc: subprocess.Popen | None, t0: float, reason: str | None,
               metrics: Path | None = None) -> str | None:
        """Until every rank's command has ended, or one failed (then this one is stopped too): this
        rank's reason, None where its command succeeded. The ranks compare notes over their own
        process group every POLL_S: [any failed, any still running] (MAX). Meanwhile the program's
        CPU time and its metrics lines so far are sampled into self.samples."""
        self.samples = []
        while True:
            rc = proc.poll() if proc is not None else None
            if rc is None and proc is not None and metrics is not None:
                lines = metrics.read_bytes().count(b"\n") if metrics.exists() else 0
                self.samples.append((time.perf_counter(), session_cpu_s(proc.pid), lines))
            if proc is not None and rc is None and time.perf_counter() - t0 > self.p.timeout_s:
                self._kill(proc)
                reason = f"timed out after {self.p.timeout_s:g} s (killed)"
            elif rc is not None and rc != 0 and reason is None:
                reason = f"exited with {rc}" if rc > 0 else f"killed by signal {-rc}"
            running = proc is not None and proc.poll() is None
            flags = self.torch.tensor([1.0 if reason else 0.0, 1.0 if running else 0.0])
            self.dist.all_reduce(flags, op=self.dist.ReduceOp.MAX)
            if flags[0] > 0:
                if proc is not None and proc.poll() is None:
                    self._kill(proc)
                    reason = reason or "stopped: another rank's command failed"
                return reason
            if flags[1] == 0:
                return reason
            time.sleep(POLL_S)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and whatever it started (torchrun's workers)
        except ProcessLookupError:
            pass
        proc.wait()

    def _log(self, text: str, proc, wall: float, reason: str | None) -> None:
        """The command's output into this rank's log (the rank's stderr is its log file)."""
        rc = None if proc is None else proc.returncode
        sys.stderr.write(f"--- command run {self.runs} on {self.host}: {shlex.join(self.argv)} "
                         f"(exit {rc}, {wall:.3f} s{', ' + reason if reason else ''})\n{text}")
        if text and not text.endswith("\n"):
            sys.stderr.write("\n")
        sys.stderr.flush()
