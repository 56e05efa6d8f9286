"""What every workload shares: strict parameter models with located errors, rank-host selection and
validation against the topology, and the rank-side helpers (slowest-rank reduction, cached groups).

A rank-side workload lives in a long-lived rank process (metrolab.harness.runner.rank_agent) with the
torch.distributed group already up: constructed once per sweep point with the point's parameters,
`measure(warmups, iters)` once per repetition, returning metrics that include `step_time_s`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from metrolab.harness.errors import SpecError
from metrolab.netem.units import parse_size


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Workload:
    kind = ""
    params_model: type[_Params] = _Params
    metrics: tuple[str, ...] = ()
    needs_rdma = False
    logs_steps = False  # measure() returns each step's wall-clock (start, end) as `_steps` (events need it)
    path_params: tuple[str, ...] = ()  # parameters naming a file, relative to the scenario's folder
    warmup_window: int | None = None  # repetitions without a trend that end the warm-up (None: the runner's)
    rank_side = ""  # the class in the workload's module a rank process runs (metrolab.workloads.registry)

    @classmethod
    def params(cls, spec, scale: float = 1.0) -> Any:  # an instance of the workload's params_model
        try:
            return cls.params_model.model_validate(spec.params)
        except ValidationError as exc:
            raise params_error(exc) from None

    @classmethod
    def hosts(cls, spec, topo) -> list[str]:
        if spec.hosts:
            return list(spec.hosts)
        rdma = cls.needs_rdma_for(spec)
        return [h.name for h in topo.hosts() if h.rdma or not rdma]

    @classmethod
    def needs_rdma_for(cls, spec) -> bool:
        """The verbs backend needs RDMA on every rank host."""
        return cls.needs_rdma or spec.params.get("backend") == "verbs"

    @classmethod
    def resolve(cls, params: dict, hosts: list[str], topo) -> dict:
        """The parameters the ranks get, with defaults that depend on the topology filled in."""
        return params

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


class StepRank:
    """A rank side whose repetition is steps back to back: `step()` runs one and returns what the
    workload adds up (its compute time, a round's record); `timed` is the loop they share."""

    dist: Any  # torch.distributed, the group up

    def step(self) -> Any:
        raise NotImplementedError

    def warm(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def timed(self, iters: int) -> tuple[float, list[Any], list[tuple[float, float]]]:
        """Every rank starts together (a barrier), then `iters` steps: the wall time they took, each
        one's result and its wall-clock span (the runner's events are on that clock)."""
        self.dist.barrier()
        results, spans = [], []
        t0 = time.perf_counter()
        for _ in range(iters):
            start = time.time()
            results.append(self.step())
            spans.append((start, time.time()))
        return time.perf_counter() - t0, results, spans


def params_error(exc: ValidationError) -> SpecError:
    """The first error of a parameter model, located at params.FIELD (or params)."""
    e = exc.errors()[0]
    loc = ".".join(str(x) for x in e["loc"])
    msg = "unknown parameter" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
    return SpecError("", f"params.{loc}" if loc else "params", e.get("input"), msg)


def size_field(v):
    """A byte size written as 8, "64k" or "25m" (pydantic `before` validator body)."""
    n = parse_size(v) if isinstance(v, str) else int(v)
    if n <= 0:
        raise ValueError("sizes must be > 0 bytes")
    return n


Size = Annotated[int, BeforeValidator(size_field)]  # a byte-size parameter: 8, "64k", "25m"


def slowest(values: dict[str, float], group=None) -> dict[str, float]:
    """The largest value of each metric over the group's ranks (a step ends when its slowest rank does)."""
    import torch  # deferred: torch (40 s under TCG) on the rank side only
    import torch.distributed as dist
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return dict(zip(keys, t.tolist()))


_GROUPS: dict = {}


def cached_group(key, make):
    """Groups are collective to create and hold QPs or sockets: each rank process makes a given
    group once and every sweep point reuses it."""
    if key not in _GROUPS:
        _GROUPS[key] = make()
    return _GROUPS[key]


def site_groups(sites: list[str], backend: str):
    from metrolab.harness.dist.algorithms import SiteGroups  # deferred: imports torch, rank side only
    return cached_group(("sites", tuple(sites), backend), lambda: SiteGroups(list(sites), backend=backend))


def in_threads(fn: Callable[[Any], None], items: Iterable[Any]) -> None:
    """fn(item) for every item at once, a thread each; the first error is raised once all ended
    (a thread's exception would otherwise vanish with it, and its peers wait for what it never sent)."""
    errors: list[BaseException] = []

    def run(x) -> None:
        try:
            fn(x)
        except BaseException as exc:  # noqa: BLE001 — re-raised below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(x,), daemon=True) for x in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def rank_address() -> str:
    """This rank's lab address: the source address of its route to the group's master (for the
    workloads that open connections of their own beside the process group)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((os.environ["MASTER_ADDR"], 9))
        return s.getsockname()[0]
    finally:
        s.close()
