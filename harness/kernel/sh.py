"""The one place metrolab runs external programs: nft, tc (what pyroute2 cannot encode: netem's
loss models and delay distributions, RED, fifo children, the capability probe), rdma, qemu,
ansible-playbook. Everything else goes through libraries."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from metrolab.harness.errors import CapabilityError, LabError

log = logging.getLogger(__name__)


@dataclass
class Result:
    args: list[str]
    rc: int
    stdout: str
    stderr: str


def which(tool: str) -> str | None:
    return shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if Path(p).exists()), None)


def _argv(args: list[str], netns: str | None) -> list[str]:
    """The full command line: the program resolved (a clear error if missing), inside `netns` if given."""
    exe = which(args[0])
    if exe is None:
        raise CapabilityError(f"'{args[0]}' is not installed (run the README's install command)")
    full = [exe, *args[1:]]
    if netns is not None:
        from metrolab.harness.kernel import nsctx  # deferred: pyroute2, 3 s under TCG (the verbs tool)
        full = [which("nsenter") or "nsenter", f"--net={nsctx.NETNS_RUN_DIR / netns}", "--", *full]
    return full


def run(args: list[str], *, netns: str | None = None, input: str | None = None, check: bool = True,
        timeout: float = 30, cwd: str | Path | None = None) -> Result:
    """Run `args` (inside namespace `netns` if given) and return its output.

    A missing program is a CapabilityError; a failure with check=True a LabError that
    carries the command and what it printed.
    """
    full = _argv(args, netns)
    log.debug("run%s: %s", f" in {netns}" if netns else "", " ".join(args))
    proc = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    res = Result(full, proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        where = f" in namespace {netns}" if netns else ""
        raise LabError(f"{' '.join(args)}{where} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return res


PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """A Popen preexec_fn: the child gets `sig` when the process that started it dies, even by
    SIGKILL, so a killed metrolab (or rank) leaves nothing of its own running."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def popen(args: list[str], *, netns: str | None = None, **kw) -> subprocess.Popen:
    """Start `args` (inside namespace `netns`) in the background; the caller owns the process."""
    log.debug("start%s: %s", f" in {netns}" if netns else "", " ".join(args))
    return subprocess.Popen(_argv(args, netns), **kw)


def start_program(argv: list[str], **kw) -> subprocess.Popen:
    """Start a program a user named (a scenario's `kind: command`), as written: no lookup here, its
    path may be relative to its own working directory; the caller owns the process."""
    log.debug("start: %s", " ".join(argv))
    return subprocess.Popen(argv, **kw)


def nft(script: str, netns: str | None = None, check: bool = True) -> Result:
    """Apply an nft script atomically (one transaction) in a namespace."""
    return run(["nft", "-f", "-"], netns=netns, input=script, check=check)


def nft_json(command: str, netns: str | None = None) -> Result:
    return run(["nft", "-j", *command.split()], netns=netns, check=False)


def tc(args: list[str], netns: str | None = None, check: bool = True) -> Result:
    return run(["tc", *args], netns=netns, check=check)


def ansible_playbook(playbook: Path, inventory: str, extra_vars: dict, *, check: bool, limit: str | None = None,
                     timeout: float = 1800, progress=None) -> Result:
    """Run a playbook of metrolab's ansible project (its ansible.cfg, roles and JSON callback: one
    JSON document on stdout); failures are the caller's to read from the result (a failed host is
    not an exception here). `progress(task_name)` is called as each task starts."""
    venv = Path(sys.executable).parent / "ansible-playbook"  # the venv's, found without PATH
    exe = str(venv) if venv.exists() else which("ansible-playbook")
    if exe is None:
        raise CapabilityError("ansible-playbook is not installed (run the README's install command)")
    args = [exe, str(playbook), "-i", inventory, "-e", json.dumps(extra_vars)]
    if check:
        args += ["--check", "--diff"]
    if limit:
        args += ["--limit", limit]
    project = Path(playbook).parent
    with tempfile.NamedTemporaryFile("w+", prefix="metrolab-ansible-", suffix=".log") as tasks:
        env = dict(os.environ, ANSIBLE_CONFIG=str(project / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="metrolab_json",
                   ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_PLUGINS=str(project / "callback_plugins"),
                   ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False", LC_ALL="C.UTF-8",
                   METROLAB_ANSIBLE_TASKS=tasks.name)
        log.debug("run: %s", " ".join(args))
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        seen, deadline = 0, time.monotonic() + timeout
        try:
            while True:
                try:
                    out, err = proc.communicate(timeout=1)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        raise
                    if progress is not None:  # the callback appends each task's name as it starts
                        tasks.seek(0)
                        names = tasks.read().splitlines()
                        for name in names[seen:]:
                            progress(name)
                        seen = len(names)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return Result(args, proc.returncode, out, err)
