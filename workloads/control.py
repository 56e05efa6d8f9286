"""Control messages beside a collective's bulk: a small handshake per bucket on a TCP socket of its
own, marked with a DSCP, so a switch can schedule it apart from the gradients (white paper 4.3.3:
"priority scheduling is used to ensure the timely transmission of GPU control signaling").

GPU collectives coordinate every transfer with small messages (a receiver's clear-to-send, a
proxy's ready flag) that cross the same links as the data. gloo marks nothing per message, so the
handshake is explicit here: when a bucket is full every rank tells rank 0 it is ready (64 bytes)
and waits for rank 0's go once all are; the bucket's reduction starts after the go
(metrolab.workloads.training_step, `control_dscp`). The handshake runs while earlier buckets are still on
the wire: behind a deep buffer's backlog it waits the queue's depth, in a strict-priority slice
for its DSCP it does not.
"""

from __future__ import annotations

import socket

MESSAGE = 64  # bytes each way: a flag and a sequence number, padded like a small control frame


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("control peer closed its socket")
        buf += chunk
    return bytes(buf)


class ControlChannel:
    """Rank 0 listens on its own lab address (MASTER_ADDR), every other rank connects; both ends
    mark their packets with `dscp` and send without delay (TCP_NODELAY)."""

    def __init__(self, dist, dscp: int, address: str, timeout_s: float = 600.0):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.seq = 0
        self.peers: list[socket.socket] = []
        self.sock: socket.socket | None = None
        tos = dscp << 2
        port = [0]
        listener = None
        if self.rank == 0:
            listener = socket.create_server((address, 0), backlog=self.world)
            port[0] = listener.getsockname()[1]
        dist.broadcast_object_list(port, src=0)  # over the group: no second rendezvous
        try:
            if self.rank == 0:
                assert listener is not None
                listener.settimeout(timeout_s)
                by_rank = {}
                for _ in range(self.world - 1):
                    s, _ = listener.accept()
                    self._tune(s, tos, timeout_s)
                    by_rank[int.from_bytes(_exact(s, 4), "big")] = s
                self.peers = [by_rank[r] for r in sorted(by_rank)]
            else:
                s = socket.create_connection((address, port[0]), timeout=timeout_s)
                self._tune(s, tos, timeout_s)
                s.sendall(self.rank.to_bytes(4, "big"))
                self.sock = s
        finally:
            if listener is not None:
                listener.close()

    @staticmethod
    def _tune(s: socket.socket, tos: int, timeout_s: float) -> None:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(timeout_s)

    def handshake(self) -> None:
        """Every rank ready -> rank 0 -> go to every rank: one round trip to rank 0 per call."""
        self.seq += 1
        msg = self.seq.to_bytes(8, "big").ljust(MESSAGE, b"\0")
        if self.rank == 0:
            for s in self.peers:
                got = _exact(s, MESSAGE)
                if got[:8] != msg[:8]:
                    raise ConnectionError(f"control handshake out of step: {int.from_bytes(got[:8], 'big')} "
                                          f"!= {self.seq}")
            for s in self.peers:
                s.sendall(msg)
        elif self.sock is not None:
            self.sock.sendall(msg)
            if _exact(self.sock, MESSAGE)[:8] != msg[:8]:
                raise ConnectionError("control handshake out of step")

    def close(self) -> None:
        for s in [*self.peers, *([self.sock] if self.sock else [])]:
            try:
                s.close()
            except OSError:
                pass
        self.peers, self.sock = [], None
