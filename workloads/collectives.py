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
from dataclasses import asdict, dataclass
from datetime import timedelta

from metrolab.harness.dist import backends
from metrolab.harness.errors import SpecError
from metrolab.netem.units import parse_size
from metrolab.workloads.busbw import algbw_gbs, sizes
from metrolab.workloads.colls import COLLS, HIERARCHICAL_OPS, OPS, Ctx

DTYPES = {"float32": "float32", "float": "float32", "bfloat16": "bfloat16", "float16": "float16",
          "float64": "float64", "int32": "int32", "int64": "int64"}
BACKENDS = ("gloo", "verbs", "nccl")


@dataclass(frozen=True)
class Sweep:
    """What every rank runs (nccl-tests' -b -e -f -w -n -d -c, resolved), checked where it is made:
    a wrong op, size or dtype is refused, naming its option, before a lab or a rank exists. The
    ranks get it whole (`argv`), not as options to parse again."""

    backend: str = "gloo"
    ops: tuple[str, ...] = ("all_reduce",)
    sizes: tuple[int, ...] = (1 << 20,)
    warmup: int = 2
    iters: int = 10
    dtype: str = "float32"
    algo: str = "flat"                # flat | hierarchical (by site)
    sites: tuple[str, ...] = ()       # each rank's site (hierarchical)
    check: bool = True                # #wrong, from a separate run on fresh data
    timeout: float = 600

    @classmethod
    def of(cls, ops: str = "all_reduce", begin: str = "8", end: str = "4m", factor: float = 2.0, step: str = "0",
           **kw) -> Sweep:
        """From nccl-tests' spelling: comma-separated ops, sizes as 8, "64k", "4m"."""
        try:
            found = sizes(parse_size(begin), parse_size(end), factor, parse_size(step))
        except ValueError as exc:
            raise SpecError("-b/-e/-f", "", f"{begin}..{end}", str(exc)) from None
        return cls(ops=tuple(o.strip() for o in ops.split(",") if o.strip()), sizes=tuple(found), **kw)

    def __post_init__(self) -> None:
        def bad(option: str, value, why: str):
            raise SpecError(option, "", value, why)
        if self.backend not in BACKENDS:
            bad("--backend", self.backend, f"choose from {', '.join(BACKENDS)}")
        if not self.ops:
            bad("--ops", "", "no collective named")
        for o in self.ops:
            if o not in OPS:
                bad("--ops", o, f"unknown collective (choose from {', '.join(OPS)})")
            if self.algo == "hierarchical" and o not in HIERARCHICAL_OPS:
                bad("--ops", o, f"no hierarchical algorithm (those: {', '.join(HIERARCHICAL_OPS)})")
        if self.dtype not in DTYPES:
            bad("--dtype", self.dtype, f"choose from {', '.join(sorted(DTYPES))}")
        if self.algo not in ("flat", "hierarchical"):
            bad("--algo", self.algo, "flat or hierarchical")
        if self.algo == "hierarchical" and not self.sites:
            bad("--sites", "", "the hierarchical algorithm needs each rank's site")
        if self.warmup < 0 or self.iters < 1:
            bad("-w/-n", (self.warmup, self.iters), "warm-ups >= 0 and iterations >= 1")

    def argv(self) -> list[str]:
        """The rank command line (metrolab.harness.kernel.launch.run_ranks)."""
        return ["-m", "metrolab.workloads.collectives", "--sweep", json.dumps(asdict(self))]


