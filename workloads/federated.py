"""Federated learning (white paper §V): an aggregator and participants at several sites exchange
model parameters in rounds, encrypted end to end.

The first host aggregates; every other host is a participant. A round: the aggregator sends the
global model to every participant at once; each trains locally (modeled: `local_s` seconds slept,
times `lag_slowdown` on the `lagging` hosts) and sends its update back; the aggregator averages the
updates into the next global model and checks the average against what the participants' known
deltas imply (`aggregate_wrong`; each participant checks the global model it received too).

The exchange runs on a TCP connection per participant, outside the process group, so it can be
encrypted (`encryption`: none, aes-gcm or tls; metrolab.workloads.secure_link) and marked: the `lagging`
participants' connections carry `lag_dscp` both ways, which a policy's slice on the congested
link can weight (`slices: [{dscp: ..., guaranteed: ...}]`): priority for the participants that
would otherwise finish last. Messages carry a plaintext header (`MLFL`, kind, round, participant)
before the parameters, as a framework's envelope would: without encryption both cross the wire
as they are.

Per repetition (`rounds` rounds, means per round): round time (`step_time_s`), the slowest
download of the global model (and the lagging participants' slowest: from the round's start to
the participant's TCP acknowledging its last byte, as the aggregator reads its send queue), when
the last update arrived (from the round's start), the lag (last update in minus first update in),
the time the busiest rank spent sealing and opening
records (`crypto_s`, aes-gcm; unset for tls, whose cipher runs inside send and receive), the bytes
one round puts on the connections (framing and tags included, TLS's records not), and the checks.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from typing import Any, Literal

from pydantic import Field, field_validator

from metrolab.harness.errors import SpecError
from metrolab.workloads import profiles as pf
from metrolab.workloads.base import Size, StepRank, Workload, _Params, in_threads
from metrolab.workloads.secure_link import SecureLink, recv_exact, self_signed, tls_client_context, tls_server_context

MAGIC = b"MLFL"
HEAD = struct.Struct(">4sBII")  # magic, kind (1 global, 2 update), round, participant
GLOBAL, UPDATE = 1, 2


class FederatedParams(_Params):
    model: str = Field(default="gpt2-small", description=f"profile whose parameters are exchanged: {', '.join(pf.PROFILES)}")
    update_size: Size | None = Field(default=None, description="bytes of a model at full scale (overrides the profile's fp32 size)")
    rounds: int = Field(default=3, ge=1, description="rounds per repetition")
    local_s: float = Field(default=0.5, ge=0, description="modeled local training per round, seconds")
    encryption: Literal["none", "aes-gcm", "tls"] = "aes-gcm"
    lagging: list[str] = Field(default_factory=list, description="participants that train slower (hosts)")
    lag_slowdown: float = Field(default=1.0, gt=0, description="multiplies the lagging participants' local_s")
    lag_dscp: int | None = Field(default=None, ge=0, le=63, description="DSCP on the lagging participants' connections")
    seed: int = 0

    @field_validator("model")
    @classmethod
    def _known(cls, v):
        if v not in pf.PROFILES:
            raise ValueError(f"unknown model {v!r} ({', '.join(pf.PROFILES)})")
        return v

    def model_bytes(self, scale: float) -> int:
        """The exchanged parameters, fp32, divided by the scale factor (whole floats)."""
        full = self.update_size or int(pf.PROFILES[self.model].params * 4)
        return max(4, int(full / scale) // 4 * 4)


class Federated(Workload):
    """Rounds of encrypted parameter exchange between an aggregator and participants."""

    rank_side = "FederatedRank"
    kind = "federated"
    params_model = FederatedParams
    metrics = ("download_s", "lagging_download_s", "last_update_s", "lag_s", "crypto_s", "round_bytes", "model_bytes", "aggregate_wrong")
    logs_steps = True

    @classmethod
    def validate(cls, spec, topo, scale: float) -> None:
        super().validate(spec, topo, scale)
        p = cls.params(spec, scale)
        hosts = cls.hosts(spec, topo)
        for i, h in enumerate(p.lagging):
            if h not in hosts[1:]:
                raise SpecError("", f"params.lagging[{i}]", h,
                                f"not a participant (participants: {', '.join(hosts[1:])}; {hosts[0]} aggregates)")


# -- rank side -------------------------------------------------------------------------------
class FederatedRank(StepRank):
    def __init__(self, params: dict[str, Any], scale: float, sites=None, hosts: list[str] | None = None, **_):
        import torch  # deferred: torch (40 s under TCG) on the rank side only
        import torch.distributed as dist
        self.torch, self.dist = torch, dist
        self.p = p = FederatedParams.model_validate(params)
        self.rank, self.n = dist.get_rank(), dist.get_world_size()
        hosts = hosts or [str(i) for i in range(self.n)]
        self.lagging = {hosts.index(h) for h in p.lagging if h in hosts}
        self.count = p.model_bytes(scale) // 4
        self.model = torch.empty(self.count, dtype=torch.float32).uniform_(
            -1, 1, generator=torch.Generator().manual_seed(p.seed))
        self.round = 0
        self.links: dict[int, SecureLink] = {}
        self._connect(os.environ["MASTER_ADDR"])

    # -- connections ----------------------------------------------------------------------------
    def _tos(self, rank: int) -> int:
        return (self.p.lag_dscp << 2) if self.p.lag_dscp is not None and rank in self.lagging else 0

    def _connect(self, address: str, timeout_s: float = 600.0) -> None:
        enc = self.p.encryption
        info: list = [None, None]
        listener = None
        if self.rank == 0:
            listener = socket.create_server((address, 0), backlog=self.n)
            info[0] = listener.getsockname()[1]
            if enc == "tls":
                cert, key = self_signed(address)
                info[1] = cert
        self.dist.broadcast_object_list(info, src=0)  # the port and the certificate to pin
        port, cert_pem = info
        try:
            if self.rank == 0:
                assert listener is not None
                listener.settimeout(timeout_s)
                ctx = tls_server_context(cert_pem, key) if enc == "tls" else None
                for _ in range(self.n - 1):
                    s, _ = listener.accept()
                    s.settimeout(timeout_s)
                    peer = int.from_bytes(bytes(recv_exact(s, 4)), "big")
                    # marked before a byte of the exchange: the handshakes cross the slice too
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, self._tos(peer))
                    if ctx is not None:
                        s = ctx.wrap_socket(s, server_side=True)
                    self.links[peer] = SecureLink(s, enc, initiator=False)
            else:
                s = socket.create_connection((address, port), timeout=timeout_s)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, self._tos(self.rank))
                s.sendall(self.rank.to_bytes(4, "big"))
                if enc == "tls":
                    s = tls_client_context(cert_pem).wrap_socket(s, server_hostname=address)
                self.links[0] = SecureLink(s, enc, initiator=True)
        finally:
            if listener is not None:
                listener.close()

    # -- one round ------------------------------------------------------------------------------
    def _delta(self, participant: int, rnd: int) -> float:
        return (participant + 1) * 2.0 ** -10 * (1 + rnd % 7)

    def _message(self, kind: int, rnd: int, who: int, tensor) -> bytes:
        return HEAD.pack(MAGIC, kind, rnd, who) + tensor.numpy().tobytes()

    def _parse(self, msg: bytearray, kind: int, rnd: int, who: int):
        head = HEAD.unpack_from(msg)
        if head != (MAGIC, kind, rnd, who):
            raise ConnectionError(f"federated: expected {(MAGIC, kind, rnd, who)}, got {head}")
        return self.torch.frombuffer(msg, dtype=self.torch.float32, offset=HEAD.size, count=self.count)

    def _aggregate(self, rnd: int) -> dict:
        torch = self.torch
        parts = sorted(self.links)
        out = self._message(GLOBAL, rnd, 0, self.model)
        done: dict[int, float] = {}
        down: dict[int, float] = {}
        total = torch.zeros(self.count, dtype=torch.float64)
        lock = threading.Lock()
        t0 = time.perf_counter()

        def serve(peer: int) -> None:
            link = self.links[peer]
            link.send(out)
            link.drained()  # the model is down when the peer has it, not when the buffer took it
            down[peer] = time.perf_counter() - t0
            upd = self._parse(link.recv(), UPDATE, rnd, peer)
            with lock:
                total.add_(upd.to(torch.float64))
                done[peer] = time.perf_counter() - t0
        in_threads(serve, parts)
        new = (total / len(parts)).to(torch.float32)
        want = self.model + sum(self._delta(q, rnd) for q in parts) / len(parts)
        wrong = int((~torch.isclose(new, want, rtol=0, atol=1e-6)).sum())
        self.model = new
        end = time.perf_counter() - t0
        lag_down = [down[q] for q in parts if q in self.lagging]
        return {"round_s": end, "download_s": max(down.values()),
                "lagging_download_s": max(lag_down) if lag_down else None, "last_update_s": max(done.values()),
                "lag_s": max(done.values()) - min(done.values()), "wrong": wrong}

    def _participate(self, rnd: int) -> dict:
        link = self.links[0]
        t0 = time.perf_counter()
        glob = self._parse(link.recv(), GLOBAL, rnd, 0)
        got = time.perf_counter() - t0
        wrong = int((~self.torch.isclose(glob, self.model, rtol=0, atol=1e-6)).sum())
        slow = self.p.lag_slowdown if self.rank in self.lagging else 1.0
        time.sleep(self.p.local_s * slow)
        delta = self._delta(self.rank, rnd)
        link.send(self._message(UPDATE, rnd, self.rank, glob + delta))
        # the aggregate the aggregator will send next: the mean of every participant's delta
        self.model = glob + sum(self._delta(q, rnd) for q in range(1, self.n)) / (self.n - 1)
        return {"round_s": time.perf_counter() - t0, "download_s": got, "last_update_s": 0.0, "lag_s": 0.0,
                "wrong": wrong}

    def step(self) -> dict:
        rnd = self.round
        self.round += 1
        return self._aggregate(rnd) if self.rank == 0 else self._participate(rnd)

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        iters = iters or self.p.rounds
        self.warm(warmups)
        crypto0 = sum(link.crypto_s for link in self.links.values())
        sent0 = sum(link.sent_bytes for link in self.links.values())
        _wall, rounds, steps = self.timed(iters)
        crypto = sum(link.crypto_s for link in self.links.values()) - crypto0
        sent = sum(link.sent_bytes for link in self.links.values()) - sent0
        everyone: list = [None] * self.n
        self.dist.all_gather_object(everyone, {"rounds": rounds, "crypto_s": crypto, "sent": sent})
        agg = everyone[0]["rounds"]
        return {"step_time_s": sum(r["round_s"] for r in agg) / iters,
                "download_s": max(r["download_s"] for e in everyone for r in e["rounds"]),
                "lagging_download_s": None if agg[0]["lagging_download_s"] is None else
                sum(r["lagging_download_s"] for r in agg) / iters,
                "last_update_s": sum(r["last_update_s"] for r in agg) / iters,
                "lag_s": sum(r["lag_s"] for r in agg) / iters,
                # TLS ciphers inside send and receive: not separable from the network's time
                "crypto_s": None if self.p.encryption == "tls" else max(e["crypto_s"] for e in everyone) / iters,
                "round_bytes": sum(e["sent"] for e in everyone) / iters,
                "model_bytes": self.count * 4,
                "aggregate_wrong": sum(r["wrong"] for e in everyone for r in e["rounds"]),
                "_steps": steps if self.rank == 0 else []}

    def close(self, final: bool = False) -> None:
        for link in self.links.values():
            link.close()
        self.links = {}

