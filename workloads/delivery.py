"""Inference delivery (white paper §5.5): a trained model distributed from an AIDC to inference
sites, and the requests those sites serve meanwhile.

The first host holds the model (`model_size` bytes at full scale, divided by k: a deterministic
byte stream whose SHA-256 every site knows in advance); every other host is an inference site.
A repetition delivers the model to every site and ends when the last has it (`step_time_s` is
that delivery time):
- `unicast`: the source sends to every site at once, one TCP connection each;
- `chain`: the source sends to the first site, which forwards each chunk to the next as it
  arrives, and so on (chain replication: one copy per link, pipelined).
Each site hashes what it received and compares (`integrity_failures`: a model that arrived
altered or short is never served).

While the model moves, the source (standing for the users' gateway) sends inference requests to
every site, a Poisson stream of `request_rate` per second per site on a persistent connection
marked `serve_dscp`: `request_bytes` up, modeled inference (`infer_s`), `response_bytes` back.
Their latency under the delivery's load is what a deterministic slice for that DSCP protects
(`slices: [{dscp: 46, strict: true, ...}]`) and best effort does not: request p50/p99.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import threading
import time
from typing import Any, Literal

from pydantic import Field

from metrolab.workloads.base import Size, StepRank, Workload, _Params, in_threads, rank_address
from metrolab.workloads.pd_inference import percentile
from metrolab.workloads.secure_link import close_all, recv_exact

CHUNK = 256 << 10
REQ = struct.Struct(">QI")  # request id, response bytes wanted


class DeliveryParams(_Params):
    model_size: Size = Field(default=14 << 30, description="the model's bytes at full scale (14 GiB: a 7B model in bf16)")
    mode: Literal["unicast", "chain"] = "unicast"
    rounds: int = Field(default=1, ge=1, description="deliveries per repetition")
    request_rate: float = Field(default=20.0, ge=0, description="requests per second per site during the delivery; 0: none")
    request_bytes: Size = Field(default=4 << 10, description="a request (prompt), full scale")
    response_bytes: Size = Field(default=16 << 10, description="a response, full scale")
    infer_s: float = Field(default=0.01, ge=0, description="modeled inference per request, seconds")
    serve_dscp: int = Field(default=46, ge=0, le=63, description="DSCP of the request/response connections")
    port: int = Field(default=29700, ge=1024, le=65534, description="the sites' delivery port (serving: port + 1)")
    seed: int = 0

    def sizes(self, scale: float) -> tuple[int, int, int]:
        return (max(CHUNK, int(self.model_size / scale)), max(REQ.size, int(self.request_bytes / scale)),
                max(1, int(self.response_bytes / scale)))


def model_bytes(n: int, seed: int) -> bytes:
    """The model's bytes: deterministic, incompressible-looking (SHA-256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"metrolab-model-{seed}-{i}".encode()).digest() * 64  # 2 KiB per hash
        i += 1
    return bytes(out[:n])


class InferenceDelivery(Workload):
    """A model to every inference site (unicast or chain), requests served meanwhile."""

    rank_side = "DeliveryRank"
    kind = "inference-delivery"
    params_model = DeliveryParams
    metrics = ("delivery_gbs", "integrity_failures", "request_p50_s", "request_p99_s", "requests_done",
               "model_bytes", "sites")


