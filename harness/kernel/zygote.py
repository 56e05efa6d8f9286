"""A fork server for Python rank processes in the TCG guest.

Under QEMU TCG `import torch` takes ~30 s of CPU per process, and a run starts two to four ranks
per workload (a test tier, dozens): most of a guest run went into importing the same libraries
again. The zygote imports them once (torch, torch.distributed, numpy, pyverbs, the rank agent's
modules) and forks each rank from that state: the child enters its lab host's network namespace,
takes the caller's stdin/stdout/stderr (passed over a Unix socket), environment and working
directory, and runs its module as `python -m` would. The caller gets a Popen-like handle; the exit
status comes back over the same connection when the child ends.

Forking is safe here because the zygote has a single thread when it forks (OpenMP and OpenBLAS
pools are held to one thread before anything is imported, and nothing it imported has started
one; `serve` checks) and the children initialise process groups, sockets and RDMA resources only
after the fork. Used only in the guest (METROLAB_IN_GUEST=1; METROLAB_NO_ZYGOTE=1 turns it off);
on a host kernel `import torch` costs a second and ranks are plain processes.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import io
import json
import os
import runpy
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from metrolab.harness import settings
from metrolab.harness.kernel import sh
from metrolab.harness.kernel.nsctx import NETNS_RUN_DIR, _setns

PRELOAD = ("numpy", "torch", "torch.distributed", "pyverbs.device", "metrolab.harness.runner.rank_agent",
           "metrolab.workloads.registry", "metrolab.workloads.training_step", "metrolab.workloads.pd_inference", "metrolab.workloads.disaggregated",
           "metrolab.workloads.elephants", "metrolab.workloads.collectives", "metrolab.harness.dist.verbs_pg")
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def enabled() -> bool:
    return settings.in_guest() and not settings.get("METROLAB_NO_ZYGOTE")


# -- the server ---------------------------------------------------------------------------------
def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def serve(path: str) -> None:
    for mod in PRELOAD:
        try:
            __import__(mod)
        except Exception:  # noqa: BLE001 — a module this machine lacks is imported by the child, if at all
            pass
    if _threads() != 1:  # a fork would copy a process whose other threads may hold locks
        print(f"metrolab-zygote: {_threads()} threads after the imports; not serving", file=sys.stderr)
        sys.exit(3)
    parent = os.getppid()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while os.getppid() == parent:  # the process that started us is gone: so are we
        for _key, _ in sel.select(timeout=0.05):
            conn, _ = srv.accept()
            child = _spawn(conn, [srv, sel, *children.values()])
            if child is not None:
                children[child] = conn
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            gone = children.pop(pid) if pid in children else None
            if gone is not None:
                try:
                    gone.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:
                    pass
                gone.close()


def _spawn(conn: socket.socket, ours: list) -> int | None:
    """Fork a child for the request on `conn`; `ours` are the server's own sockets and selector, which
    the child closes (the libraries' own descriptors stay: the child does not exec)."""
    fds = array.array("i")
    msg, ancdata, _, _ = conn.recvmsg(1 << 20, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    req = json.loads(msg)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for x in (*ours, conn):
                x.close()
            code = _child(req, list(fds))
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    return pid


def _child(req: dict, fds: list[int]) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
        os.close(fd)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    if req.get("netns"):
        target = os.open(req["netns"], os.O_RDONLY | os.O_CLOEXEC)
        _setns(target)
        os.close(target)
    os.environ.clear()
    os.environ.update(req["env"])
    if req.get("cwd"):
        os.chdir(req["cwd"])
    argv = req["argv"]
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c":
            sys.argv = ["-c", *argv[2:]]
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = list(argv)
            runpy.run_path(argv[0], run_name="__main__")
        return 0
    except SystemExit as exc:
        c = exc.code
        return c if isinstance(c, int) else (0 if c is None else 1)
    except BaseException:  # noqa: BLE001 — what python would print before exiting 1
        traceback.print_exc()
        return 1
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:  # noqa: BLE001
                pass


# -- the client -----------------------------------------------------------------------------------
class Zygote:
    _lock = threading.Lock()
    _instance: Zygote | None = None

    def __init__(self):
        # in the state directory (/run: tmpfs), never the system's temp dir: the vm backend shares a
        # run's output directory with the guest at its own path, and an output in /tmp puts 9p over
        # the guest's /tmp, where a Unix socket cannot be bound (ENXIO)
        run = Path(settings.get("METROLAB_STATE_DIR"))
        run.mkdir(parents=True, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="zygote-", dir=run)
        self.path = str(Path(self.dir) / "sock")
        env = os.environ | SINGLE_THREAD_ENV
        self.proc = subprocess.Popen([sys.executable, "-m", "metrolab.harness.kernel.zygote", self.path], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        self.ready = False
        atexit.register(self.close)

    @classmethod
    def started(cls) -> bool:
        return cls._instance is not None and cls._instance.proc.poll() is None

    @classmethod
    def get(cls) -> Zygote:
        """The process's zygote, started on first use (prestart it early: the imports take a while)."""
        with cls._lock:
            if cls._instance is None or cls._instance.proc.poll() is not None:
                cls._instance = Zygote()
            return cls._instance

    def wait_ready(self) -> None:
        if self.ready:
            return
        with self._lock:
            if self.ready:
                return
            line = self.proc.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"the rank zygote did not start (exit {self.proc.poll()})")
            self.ready = True

    def popen(self, argv: list[str], *, netns: str | None, env: dict[str, str], stdin=None, stdout=None,
              stderr=None, text: bool = False, cwd: str | None = None) -> ZygoteProcess:
        self.wait_ready()
        return ZygoteProcess(self, argv, netns, env, stdin, stdout, stderr, text, cwd)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        # closed before it bound its socket (its imports take a while), there is no socket to
        # remove, and the directory must still go (empty ones had piled up in the state directory)
        Path(self.path).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)


def remove_stale() -> list[str]:
    """`metrolab lab clean`: the directories of zygotes that are gone (a killed run's: its zygote
    ends with it and leaves its socket), found as a socket no one listens on. A directory without
    a socket may be a zygote still importing, and is left alone."""
    out = []
    for d in Path(settings.get("METROLAB_STATE_DIR")).glob("zygote-*"):
        sock = d / "sock"
        if not sock.exists():
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(sock))
                continue  # a live zygote
            except OSError:
                pass
        sock.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            d.rmdir()
            out.append(f"zygote:{d.name}")
    return out


