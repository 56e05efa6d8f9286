"""Boot the guest kernel with the host's filesystem as its root and run one command inside.

The command, its environment and working directory go to the guest through a writable 9p
share. Its stdout streams back over the first serial port (nothing else is written there, so
--json output stays clean); the kernel console, the guest init and the command's stderr go to
the second port, a file on the share that the host follows. Its exit code and result files
come back through the share. The qemu process never outlives `Guest.run` (success, error, timeout,
Ctrl-C or SIGTERM alike).

Under TCG every guest instruction is host CPU, so the guest's timing is the host scheduler's: one
busy process beside it made the main job's step 2.3x longer and its noise floor +-12.5 % (CPU
priority of the other process changes nothing: the guest's timers wait behind its time slice).
With METROLAB_VM_REALTIME (the default, where the kernel allows it) qemu runs in the real-time
class: its main loop and I/O threads (the guest's timers, 9p) at SCHED_FIFO priority 2, above its
vCPU threads at SCHED_RR 1, so the guest takes a core the moment it wants one and its own timer
thread is never stuck behind a busy vCPU (all of qemu at one priority made a quiet run noisier:
sd 9.5 % against 1.6 %). Beside a busy process the step stayed at its quiet 0.18 s and the floor
at +-0.3 % (docs/vm.md). Other processes keep the cores whenever the guest idles, and the kernel's
real-time throttling leaves them at least 5 % of each core when it does not. The host samples its
CPU counters into the results share for the guest's runner (harness/kernel/interference.py).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import selectors
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from metrolab.harness import settings
from metrolab.harness.errors import CapabilityError, LabError
from metrolab.harness.kernel import sh
from metrolab.harness.kernel.interference import HostSampler
from metrolab.harness.resources import guest_script
from metrolab.harness.vm.kernel import GuestKernel, cache_root
from metrolab.harness.vm.kvm import probe_kvm

log = logging.getLogger(__name__)

GUEST_INIT = guest_script("guest_init.sh")
READY = "metrolab-guest: ready"
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "CI", "COLUMNS", "VIRTUAL_ENV", "PYTHONPATH",
            "PYTHONUNBUFFERED", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
PASS_PREFIX = ("METROLAB_", "RAY_", "GLOO_", "TORCH_", "PYTEST_")
IO_PRIORITY, VCPU_PRIORITY = 2, 1  # real-time priorities: qemu's main loop above its vCPUs


class GuestBootCrash(LabError):
    """The guest kernel crashed before it was ready (retried)."""


class GuestCrash(LabError):
    """The guest kernel crashed while the command ran (a run that records as it measures resumes)."""


@dataclass
class GuestResult:
    exit_code: int
    results_dir: Path
    boot_s: float | None
    wall_s: float
    accel: str
    output: list[str] = field(default_factory=list)
    scheduling: str = "normal"


def choose_accel() -> tuple[str, str]:
    """('kvm'|'tcg', why). KVM only where the CPU exposes hardware virtualisation."""
    forced = settings.get("METROLAB_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, f"METROLAB_VM_ACCEL={forced}"
    kvm = probe_kvm()
    return ("kvm", kvm.why) if kvm.usable else ("tcg", kvm.why)


def guest_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in PASS_ENV or k.startswith(PASS_PREFIX)}
    env |= {"METROLAB_IN_GUEST": "1", "PYTHONUNBUFFERED": "1"}
    return env | (extra or {})


class Guest:
    def __init__(self, kernel: GuestKernel, memory: str | None = None, cpus: int | None = None,
                 boot_timeout: float | None = None, accel: str | None = None):
        self.kernel = kernel
        self.memory = memory or settings.get("METROLAB_VM_MEMORY")
        self.cpus = cpus or settings.get("METROLAB_VM_CPUS")
        self.boot_timeout = boot_timeout or settings.get("METROLAB_VM_BOOT_TIMEOUT")
        self.accel, self.accel_why = (accel, "requested") if accel else choose_accel()

    def qemu_argv(self, results: Path, shares: tuple[Path, ...] = ()) -> list[str]:
        exe = settings.get("METROLAB_QEMU") or sh.which("qemu-system-x86_64")
        if exe is None or not Path(exe).exists():
            raise CapabilityError(f"qemu-system-x86_64 is not installed{f' at {exe}' if exe else ''} "
                                  "(run scripts/install.sh)")
        # under TCG, the CPU qemu emulates less what it emulates wrongly (AVX2 gathers: docs/vm.md)
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else \
            ["-accel", "tcg,thread=multi", "-cpu", settings.get("METROLAB_VM_CPU")]
        append = (f"console=ttyS1 quiet loglevel=4 panic=-1 tsc=reliable metrolab.init={GUEST_INIT} "
                  f"metrolab.results={results} metrolab.modbase={Path(self.kernel.modules_dir).parent.parent}"
                  + (f" metrolab.rw={','.join(str(p) for p in shares)}" if shares else ""))
        extra = []
        for i, p in enumerate(shares):  # host directories the command writes (a run directory)
            extra += ["-fsdev", f"local,id=rw{i},path={p},security_model=none",
                      "-device", f"virtio-9p-pci,fsdev=rw{i},mount_tag=rw{i}"]
        return [exe, *accel, "-M", "q35", "-smp", str(self.cpus), "-m", self.memory,
                "-kernel", self.kernel.vmlinuz, "-initrd", self.kernel.initrd, "-append", append,
                "-fsdev", "local,id=r,path=/,security_model=none,readonly=on,multidevs=remap",
                "-device", "virtio-9p-pci,fsdev=r,mount_tag=rootfs",
                "-fsdev", f"local,id=w,path={results},security_model=none",
                "-device", "virtio-9p-pci,fsdev=w,mount_tag=results", *extra,
                "-nic", "none", "-display", "none", "-no-reboot", "-name", "metrolab,debug-threads=on",
                "-chardev", "stdio,id=out,signal=off", "-serial", "chardev:out",
                "-chardev", f"file,id=log,path={results / 'console.log'}", "-serial", "chardev:log"]

    def run(self, argv: list[str], *, boot_retries: int = 2, **kw) -> GuestResult:
        log.info("guest %s (%s): %s", self.kernel.release, self.accel, " ".join(str(a) for a in argv))
        """Run argv in the guest (see _run_once). A kernel that oopses while booting is booted again:
        under multi-threaded TCG the kernel's live code patching (int3 text_poke) can fault. The
        patch that did it was the sched_clock static key flipping when the clocksource watchdog
        marked the TSC unstable (at boot or a minute in); `tsc=reliable` on the command line stops
        that flip, and the retry stays for whatever else patches code early."""
        for attempt in range(boot_retries + 1):
            try:
                return self._run_once(argv, **kw)
            except GuestBootCrash:
                if attempt == boot_retries:
                    raise
        raise AssertionError("unreachable")

    def _run_once(self, argv: list[str], *, cwd: str | Path | None = None, env: dict[str, str] | None = None,
                  timeout: float = 3600, on_line: Callable[[str], None] | None = print,
                  on_log: Callable[[str], None] | None = None, results_dir: Path | None = None,
                  shares: tuple[Path, ...] = ()) -> GuestResult:
        """Run argv in the guest. on_line gets its stdout lines, on_log its stderr and the guest's
        console lines (default: kept, shown only in errors). `shares`: host directories the guest
        sees writable at the same paths (the host's root is read-only there)."""
        shares = tuple(Path(p).resolve() for p in shares)
        for p in shares:
            if not p.is_dir() or " " in str(p) or "," in str(p):
                raise CapabilityError(f"cannot share {p} with the guest (an existing directory, no spaces or commas)")
        results = Path(results_dir) if results_dir else Path(tempfile.mkdtemp(prefix="run-", dir=_runs_dir()))
        results.mkdir(parents=True, exist_ok=True)
        for f in ("exit-code", "console.log"):
            (results / f).unlink(missing_ok=True)
        (results / "console.log").touch()
        cwd = Path(cwd or os.getcwd()).resolve()
        # where the command leaves files for the host, and reads the host's CPU marks
        env = (env or {}) | {"METROLAB_RESULTS": str(results), "METROLAB_HOST_CPU": str(results / "host-cpu.json")}
        script = ["#!/bin/sh"] + [f"export {k}={shlex.quote(v)}" for k, v in guest_env(env).items()]
        script += [f"cd {shlex.quote(str(cwd))} || exit 97", "exec " + shlex.join(argv) + " > /dev/ttyS0"]
        (results / "command.sh").write_text("\n".join(script) + "\n")

        t0 = time.monotonic()
        realtime = bool(settings.get("METROLAB_VM_REALTIME"))
        with open(results / "qemu.stderr", "wb") as qerr:
            proc = subprocess.Popen(self.qemu_argv(results, shares), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=qerr, start_new_session=True,
                                    preexec_fn=_qemu_child_setup_realtime if realtime else _qemu_child_setup)
        scheduling = _realtime_vcpus(proc.pid, int(self.cpus)) if realtime else "normal (METROLAB_VM_REALTIME=0)"
        (results / "guest.json").write_text(json.dumps({"scheduling": scheduling, "accel": self.accel}))
        sampler = HostSampler(results / "host-cpu.json").__enter__()
        boot_s = None
        log_lines: list[str] = []
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None  # Popen(stdout=PIPE)
        sel.register(proc.stdout, selectors.EVENT_READ)
        out_buf = b""
        log = open(results / "console.log", "rb")  # noqa: SIM115 — followed while qemu runs; closed below
        log_buf = b""

        def follow_log():
            nonlocal boot_s, log_buf
            log_buf += log.read()
            *complete, log_buf = log_buf.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace").rstrip("\r")
                if boot_s is None and line.startswith(READY):
                    boot_s = time.monotonic() - t0
                log_lines.append(line)
                if on_log:
                    on_log(line)

        try:
            while True:
                follow_log()
                now = time.monotonic()
                limit = (t0 + self.boot_timeout) if boot_s is None else (t0 + boot_s + timeout)
                if now > limit:
                    what = f"did not boot within {self.boot_timeout:.0f} s" if boot_s is None else \
                        f"command did not finish within {timeout:.0f} s"
                    raise LabError(f"guest ({self.kernel.release}, {self.accel}) {what}; last output: "
                                   + " | ".join(log_lines[-5:]))
                if not sel.select(timeout=0.2):
                    if proc.poll() is not None:
                        break
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out_buf += chunk
                *complete, out_buf = out_buf.split(b"\n")
                for raw in complete:
                    if on_line:
                        on_line(raw.decode(errors="replace").rstrip("\r"))
            proc.wait(timeout=30)
            follow_log()
            if out_buf and on_line:
                on_line(out_buf.decode(errors="replace"))
        finally:
            sel.close()
            log.close()
            _kill(proc)
            sampler.__exit__(None, None, None)
        code_file = results / "exit-code"
        if boot_s is None:
            qemu_err = (results / "qemu.stderr").read_text(errors="replace").strip()
            crashed = any("Kernel panic" in line or "Oops" in line for line in log_lines)
            raise (GuestBootCrash if crashed else LabError)(f"guest ({self.kernel.release}, {self.accel}) stopped before it was ready: "
                           + " | ".join(log_lines[-8:] + ([qemu_err] if qemu_err else [])))
        if not code_file.exists():
            oops = next((line for line in log_lines if "Oops" in line or "Kernel panic" in line or "BUG:" in line), None)
            where = next((line for line in log_lines if "RIP: 0010:" in line), "")
            if oops is not None:
                raise GuestCrash(f"the guest kernel crashed: {oops.strip()} {where.strip()} (console log: "
                                 f"{results / 'console.log'})")
            raise LabError("guest stopped without reporting an exit code; last output: " + " | ".join(log_lines[-8:]))
        return GuestResult(int(code_file.read_text().strip() or 1), results, boot_s, time.monotonic() - t0,
                           self.accel, log_lines, scheduling)


PR_SET_PDEATHSIG, PR_SET_TIMERSLACK = 1, 29


def _qemu_child_setup() -> None:
    """In the qemu child, before exec: die with metrolab (even a SIGKILLed one leaves no guest),
    and 1 us timer slack instead of 50 us (the guest's timers are qemu's, and netem's delay line
    fires on them: the default slack shows up as late, noisy delays)."""
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def _qemu_child_setup_realtime() -> None:
    """As _qemu_child_setup, and qemu in the real-time class at its I/O priority (every thread it
    starts inherits it; _realtime_vcpus lowers the vCPUs). Where the kernel refuses (no
    CAP_SYS_NICE), qemu runs as an ordinary process and the run says so."""
    _qemu_child_setup()
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(IO_PRIORITY))
    except OSError:
        pass


