"""Storage–compute disaggregated training: a storage host serves sample batches from its memory,
each compute rank pulls its next batch into registered memory by RDMA READ (or over TCP) with
`prefetch` pulls in flight, and trains on it (the training-step emulator's compute and gradient
buckets, among the compute ranks only). Samples never touch a disk: the pool and the receive ring
are memory, every batch is checked against the storage host's CRC-32, and each rank reports what
it wrote to storage while measuring (metrolab.workloads.diskguard).

Per repetition (the slowest compute rank): step time, stall time (waiting for a batch), compute,
pull bandwidth, bad batches, disk writes (largest over every rank, the storage host included).
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from metrolab.harness import settings
from metrolab.harness.errors import SpecError
from metrolab.workloads.base import Size, Workload, _Params, cached_group, params_error, slowest
from metrolab.workloads.diskguard import DiskWrites
from metrolab.workloads.training_step import TrainingParams, TrainingStepRank

PORT_BASE = 29950


class DisaggParams(_Params):
    backend: Literal["gloo", "verbs"] = "gloo"
    transport: Literal["rdma", "tcp"] = "rdma"
    storage: str | None = Field(default=None, description="the storage host (default: the first rank host of "
                                                          "a storage or enterprise site)")
    batch_size: Size = Field(default=64 << 20, description="bytes per batch at full scale")
    pool: int = Field(default=8, ge=1, description="batches the storage host holds in memory")
    prefetch: int = Field(default=2, ge=1, le=16, description="pulls in flight per compute rank")
    verify: bool = True
    model: str = "gpt2-small"
    device: str = "h100"
    mfu: float = Field(default=0.4, gt=0, le=1)
    compute_scale: float = Field(default=1.0, gt=0)
    sync_gradients: bool = True
    bucket_size: Size = Field(default=25 << 20)
    iters: int = Field(default=4, ge=1, description="steps per repetition")

    @field_validator("prefetch", mode="before")
    @classmethod
    def _prefetch(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError(f"prefetch depth {v}: at least one pull must be in flight (>= 1)")
        return v

    def training(self) -> dict:
        """The training-step emulator's parameters for the compute ranks."""
        return {"backend": self.backend, "model": self.model, "device": self.device, "mfu": self.mfu,
                "compute_scale": self.compute_scale, "bucket_size": self.bucket_size, "iters": self.iters}


def storage_host(p: DisaggParams, hosts: list[str], topo) -> str:
    if p.storage:
        return p.storage
    for h in hosts:
        if topo.nodes[h].role in ("storage", "enterprise"):  # a host's role is its site's kind
            return h
    return hosts[0]


class Disaggregated(Workload):
    """Compute ranks pull sample batches from a storage host's memory while they train."""

    rank_side = "DisaggregatedRank"
    kind = "disaggregated-training"
    params_model = DisaggParams
    metrics = ("stall_s", "compute_s", "pull_gbs", "bad_batches", "disk_write_bytes", "batch_bytes")

    @classmethod
    def needs_rdma_for(cls, spec) -> bool:
        return spec.params.get("transport", "rdma") == "rdma" or spec.params.get("backend") == "verbs"

    @classmethod
    def resolve(cls, params: dict, hosts: list[str], topo) -> dict:
        p = DisaggParams.model_validate(params)
        return {**params, "storage": storage_host(p, hosts, topo)}

    @classmethod
    def validate(cls, spec, topo, scale: float) -> None:
        super().validate(spec, topo, scale)
        p = cls.params(spec, scale)
        try:
            TrainingParams.model_validate(p.training())
        except ValidationError as exc:
            raise params_error(exc) from None
        hosts = cls.hosts(spec, topo)
        if p.storage is not None and p.storage not in hosts:
            raise SpecError("", "params.storage", p.storage, f"must be one of the rank hosts ({', '.join(hosts)})")
        if len(hosts) < 2:
            raise SpecError("", "hosts", hosts, "needs a storage host and at least one compute host")
        if int(p.batch_size / scale) < 1:
            raise SpecError("", "params.batch_size", p.batch_size, f"is less than one byte at scale {scale:g}")


# -- rank side -------------------------------------------------------------------------------
_SETUPS = [0]


