"""`metrolab collectives`: the nccl-tests-grade collective benchmark, one rank per lab host."""

from __future__ import annotations

import metrolab
from metrolab.harness.cli.common import add_backend, add_json, add_testbed, teller
from metrolab.harness.output import console, err_console, fmt, print_json, table
from metrolab.harness.runner.collective_commands import CollectivesTest


def register(sub) -> None:
    co = sub.add_parser("collectives", help="nccl-tests-grade collective benchmark, one rank per lab host "
                        "(gloo over TCP, verbs over RoCEv2, nccl on GPUs)")
    co.add_argument("topology", nargs="?", help="topology (default: rdma-pair)")
    co.add_argument("--hosts", help="rank hosts, comma-separated (default: every RDMA host)")
    co.add_argument("--collective-backend", dest="backend_name", default="verbs", choices=("verbs", "gloo", "nccl"),
                    help="torch.distributed backend under test")
    co.add_argument("--ops", default="all_reduce",
                    help="all_reduce,all_gather,reduce_scatter,broadcast,reduce,all_to_all,sendrecv")
    co.add_argument("-b", "--begin", default="8")
    co.add_argument("-e", "--end", default="4m")
    co.add_argument("-f", "--factor", type=float, default=2.0)
    co.add_argument("-w", "--warmup", type=int, default=2)
    co.add_argument("-n", "--iters", type=int, default=10)
    co.add_argument("-d", "--dtype", default="float32")
    co.add_argument("-c", "--check", type=int, default=1)
    co.add_argument("--algo", default="flat", choices=("flat", "hierarchical"))
    co.add_argument("--link", default="wan", help="the link --distance-km / --loss impair")
    co.add_argument("--distance-km", type=float)
    co.add_argument("--loss", type=float)
    co.add_argument("--timeout", type=float, default=1800)
    add_backend(co)
    add_testbed(co)
    add_json(co)
    co.set_defaults(func=cmd_collectives)


def cmd_collectives(args) -> int:
    t = CollectivesTest(topology=args.topology, hosts=args.hosts, backend=args.backend_name, ops=args.ops,
                        begin=args.begin, end=args.end, factor=args.factor, warmup=args.warmup, iters=args.iters,
                        dtype=args.dtype, check=args.check, algo=args.algo, link=args.link,
                        distance_km=args.distance_km, loss=args.loss, timeout=args.timeout, testbed=args.testbed)
    res = metrolab.collectives_test(t, backend=args.backend, on_backend=teller(args),
                                    progress=lambda m: None if args.json else err_console.print(m))
    if args.json:
        print_json(res)
        return 0
    cols = ["op", "size(B)", "count", "type", "oop time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong",
            "ip time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong"]
    rows = [[r["op"], r["size"], r["count"], r["type"],
             *[fmt(r[f"{p}_{k}"], f) if r[f"{p}_{k}"] is not None else "n/a"
               for p in ("oop", "ip") for k, f in (("time_us", ".1f"), ("algbw_gbs", ".4f"), ("busbw_gbs", ".4f"),
                                                   ("wrong", "d"))]] for r in res["rows"]]
    console.print(table(f"{res['backend']} collectives, {res['nranks']} ranks on {', '.join(res['hosts'])} "
                        f"({res['algo']})", cols, rows))
    return 0