def _realtime_vcpus(pid: int, cpus: int, wait_s: float = 10.0) -> str:
    """Lower qemu's vCPU threads ("CPU n/TCG", "CPU n/KVM": -name debug-threads=on) below its I/O
    threads, as they appear (qemu creates them before the guest boots). What was set, in words."""
    try:
        if os.sched_getscheduler(pid) != os.SCHED_FIFO:
            return "normal (the kernel refused the real-time class: no CAP_SYS_NICE?)"
    except OSError:
        return "normal (qemu exited)"
    done: set[int] = set()
    deadline = time.monotonic() + wait_s
    while len(done) < cpus and time.monotonic() < deadline:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                if int(tid) in done:
                    continue
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    comm = f.read().strip()
                if comm.startswith("CPU ") and comm.endswith(("/TCG", "/KVM")):
                    os.sched_setscheduler(int(tid), os.SCHED_RR, os.sched_param(VCPU_PRIORITY))
                    done.add(int(tid))
        except OSError:
            pass  # a thread came or went while we listed them; qemu's exit ends the loop by deadline
        time.sleep(0.02)
    if len(done) < cpus:
        return f"real-time I/O threads, vCPUs left at the I/O priority ({len(done)} of {cpus} found)"
    return f"real-time: qemu I/O threads SCHED_FIFO {IO_PRIORITY}, {cpus} vCPU threads SCHED_RR {VCPU_PRIORITY}"


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def _runs_dir() -> Path:
    d = cache_root() / "runs"
    d.mkdir(parents=True, exist_ok=True)
    return d
