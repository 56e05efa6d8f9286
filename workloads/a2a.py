"""Multi-agent A2A (white paper §5.7): agents at several sites delegate tasks along a chain over
long-lived connections; an agent outside the allow-list tries to reach the others.

Every host runs an agent listening on `port`. The first host's agent takes tasks (a Poisson stream
at `task_rate` per second, `tasks` a repetition) and delegates each along `chain` (default: every
other non-intruder host, in order): each agent thinks for `think_s` (modeled, slept), sends the
request (`request_bytes`) to the next agent and waits for its response (`response_bytes`), then
answers its caller. The connections between consecutive agents open once, when the workload is
set up, and carry every task after (A2A's persistent connections for long tasks): requests are
multiplexed on them by task id, so tasks overlap. `reconnects` counts connections that had to be
opened again while measuring (0 on a stable network).

The `intruders` take no part in the chain: at the start of each repetition each tries to open a
connection to every agent's port and send a task (2 s to connect); `intruder_reached` counts the
agents that answered. With the scenario's allow-list policy in force (metrolab.harness.policy.acl: only the
chain's pairs on `port`) it must be 0; without, every attempt succeeds.

Per repetition: task latency p50 and p99 (arrival to the first agent's answer), the mean
(`step_time_s`), tasks completed, and the intrusion count.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

from pydantic import Field

from metrolab.harness.errors import SpecError
from metrolab.workloads.base import Size, Workload, _Params, in_threads, rank_address
from metrolab.workloads.pd_inference import arrivals, percentile
from metrolab.workloads.secure_link import close_all, recv_exact

HEAD = struct.Struct(">BQII")  # kind (1 request, 2 response), task id, hops left, payload bytes
REQUEST, RESPONSE = 1, 2


class A2AParams(_Params):
    port: int = Field(default=29600, ge=1024, le=65535, description="every agent's listening port")
    chain: list[str] | None = Field(default=None, description="the delegation chain after the first host (default: the other agents in order)")
    intruders: list[str] = Field(default_factory=list, description="hosts whose agents try to reach the others")
    think_s: float = Field(default=0.02, ge=0, description="modeled reasoning per agent per task, seconds")
    request_bytes: Size = Field(default=64 << 10, description="a delegation request, full scale")
    response_bytes: Size = Field(default=16 << 10, description="a response, full scale")
    tasks: int = Field(default=20, ge=1, description="tasks per repetition")
    task_rate: float = Field(default=5.0, ge=0, description="Poisson arrivals per second; 0 = back to back")
    seed: int = 0

    def sizes(self, scale: float) -> tuple[int, int]:
        return max(1, int(self.request_bytes / scale)), max(1, int(self.response_bytes / scale))


def chain_of(p: A2AParams, hosts: list[str]) -> list[str]:
    """The agents a task visits, the first host first."""
    rest = p.chain if p.chain is not None else [h for h in hosts[1:] if h not in p.intruders]
    return [hosts[0], *rest]


class A2A(Workload):
    """Task delegation chains between agents at several sites, and intruders the allow-list stops."""

    rank_side = "A2ARank"
    kind = "a2a"
    params_model = A2AParams
    metrics = ("task_p50_s", "task_p99_s", "tasks_done", "reconnects", "intruder_reached", "intruder_attempts")
    logs_steps = True

    @classmethod
    def validate(cls, spec, topo, scale: float) -> None:
        super().validate(spec, topo, scale)
        p = cls.params(spec, scale)
        hosts = cls.hosts(spec, topo)
        for field, names in (("intruders", p.intruders), ("chain", p.chain or [])):
            for i, h in enumerate(names):
                if h not in hosts[1:]:
                    raise SpecError("", f"params.{field}[{i}]", h,
                                    f"not an agent host after the first (agents: {', '.join(hosts)})")
        if hosts[0] in p.intruders:
            raise SpecError("", "params.intruders", p.intruders, f"{hosts[0]} takes the tasks: it cannot intrude")
        bad = set(p.intruders) & set(chain_of(p, hosts))
        if bad:
            raise SpecError("", "params.chain", p.chain, f"intruders in the chain: {', '.join(sorted(bad))}")
        if len(set(chain_of(p, hosts))) != len(chain_of(p, hosts)):
            raise SpecError("", "params.chain", p.chain, "an agent appears twice in the chain")


# -- rank side -------------------------------------------------------------------------------
class Conn:
    """A long-lived connection to the next agent: requests go out under a lock, a reader thread
    hands each response to the task waiting for it."""

    def __init__(self, addr: str, port: int, timeout_s: float = 600.0):
        self.addr, self.port, self.timeout_s = addr, port, timeout_s
        self.lock = threading.Lock()
        self.waiting: dict[int, tuple[threading.Event, list]] = {}
        self.opened = 0
        self._open()

    def _open(self) -> None:
        s = socket.create_connection((self.addr, self.port), timeout=self.timeout_s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(None)
        self.sock, self.dead = s, False
        self.opened += 1
        threading.Thread(target=self._read, args=(s,), daemon=True).start()

    def _read(self, s: socket.socket) -> None:
        try:
            while True:
                kind, task, _, n = HEAD.unpack(recv_exact(s, HEAD.size))
                recv_exact(s, n)
                ev, box = self.waiting.pop(task)
                box.append(kind)
                ev.set()
        except (OSError, ConnectionError, KeyError):
            self.dead = True
            for ev, box in list(self.waiting.values()):
                box.append(None)
                ev.set()

    def call(self, task: int, hops_left: int, payload: bytes) -> None:
        ev, box = threading.Event(), list[int | None]()
        with self.lock:
            if self.dead:
                self._open()  # counted: a stable network never needs it
            self.waiting[task] = (ev, box)
            self.sock.sendall(HEAD.pack(REQUEST, task, hops_left, len(payload)) + payload)
        if not ev.wait(self.timeout_s) or box[0] != RESPONSE:
            raise ConnectionError(f"task {task}: no response from {self.addr}:{self.port}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class A2ARank:
    def __init__(self, params: dict[str, Any], scale: float, sites=None, hosts: list[str] | None = None, **_):
        import torch.distributed as dist  # deferred: torch (40 s under TCG) on the rank side only
        self.dist = dist
        self.p = p = A2AParams.model_validate(params)
        self.rank, self.n = dist.get_rank(), dist.get_world_size()
        self.hosts = hosts or [str(i) for i in range(self.n)]
        self.me = self.hosts[self.rank]
        self.req, self.resp = p.sizes(scale)
        self.chain = chain_of(p, self.hosts)
        self.intruder = self.me in p.intruders
        self.reps = 0
        addr = rank_address()
        addrs: list = [None] * self.n
        dist.all_gather_object(addrs, addr)
        self.addrs = dict(zip(self.hosts, addrs))
        self.listener = None
        self.accepted: list[socket.socket] = []
        if not self.intruder:
            self.listener = socket.create_server((addr, p.port), backlog=64, reuse_port=False)
            threading.Thread(target=self._accept, daemon=True).start()
        dist.barrier()  # every agent listens before any connects
        self.next: Conn | None = None
        if self.me in self.chain and self.chain.index(self.me) + 1 < len(self.chain):
            nxt = self.chain[self.chain.index(self.me) + 1]
            self.next = Conn(self.addrs[nxt], p.port)
        dist.barrier()

    # -- serving -------------------------------------------------------------------------------
    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket) -> None:
        lock = threading.Lock()
        try:
            while True:
                kind, task, hops, n = HEAD.unpack(recv_exact(s, HEAD.size))
                recv_exact(s, n)
                if kind != REQUEST:
                    raise ConnectionError(f"an agent got message kind {kind}, not a request")
                threading.Thread(target=self._handle, args=(s, lock, task, hops), daemon=True).start()
        except (OSError, ConnectionError):
            s.close()

    def _handle(self, s: socket.socket, lock: threading.Lock, task: int, hops: int) -> None:
        try:
            self._work(task, hops)
            with lock:
                s.sendall(HEAD.pack(RESPONSE, task, 0, self.resp) + bytes(self.resp))
        except (OSError, ConnectionError):
            s.close()

    def _work(self, task: int, hops: int) -> None:
        """Think, then delegate down the chain while hops remain."""
        time.sleep(self.p.think_s)
        if hops > 0 and self.next is not None:
            self.next.call(task, hops - 1, bytes(self.req))

    # -- a repetition ----------------------------------------------------------------------------
    def _intrude(self) -> tuple[int, int]:
        targets = [h for h in self.hosts if h != self.me and h not in self.p.intruders]
        reached = [0]

        def try_one(h: str) -> None:
            try:
                with socket.create_connection((self.addrs[h], self.p.port), timeout=2.0) as s:
                    s.settimeout(10.0)
                    s.sendall(HEAD.pack(REQUEST, 2 ** 63 + targets.index(h), 0, 1) + b"x")
                    recv_exact(s, HEAD.size)
                    reached[0] += 1
            except (OSError, ConnectionError):
                pass
        in_threads(try_one, targets)
        return reached[0], len(targets)

    def _tasks(self, n: int, first_id: int) -> list[tuple[float, float]]:
        arr = arrivals(n, self.p.task_rate, self.p.seed * 7919 + first_id)
        out: list = [None] * n
        errors: list[BaseException] = []
        t0 = time.perf_counter()
        hops = len(self.chain) - 1

        def run(i: int) -> None:
            try:
                self._work(first_id + i, hops)
                out[i] = (t0 + arr[i], time.perf_counter())
            except BaseException as exc:  # noqa: BLE001 — raised below
                errors.append(exc)
        threads = []
        for i in range(n):
            wait = t0 + arr[i] - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            t = threading.Thread(target=run, args=(i,), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return out

    def warm(self, steps: int) -> None:
        self.reps += 1
        if self.rank == 0:
            self._tasks(min(steps, self.p.tasks), 10_000_000 * self.reps + 9_000_000)
        self.dist.barrier()

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        if warmups:
            self.warm(warmups)
        self.reps += 1
        opened0 = self.next.opened if self.next else 0
        self.dist.barrier()
        reached = attempts = 0
        if self.intruder:
            reached, attempts = self._intrude()
        recs: list = []
        if self.rank == 0:
            recs = self._tasks(iters or self.p.tasks, 10_000_000 * self.reps)
        everyone: list = [None] * self.n
        self.dist.all_gather_object(everyone, {"reached": reached, "attempts": attempts,
                                               "reopened": (self.next.opened if self.next else 0) - opened0})
        wall = time.time() - time.perf_counter()
        lat = [b - a for a, b in recs] if recs else [0.0]
        return {"step_time_s": sum(lat) / len(lat), "task_p50_s": percentile(lat, 50),
                "task_p99_s": percentile(lat, 99), "tasks_done": len(recs),
                "reconnects": sum(e["reopened"] for e in everyone),
                "intruder_reached": sum(e["reached"] for e in everyone),
                "intruder_attempts": sum(e["attempts"] for e in everyone),
                "_steps": [(a + wall, b + wall) for a, b in recs]}

    def close(self, final: bool = False) -> None:
        if self.next is not None:
            self.next.close()
        close_all([*([self.listener] if self.listener is not None else []), *self.accepted])
