"""The collectives, one record each, like nccl-tests' `testColl` table: how many elements a size
means, the busbw factor, the data each rank starts with, the operation, the result every rank must
end with, and whether torch.distributed has an in-place form. The benchmark
(workloads/collectives.py) and the scenario workload (workloads/registry.py) both run from it.

Data are small integers that depend on rank and index, so every reduction is exact in any dtype.
The torch-side functions take a `Ctx` (the process group and buffers' dtype and device); the
table itself imports nothing heavy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

State = dict[str, Any]


@dataclass
class Ctx:
    """What a collective runs with: torch, the group, the element type and device, the algorithm."""

    torch: Any
    dist: Any
    rank: int
    n: int
    dtype: Any
    device: Any
    algo: str = "flat"
    groups: Any = None

    def fill(self, count: int, rank: int, salt: int = 0):
        idx = self.torch.arange(count, device=self.device)
        return ((idx * 7 + rank * 3 + salt) % 5 - 2).to(self.dtype)

    def empty(self, count: int):
        return self.torch.empty(count, dtype=self.dtype, device=self.device)


@dataclass(frozen=True)
class Coll:
    name: str
    factor: Callable[[int], float]          # busbw = algbw x factor(nranks) (nccl-tests PERFORMANCE.md)
    split: bool                              # the buffer is split in nranks parts (count a multiple of n)
    in_place: bool                           # torch.distributed has an in-place form
    hierarchical: bool                       # metrolab.harness.dist.algorithms has a by-site form
    init: Callable[[Ctx, int, bool], State]  # (ctx, count, in_place) -> the rank's buffers
    run: Callable[[Ctx, State], None]
    expected: Callable[[Ctx, State, int], tuple[Any, Any]]  # (ctx, state, count) -> (actual, expected)

    def count(self, size_bytes: int, nranks: int, esize: int) -> int:
        """Elements per rank buffer for `size_bytes` in all (whole elements; for the split
        collectives a multiple of nranks, at least one per rank)."""
        elems = size_bytes // esize
        if self.split:
            elems -= elems % nranks
            return max(elems, nranks)
        return max(elems, 1)


@functools.cache
def _alg():
    """metrolab.harness.dist.algorithms, imported on first use (it imports torch), then from the cache: the
    collectives call this on every step."""
    from metrolab.harness.dist import algorithms  # deferred: imports torch, rank side only
    return algorithms


# -- all_gather: each rank's slice gathered everywhere ------------------------------------------
def _ag_init(c: Ctx, count: int, in_place: bool) -> State:
    per = count // c.n
    out = c.empty(per * c.n)
    inp = out[c.rank * per:(c.rank + 1) * per] if in_place else c.empty(per)
    inp.copy_(c.fill(per, c.rank))
    return {"inp": inp, "out": out, "per": per}


def _ag_run(c: Ctx, s: State) -> None:
    _alg().all_gather_into_tensor(s["out"], s["inp"], algo=c.algo, groups=c.groups)


def _ag_expected(c: Ctx, s: State, count: int):
    return s["out"], c.torch.cat([c.fill(s["per"], k) for k in range(c.n)])


# -- reduce_scatter: the sum, each rank keeps its slice -----------------------------------------
def _rs_init(c: Ctx, count: int, in_place: bool) -> State:
    per = count // c.n
    inp = c.fill(per * c.n, c.rank)
    return {"inp": inp, "out": inp[c.rank * per:(c.rank + 1) * per] if in_place else c.empty(per), "per": per}


def _rs_run(c: Ctx, s: State) -> None:
    _alg().reduce_scatter_tensor(s["out"], s["inp"], algo=c.algo, groups=c.groups)


def _rs_expected(c: Ctx, s: State, count: int):
    per = s["per"]
    return s["out"], sum(c.fill(per * c.n, k) for k in range(c.n))[c.rank * per:(c.rank + 1) * per]


# -- all_reduce, broadcast, reduce: in-place only in torch (out-of-place copies first) -----------
def _inplace_init(c: Ctx, count: int, in_place: bool) -> State:
    inp = c.fill(count, c.rank)
    return {"inp": inp, "out": inp if in_place else c.torch.empty_like(inp), "in_place": in_place}


def _copy_then(op: Callable[[Ctx, State], None]) -> Callable[[Ctx, State], None]:
    def run(c: Ctx, s: State) -> None:
        if not s["in_place"]:
            s["out"].copy_(s["inp"])
        op(c, s)
    return run


def _sum_of_ranks(c: Ctx, s: State, count: int):
    return s["out"], sum(c.fill(count, k) for k in range(c.n))


def _reduce_expected(c: Ctx, s: State, count: int):
    if c.rank != 0:
        return s["out"][:0], s["out"][:0]  # only the root's result is defined
    return _sum_of_ranks(c, s, count)


# -- all_to_all and sendrecv ----------------------------------------------------------------------
def _a2a_init(c: Ctx, count: int, in_place: bool) -> State:
    per = count // c.n
    return {"inp": c.fill(per * c.n, c.rank), "out": c.empty(per * c.n), "per": per}


def _a2a_expected(c: Ctx, s: State, count: int):
    per = s["per"]
    return s["out"], c.torch.cat([c.fill(per * c.n, k)[c.rank * per:(c.rank + 1) * per] for k in range(c.n)])


def _sr_init(c: Ctx, count: int, in_place: bool) -> State:
    return {"inp": c.fill(count, c.rank), "out": c.empty(count)}


def _sr_run(c: Ctx, s: State) -> None:
    """A ring: each rank sends to the right while receiving from the left."""
    reqs = [c.dist.isend(s["inp"], (c.rank + 1) % c.n), c.dist.irecv(s["out"], (c.rank - 1) % c.n)]
    for q in reqs:
        q.wait()


COLLS: dict[str, Coll] = {c.name: c for c in (
    Coll("all_reduce", lambda n: 2 * (n - 1) / n, False, True, True, _inplace_init,
         _copy_then(lambda c, s: _alg().all_reduce(s["out"], algo=c.algo, groups=c.groups)), _sum_of_ranks),
    Coll("all_gather", lambda n: (n - 1) / n, True, True, True, _ag_init, _ag_run, _ag_expected),
    Coll("reduce_scatter", lambda n: (n - 1) / n, True, True, True, _rs_init, _rs_run, _rs_expected),
    Coll("broadcast", lambda n: 1.0, False, True, True, _inplace_init,
         _copy_then(lambda c, s: _alg().broadcast(s["out"], 0, algo=c.algo, groups=c.groups)),
         lambda c, s, count: (s["out"], c.fill(count, 0))),
    Coll("reduce", lambda n: 1.0, False, True, False, _inplace_init,
         _copy_then(lambda c, s: c.dist.reduce(s["out"], dst=0)), _reduce_expected),
    Coll("all_to_all", lambda n: (n - 1) / n, True, False, False, _a2a_init,
         lambda c, s: c.dist.all_to_all_single(s["out"], s["inp"]), _a2a_expected),
    Coll("sendrecv", lambda n: 1.0, False, False, False, _sr_init, _sr_run,
         lambda c, s, count: (s["out"], c.fill(count, (c.rank - 1) % c.n))),
)}
OPS = tuple(COLLS)
HIERARCHICAL_OPS = tuple(name for name, c in COLLS.items() if c.hierarchical)


def coll(name: str) -> Coll:
    try:
        return COLLS[name]
    except KeyError:
        raise ValueError(f"unknown collective {name!r} (choose from {', '.join(OPS)})") from None