# the zygote's own start (~30 s under TCG: torch) pays off only once enough processes fork from it;
# 8 (four verbs-tool pairs) is the rule rdma_test had, not a measured break-even
PAYS_OFF = 8


def prestart(processes: int | None = None) -> None:
    """Start the zygote's imports now, so they overlap with building the lab, where many processes
    or torch ranks follow (a run, a sweep): `processes`, how many, when the caller knows; fewer
    than PAYS_OFF start afresh instead."""
    if enabled() and (processes is None or processes >= PAYS_OFF):
        Zygote.get()


class ZygoteProcess:
    """What callers use of subprocess.Popen: pid, stdin/stdout/stderr, poll, wait, kill, communicate."""

    def __init__(self, z: Zygote, argv, netns, env, stdin, stdout, stderr, text, cwd):
        self.args = argv
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        child_fds, close_after = [], []

        def end(spec, mode: str, mine: str):
            if spec == subprocess.PIPE:
                r, w = os.pipe()
                child, ours = (r, w) if mode == "r" else (w, r)
                close_after.append(child)
                f = os.fdopen(ours, mine, encoding="utf-8") if text else os.fdopen(ours, mine + "b")
                return child, f
            if spec == subprocess.DEVNULL or spec is None:
                fd = os.open(os.devnull, os.O_RDWR)
                close_after.append(fd)
                return fd, None
            return (spec if isinstance(spec, int) else spec.fileno()), None

        fd0, self.stdin = end(stdin, "r", "w")
        fd1, self.stdout = end(stdout, "w", "r")
        fd2, self.stderr = end(stderr, "w", "r")
        child_fds = [fd0, fd1, fd2]
        req = {"argv": list(argv), "env": dict(env), "cwd": cwd or os.getcwd(),
               "netns": str(NETNS_RUN_DIR / netns) if netns else None}
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.connect(z.path)
        self.conn.sendmsg([json.dumps(req).encode()],
                          [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", child_fds))])
        for fd in close_after:
            os.close(fd)
        self._buf = b""
        self._lock = threading.Lock()  # poll() and wait()/communicate() may run in different threads
        self.pid = self._read_line()["pid"]

    def _read_line(self) -> dict:
        """The zygote's first answer (the child's pid), read before anyone else uses the connection."""
        while b"\n" not in self._buf:
            chunk = self.conn.recv(4096)
            if not chunk:
                raise RuntimeError("the rank zygote closed the connection before starting the process")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def _exit_status(self, timeout: float | None) -> int | None:
        """The child's exit status once the zygote reports it; None if it has not within `timeout`.
        The socket stays blocking: readiness is waited for with select, outside the lock."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self.returncode is not None:
                    return self.returncode
                ready, _, _ = select.select([self.conn], [], [], 0)
                if ready:
                    chunk = self.conn.recv(4096)
                    self._buf += chunk
                    if not chunk:  # the zygote died under us
                        self.returncode = -signal.SIGKILL
                    elif b"\n" in self._buf:
                        line, _, self._buf = self._buf.partition(b"\n")
                        self.returncode = json.loads(line)["exit"]
                    if self.returncode is not None:
                        self.conn.close()
                        return self.returncode
                    continue
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return None
            try:
                select.select([self.conn], [], [], 0.05 if left is None else min(0.05, left))
            except (OSError, ValueError):  # closed by the other thread: it has the status
                pass

    def poll(self) -> int | None:
        return self._exit_status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._exit_status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, input=None, timeout: float | None = None):
        out: dict = {}

        def drain(name):
            f = getattr(self, name)
            out[name] = f.read() if f is not None else None
            if f is not None:
                f.close()
        if self.stdin is not None:
            if input:
                self.stdin.write(input)
            self.stdin.close()
        threads = [threading.Thread(target=drain, args=(n,), daemon=True) for n in ("stdout", "stderr")]
        for t in threads:
            t.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return out.get("stdout"), out.get("stderr")


def python_popen(argv: list[str], *, netns: str | None, env: dict[str, str], **kw):
    """`python ARGV...` in namespace `netns`: forked from the zygote in the guest once prestarted, a
    new interpreter otherwise (metrolab.harness.kernel.sh)."""
    if enabled() and Zygote.started():
        return Zygote.get().popen(argv, netns=netns, env=env, **kw)
    return sh.popen([sys.executable, *argv], netns=netns, env=env, **kw)


if __name__ == "__main__":
    serve(sys.argv[1])
