"""Collective benchmark with nccl-tests semantics, one rank per lab host.

    python -m workloads.collectives --backend verbs --ops all_reduce -b 1k -e 16m -f 2 -w 2 -n 10

Per collective and size: time (us, the slowest rank's mean over the iterations), algbw and busbw
(GB/s, nccl-tests' factors) and #wrong (elements that differ from the expected result, checked on
a separate run with fresh data), out-of-place and in-place where torch.distributed has both
forms (all_reduce, broadcast and reduce are in-place only in torch: their out-of-place column
copies into the output first, as a caller would). Backends: gloo (TCP), verbs (RoCEv2), nccl
(GPUs). Algorithms: flat (the backend's own) or hierarchical (by site, --sites).

Rank 0 prints one JSON object with every row; the others print their rank.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta

from workloads.busbw import OPS, algbw_gbs, busbw_factor, count_for, sizes

DTYPES = {"float32": "float32", "float": "float32", "bfloat16": "bfloat16", "float16": "float16",
          "float64": "float64", "int32": "int32", "int64": "int64"}
HIERARCHICAL_OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")


def parse_size(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise ValueError(f"bad size {text!r} (examples: 8, 64k, 16m)") from None


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m workloads.collectives")
    ap.add_argument("--backend", default="gloo", choices=("gloo", "verbs", "nccl"))
    ap.add_argument("--ops", default="all_reduce", help=f"comma-separated: {', '.join(OPS)}")
    ap.add_argument("-b", "--begin", default="8")
    ap.add_argument("-e", "--end", default="4m")
    ap.add_argument("-f", "--factor", type=float, default=2.0)
    ap.add_argument("-i", "--step", default="0")
    ap.add_argument("-w", "--warmup", type=int, default=2)
    ap.add_argument("-n", "--iters", type=int, default=10)
    ap.add_argument("-d", "--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--algo", default="flat", choices=("flat", "hierarchical"))
    ap.add_argument("--sites", help="site of each rank, comma-separated (hierarchical)")
    ap.add_argument("-c", "--check", type=int, default=1, help="check results (#wrong); 0 skips")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    args.op_list = [o.strip() for o in args.ops.split(",") if o.strip()]
    for o in args.op_list:
        if o not in OPS:
            ap.error(f"unknown collective {o!r} (choose from {', '.join(OPS)})")
        if args.algo == "hierarchical" and o not in HIERARCHICAL_OPS:
            ap.error(f"{o} has no hierarchical algorithm (those: {', '.join(HIERARCHICAL_OPS)})")
    if args.algo == "hierarchical" and not args.sites:
        ap.error("--algo hierarchical needs --sites (the site of each rank)")
    try:
        args.size_list = sizes(parse_size(args.begin), parse_size(args.end), args.factor, parse_size(args.step))
    except ValueError as exc:
        ap.error(str(exc))
    return args


class Bench:
    def __init__(self, args, torch, dist):
        self.args, self.torch, self.dist = args, torch, dist
        self.rank, self.n = dist.get_rank(), dist.get_world_size()
        self.dtype = getattr(torch, DTYPES[args.dtype])
        self.esize = torch.empty(0, dtype=self.dtype).element_size()
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if args.backend == "nccl" \
            else torch.device("cpu")
        self.groups = None
        if args.algo == "hierarchical":
            from harness.dist.algorithms import SiteGroups
            self.groups = SiteGroups(args.sites.split(","), backend=args.backend)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    # deterministic inputs whose reductions are exact: small integers, rank- and index-dependent
    def fill(self, count: int, rank: int, salt: int = 0):
        t = self.torch
        idx = t.arange(count, device=self.device)
        return ((idx * 7 + rank * 3 + salt) % 5 - 2).to(self.dtype)

    def _op(self, name: str, count: int, in_place: bool):
        """(prepare() -> state, run(state), expected(state) -> (actual, expected)) for one collective."""
        from harness.dist import algorithms as alg
        t, dist, r, n = self.torch, self.dist, self.rank, self.n
        algo, groups = self.args.algo, self.groups

        if name == "all_gather":
            per = count // n

            def prepare():
                out = t.empty(per * n, dtype=self.dtype, device=self.device)
                inp = out[r * per:(r + 1) * per] if in_place else t.empty(per, dtype=self.dtype, device=self.device)
                inp.copy_(self.fill(per, r))
                return {"inp": inp, "out": out}

            def run(s):
                alg.all_gather_into_tensor(s["out"], s["inp"], algo=algo, groups=groups)

            def check(s):
                return s["out"], t.cat([self.fill(per, k) for k in range(n)])
        elif name == "reduce_scatter":
            per = count // n

            def prepare():
                inp = self.fill(per * n, r)
                return {"inp": inp, "out": inp[r * per:(r + 1) * per] if in_place else
                        t.empty(per, dtype=self.dtype, device=self.device)}

            def run(s):
                alg.reduce_scatter_tensor(s["out"], s["inp"], algo=algo, groups=groups)

            def check(s):
                return s["out"], sum(self.fill(per * n, k) for k in range(n))[r * per:(r + 1) * per]
        elif name in ("all_reduce", "broadcast", "reduce"):  # in-place only in torch
            def prepare():
                inp = self.fill(count, r)
                return {"inp": inp, "out": inp if in_place else t.empty_like(inp)}

            def run(s):
                if not in_place:
                    s["out"].copy_(s["inp"])
                if name == "all_reduce":
                    alg.all_reduce(s["out"], algo=algo, groups=groups)
                elif name == "broadcast":
                    alg.broadcast(s["out"], 0, algo=algo, groups=groups)
                else:
                    dist.reduce(s["out"], dst=0)

            def check(s):
                if name == "all_reduce":
                    return s["out"], sum(self.fill(count, k) for k in range(n))
                if name == "broadcast":
                    return s["out"], self.fill(count, 0)
                if r != 0:
                    return s["out"][:0], s["out"][:0]  # only the root's result is defined
                return s["out"], sum(self.fill(count, k) for k in range(n))
        elif name == "all_to_all":
            per = count // n

            def prepare():
                return {"inp": self.fill(per * n, r), "out": t.empty(per * n, dtype=self.dtype, device=self.device)}

            def run(s):
                dist.all_to_all_single(s["out"], s["inp"])

            def check(s):
                return s["out"], t.cat([self.fill(per * n, k)[r * per:(r + 1) * per] for k in range(n)])
        else:  # sendrecv: a ring, each rank sends to the right while receiving from the left
            def prepare():
                return {"inp": self.fill(count, r), "out": t.empty(count, dtype=self.dtype, device=self.device)}

            def run(s):
                reqs = [dist.isend(s["inp"], (r + 1) % n), dist.irecv(s["out"], (r - 1) % n)]
                for q in reqs:
                    q.wait()

            def check(s):
                return s["out"], self.fill(count, (r - 1) % n)
        return prepare, run, check

    def measure(self, name: str, size: int, in_place: bool) -> dict | None:
        if in_place and name == "all_to_all":
            return None  # torch.distributed has no in-place all_to_all
        count = count_for(name, size, self.n, self.esize)
        nbytes = count * self.esize
        prepare, run, check = self._op(name, count, in_place)
        state = prepare()
        for _ in range(self.args.warmup):
            run(state)
        self.sync()
        self.dist.barrier()
        t0 = time.perf_counter()
        for _ in range(self.args.iters):
            run(state)
        self.sync()
        mean = (time.perf_counter() - t0) / max(1, self.args.iters)
        slowest = self.torch.tensor([mean], dtype=self.torch.float64, device=self.device)
        self.dist.all_reduce(slowest, op=self.dist.ReduceOp.MAX)
        seconds = slowest.item()
        wrong = None
        if self.args.check:
            state = prepare()
            run(state)
            self.sync()
            got, want = check(state)
            wrong = self.torch.tensor([int((got.to("cpu") != want.to("cpu")).sum().item())], dtype=self.torch.int64,
                                      device=self.device)
            self.dist.all_reduce(wrong)
            wrong = int(wrong.item())
        algbw = algbw_gbs(nbytes, seconds)
        return {"time_us": seconds * 1e6, "algbw_gbs": algbw, "busbw_gbs": algbw * busbw_factor(name, self.n),
                "wrong": wrong}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import torch.distributed as dist
    if args.backend == "verbs":
        import harness.dist.verbs_pg  # noqa: F401  (registers the backend)
    if args.backend == "nccl" and not torch.cuda.is_available():
        print(json.dumps({"error": "the nccl backend needs GPUs; none here"}))
        return 4
    dist.init_process_group(args.backend, timeout=timedelta(seconds=args.timeout))
    try:
        bench = Bench(args, torch, dist)
        rows = []
        for name in args.op_list:
            for size in args.size_list:
                oop = bench.measure(name, size, False)
                ip = bench.measure(name, size, True)
                count = count_for(name, size, bench.n, bench.esize)
                row = {"op": name, "size": count * bench.esize, "count": count, "type": args.dtype,
                       "backend": args.backend, "algo": args.algo, "nranks": bench.n}
                for prefix, res in (("oop", oop), ("ip", ip)):
                    for k, v in (res or {"time_us": None, "algbw_gbs": None, "busbw_gbs": None, "wrong": None}).items():
                        row[f"{prefix}_{k}"] = v
                rows.append(row)
        if bench.rank == 0:
            print(json.dumps({"backend": args.backend, "algo": args.algo, "nranks": bench.n, "dtype": args.dtype,
                              "warmup": args.warmup, "iters": args.iters, "rows": rows}))
        else:
            print(json.dumps({"rank": bench.rank}))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
