"""`metrolab bench …`: benchmarks, reported as figures and ratios against a reference measured in
the same invocation."""

from __future__ import annotations

import statistics

import metrolab
from metrolab.api import MAIN_SCENARIO
from metrolab.harness.cli.common import add_backend, add_json, print_bench, teller
from metrolab.harness.output import console, err_console, print_json, table
from metrolab.harness.scenario.sequential import markdown_table


def register(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks, reported as figures and ratios")
    bsub = bench.add_subparsers(dest="benchcmd", metavar="BENCH", required=True)
    bl = bsub.add_parser("lab", help="build and tear down a 4-site x 4-host lab (median of N)")
    bl.add_argument("--repeat", type=int, default=5)
    add_json(bl)
    bl.set_defaults(func=cmd_bench_lab)
    bv = bsub.add_parser("vm", help="guest boot-to-command (cold, warm) and RTT fidelity at 100/250/500 km "
                                    "with 95 %% intervals over windows")
    bv.add_argument("--windows", type=int, default=5, help="measurement windows, each with a fresh calibration")
    add_json(bv)
    bv.set_defaults(func=cmd_bench_vm)
    br = bsub.add_parser("rdma", help="metrolab rdma bw/lat vs perftest on the same link (ratios over paired rounds)")
    br.add_argument("--rounds", type=int, default=5, help="paired rounds (which tool runs first drawn each time)")
    br.add_argument("--seed", type=int, default=None)
    add_backend(br)
    add_json(br)
    br.set_defaults(func=cmd_bench_rdma)
    bh = bsub.add_parser("harness", help="one collective timed bare and through metrolab run (overhead ratio)")
    bh.add_argument("--rounds", type=int, default=3)
    add_json(bh)
    bh.set_defaults(func=cmd_bench_harness)
    bn = bsub.add_parser("noise", help="the main job's baseline against itself in shuffled blocks: the noise floor")
    bn.add_argument("--blocks", type=int, default=8)
    bn.add_argument("--scenario", default=None, help="scenario whose first workload is measured (default: the main job)")
    bn.add_argument("--co-tenant", action="store_true", help="start one busy process beside it on this machine (a "
                    "user's other job): the floor under interference, and what the tool saw of it")
    add_backend(bn)
    add_json(bn)
    bn.set_defaults(func=cmd_bench_noise)
    bq = bsub.add_parser("sequential", help="wrong-verdict rates of the sequential design against a fixed interval "
                                           "re-read at every look (seeded Monte Carlo; docs/statistics.md's table)")
    bq.add_argument("--sims", type=int, default=20_000)
    bq.add_argument("--markdown", action="store_true", help="the table as docs/statistics.md shows it")
    add_json(bq)
    bq.set_defaults(func=cmd_bench_sequential)
    bc = bsub.add_parser("collectives", help="verbs AllReduce busbw vs ib_write_bw and gloo on the same link")
    bc.add_argument("--iters", type=int, default=5)
    add_backend(bc)
    add_json(bc)
    bc.set_defaults(func=cmd_bench_collectives)


def cmd_bench_lab(args) -> int:
    res = metrolab.bench_lab(repeat=args.repeat)
    print_bench("bench lab (4 sites x 4 hosts)", res, args.json, ".3f")
    return 0


def cmd_bench_vm(args) -> int:
    res = metrolab.bench_vm(windows=args.windows)
    print_bench("bench vm", res, args.json)
    return 0


def cmd_bench_rdma(args) -> int:
    res = metrolab.bench_rdma(args.rounds, args.seed, backend=args.backend, on_backend=teller(args),
                              progress=None if args.json else lambda m: err_console.print(m, highlight=False))
    if args.json:
        print_json(res)
        return 0
    rows = []
    for name, c in res.items():
        if not isinstance(c, dict):
            continue
        unit = "us" if c["figure"].endswith("_us") else "Gb/s"
        rows.append([f"{name} ({c['figure']})", f"{statistics.median(c['ours']):.4g} {unit}",
                     f"{statistics.median(c['perftest_values']):.4g} {unit}",
                     f"{c['ratio']:.3f} [{c['ratio_low']:.3f}, {c['ratio_high']:.3f}]", c["verdict"]])
        if "floor_ratio" in c:
            rows.append([f"{name} floor (t_min_us, not judged)", f"{min(c['floor_ours_us']):.4g} us",
                         f"{min(c['floor_perftest_us']):.4g} us",
                         f"{c['floor_ratio']:.3f} [{c['floor_ratio_low']:.3f}, {c['floor_ratio_high']:.3f}]", ""])
    console.print(table(f"bench rdma (Soft-RoCE, same link): ours vs perftest, {res['rounds']} paired rounds "
                        f"(seed {res['seed']})",
                        ["comparison", "ours (median of rounds)", "perftest", "ratio, 95 % interval", "verdict"], rows))
    for name, c in res.items():
        if isinstance(c, dict):
            console.print(f"{name}: {c['reason']}")
    return 0


def cmd_bench_harness(args) -> int:
    print_bench("bench harness (gloo AllReduce, bare vs metrolab run)", metrolab.bench_harness(rounds=args.rounds),
                args.json)
    return 0


def cmd_bench_noise(args) -> int:
    res = metrolab.bench_noise(args.scenario or MAIN_SCENARIO, blocks=args.blocks, co_tenant=args.co_tenant,
                               backend=args.backend, on_backend=teller(args),
                               progress=None if args.json else lambda m: err_console.print(m, highlight=False))
    print_bench(f"bench noise ({res['scenario']}: the 0 km point against the baseline, {res['blocks']} blocks)",
                 res, args.json)
    return 0


def cmd_bench_sequential(args) -> int:
    rows = metrolab.bench_sequential(args.sims)
    if args.markdown:
        print(markdown_table(rows), end="")
    elif args.json:
        print_json(rows)
    else:
        for r in rows:
            print_bench(f"bench sequential: {r['looks']} look(s)", r, False)
    return 0


def cmd_bench_collectives(args) -> int:
    print_bench("bench collectives (2 hosts, one link; busbw in Gb/s)",
                metrolab.bench_collectives(args.iters, backend=args.backend, on_backend=teller(args)), args.json)
    return 0

