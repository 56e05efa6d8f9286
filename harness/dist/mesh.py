"""A full mesh of RC queue pairs between the ranks of a group, and chunked, flow-controlled
transfers over it: the transport under the verbs process group.

Each pair of ranks shares one RC QP. Every rank registers one buffer (a torch tensor, so the
memory is the tensor's own) holding, per peer, two send slots and two receive slots of `slot`
bytes. A chunk travels as an RDMA WRITE_WITH_IMM from the sender's send slot into the receiver's
receive slot (the immediate names the slot); once the receiver has consumed it (copied or
reduced it into the destination), it returns a credit, a zero-byte WRITE_WITH_IMM. Two slots
per direction keep one chunk in flight while the previous one is consumed.

Transfers between one pair are matched in program order (as gloo does): both sides issue the
same collectives in the same order, so the n-th chunk sent is the n-th chunk received.
Queue-pair and memory information travels through the c10d store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
from pyroute2 import IPRoute

from metrolab.harness import settings
from metrolab.harness.rdma.verbs import (
    Connection,
    Device,
    PeerInfo,
    QPConfig,
    RdmaError,
    list_devices,
    roce_gid_index,
    wc_status,
)

SLOT = 1 << 20
SLOTS = 2
CREDIT = 1 << 31
RECV_DEPTH = 64


def local_ipv4() -> list[str]:
    """IPv4 addresses of this network namespace's interfaces (not loopback)."""
    with IPRoute() as ipr:
        return [a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)
                if not str(a.get_attr("IFA_ADDRESS")).startswith("127.")]


def pick_device(dev: str | None = None, ip: str | None = None) -> tuple[str, str | None]:
    """The RDMA device (and address) this rank uses: METROLAB_RDMA_DEV / METROLAB_RDMA_IP if set,
    else the device with a RoCEv2 GID on one of this namespace's addresses."""
    dev = dev or settings.get("METROLAB_RDMA_DEV")
    ip = ip or settings.get("METROLAB_RDMA_IP")
    if dev:
        return dev, ip
    devices = list_devices()
    if not devices:
        raise RdmaError("no RDMA device here (the verbs backend needs Soft-RoCE or a RoCE NIC; "
                        "lab hosts get one with `rdma: true`)")
    for addr in ([ip] if ip else local_ipv4()):
        for name in devices:
            try:
                roce_gid_index(name, 1, addr)
                return name, addr
            except RdmaError:
                continue
    raise RdmaError(f"no RDMA device carries a RoCEv2 GID for {ip or 'any address of this namespace'} "
                    f"(devices: {', '.join(devices)}); set METROLAB_RDMA_DEV")


class _Peer:
    def __init__(self, rank: int, conn: Connection, base: int, slot: int):
        self.rank, self.conn, self.base, self.slot = rank, conn, base, slot
        self.credits = SLOTS
        self.arrived = 0          # chunks landed in our receive slots, not consumed yet
        self.send_seq = 0
        self.recv_seq = 0

    def send_off(self, k: int) -> int:       # offsets inside this peer's region
        return k * self.slot

    def recv_off(self, k: int) -> int:
        return (SLOTS + k) * self.slot


