"""Collective benchmark with nccl-tests semantics, one rank per lab host.

    python -m metrolab.workloads.collectives --backend verbs --ops all_reduce -b 1k -e 16m -f 2 -w 2 -n 10

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

from metrolab.netem.units import parse_size
from metrolab.workloads.busbw import algbw_gbs, sizes
from metrolab.workloads.colls import COLLS, HIERARCHICAL_OPS, OPS, Ctx

DTYPES = {"float32": "float32", "float": "float32", "bfloat16": "bfloat16", "float16": "float16",
          "float64": "float64", "int32": "int32", "int64": "int64"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m metrolab.workloads.collectives")
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
        dtype = getattr(torch, DTYPES[args.dtype])
        self.esize = torch.empty(0, dtype=dtype).element_size()
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if args.backend == "nccl" \
            else torch.device("cpu")
        groups = None
        if args.algo == "hierarchical":
            from metrolab.harness.dist.algorithms import SiteGroups  # deferred: imports torch, rank side only
            groups = SiteGroups(args.sites.split(","), backend=args.backend)
        self.ctx = Ctx(torch, dist, self.rank, self.n, dtype, device, args.algo, groups)

    def sync(self) -> None:
        if self.ctx.device.type == "cuda":
            self.torch.cuda.synchronize()

    def measure(self, name: str, size: int, in_place: bool) -> dict | None:
        c = COLLS[name]
        if in_place and not c.in_place:
            return None  # torch.distributed has no in-place form
        count = c.count(size, self.n, self.esize)
        nbytes = count * self.esize
        state = c.init(self.ctx, count, in_place)
        for _ in range(self.args.warmup):
            c.run(self.ctx, state)
        self.sync()
        self.dist.barrier()
        t0 = time.perf_counter()
        for _ in range(self.args.iters):
            c.run(self.ctx, state)
        self.sync()
        mean = (time.perf_counter() - t0) / max(1, self.args.iters)
        slowest = self.torch.tensor([mean], dtype=self.torch.float64, device=self.ctx.device)
        self.dist.all_reduce(slowest, op=self.dist.ReduceOp.MAX)
        seconds = slowest.item()
        wrong = None
        if self.args.check:  # a separate run on fresh data
            state = c.init(self.ctx, count, in_place)
            c.run(self.ctx, state)
            self.sync()
            got, want = c.expected(self.ctx, state, count)
            wrong_t = self.torch.tensor([int((got.to("cpu") != want.to("cpu")).sum().item())],
                                        dtype=self.torch.int64, device=self.ctx.device)
            self.dist.all_reduce(wrong_t)
            wrong = int(wrong_t.item())
        algbw = algbw_gbs(nbytes, seconds)
        return {"time_us": seconds * 1e6, "algbw_gbs": algbw, "busbw_gbs": algbw * c.factor(self.n),
                "wrong": wrong}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch  # deferred: torch (40 s under TCG) on the rank side only
    import torch.distributed as dist
    if args.backend == "verbs":
        pass  # deferred: imports torch, rank side only; noqa: F401  (registers the backend)
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
                count = COLLS[name].count(size, bench.n, bench.esize)
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
