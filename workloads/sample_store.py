"""Sample batches served from a storage host's memory and pulled by compute ranks into a ring of
`depth` receive slots: by RDMA READ (verbs; the storage side is passive, its CPU never touches a
batch) or over TCP (the storage host answers each request from memory). Nothing is written to
disk on either side: the pool and the ring are anonymous memory.

The two ends find each other through the torch.distributed store (`prefix` keeps the keys of one
sweep point apart from the next).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import zlib
from dataclasses import asdict
from typing import Any

import torch

from metrolab.harness.dist.mesh import pick_device
from metrolab.harness.rdma.verbs import Connection, Device, PeerInfo, QPConfig, RdmaError, wc_status

BYE = 0xFFFFFFFF


def make_pool(batches: int, batch_bytes: int, seed: int = 7) -> tuple[torch.Tensor, list[int]]:
    """`batches` batches of pseudo-random samples (deterministic), and each one's CRC-32."""
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randint(0, 256, (batches * batch_bytes,), dtype=torch.uint8, generator=gen)
    crcs = [zlib.crc32(pool[i * batch_bytes:(i + 1) * batch_bytes].numpy().data) for i in range(batches)]
    return pool, crcs


class StorageServer:
    """The storage host's side: the pool in memory, and one RDMA connection or TCP stream per client."""

    def __init__(self, store, prefix: str, clients: list[int], transport: str, pool: torch.Tensor,
                 batch_bytes: int, addr: str, port: int, timeout_s: float):
        self.pool, self.batch_bytes, self.transport = pool, batch_bytes, transport
        self.dev = None
        self.conns: list[Connection] = []
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        self.error: BaseException | None = None
        try:
            if transport == "rdma":
                name, ip = pick_device()
                self.dev = Device(name, ip=ip)
                for c in clients:
                    conn = Connection(self.dev, pool, QPConfig())
                    self.conns.append(conn)
                    store.set(f"{prefix}/storage/{c}", json.dumps(asdict(conn.local_info())))
                for c, conn in zip(clients, self.conns):
                    conn.connect(PeerInfo(**json.loads(store.get(f"{prefix}/client/{c}"))))
            else:
                self.listener = socket.create_server((addr, port), backlog=len(clients))
                self.listener.settimeout(timeout_s)
                self.socks.append(self.listener)
                store.set(f"{prefix}/storage/tcp", json.dumps({"addr": addr, "port": port}))
                for _ in clients:
                    s, _peer = self.listener.accept()
                    s.settimeout(None)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.socks.append(s)
                    t = threading.Thread(target=self._serve, args=(s,), daemon=True, name="metrolab-storage")
                    t.start()
                    self.threads.append(t)
        except BaseException:
            self.close()
            raise

    def _serve(self, s: socket.socket) -> None:
        view = self.pool.numpy().data
        B = self.batch_bytes
        try:
            while True:
                head = _recv_exact(s, 4)
                if head is None:
                    return
                (idx,) = struct.unpack("!I", head)
                if idx == BYE:
                    return
                s.sendall(view[idx * B:(idx + 1) * B])  # straight from memory
        except OSError as exc:
            self.error = exc

    def close(self) -> None:
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)
        for c in self.conns:
            c.close()
        if self.dev is not None:
            self.dev.close()
        self.conns, self.socks, self.threads, self.dev = [], [], [], None


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class BatchPuller:
    """A compute rank's side: keeps up to `depth` batch pulls in flight into its ring of slots."""

    def __init__(self, store, prefix: str, me: int, transport: str, batch_bytes: int, depth: int,
                 timeout_s: float):
        self.transport, self.B, self.depth, self.timeout_s = transport, batch_bytes, depth, timeout_s
        self.ring = torch.zeros(depth * batch_bytes, dtype=torch.uint8)
        self.inflight: list[tuple[int, int]] = []      # (slot, batch index), in posting order
        self.ready: dict[int, bool] = {}
        # the transport's objects: verbs (dev, conn) or a TCP socket, as `transport` says
        self.dev: Any = None
        self.conn: Any = None
        self.sock: Any = None
        self.thread = None
        self.error: BaseException | None = None
        try:
            if transport == "rdma":
                name, ip = pick_device()
                self.dev = Device(name, ip=ip)
                self.conn = Connection(self.dev, self.ring, QPConfig())
                store.set(f"{prefix}/client/{me}", json.dumps(asdict(self.conn.local_info())))
                self.conn.connect(PeerInfo(**json.loads(store.get(f"{prefix}/storage/{me}"))))
            else:
                where = json.loads(store.get(f"{prefix}/storage/tcp"))
                self.sock = socket.create_connection((where["addr"], where["port"]), timeout=timeout_s)
                self.sock.settimeout(None)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.cv = threading.Condition()
                self.wanted: list[tuple[int, int]] = []
                self.thread = threading.Thread(target=self._receive, daemon=True, name="metrolab-pull")
                self.thread.start()
        except BaseException:
            self.close()
            raise

    def slot_view(self, slot: int) -> torch.Tensor:
        return self.ring[slot * self.B:(slot + 1) * self.B]

    def request(self, slot: int, idx: int) -> None:
        """Start pulling batch `idx` into `slot`."""
        self.inflight.append((slot, idx))
        if self.transport == "rdma":
            self.conn.post_read(slot * self.B, self.B, remote_offset=idx * self.B, wr_id=slot)
        else:
            with self.cv:
                self.ready[slot] = False
                self.wanted.append((slot, idx))
                self.cv.notify_all()
            self.sock.sendall(struct.pack("!I", idx))

    def _receive(self) -> None:
        """TCP: responses arrive in request order; land each in its slot."""
        try:
            while True:
                with self.cv:
                    while not self.wanted:
                        self.cv.wait()
                    slot, _idx = self.wanted[0]
                if slot < 0:
                    return
                view = self.ring.numpy().data[slot * self.B:(slot + 1) * self.B]
                got = 0
                while got < self.B:
                    n = self.sock.recv_into(view[got:], self.B - got)
                    if n == 0:
                        raise ConnectionError("the storage host closed the connection")
                    got += n
                with self.cv:
                    self.wanted.pop(0)
                    self.ready[slot] = True
                    self.cv.notify_all()
        except BaseException as exc:  # noqa: BLE001 — surfaced by wait()
            with self.cv:
                self.error = exc
                self.cv.notify_all()

    def wait(self) -> tuple[int, int]:
        """Block until the oldest pull has landed; returns its (slot, batch index)."""
        slot, idx = self.inflight.pop(0)
        if self.transport == "rdma":
            self._poll_read()
        else:
            deadline = time.monotonic() + self.timeout_s
            with self.cv:
                while not self.ready.get(slot) and self.error is None:
                    if not self.cv.wait(timeout=max(0.0, deadline - time.monotonic())):
                        raise RdmaError(f"no batch from the storage host within {self.timeout_s:g} s")
                if self.error is not None:
                    raise RdmaError(f"pulling batches over TCP failed: {self.error}")
        return slot, idx

    def _poll_read(self) -> None:
        """One READ completion (RC completes them in posting order). Polls with short sleeps
        rather than spinning: a spinning poller takes a CPU from the training step's
        communication (and, with Soft-RoCE, from the kernel moving the READ's packets)."""
        cq, ok = self.dev.cq, self.dev.v["e"].IBV_WC_SUCCESS
        deadline = time.monotonic() + self.timeout_s
        nap = 20e-6
        while True:
            got, wcs = cq.poll(1)
            if got > 0:
                if wcs[0].status != ok:
                    raise RdmaError(f"RDMA READ of a batch failed: {wc_status(wcs[0].status)}")
                return
            if time.monotonic() > deadline:
                raise RdmaError(f"no batch from the storage host within {self.timeout_s:g} s (RDMA READ)")
            time.sleep(nap)
            nap = min(nap * 2, 500e-6)

    def close(self) -> None:
        try:
            while self.inflight and self.error is None:
                self.wait()  # nothing may land in memory we are about to free
        except Exception:  # noqa: BLE001 — closing anyway
            pass
        if self.sock is not None:
            try:
                self.sock.sendall(struct.pack("!I", BYE))
            except OSError:
                pass
            with self.cv:
                self.wanted.append((-1, -1))
                self.cv.notify_all()
            self.sock.close()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.conn is not None:
            self.conn.close()
        if self.dev is not None:
            self.dev.close()
        self.conn = self.dev = self.sock = self.thread = None
