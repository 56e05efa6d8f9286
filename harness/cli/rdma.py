"""`metrolab rdma …`: perftest-grade verbs tests between lab hosts, Go-Back-N."""

from __future__ import annotations

import json
from pathlib import Path

import metrolab
from metrolab.harness.cli.common import add_backend, add_json, add_testbed, teller
from metrolab.harness.output import console, err_console, fmt, print_json, table
from metrolab.harness.runner.rdma_commands import RdmaTest, parse_sizes


def register(sub) -> None:
    rdma = sub.add_parser("rdma", help="perftest-grade verbs tests between lab hosts (Soft-RoCE), Go-Back-N")
    rsub = rdma.add_subparsers(dest="rdmacmd", metavar="TEST", required=True)
    for name, text in (("bw", "bandwidth: WRITE/READ/SEND, size sweep, QPs (like ib_write_bw)"),
                       ("lat", "latency: WRITE ping-pong (like ib_write_lat)")):
        rp = rsub.add_parser(name, help=text)
        rp.add_argument("topology", nargs="?", help="topology with >= 2 rdma hosts (default: rdma-pair)")
        rp.add_argument("--server")
        rp.add_argument("--client")
        if name == "bw":
            rp.add_argument("--op", choices=("write", "read", "send"), default="write")
            rp.add_argument("--bidirectional", action="store_true", help="both directions at once (sum)")
        rp.add_argument("--size", default="65536" if name == "bw" else "2", help="size(s), e.g. 2,64k,1m")
        rp.add_argument("--sweep", action="store_true", help="every power of two from 2 B to 8 MiB")
        rp.add_argument("--iters", type=int, default=1000)
        rp.add_argument("--qps", type=int, default=1)
        rp.add_argument("--cm", action="store_true", help="connect the QPs through rdma_cm (like perftest -R)")
        rp.add_argument("--link", default="wan", help="the link --distance-km / --loss impair")
        rp.add_argument("--distance-km", type=float)
        rp.add_argument("--loss", type=float)
        add_backend(rp)
        add_testbed(rp)
        add_json(rp)
        rp.set_defaults(func=cmd_rdma)
    rg = rsub.add_parser("gbn", help="WRITE goodput vs loss x distance beside the Go-Back-N model")
    rg.add_argument("--rate", default="200mbit")
    rg.add_argument("--size", default="64k", help="bytes per WRITE")
    rg.add_argument("--iters", type=int, default=200, help="WRITEs per point and block")
    rg.add_argument("--losses", default="0,1e-4,1e-3,1e-2")
    rg.add_argument("--distances", default="0,100,500")
    rg.add_argument("--blocks", type=int, default=3, help="shuffled blocks (each point paired with its block's)")
    rg.add_argument("--seed", type=int, help="block order seed (default: drawn, printed)")
    rg.add_argument("--out", help="JSON lines file: rows written as measured; an existing file resumes")
    rg.add_argument("--summary", help="also write the whole result (rows, summary, model inputs) to this JSON file")
    rg.add_argument("--reordering", action="store_true",
                    help="leave the veths' default delivery (packets can swap behind a shaper: rxe NAKs them)")
    add_backend(rg)
    add_json(rg)
    rg.set_defaults(func=cmd_rdma_gbn)


def cmd_rdma(args) -> int:
    t = RdmaTest(topology=args.topology, server=args.server, client=args.client, op=getattr(args, "op", "write"),
                 bidirectional=getattr(args, "bidirectional", False), size=args.size, sweep=args.sweep,
                 iters=args.iters, qps=args.qps, cm=args.cm, link=args.link, distance_km=args.distance_km,
                 loss=args.loss, testbed=args.testbed)
    res = metrolab.rdma_test(t, args.rdmacmd, backend=args.backend, on_backend=teller(args),
                             progress=lambda m: None if args.json else err_console.print(m))
    if args.json:
        print_json(res)
        return 0
    if args.rdmacmd == "bw":
        cols = ["#bytes", "#iterations", "BW peak[Gb/s]", "BW average[Gb/s]", "MsgRate[Mpps]", "retrans", "seq err"]
        rows = [[r["bytes"], r["iterations"], fmt(r["bw_peak_gbps"], ".4f"), fmt(r["bw_avg_gbps"], ".4f"),
                 fmt(r["msg_rate_mpps"], ".6f"), r["counters"]["rdma"][r["server"]].get("duplicate_request", 0),
                 r["counters"]["rdma"][r["server"]].get("out_of_seq_request", 0)] for r in res["rows"]]
    else:
        cols = ["#bytes", "#iterations", "t_min[us]", "t_max[us]", "t_typical[us]", "t_avg[us]", "t_stdev[us]",
                "99%[us]", "99.9%[us]"]
        rows = [[r["bytes"], r["iterations"]] + [fmt(r[k], ".2f") for k in
                ("t_min_us", "t_max_us", "t_typical_us", "t_avg_us", "t_stdev_us", "p99_us", "p999_us")]
                for r in res["rows"]]
    console.print(table(f"metrolab rdma {args.rdmacmd} ({res['rows'][0]['client']} -> {res['rows'][0]['server']})",
                        cols, rows))
    return 0


def cmd_rdma_gbn(args) -> int:
    res = metrolab.gbn_experiment(losses=tuple(float(x) for x in args.losses.split(",")),
                                  distances=tuple(float(x) for x in args.distances.split(",")), rate=args.rate,
                                  size=parse_sizes(args.size, False)[0], iters=args.iters, blocks=args.blocks,
                                  seed=args.seed, in_order=not args.reordering, out=args.out, backend=args.backend,
                                  on_backend=teller(args), progress=lambda m: None if args.json else err_console.print(m))
    if args.summary:
        Path(args.summary).write_text(json.dumps(res, default=str))
    if args.json:
        print_json(res)
        return 0
    console.print(table(f"Go-Back-N: RDMA WRITE efficiency vs loss and distance ({res['blocks']} blocks, seed "
                        f"{res['seed']}; model: rxe window 128, one retry at a time, timeout 2^14 x 4.096 us, base RTT "
                        f"{res['base_rtt_s'] * 1e3:.2f} ms)",
                        ["km", "loss", "Gb/s", "efficiency [95 % CI]", "model", "in model CI", "in flight",
                         "timeout share", "seq NAKs", "qdisc drops", "full scale (100G)"],
                        [[f"{r['distance_km']:g}", f"{r['loss']:g}", fmt(r["goodput_gbps"], ".4f"),
                          f"{fmt(r['efficiency'], '.3f')} [{fmt(r['eff_low'], '.3f')}, {fmt(r['eff_high'], '.3f')}]",
                          fmt(r["model_efficiency"], ".3f"), {True: "yes", False: "NO", None: "-"}[r["within"]],
                          r["in_flight"], fmt(r["model_timeout_share"], ".2f"), fmt(r["seq_naks"], ".0f"),
                          fmt(r["qdisc_drops"], ".0f"), fmt(r["full_scale_efficiency"], ".3f")]
                         for r in res["summary"]]))
    return 0