class Send:
    """Send `data` (a contiguous uint8 tensor) to a peer in slot-sized chunks."""

    def __init__(self, peer: int, data: torch.Tensor):
        self.peer, self.data, self.next, self.done = peer, data, 0, data.numel() == 0

    def chunks(self, slot: int) -> int:
        return -(-self.data.numel() // slot)


class Recv:
    """Receive into `dst` (a contiguous uint8 tensor); `combine(dst_chunk, incoming)` consumes each
    chunk (copy, or a reduction on typed views)."""

    def __init__(self, peer: int, dst: torch.Tensor, combine: Callable[[torch.Tensor, torch.Tensor], None]):
        self.peer, self.dst, self.combine, self.next, self.done = peer, dst, combine, 0, dst.numel() == 0


def copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    dst.copy_(src)


class VerbsMesh:
    """RC QPs to every other rank of the group, connected through `store`."""

    def __init__(self, store, rank: int, size: int, timeout_s: float, dev: str | None = None,
                 ip: str | None = None, slot: int | None = None, cfg: QPConfig | None = None):
        self.rank, self.size, self.timeout_s = rank, size, timeout_s
        self.slot = slot or (settings.get("METROLAB_VERBS_SLOT") or SLOT)
        if self.slot % 64:
            raise RdmaError(f"verbs slot size must be a multiple of 64 bytes, got {self.slot}")
        self.peers: dict[int, _Peer] = {}
        self.by_qpn: dict[int, _Peer] = {}
        self.dev = None
        self._conns: list[Connection] = []
        if size == 1:
            return
        name, ip = pick_device(dev, ip)
        self.dev = Device(name, ip=ip, cq_depth=8192)
        try:
            region = 2 * SLOTS * self.slot
            others = [r for r in range(size) if r != rank]
            self.buf = torch.zeros(region * len(others), dtype=torch.uint8)  # registered where it lies
            cfg = cfg or QPConfig(max_send_wr=512, max_recv_wr=RECV_DEPTH * 2)
            for i, r in enumerate(others):
                conn = Connection(self.dev, self.buf[i * region:(i + 1) * region], cfg)
                self._conns.append(conn)
                self.peers[r] = _Peer(r, conn, i * region, self.slot)
                store.set(f"verbs/qp/{rank}/{r}", json.dumps(asdict(conn.local_info())))
            for r, p in self.peers.items():
                p.conn.connect(PeerInfo(**json.loads(store.get(f"verbs/qp/{r}/{rank}"))))
                self.by_qpn[p.conn.qps[0].qp_num] = p
                for _ in range(RECV_DEPTH):
                    p.conn.post_recv(0, 0)
            # nobody writes before every peer's receives are posted
            store.set(f"verbs/ready/{rank}", "1")
            store.wait([f"verbs/ready/{r}" for r in others])
        except BaseException:
            self.close()
            raise
        self._e = self.dev.v["e"]
        self._cq = self.dev.cq

    def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (briefly) until every chunk we sent has been consumed, so that leaving right after a
        send cannot take data still being retransmitted down with our QPs."""
        deadline = time.monotonic() + timeout_s
        while self.peers and any(p.credits < SLOTS for p in self.peers.values()):
            if time.monotonic() > deadline:
                return
            if not self._poll("drain"):
                time.sleep(0.0005)

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        if self.dev is not None:
            self.dev.close()
            self.dev = None

    # -- the progress engine ---------------------------------------------------------------
    def run(self, ops: list, what: str, background: list | None = None) -> None:
        """Drive sends and receives until all are done; a failed completion or the group's
        timeout raises an error naming the peer.

        `background` ops (point-to-point transfers still in flight) move along and go first in
        their peers' order, since they were issued first; they need not finish here."""
        ops = [op for op in ops if not op.done]
        if not ops:
            return
        deadline = time.monotonic() + self.timeout_s
        idle = 0
        while ops:
            active = [op for op in background or () if not op.done] + ops
            moved = self._advance(active) + self._poll(what)
            ops = [op for op in ops if not op.done]
            if moved:
                idle = 0
                continue
            idle += 1
            if idle > 200:  # back off: the other ranks and the kernel's rxe need the CPUs too
                time.sleep(min(0.0005, 1e-6 * (idle - 200)))
                if time.monotonic() > deadline:
                    waiting = sorted({op.peer for op in ops})
                    raise RdmaError(f"rank {self.rank}: {what} timed out after {self.timeout_s:g} s waiting for "
                                    f"rank(s) {', '.join(map(str, waiting))} (dead, stuck, or unreachable)")

    def step(self, ops: list, what: str) -> int:
        """One round of progress on `ops` without waiting; how much moved."""
        return self._advance([op for op in ops if not op.done]) + self._poll(what)

    def _advance(self, ops: list) -> int:
        moved = 0
        first_send: dict[int, Send] = {}
        first_recv: dict[int, Recv] = {}
        for op in ops:  # per peer, only the oldest unfinished op of each direction may move
            (first_send if isinstance(op, Send) else first_recv).setdefault(op.peer, op)
        for op in first_send.values():
            p = self.peers[op.peer]
            n = op.chunks(self.slot)
            while p.credits > 0 and op.next < n:
                k = p.send_seq % SLOTS
                lo = op.next * self.slot
                chunk = op.data[lo:lo + self.slot]
                off = p.send_off(k)
                self.buf[p.base + off:p.base + off + chunk.numel()].copy_(chunk)
                p.conn.post_write(off, chunk.numel(), remote_offset=p.recv_off(k), imm=k)
                p.send_seq += 1
                p.credits -= 1
                op.next += 1
                moved += 1
            op.done = op.next == n
        for op in first_recv.values():
            p = self.peers[op.peer]
            n = -(-op.dst.numel() // self.slot)
            while p.arrived > 0 and op.next < n:
                k = p.recv_seq % SLOTS
                lo = op.next * self.slot
                dst = op.dst[lo:lo + self.slot]
                off = p.base + p.recv_off(k)
                op.combine(dst, self.buf[off:off + dst.numel()])
                p.arrived -= 1
                p.recv_seq += 1
                op.next += 1
                p.conn.post_write(p.send_off(k), 0, remote_offset=0, imm=CREDIT | k)  # the slot is free again
                moved += 1
            op.done = op.next == n
        return moved

    def _poll(self, what: str) -> int:
        got, wcs = self._cq.poll(64)
        if got <= 0:
            return 0
        e = self._e
        for wc in wcs[:got]:
            p = self.by_qpn.get(wc.qp_num)
            if wc.status != e.IBV_WC_SUCCESS:
                who = f"rank {p.rank}" if p else f"QP {wc.qp_num}"
                raise RdmaError(f"rank {self.rank}: {what}: the link to {who} failed: {wc_status(wc.status)}")
            if wc.opcode == e.IBV_WC_RECV_RDMA_WITH_IMM:
                if p is None:
                    raise RdmaError(f"rank {self.rank}: {what}: a message on QP {wc.qp_num}, which no peer owns")
                if wc.imm_data & CREDIT:
                    p.credits += 1
                else:
                    p.arrived += 1
                p.conn.post_recv(0, 0)
        return got