class DisaggregatedRank:
    def __init__(self, params: dict[str, Any], scale: float, sites: list[str] | None, hosts=None, **_):
        import torch.distributed as dist  # deferred: torch (40 s under TCG) on the rank side only

        from metrolab.workloads.sample_store import (  # deferred: imports torch, rank side only
            BatchPuller,
            StorageServer,
            make_pool,
        )
        self.dist = dist
        self.p = p = DisaggParams.model_validate(params)
        _SETUPS[0] += 1  # every rank sets up the same points in the same order: a shared key prefix
        prefix = f"disagg/{_SETUPS[0]}"
        me, world = dist.get_rank(), dist.get_world_size()
        self.storage_rank = hosts.index(p.storage)  # resolved by the runner (Disaggregated.resolve)
        self.compute_ranks = [r for r in range(world) if r != self.storage_rank]
        self.B = max(1, int(p.batch_size / scale))
        self.step_no = 0
        self.warm_bad = 0
        self.server: Any = None
        self.puller: Any = None     # a BatchPuller on the compute ranks
        self.engine: Any = None     # a TrainingStepRank on the compute ranks
        store = dist.distributed_c10d._get_default_store()
        timeout = 120.0
        if me == self.storage_rank:
            self.pool, crcs = make_pool(p.pool, self.B)
            store.set(f"{prefix}/crcs", json.dumps(crcs))
            self.server = StorageServer(store, prefix, self.compute_ranks, p.transport, self.pool, self.B,
                                        (settings.get("METROLAB_RDMA_IP") or "0.0.0.0"), PORT_BASE + _SETUPS[0] % 40,
                                        timeout)
        else:
            self.crcs = json.loads(store.get(f"{prefix}/crcs"))
            self.me_c = self.compute_ranks.index(me)
            self.puller = BatchPuller(store, prefix, me, p.transport, self.B, p.prefetch, timeout)
        # the compute ranks' own group for gradients (collective to create: every rank joins)
        group = cached_group(("compute", tuple(self.compute_ranks), p.backend),
                             lambda: dist.new_group(self.compute_ranks, backend=p.backend))
        if me != self.storage_rank:
            self.engine = TrainingStepRank(p.training(), scale, None, group=group, world=len(self.compute_ranks),
                                           sync=p.sync_gradients)
            for _k in range(p.prefetch):  # (`_` is **kwargs here)
                self._request_next()

    def _batch_index(self, step: int) -> int:
        return (step * len(self.compute_ranks) + self.me_c) % self.p.pool

    def _request_next(self) -> None:
        k = self.step_no + len(self.puller.inflight)
        self.puller.request(k % self.p.prefetch, self._batch_index(k))

    def _train_step(self) -> tuple[float, float, int]:
        """Wait for the next batch (stall), check it, refill its slot, train; (stall, compute, bad)."""
        t0 = time.perf_counter()
        slot, idx = self.puller.wait()
        stall = time.perf_counter() - t0
        bad = 0
        if self.p.verify and zlib.crc32(self.puller.slot_view(slot).numpy()) != self.crcs[idx]:
            bad = 1
        # the batch has gone to the accelerator: its slot takes the pull of a later step
        self.step_no += 1
        self._request_next()
        compute = self.engine.step()
        return stall, compute, bad

    def warm(self, steps: int) -> None:
        """Steps whose times are not measured; their batches are still checked (counted at the next
        measurement)."""
        if self.engine is not None:
            for _ in range(steps):
                self.warm_bad += self._train_step()[2]

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        iters = iters or self.p.iters
        guard = DiskWrites()
        stall = compute = 0.0
        self.warm(warmups)
        bad, self.warm_bad = self.warm_bad, 0
        self.dist.barrier()
        t0 = time.perf_counter()
        if self.engine is not None:
            for _ in range(iters):
                s, c, b = self._train_step()
                stall, compute, bad = stall + s, compute + c, bad + b
        wall = time.perf_counter() - t0
        written, files = guard.result()
        is_compute = self.engine is not None
        mine = {"step_time_s": wall / iters if is_compute else 0.0, "stall_s": stall / iters,
                "compute_s": compute / iters, "bad_batches": float(bad),
                "disk_write_bytes": float(written + (1 << 40 if files else 0)),
                # the slowest puller has the lowest bandwidth: reduce its negative with MAX
                "neg_pull_gbs": -(iters * self.B / wall / 1e9) if is_compute else -1e18}
        if files:
            print(f"files opened for writing while pulling: {files}", file=sys.stderr)
        m = slowest(mine)
        return {"step_time_s": m["step_time_s"], "stall_s": m["stall_s"], "compute_s": m["compute_s"],
                "bad_batches": m["bad_batches"], "disk_write_bytes": m["disk_write_bytes"],
                "pull_gbs": -m["neg_pull_gbs"], "batch_bytes": self.B}

    def close(self, final: bool = False) -> None:
        for part in (self.puller, self.engine):
            if part is not None:
                part.close()
        if not final:  # between points every rank closes together; at exit they are told one by one
            self.dist.barrier()  # no storage memory is freed while a client may still read it
        if self.server is not None:
            self.server.close()