def parse_args(argv=None) -> Sweep:
    ap = argparse.ArgumentParser(prog="python -m metrolab.workloads.collectives")
    ap.add_argument("--sweep", help="the whole sweep as JSON (what metrolab hands its ranks)")
    ap.add_argument("--backend", default="gloo", choices=BACKENDS)
    ap.add_argument("--ops", default="all_reduce", help=f"comma-separated: {', '.join(OPS)}")
    ap.add_argument("-b", "--begin", default="8")
    ap.add_argument("-e", "--end", default="4m")
    ap.add_argument("-f", "--factor", type=float, default=2.0)
    ap.add_argument("-i", "--step", default="0")
    ap.add_argument("-w", "--warmup", type=int, default=2)
    ap.add_argument("-n", "--iters", type=int, default=10)
    ap.add_argument("-d", "--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--algo", default="flat", choices=("flat", "hierarchical"))
    ap.add_argument("--sites", default="", help="site of each rank, comma-separated (hierarchical)")
    ap.add_argument("-c", "--check", type=int, default=1, help="check results (#wrong); 0 skips")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args(argv)
    try:
        if a.sweep:
            d = json.loads(a.sweep)
            return Sweep(**d | {k: tuple(d[k]) for k in ("ops", "sizes", "sites")})
        return Sweep.of(a.ops, a.begin, a.end, a.factor, a.step, backend=a.backend, warmup=a.warmup, iters=a.iters,
                        dtype=a.dtype, algo=a.algo, sites=tuple(s for s in a.sites.split(",") if s),
                        check=bool(a.check), timeout=a.timeout)
    except SpecError as exc:
        ap.error(str(exc))


class Bench:
    def __init__(self, sw: Sweep, torch, dist):
        self.sw, self.torch, self.dist = sw, torch, dist
        self.rank, self.n = dist.get_rank(), dist.get_world_size()
        dtype = getattr(torch, DTYPES[sw.dtype])
        self.esize = torch.empty(0, dtype=dtype).element_size()
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if sw.backend == "nccl" \
            else torch.device("cpu")
        groups = None
        if sw.algo == "hierarchical":
            from metrolab.harness.dist.algorithms import SiteGroups  # deferred: imports torch, rank side only
            groups = SiteGroups(list(sw.sites), backend=sw.backend)
        self.ctx = Ctx(torch, dist, self.rank, self.n, dtype, device, sw.algo, groups)

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
        for _ in range(self.sw.warmup):
            c.run(self.ctx, state)
        self.sync()
        self.dist.barrier()
        t0 = time.perf_counter()
        for _ in range(self.sw.iters):
            c.run(self.ctx, state)
        self.sync()
        mean = (time.perf_counter() - t0) / max(1, self.sw.iters)
        slowest = self.torch.tensor([mean], dtype=self.torch.float64, device=self.ctx.device)
        self.dist.all_reduce(slowest, op=self.dist.ReduceOp.MAX)
        seconds = slowest.item()
        wrong = None
        if self.sw.check:  # a separate run on fresh data
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
    sw = parse_args(argv)
    import torch  # deferred: torch (40 s under TCG) on the rank side only
    import torch.distributed as dist
    backends.register(sw.backend)
    if sw.backend == "nccl" and not torch.cuda.is_available():
        print(json.dumps({"error": "the nccl backend needs GPUs; none here"}))
        return 4
    dist.init_process_group(sw.backend, timeout=timedelta(seconds=sw.timeout))
    try:
        bench = Bench(sw, torch, dist)
        rows = []
        for name in sw.ops:
            for size in sw.sizes:
                oop = bench.measure(name, size, False)
                ip = bench.measure(name, size, True)
                count = COLLS[name].count(size, bench.n, bench.esize)
                row = {"op": name, "size": count * bench.esize, "count": count, "type": sw.dtype,
                       "backend": sw.backend, "algo": sw.algo, "nranks": bench.n}
                for prefix, res in (("oop", oop), ("ip", ip)):
                    for k, v in (res or {"time_us": None, "algbw_gbs": None, "busbw_gbs": None, "wrong": None}).items():
                        row[f"{prefix}_{k}"] = v
                rows.append(row)
        if bench.rank == 0:
            print(json.dumps({"backend": sw.backend, "algo": sw.algo, "nranks": bench.n, "dtype": sw.dtype,
                              "warmup": sw.warmup, "iters": sw.iters, "rows": rows}))
        else:
            print(json.dumps({"rank": bench.rank}))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