# -- rank side -------------------------------------------------------------------------------
class DeliveryRank(StepRank):
    def __init__(self, params: dict[str, Any], scale: float, sites=None, hosts: list[str] | None = None, **_):
        import torch.distributed as dist  # deferred: torch (40 s under TCG) on the rank side only

        self.dist = dist
        self.p = p = DeliveryParams.model_validate(params)
        self.rank, self.n = dist.get_rank(), dist.get_world_size()
        self.size, self.req, self.resp = p.sizes(scale)
        self.model = model_bytes(self.size, p.seed) if self.rank == 0 else b""
        self.digest = hashlib.sha256(model_bytes(self.size, p.seed)).hexdigest() if self.rank else ""
        addr = rank_address()
        addrs: list = [None] * self.n
        dist.all_gather_object(addrs, addr)
        self.addrs = addrs
        self.listeners: list[socket.socket] = []
        self.serving: list[socket.socket] = []
        self.received: dict = {}
        if self.rank:
            self.listeners = [socket.create_server((addr, p.port), backlog=8),
                              socket.create_server((addr, p.port + 1), backlog=8)]
            threading.Thread(target=self._accept_serving, daemon=True).start()
        dist.barrier()
        # the request connections: persistent, marked, opened once
        self.clients: dict[int, socket.socket] = {}
        if self.rank == 0:
            for r in range(1, self.n):
                s = socket.create_connection((addrs[r], p.port + 1), timeout=600)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, p.serve_dscp << 2)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.clients[r] = s
        dist.barrier()
        self.reps = 0

    # -- serving (sites) -------------------------------------------------------------------------
    def _accept_serving(self) -> None:
        lst = self.listeners[1]
        while True:
            try:
                s, _ = lst.accept()
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, self.p.serve_dscp << 2)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.serving.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket) -> None:
        try:
            while True:
                head = recv_exact(s, self.req)
                rid, want = REQ.unpack_from(head)
                time.sleep(self.p.infer_s)
                s.sendall(rid.to_bytes(8, "big") + bytes(max(0, want - 8)))
        except (OSError, ConnectionError):
            s.close()

    # -- delivery ----------------------------------------------------------------------------------
    def _receive(self) -> dict:
        """A site: accept the model from its upstream, forward each chunk downstream (chain), hash."""
        lst = self.listeners[0]
        lst.settimeout(600)
        up, _ = lst.accept()
        down = None
        if self.p.mode == "chain" and self.rank + 1 < self.n:
            down = socket.create_connection((self.addrs[self.rank + 1], self.p.port), timeout=600)
        h = hashlib.sha256()
        got = 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while True:
                k = up.recv_into(view)
                if not k:
                    break
                h.update(view[:k])
                if down is not None:
                    down.sendall(view[:k])
                got += k
        finally:
            up.close()
            if down is not None:
                down.close()
        return {"bytes": got, "ok": got == self.size and h.hexdigest() == self.digest, "done": time.time()}

    def _send(self, rank: int) -> None:
        with socket.create_connection((self.addrs[rank], self.p.port), timeout=600) as s:
            s.sendall(self.model)

    def _requests(self, stop: threading.Event, first_id: int) -> list[float]:
        """The source: a Poisson stream to every site until `stop`; each request's latency. (The
        arrivals are drawn as they come: drawing a long list first cost seconds of the guest's
        CPU, longer than the delivery, and no request was sent.)"""
        lat: list[float] = []
        lock = threading.Lock()

        def site(r: int) -> None:
            s = self.clients[r]
            rng = random.Random(self.p.seed * 104729 + first_id + r)
            t0, a, i = time.perf_counter(), 0.0, 0
            while not stop.is_set():
                wait = t0 + a - time.perf_counter()
                if wait > 0 and stop.wait(wait):
                    return
                s.sendall(REQ.pack(first_id + i, self.resp) + bytes(self.req - REQ.size))
                recv_exact(s, self.resp)
                with lock:
                    lat.append(time.perf_counter() - (t0 + a))  # from its arrival: queueing counts
                a += rng.expovariate(self.p.request_rate)
                i += 1
        in_threads(site, list(self.clients))
        return lat

    def _requests_into(self, box: list, stop: threading.Event, first_id: int) -> None:
        try:
            box.append(self._requests(stop, first_id))
        except BaseException as exc:  # noqa: BLE001 — raised by the round
            box.append(exc)

    def step(self) -> dict:
        self.reps += 1
        self.dist.barrier()
        t0 = time.time()
        if self.rank:
            mine = self._receive()
            lat: list[float] = []
        else:
            stop = threading.Event()
            box: list = []
            req = threading.Thread(target=self._requests_into, args=(box, stop, 1_000_000 * self.reps), daemon=True)
            if self.p.request_rate > 0:
                req.start()
            targets = [1] if self.p.mode == "chain" else list(range(1, self.n))
            try:
                in_threads(self._send, targets)
            except BaseException:
                stop.set()  # the request stream ends with the round
                raise
            mine = {"bytes": 0, "ok": True, "done": time.time()}
        everyone: list = [None] * self.n
        self.dist.all_gather_object(everyone, mine)  # every site has the model (or failed) by now
        if self.rank == 0:
            stop.set()
            if self.p.request_rate > 0:
                req.join()
            if box and isinstance(box[0], BaseException):
                raise box[0]
            lat = box[0] if box else []
        sites = everyone[1:]
        end = max(e["done"] for e in sites)
        return {"delivery_s": end - t0, "failures": sum(not e["ok"] for e in sites), "latencies": lat,
                "steps": [(t0, end)]}

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        self.warm(warmups)
        rounds = self.timed(iters or self.p.rounds)[1]
        lat = [x for r in rounds for x in r["latencies"]]
        d = sum(r["delivery_s"] for r in rounds) / len(rounds)
        return {"step_time_s": d, "delivery_gbs": self.size * (self.n - 1) / d / 1e9,
                "integrity_failures": sum(r["failures"] for r in rounds),
                "request_p50_s": percentile(lat, 50) if lat else None,
                "request_p99_s": percentile(lat, 99) if lat else None, "requests_done": len(lat),
                "model_bytes": self.size, "sites": self.n - 1,
                "_steps": [s for r in rounds for s in r["steps"]]}

    def close(self, final: bool = False) -> None:
        close_all([*self.listeners, *self.serving, *self.clients.values()])

