"""nccl-tests' bandwidth arithmetic (PERFORMANCE.md), as pure functions.

algbw = S / t, with S the operation's size in bytes as nccl-tests counts it (the full buffer:
AllGather's output, ReduceScatter's input, AllToAll's whole send buffer); busbw = algbw x factor,
the factor making busbw comparable to the link's bandwidth whatever the rank count. The factors
and buffer shapes are the collectives table's (workloads/colls.py).
"""

from __future__ import annotations

from metrolab.workloads.colls import coll


def busbw_factor(op: str, nranks: int) -> float:
    if nranks < 1:
        raise ValueError(f"nranks must be >= 1, got {nranks}")
    return coll(op).factor(nranks)


def algbw_gbs(size_bytes: int, seconds: float) -> float:
    """Algorithm bandwidth in GB/s (1e9 bytes per second), as nccl-tests prints it."""
    return size_bytes / seconds / 1e9 if seconds > 0 else float("inf")


def busbw_gbs(op: str, nranks: int, size_bytes: int, seconds: float) -> float:
    return algbw_gbs(size_bytes, seconds) * busbw_factor(op, nranks)


def sizes(begin: int, end: int, factor: float = 2.0, step: int = 0) -> list[int]:
    """nccl-tests' -b/-e/-f (or -i step) sweep."""
    if begin <= 0 or end < begin:
        raise ValueError(f"size sweep needs 0 < begin <= end, got {begin}..{end}")
    if step:
        return list(range(begin, end + 1, step))
    if factor <= 1:
        raise ValueError(f"size factor must be > 1, got {factor}")
    out: list[int] = []
    s: float = begin
    while s <= end:
        out.append(int(s))
        s *= factor
    return out


def count_for(op: str, size_bytes: int, nranks: int, esize: int) -> int:
    """Elements per rank buffer for an op of `size_bytes` in all (workloads/colls.py)."""
    return coll(op).count(size_bytes, nranks, esize)
