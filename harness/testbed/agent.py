"""metrolab's operations on a machine that runs no Ray node (a Linux switch, a WAN emulator), over
ssh only: nothing of metrolab is installed there, as nothing of ansible is.

As ansible ships a module with its imports zipped beside it (AnsiballZ), a session ships
metrolab's own sources and pyroute2's (pure Python, zipped once per controller process) over ssh
to the machine's own python3, which imports them from a memfd (`/proc/self/fd/N` on sys.path:
nothing written to its disk, nothing left when the session ends or is killed). Each call is then
one line each way on that connection: the function's name and pickled arguments, the pickled
result or the exception it raised. A session lives as long as the lab's process holds it (EOF
ends it there). The functions are the hosts backend's (`metrolab.harness.lab.remote`,
`metrolab.harness.policy.node`), which import nothing compiled: `tests/harness/testbed/test_agent_unit.py`
imports them from the bundle alone.
"""

from __future__ import annotations

import base64
import io
import os
import pickle
import select
import shlex
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pyroute2

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import sh
from metrolab.harness.testbed.hostkeys import ssh_argv
from metrolab.harness.testbed.resolve import Testbed
from metrolab.harness.testbed.spec import Machine

PACKAGES = ("metrolab.harness", "metrolab.netem")
# run on the machine by its python3: stdin's first line is the bundle, each next line a call
# (base64 pickles); each answer a line on the original stdout. The functions' own prints go to
# stderr and their children get /dev/null as stdin (an `nft -f -` must not read the next call)
LOADER = r"""
import base64,os,pickle,sys
inp=os.fdopen(os.dup(0),'rb');out=os.fdopen(os.dup(1),'wb')
os.dup2(os.open(os.devnull,os.O_RDONLY),0);os.dup2(2,1)
fd=os.memfd_create('metrolab-agent')
b=base64.b64decode(inp.readline())
while b:b=b[os.write(fd,b):]
sys.path.insert(0,'/proc/self/fd/%d'%fd)
import importlib
def err(e):
 import traceback;traceback.print_exc()
 try:pickle.loads(pickle.dumps(e));return e
 except Exception:return RuntimeError('%s: %s'%(type(e).__name__,e))
for line in inp:
 try:
  m,q,a,k=pickle.loads(base64.b64decode(line))
  f=importlib.import_module(m)
  for p in q.split('.'):f=getattr(f,p)
  r=pickle.dumps((True,f(*a,**k)))
 except BaseException as e:r=pickle.dumps((False,err(e)))
 out.write(base64.b64encode(r)+b'\n');out.flush()
"""


@cache
def bundle() -> bytes:
    """metrolab's packages and pyroute2, their .py files zipped (built once per process)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        # metrolab's own __init__ is the API facade (pydantic, pandas): the machine gets an empty one
        z.writestr("metrolab/__init__.py", "")
        trees = [(Path(str(resources.files(p))), p.replace(".", "/")) for p in PACKAGES]
        for top, name in [*trees, (Path(pyroute2.__file__).parent, "pyroute2")]:
            for f in sorted(top.rglob("*.py")):
                z.write(f, f"{name}/{f.relative_to(top)}")
    return buf.getvalue()


def privileged(m: Machine, argv: list[str]) -> list[str]:
    """`argv` as root on `m`: as it is for root, through sudo (never asking) for another user."""
    return argv if m.ssh.user == "root" else ["sudo", "-n", *argv]


class Session:
    """One ssh connection running the loader on a machine: the bundle sent once, then calls one
    at a time. It ends with its ssh (close, or the controller's exit: EOF there ends the loader)."""

    def __init__(self, argv: list[str], what: str):
        self.what = what
        # the machine's stderr (tracebacks, a failing ssh's reason): a file, never a pipe that fills
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 — the session's own, closed by close()
        self.proc = sh.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        self.buf = b""
        self.send(base64.b64encode(bundle()) + b"\n")

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self.failed("connection closed") from None

    def call(self, fn: Callable, args: tuple, kw: dict, timeout: float) -> Any:
        self.send(request(fn, args, kw))
        assert self.proc.stdout is not None
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                raise LabError(f"{self.what}: no answer from {fn.__qualname__} within {timeout:g} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self.failed(f"{fn.__qualname__}: connection closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return answer(line)

    def failed(self, why: str) -> LabError:
        tail = ""
        if not self.err.closed:  # pread: the offset is shared with the machine's ssh, which still writes
            fd = self.err.fileno()
            tail = os.pread(fd, 800, max(0, os.fstat(fd).st_size - 800)).decode(errors="replace").strip()
        self.close()
        return LabError(f"{self.what}: {why} (rc {self.proc.returncode}): {tail or 'no answer'}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.err):
            if f is not None:
                f.close()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class SshAgent:
    """`on(machine, fn, *args)` runs `fn` on a testbed machine over ssh, as TestbedRay.on does over
    Ray: through a session per machine kept open (a second one when a call is still running there)."""

    def __init__(self, machines: dict[str, Machine], known_hosts: Path, testbed: str):
        self.machines, self.known_hosts, self.testbed = machines, known_hosts, testbed
        self._idle: dict[str, list[Session]] = {}
        self._all: list[Session] = []
        self._lock = threading.Lock()

    def _take(self, machine: str) -> Session:
        with self._lock:
            idle = self._idle.setdefault(machine, [])
            while idle:
                s = idle.pop()
                if s.alive:
                    return s
        m = self.machines[machine]
        argv = [*ssh_argv(m, self.known_hosts), shlex.join(privileged(m, [m.python, "-c", LOADER]))]
        s = Session(argv, f"testbed {self.testbed}: machine {machine} ({m.mgmt}) over ssh")
        with self._lock:
            self._all.append(s)
        return s

    def on(self, machine: str, fn: Callable, *args, timeout: float = 120, **kw) -> Any:
        s = self._take(machine)
        try:
            return s.call(fn, args, kw, timeout)  # an error raised there is raised here
        finally:
            if s.alive:  # ready for the next call (a timed-out or broken one was closed)
                with self._lock:
                    self._idle[machine].append(s)

    def close(self) -> None:
        with self._lock:
            sessions, self._all, self._idle = self._all, [], {}
        for s in sessions:
            s.close()


def ssh_agent(tb: Testbed) -> SshAgent:
    """The agent for the testbed's machines that run no Ray node (SONiC switches aside: their
    management plane is theirs, metrolab.harness.testbed.sonic_mgmt)."""
    ray = {m.name for m in tb.ray_machines()}
    return SshAgent({m.name: m for m in tb.spec.machines if m.name not in ray and "sonic-switch" not in m.roles},
                    tb.known_hosts, tb.name)


def request(fn: Callable, args: tuple, kw: dict) -> bytes:
    """One call's line."""
    return base64.b64encode(pickle.dumps((fn.__module__, fn.__qualname__, args, kw))) + b"\n"


def answer(line: bytes) -> Any:
    """The call's result, or the exception it raised there."""
    try:
        ok, value = pickle.loads(base64.b64decode(line))
    except Exception as exc:  # noqa: BLE001 — a class this controller cannot rebuild: say so
        raise LabError(f"an answer this controller cannot read ({type(exc).__name__}: {exc})") from None
    if not ok:
        raise value
    return value
