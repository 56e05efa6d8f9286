"""The workloads a scenario can name: their parameters (validated, scaled), default rank hosts,
metrics, and the rank-side object that measures one repetition.

A rank-side workload lives in a long-lived rank process (harness.runner.rank_agent) with the
torch.distributed group already up: `setup(point)` once per sweep point, `measure(warmups, iters)`
once per repetition, returning metrics that include `step_time_s` (the slowest rank's mean step).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import SpecError
from workloads.busbw import busbw_factor


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectiveParams(_Params):
    backend: Literal["gloo", "verbs", "nccl"] = "gloo"
    op: Literal["all_reduce", "all_gather", "reduce_scatter", "broadcast"] = "all_reduce"
    size: int = Field(default=1 << 20, description="bytes per step at full scale (divided by the scale factor)")
    dtype: Literal["float32", "bfloat16", "float16", "int64"] = "float32"
    algo: Literal["flat", "hierarchical"] = "flat"
    iters: int = Field(default=5, ge=1, description="collectives per repetition")

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v):
        from netem.units import parse_size
        n = parse_size(v) if isinstance(v, str) else int(v)
        if n <= 0:
            raise ValueError("size must be > 0 bytes")
        return n


class Workload:
    kind = ""
    params_model: type[_Params] = _Params
    metrics: tuple[str, ...] = ()
    needs_rdma = False

    @classmethod
    def params(cls, spec, scale: float = 1.0) -> _Params:
        try:
            return cls.params_model.model_validate(spec.params)
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = ".".join(str(x) for x in e["loc"])
            msg = "unknown parameter" if e["type"] == "extra_forbidden" else e["msg"]
            raise SpecError("", f"params.{loc}", e.get("input"), msg) from None

    @classmethod
    def hosts(cls, spec, topo) -> list[str]:
        if spec.hosts:
            return list(spec.hosts)
        rdma = cls.needs_rdma_for(spec)
        return [h.name for h in topo.hosts() if h.rdma or not rdma]

    @classmethod
    def needs_rdma_for(cls, spec) -> bool:
        return cls.needs_rdma

    @classmethod
    def validate(cls, spec, topo, scale: float) -> None:
        cls.params(spec, scale)
        hosts = cls.hosts(spec, topo)
        names = {h.name: h for h in topo.hosts()}
        for i, h in enumerate(hosts):
            if h not in names:
                raise SpecError("", f"hosts[{i}]", h, f"not a host of {topo.name} (hosts: {', '.join(names)})")
            if cls.needs_rdma_for(spec) and not names[h].rdma:
                raise SpecError("", f"hosts[{i}]", h, "this workload uses RDMA: the host needs rdma: true")
        if len(hosts) < 2:
            raise SpecError("", "hosts", hosts, "needs at least two rank hosts")
        if len(set(hosts)) != len(hosts):
            raise SpecError("", "hosts", hosts, "a host appears twice")


class Collective(Workload):
    """One collective per step (nccl-tests semantics: busbw with nccl-tests' factors)."""

    kind = "collective"
    params_model = CollectiveParams
    metrics = ("busbw_gbs", "algbw_gbs", "bytes")

    @classmethod
    def needs_rdma_for(cls, spec) -> bool:
        return spec.params.get("backend") == "verbs"

    @classmethod
    def backend(cls, spec) -> str:
        return spec.params.get("backend", "gloo")


WORKLOADS: dict[str, type[Workload]] = {Collective.kind: Collective}


def workload_metrics(kinds: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for k in kinds:
        out += [m for m in WORKLOADS[k].metrics if m not in out]
    return tuple(out)


# -- rank side -------------------------------------------------------------------------------
_SITE_GROUPS: dict = {}


def site_groups(sites: list[str], backend: str):
    """One set of site groups per rank process: new groups are collective and hold QPs or sockets,
    so every sweep point reuses the first."""
    from harness.dist.algorithms import SiteGroups
    key = (tuple(sites), backend)
    if key not in _SITE_GROUPS:
        _SITE_GROUPS[key] = SiteGroups(list(sites), backend=backend)
    return _SITE_GROUPS[key]

class CollectiveRank:
    """Runs inside a rank process with the group up."""

    def __init__(self, params: dict[str, Any], scale: float, sites: list[str] | None):
        import torch
        import torch.distributed as dist
        self.p = CollectiveParams.model_validate(params)
        self.torch, self.dist = torch, dist
        dtype = getattr(torch, self.p.dtype)
        esize = torch.empty(0, dtype=dtype).element_size()
        n = dist.get_world_size()
        count = max(n, int(self.p.size / scale) // esize)
        count -= count % n
        self.nbytes = count * esize
        self.buf = torch.ones(count, dtype=dtype)
        self.out = torch.empty(count * (n if self.p.op == "all_gather" else 1), dtype=dtype)
        self.groups = site_groups(sites, self.p.backend) if self.p.algo == "hierarchical" else None

    def _once(self) -> None:
        from harness.dist import algorithms as alg
        p, n = self.p, self.dist.get_world_size()
        if p.op == "all_reduce":
            alg.all_reduce(self.buf, algo=p.algo, groups=self.groups)
        elif p.op == "all_gather":
            per = self.buf.numel() // n
            alg.all_gather_into_tensor(self.out[:per * n], self.buf[:per], algo=p.algo, groups=self.groups)
        elif p.op == "reduce_scatter":
            per = self.buf.numel() // n
            alg.reduce_scatter_tensor(self.out[:per], self.buf, algo=p.algo, groups=self.groups)
        else:
            alg.broadcast(self.buf, 0, algo=p.algo, groups=self.groups)

    def measure(self, warmups: int, iters: int | None = None) -> dict:
        iters = iters or self.p.iters
        for _ in range(warmups):
            self._once()
        self.dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            self._once()
        mean = (time.perf_counter() - t0) / iters
        slowest = self.torch.tensor([mean], dtype=self.torch.float64)
        self.dist.all_reduce(slowest, op=self.dist.ReduceOp.MAX)
        step = float(slowest.item())
        algbw = self.nbytes / step / 1e9
        return {"step_time_s": step, "algbw_gbs": algbw,
                "busbw_gbs": algbw * busbw_factor(self.p.op, self.dist.get_world_size()), "bytes": self.nbytes}


RANK_WORKLOADS = {"collective": CollectiveRank}
