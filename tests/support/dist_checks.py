"""One rank of the verbs-vs-gloo checks, started in a lab host by `metrolab.harness.kernel.launch.run_ranks`.

    python -m tests.support.dist_checks collectives|ddp|dead [--timeout S]

Prints one JSON line. Inputs are seeded per rank and hold small integers (also in the float
types), so every reduction is exact in any order: verbs and gloo must agree bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

import metrolab.harness.dist.verbs_pg  # noqa: F401  (registers "verbs")

DTYPES = [torch.float32, torch.bfloat16, torch.int64]
SIZES = [1, 7, 1000, 40_003]  # odd, not divisible by 2 or 3; the largest spans several 64 KiB slots
R = dist.ReduceOp


def data(rank: int, n: int, dtype: torch.dtype, case: int, lo: int = -4, hi: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(rank * 100_003 + case)
    return torch.randint(lo, hi, (n,), generator=g).to(dtype)


def _same(ref: list, got: list) -> bool:
    return len(ref) == len(got) and all(torch.equal(a, b) for a, b in zip(ref, got))


def both(fn, verbs, results: list, name: str, oracle=None) -> None:
    """Run fn(group) on gloo (the default group) and on verbs; record whether they agree, and agree
    with `oracle()` (the result computed here from every rank's seeded inputs) where one is given.
    Where gloo lacks a (dtype, op) pair the oracle alone is the reference; without one the case is
    recorded as unchecked (equal False), never as agreeing."""
    try:
        ref = fn(None)
    except (RuntimeError, ValueError) as exc:  # gloo lacks a few (dtype, op) pairs
        results.append({"case": name, "gloo": f"unsupported: {str(exc).splitlines()[0][:120]}"})
        ref = None
    got = fn(verbs)
    expected = oracle() if oracle is not None else None
    checks = [x for x in (ref, expected) if x is not None]
    ok = bool(checks) and all(_same(x, got) for x in checks)
    results.append({"case": name, "equal": ok, "checked_against": ["gloo"] * (ref is not None)
                    + ["oracle"] * (expected is not None)}
                   | ({} if ok else {"gloo": str(ref)[:200], "oracle": str(expected)[:200], "verbs": str(got)[:200]}))


def _reduce(op, tensors: list) -> torch.Tensor:
    """What an all-reduce of these ranks' tensors must give, computed in one place."""
    out = tensors[0].clone()
    for t in tensors[1:]:
        if op == R.SUM:
            out = out + t
        elif op == R.PRODUCT:
            out = out * t
        elif op == R.MIN:
            out = torch.minimum(out, t)
        elif op == R.MAX:
            out = torch.maximum(out, t)
        else:
            raise ValueError(op)
    return out.to(tensors[0].dtype)


def collectives(verbs) -> list:
    rank, n = dist.get_rank(), dist.get_world_size()
    out: list = []
    case = 0
    for dtype in DTYPES:
        for size in SIZES:
            for op in (R.SUM, R.PRODUCT, R.MIN, R.MAX):
                case += 1
                lo, hi = (-2, 3) if op == R.PRODUCT else (-4, 5)

                def ar(g, c=case, s=size, d=dtype, o=op, lo=lo, hi=hi):
                    t = data(rank, s, d, c, lo, hi)
                    dist.all_reduce(t, op=o, group=g)
                    return [t]

                def ar_oracle(c=case, s=size, d=dtype, o=op, lo=lo, hi=hi):
                    return [_reduce(o, [data(r, s, d, c, lo, hi) for r in range(n)])]
                both(ar, verbs, out, f"all_reduce {op} {dtype} {size}", ar_oracle)
            case += 1

            def ag(g, c=case, s=size, d=dtype):
                t = data(rank, s, d, c)
                outs = [torch.empty_like(t) for _ in range(n)]
                dist.all_gather(outs, t, group=g)
                flat = torch.empty(n * s, dtype=d)
                dist.all_gather_into_tensor(flat, t, group=g)
                return outs + [flat]
            both(ag, verbs, out, f"all_gather {dtype} {size}")

            def rs(g, c=case, s=size, d=dtype):
                ins = [data(rank, s, d, c + 7 * j) for j in range(n)]
                o1 = torch.empty(s, dtype=d)
                dist.reduce_scatter(o1, ins, group=g)
                o2 = torch.empty(s, dtype=d)
                dist.reduce_scatter_tensor(o2, torch.cat(ins), group=g)
                return [o1, o2]
            both(rs, verbs, out, f"reduce_scatter {dtype} {size}")

            def bc(g, c=case, s=size, d=dtype):
                res = []
                for root in (0, n - 1):
                    t = data(rank, s, d, c)
                    dist.broadcast(t, src=root, group=g)
                    res.append(t)
                return res
            both(bc, verbs, out, f"broadcast {dtype} {size}")

            def rd(g, c=case, s=size, d=dtype):
                t = data(rank, s, d, c)
                dist.reduce(t, dst=1, group=g)
                return [t] if rank == 1 else []
            both(rd, verbs, out, f"reduce {dtype} {size}")

            def a2a(g, c=case, s=size, d=dtype):
                splits = [(s + j) % 5 + 1 for j in range(n)]      # uneven blocks, agreed by all
                t = data(rank, sum(splits), d, c)
                o = torch.empty(sum(splits), dtype=d)
                # rank r sends splits[j] to j and receives splits[r] from every rank
                recv = [splits[rank]] * n
                o = torch.empty(sum(recv), dtype=d)
                dist.all_to_all_single(o, t, output_split_sizes=recv, input_split_sizes=splits, group=g)
                outs = [torch.empty(s, dtype=d) for _ in range(n)]
                dist.all_to_all(outs, [data(rank, s, d, c + j) for j in range(n)], group=g)
                return [o] + outs
            both(a2a, verbs, out, f"all_to_all {dtype} {size}")

            def sr(g, c=case, s=size, d=dtype):
                t = data(rank, s, d, c)
                got = torch.empty_like(t)
                right, left = (rank + 1) % n, (rank - 1) % n
                if rank % 2 == 0:
                    dist.send(t, right, group=g)
                    dist.recv(got, left, group=g)
                else:
                    dist.recv(got, left, group=g)
                    dist.send(t, right, group=g)
                return [got]
            both(sr, verbs, out, f"send/recv {dtype} {size}")
    # AVG: gloo has none; the reference is SUM / n
    t = data(rank, 1001, torch.float32, 999)
    ref = t.clone()
    dist.all_reduce(ref)
    dist.all_reduce(t, op=R.AVG, group=verbs)
    out.append({"case": "all_reduce AVG float32 1001 (vs gloo SUM / n)", "equal": torch.equal(t, ref / n)})
    # a barrier holds every rank until the last arrives: the last rank comes 0.5 s late, and rank 0
    # must have waited for it (a barrier that returned at once would pass any completion check)
    late = 0.5
    if rank == n - 1:
        time.sleep(late)
    t0 = time.monotonic()
    dist.barrier(group=verbs)
    waited = time.monotonic() - t0
    out.append({"case": "barrier", "equal": rank == n - 1 or waited >= 0.8 * late, "waited_s": round(waited, 3)})
    # an async allreduce's future carries the result
    t = data(rank, 513, torch.float32, 1234)
    ref = t.clone()
    dist.all_reduce(ref)
    fut = dist.all_reduce(t, group=verbs, async_op=True).get_future()
    out.append({"case": "future", "equal": torch.equal(fut.wait()[0], ref)})
    return out


def ddp(verbs, steps: int = 4) -> dict:
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    finals = {}
    for name, group in (("gloo", None), ("verbs", verbs)):
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
        model.load_state_dict(base.state_dict())
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, process_group=group, bucket_cap_mb=0.001)
        opt = torch.optim.SGD(ddp_model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(dist.get_rank())
        for _ in range(steps):
            x = torch.randn(8, 16, generator=g)
            loss = ddp_model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        finals[name] = [p.detach().clone() for p in model.parameters()]
    diff = max((a - b).abs().max().item() for a, b in zip(finals["gloo"], finals["verbs"]))
    return {"steps": steps, "max_abs_diff": diff, "params": sum(p.numel() for p in finals["verbs"])}


def dead(verbs, timeout: float) -> dict:
    rank = dist.get_rank()
    t = torch.ones(1000)
    dist.all_reduce(t, group=verbs)  # everyone alive once
    if rank == dist.get_world_size() - 1:
        os._exit(17)  # dies before the next collective; no goodbye
    t0 = time.monotonic()
    try:
        dist.all_reduce(torch.ones(100_000), group=verbs)
        return {"error": None, "seconds": time.monotonic() - t0}
    except Exception as exc:  # noqa: BLE001 — the error is the result
        return {"error": str(exc), "type": type(exc).__name__, "seconds": time.monotonic() - t0}


def hierarchical(backends: list[str], sites: list[str]) -> list:
    """Flat and hierarchical algorithms agree, per backend and per collective."""
    from metrolab.harness.dist import algorithms as alg
    rank, n = dist.get_rank(), dist.get_world_size()
    out = []
    for backend in backends:
        world = None if backend == "gloo" else dist.new_group(backend=backend)
        groups = alg.SiteGroups(sites, backend=backend)
        for dtype in (torch.float32, torch.int64):
            for size in (5, 4099):
                for op in (R.SUM, R.MAX, R.PRODUCT):
                    res = {}
                    for algo in alg.ALGORITHMS:
                        t = data(rank, size, dtype, size, -2, 3)
                        alg.all_reduce(t, op, algo, groups, group=world)
                        res[algo] = t
                    out.append({"case": f"{backend} all_reduce {op} {dtype} {size}",
                                "equal": torch.equal(res["flat"], res["hierarchical"])})
                res = {}
                for algo in alg.ALGORITHMS:
                    o = torch.empty(n * size, dtype=dtype)
                    alg.all_gather_into_tensor(o, data(rank, size, dtype, 3), algo, groups, group=world)
                    res[algo] = o
                out.append({"case": f"{backend} all_gather {dtype} {size}",
                            "equal": torch.equal(res["flat"], res["hierarchical"])})
                res = {}
                for algo in alg.ALGORITHMS:
                    o = torch.empty(size, dtype=dtype)
                    alg.reduce_scatter_tensor(o, data(rank, n * size, dtype, 5), R.SUM, algo, groups, group=world)
                    res[algo] = o
                out.append({"case": f"{backend} reduce_scatter {dtype} {size}",
                            "equal": torch.equal(res["flat"], res["hierarchical"])})
                for src in range(n):
                    res = {}
                    for algo in alg.ALGORITHMS:
                        t = data(rank, size, dtype, 11)
                        alg.broadcast(t, src, algo, groups, group=world)
                        res[algo] = t
                    out.append({"case": f"{backend} broadcast from {src} {dtype} {size}",
                                "equal": torch.equal(res["flat"], res["hierarchical"])})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("collectives", "ddp", "dead", "hierarchical"))
    ap.add_argument("--backends", default="gloo,verbs")
    ap.add_argument("--sites", help="site of each rank, comma-separated (hierarchical)")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    dist.init_process_group("gloo", timeout=timedelta(seconds=args.timeout))
    if args.mode == "hierarchical":
        res = hierarchical(args.backends.split(","), args.sites.split(","))
        print(json.dumps({"rank": dist.get_rank(), "checks": res}))
        dist.destroy_process_group()
        return 0
    verbs = dist.new_group(backend="verbs", timeout=timedelta(seconds=args.timeout))
    if args.mode == "collectives":
        res = collectives(verbs)
        print(json.dumps({"rank": dist.get_rank(), "checks": res}))
    elif args.mode == "ddp":
        print(json.dumps({"rank": dist.get_rank()} | ddp(verbs)))
    else:
        print(json.dumps({"rank": dist.get_rank()} | dead(verbs, args.timeout)))
        sys.stdout.flush()
        os._exit(0)  # the group cannot be torn down politely with a dead member
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
