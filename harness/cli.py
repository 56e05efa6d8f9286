"""The `metrolab` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.errors import (EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_INTERNAL, CapabilityError, MetrolabError, SpecError,
                            SpecErrors)
from harness.output import console, err_console, fmt, print_json, show_progress, table


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON only")


def _add_verdict_flags(p: argparse.ArgumentParser, run: bool = True) -> None:
    """How a run's verdict maps to the exit code, and (for runs) how long it may measure."""
    p.add_argument("--inconclusive", choices=("exit", "pass", "fail"), default="exit",
                   help=f"what an inconclusive verdict exits with: its own code ({EXIT_INCONCLUSIVE}, default), "
                        f"or pass (0) / fail ({EXIT_FAIL}) for CI gates that must be binary")
    if not run:
        return
    p.add_argument("--until-conclusive", action="store_true",
                   help="add blocks while a criterion is inconclusive, within --max-repetitions / --max-minutes")
    p.add_argument("--max-repetitions", type=int, metavar="N", help="block budget per workload (until-conclusive)")
    p.add_argument("--max-minutes", type=float, metavar="M", help="time budget of the run (until-conclusive)")
    p.add_argument("--seed", type=int, help="block order seed (default: drawn, recorded in the run directory)")


def _exit_code(status: str, inconclusive: str) -> int:
    if status == "pass":
        return 0
    if status == "fail":
        return EXIT_FAIL
    return {"pass": 0, "fail": EXIT_FAIL}.get(inconclusive, EXIT_INCONCLUSIVE)


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=("auto", "netns", "vm"),
                   help="netns (host kernel), vm (guest kernel: netem, Soft-RoCE), auto: vm only where needed")


def _on_backend(args, needed: dict[str, str]) -> int | None:
    """Run this command in the guest when the backend says so (returns its exit code), else None.
    `needed`: kernel features -> why (harness.lab.select.needs for a topology)."""
    from harness.lab.select import choose
    backend, why = choose(args.backend, needed)
    if backend == "netns":
        if not args.json:
            err_console.print(f"backend: netns ({why})", highlight=False)
        return None
    err_console.print(f"backend: vm ({why})", highlight=False)
    from harness.vm.reexec import run_in_guest
    return run_in_guest(args._argv)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="metrolab", description="Distributed-training traffic emulator and "
                                 "RDMA test harness for metropolitan-area networks.")
    from harness import __version__
    ap.add_argument("--version", action="version", version=f"metrolab {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    mj = sub.add_parser("main", help="the main job on the embedded default lab (what the README's first command runs)")
    mj.add_argument("--quick", action="store_true", help="the CI-sized variant")
    mj.add_argument("--out", help="run directory (default: ./metrolab-runs/NAME-TIMESTAMP)")
    _add_verdict_flags(mj)
    _add_backend(mj)
    _add_json(mj)

    lab = sub.add_parser("lab", help="build, inspect, probe and remove emulated labs")
    labsub = lab.add_subparsers(dest="labcmd", metavar="ACTION", required=True)
    up = labsub.add_parser("up", help="build a lab from a topology (default: the embedded default)")
    up.add_argument("topology", nargs="?", help="topology YAML or built-in name")
    _add_backend(up)
    up.add_argument("--best-effort", action="store_true",
                    help="apply what this kernel can and report the rest, instead of refusing")
    _add_json(up)
    st = labsub.add_parser("status", help="nodes, links, addresses and qdiscs of a running lab")
    st.add_argument("--lab", help="lab id (default: the only lab up)")
    _add_json(st)
    ls = labsub.add_parser("list", help="labs on this machine")
    _add_json(ls)
    dn = labsub.add_parser("down", help="tear a running lab down")
    dn.add_argument("--lab", help="lab id (default: the only lab up)")
    cl = labsub.add_parser("clean", help="remove every lab and leftover of killed runs")
    _add_json(cl)
    pr = labsub.add_parser("probe", help="measure each link's RTT, rate and loss; configured vs measured")
    pr.add_argument("topology", nargs="?", help="build this topology for the probe, then remove it")
    pr.add_argument("--lab", help="probe this running lab")
    pr.add_argument("--links", help="comma-separated link names (default: all)")
    pr.add_argument("--duration", type=float, default=1.0, help="seconds of bulk traffic per link")
    pr.add_argument("--loss-packets", type=int, default=2000)
    pr.add_argument("--best-effort", action="store_true")
    _add_backend(pr)
    _add_json(pr)

    vm = sub.add_parser("vm", help="the guest kernel that brings netem and Soft-RoCE where the host lacks them")
    vmsub = vm.add_subparsers(dest="vmcmd", metavar="ACTION", required=True)
    vp = vmsub.add_parser("prepare", help="fetch the guest kernel and build its initramfs (cached)")
    _add_json(vp)
    vr = vmsub.add_parser("run", help="run a command inside the guest (after --)")
    vr.add_argument("argv", nargs=argparse.REMAINDER)
    vr.add_argument("--timeout", type=float, default=3600)

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
        rp.add_argument("--iters", type=int, default=1000 if name == "bw" else 1000)
        rp.add_argument("--qps", type=int, default=1)
        rp.add_argument("--cm", action="store_true", help="connect the QPs through rdma_cm (like perftest -R)")
        rp.add_argument("--link", default="wan", help="the link --distance-km / --loss impair")
        rp.add_argument("--distance-km", type=float)
        rp.add_argument("--loss", type=float)
        _add_backend(rp)
        _add_json(rp)
    rg = rsub.add_parser("gbn", help="WRITE goodput vs loss x distance beside the Go-Back-N model")
    rg.add_argument("--rate", default="200mbit")
    rg.add_argument("--iters", type=int, default=200)
    rg.add_argument("--losses", default="0,1e-5,1e-4,1e-3,1e-2")
    rg.add_argument("--distances", default="0,100,500")
    _add_backend(rg)
    _add_json(rg)

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
    _add_backend(co)
    _add_json(co)

    rn = sub.add_parser("run", help="run a scenario: sweep, efficiency against the baseline, acceptance, report")
    rn.add_argument("scenario", nargs="?", help="built-in scenario name or YAML path (see `metrolab scenarios`)")
    rn.add_argument("--quick", action="store_true", help="the scenario's CI-sized variant")
    rn.add_argument("--out", help="run directory (default: ./metrolab-runs/NAME-TIMESTAMP)")
    rn.add_argument("--resume", metavar="RUN_DIR", help="continue a run; nothing recorded there is measured again")
    rn.add_argument("--ray-address", help="join this Ray cluster (real hosts) instead of starting one")
    _add_verdict_flags(rn)
    _add_backend(rn)
    _add_json(rn)
    wk = sub.add_parser("workload", help="one workload alone: the baseline and the given network points, no "
                                         "scenario file (it is written into the run directory)")
    wk.add_argument("kind", help="collective, training-step, disaggregated-training, pd-inference")
    wk.add_argument("--hosts", help="rank hosts, comma-separated (default: the workload's choice)")
    wk.add_argument("--topology", default="default", help="built-in name or YAML path")
    wk.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a workload parameter (YAML value), repeatable: -p backend=verbs -p model=llama2-7b")
    wk.add_argument("--links", help="links to impair, comma-separated (default: the wan* links)")
    wk.add_argument("--distance-km", default="0", help="comma-separated distances")
    wk.add_argument("--loss", default="0", help="comma-separated loss probabilities")
    wk.add_argument("--convergence", default="1", help="comma-separated convergence ratios")
    wk.add_argument("--scale", type=float, default=1.0, help="time-preserving scale factor k")
    wk.add_argument("--repetitions", type=int, default=3)
    wk.add_argument("--warmups", type=int, default=1)
    wk.add_argument("--out", help="run directory (default: ./metrolab-runs/KIND-TIMESTAMP)")
    _add_verdict_flags(wk)
    _add_backend(wk)
    _add_json(wk)
    rep = sub.add_parser("report", help="HTML, Markdown, JUnit and CSV from a run directory")
    rep.add_argument("run_dir")
    _add_verdict_flags(rep, run=False)
    _add_json(rep)
    sc = sub.add_parser("scenarios", help="the built-in scenarios")
    _add_json(sc)

    son = sub.add_parser("sonic", help="SONiC config_db for a lossless RoCE class: render, diff, apply (ansible)")
    ssub = son.add_subparsers(dest="soniccmd", metavar="SONICCMD", required=True)
    sr = ssub.add_parser("render", help="config_db JSON from a port spec (headroom from distance and speed), checked")
    sr.add_argument("spec", help="YAML: ports (name, speed, distance_km), priorities, ECN, PFC watchdog, hash")
    sr.add_argument("-o", "--out", help="write the config_db JSON here (default: print it)")
    _add_json(sr)
    sd = ssub.add_parser("diff", help="what applying the spec would add, remove or change in a running config_db")
    sd.add_argument("spec")
    sd.add_argument("running", help="a running config_db JSON (`show runningconfiguration all` on the switch)")
    _add_json(sd)
    sa = ssub.add_parser("apply", help="push through ansible: config load (or --reload); --check is a dry run")
    sa.add_argument("spec")
    sa.add_argument("-i", "--inventory", required=True, help="ansible inventory (file, or 'host1,host2,')")
    sa.add_argument("--check", action="store_true", help="dry run: compare and diff, copy nothing, run no config command")
    sa.add_argument("--reload", action="store_true", help="merge into /etc/sonic/config_db.json and `config reload`")
    sa.add_argument("--limit", help="ansible --limit")
    sa.add_argument("--dest", help="where the fragment is staged on the switch (default /etc/sonic/metrolab_config_db.json)")
    sa.add_argument("-e", "--extra-var", action="append", default=[], metavar="KEY=VALUE",
                    help="an ansible variable, repeatable (ansible_user=admin)")
    _add_json(sa)

    topo = sub.add_parser("topology", help="validate a topology and show its plan")
    topo.add_argument("topology", nargs="?", help="topology YAML or built-in name")
    _add_json(topo)

    doc = sub.add_parser("doctor", help="what this machine offers (qdiscs, nft, rxe, KVM, pyverbs, torch, Ray, GPUs)")
    _add_json(doc)

    bench = sub.add_parser("bench", help="benchmarks, reported as figures and ratios")
    bsub = bench.add_subparsers(dest="benchcmd", metavar="BENCH", required=True)
    bl = bsub.add_parser("lab", help="build and tear down a 4-site x 4-host lab (median of N)")
    bl.add_argument("--repeat", type=int, default=5)
    _add_json(bl)
    bv = bsub.add_parser("vm", help="guest boot-to-command (cold, warm) and RTT fidelity at 100/250/500 km "
                                    "with 95 % intervals over windows")
    bv.add_argument("--windows", type=int, default=5, help="measurement windows, each with a fresh calibration")
    _add_json(bv)
    br = bsub.add_parser("rdma", help="metrolab rdma bw/lat vs perftest on the same link (ratios)")
    _add_backend(br)
    _add_json(br)
    bh = bsub.add_parser("harness", help="one collective timed bare and through metrolab run (overhead ratio)")
    bh.add_argument("--rounds", type=int, default=3)
    _add_json(bh)
    bn = bsub.add_parser("noise", help="the main job's baseline against itself in shuffled blocks: the noise floor")
    bn.add_argument("--blocks", type=int, default=8)
    bn.add_argument("--scenario", default=None, help="scenario whose first workload is measured (default: the main job)")
    _add_backend(bn)
    _add_json(bn)
    bc = bsub.add_parser("collectives", help="verbs AllReduce busbw vs ib_write_bw and gloo on the same link")
    bc.add_argument("--iters", type=int, default=5)
    _add_backend(bc)
    _add_json(bc)
    return ap


# -- commands ---------------------------------------------------------------------------------
def cmd_topology(args) -> int:
    from harness.lab.plan import build_plan
    from harness.spec.loader import load_topology
    topo = load_topology(args.topology)
    plan = build_plan(topo)
    data = {"name": topo.name, "source": topo.source, "digest": topo.digest,
            "nodes": [{"name": n.name, "kind": n.kind, "site": n.site, "role": n.role, "address": str(n.address),
                       "address6": str(n.address6) if n.address6 else None} for n in topo.nodes.values()],
            "links": [{"name": lk.name, "a": lk.a, "b": lk.b, "rate_bps": lk.rate_bps,
                       "delay_ms": lk.one_way_delay_s(topo.group_index) * 1e3, "distance_km": lk.props.distance_km}
                      for lk in topo.links],
            "routes": len(plan.routes)}
    if args.json:
        print_json(data)
        return 0
    console.print(f"[bold]{topo.name}[/] from {topo.source}: {len(topo.hosts())} hosts, "
                  f"{len(topo.switches())} switches, {len(topo.links)} links, {len(plan.routes)} routes")
    console.print(table("nodes", ["node", "kind", "site", "role", "IPv4", "IPv6"],
                        [[n["name"], n["kind"], n["site"], n["role"], n["address"], n["address6"]] for n in data["nodes"]]))
    console.print(table("links", ["link", "a", "b", "rate", "one-way delay", "km"],
                        [[lk["name"], lk["a"], lk["b"], _rate(lk["rate_bps"]), fmt(lk["delay_ms"], ".3f", " ms"),
                          lk["distance_km"]] for lk in data["links"]]))
    return 0


def _rate(bps):
    from netem.units import format_rate
    return format_rate(bps) if bps else "unshaped"


def cmd_lab_up(args) -> int:
    from harness.lab import create_lab
    from harness.spec.loader import load_topology
    from harness.lab.select import choose, needs
    topo = load_topology(args.topology)
    backend, why = choose(args.backend, needs(topo))
    if backend == "vm":
        raise CapabilityError(f"`lab up` leaves a lab running, which the vm backend does not do ({why}); run "
                              "the whole job in the guest instead: `metrolab lab probe --backend vm`, "
                              "`metrolab vm run -- metrolab …`, or pass --best-effort to build it here without them")
    lab = create_lab(topo, "netns", strict=not args.best_effort)
    if not args.json:
        err_console.print(f"building lab [bold]{lab.lab_id}[/] ({topo.name}, backend {lab.backend}) ...")
    lab.up()
    lab.close_handles()
    skipped = {k: sorted({s for e in v for s in e["skipped"]}) for k, v in lab.applied.items()}
    skipped = {k: v for k, v in skipped.items() if v}
    if args.json:
        print_json({"lab": lab.lab_id, "backend": lab.backend, "topology": topo.name,
                    "namespaces": lab.state.namespaces, "skipped": skipped})
    else:
        console.print(f"lab [bold]{lab.lab_id}[/] is up: {len(lab.state.namespaces)} namespaces "
                      f"(prefix {lab.lab_id}-); `metrolab lab status` shows it, `metrolab lab down` removes it")
        for link, what in skipped.items():
            console.print(f"[yellow]not applied on {link}: {', '.join(what)}[/]")
    return 0


def cmd_lab_status(args) -> int:
    from harness.lab import attach, find_state
    lab = attach(find_state(args.lab))
    st = lab.status()
    lab.close_handles()
    if args.json:
        print_json(st)
        return 0
    console.print(f"lab [bold]{st['lab']}[/] backend {st['backend']} topology {st['topology']} ({st['source']})")
    rows = []
    for n in st["nodes"]:
        for i in n["interfaces"]:
            rows.append([n["node"], n["kind"], n["site"] or "", i["ifname"], i.get("peer", ""),
                         " ".join(i.get("addresses", [])), ",".join(i.get("qdiscs", [])), i.get("state", "")])
    console.print(table("nodes", ["node", "kind", "site", "if", "peer", "addresses", "qdiscs", "state"], rows))
    console.print(table("links", ["link", "a", "b", "rate", "one-way delay", "loss", "applied"],
                        [[lk["link"], lk["a"], lk["b"], _rate(lk["rate_bps"]), fmt(lk["delay_ms"], ".3f", " ms"),
                          fmt(lk["loss"], "g"), "; ".join(_applied(e) for e in lk["applied"])] for lk in st["links"]]))
    return 0


def _applied(end: dict) -> str:
    parts = [end.get("qdisc") or "no qdisc"]
    if end.get("nft_loss"):
        parts.append(f"nft loss {end['nft_loss']:g}")
    if end.get("skipped"):
        parts.append("skipped: " + ", ".join(end["skipped"]))
    return f"{end.get('node')}:{end['ifname']} " + " ".join(parts)


def cmd_lab_list(args) -> int:
    from harness.lab.state import all_states, pid_alive
    rows = [{"lab": s.lab_id, "backend": s.backend, "status": s.status, "topology": s.topology,
             "namespaces": len(s.namespaces), "pid": s.pid, "owner_alive": pid_alive(s.pid)} for s in all_states()]
    if args.json:
        print_json(rows)
    else:
        console.print(table("labs", ["lab", "backend", "status", "topology", "namespaces"],
                            [[r["lab"], r["backend"], r["status"], r["topology"], r["namespaces"]] for r in rows]))
    return 0


def cmd_lab_down(args) -> int:
    from harness.lab import attach, find_state
    state = find_state(args.lab)
    attach(state).down()
    console.print(f"lab {state.lab_id} removed")
    return 0


def cmd_lab_clean(args) -> int:
    from harness.lab.clean import clean_all
    removed = clean_all()
    if args.json:
        print_json({"removed": removed})
    else:
        console.print(f"removed {len(removed)} namespace(s)" + (f": {' '.join(removed)}" if removed else ""))
    return 0


def cmd_lab_probe(args) -> int:
    from harness.lab import attach, create_lab, find_state
    from harness.lab.probe import probe_lab
    from harness.spec.loader import load_topology
    own = args.topology is not None or args.lab is None and not _labs_up()
    if own:
        topo = load_topology(args.topology)
        if not args.best_effort:
            from harness.lab.select import needs
            code = _on_backend(args, needs(topo))
            if code is not None:
                return code
        lab = create_lab(topo, "netns", strict=not args.best_effort)
        if not args.json:
            err_console.print(f"building lab {lab.lab_id} for the probe ...")
        lab.up()
    else:
        lab = attach(find_state(args.lab))
    try:
        links = args.links.split(",") if args.links else None
        known = {x.name for x in lab.topology.links}
        for name in links or []:
            if name not in known:
                from harness.errors import SpecError
                raise SpecError("--links", "", name, f"no such link (have: {', '.join(sorted(known))})")
        from rich.progress import Progress
        with Progress(console=err_console, transient=True, disable=not show_progress(args.json)) as progress:
            task = progress.add_task("probing links", total=len(links or known))
            results = probe_lab(lab, links, on_done=lambda m: progress.advance(task), duration=args.duration,
                                loss_packets=args.loss_packets)
    finally:
        if own:
            lab.down()
        else:
            lab.close_handles()
    if args.json:
        print_json({"lab": lab.lab_id, "netem_offset_us": (lab.netem_offset_s or 0) * 1e6,
                    "links": [m.to_dict() | {"rate_error": m.rate_error, "loss_ok": m.loss_ok,
                                             "rtt_excess_ms": m.rtt_excess_ms} for m in results]})
        return 0
    rows = [[m.link, f"{m.src}->{m.dst}", fmt(m.rtt_configured_ms, ".3f"), fmt(m.rtt_ms, ".3f"),
             fmt(m.rtt_excess_ms, ".3f"),
             _rate(m.rate_configured_bps), _rate(m.rate_bps), fmt(m.rate_error, "+.1%") if m.rate_error is not None else "-",
             fmt(m.loss_configured, ".2g"), f"{m.loss:.2g} ({m.loss_sent - m.loss_received}/{m.loss_sent})",
             "; ".join(m.notes)] for m in results]
    console.print(table(f"lab {lab.lab_id}: configured vs measured",
                        ["link", "dir", "RTT cfg ms", "RTT ms", "RTT-0km ms", "rate cfg", "rate (wire)",
                         "rate err", "loss cfg", "loss", "notes"], rows))
    if lab.netem_offset_s:
        console.print(f"netem overhead calibrated at {lab.netem_offset_s * 1e6:.0f} us per qdisc and taken off "
                      "every configured delay; RTT-0km = this link's RTT floor (min of 100) minus that of the "
                      "undelayed links")
    return 0


def _labs_up() -> bool:
    from harness.lab.state import all_states
    return any(s.status == "up" for s in all_states())


def cmd_doctor(args) -> int:
    from harness.capabilities import probe
    caps = probe()
    if args.json:
        print_json(caps.to_dict())
        return 0
    console.print(f"kernel {caps.kernel}")
    console.print(table("what this machine offers", ["capability", "present", "detail"],
                        [[c.name, "yes" if c.present else "no", c.detail] for c in caps.items.values()]))
    return 0


def _print_bench(title: str, res: dict, as_json: bool, spec: str = ".4g") -> None:
    if as_json:
        print_json(res)
    else:
        console.print(table(title, ["metric", "value"],
                            [[k, fmt(v, spec) if isinstance(v, float) else v] for k, v in res.items()]))


def cmd_bench_noise(args) -> int:
    from harness.bench import bench_noise, noise_needs
    code = _on_backend(args, noise_needs(args.scenario or MAIN_SCENARIO))
    if code is not None:
        return code
    res = bench_noise(args.scenario or MAIN_SCENARIO, blocks=args.blocks,
                      progress=None if args.json else lambda m: err_console.print(m, highlight=False))
    _print_bench(f"bench noise ({res['scenario']}: the 0 km point against the baseline, {res['blocks']} blocks)",
                 res, args.json)
    return 0


def cmd_bench_lab(args) -> int:
    from harness.bench import bench_lab
    res = bench_lab(repeat=args.repeat)
    _print_bench("bench lab (4 sites x 4 hosts)", res, args.json, ".3f")
    return 0


def cmd_main(args) -> int:
    """The main job: the default scenario (AllReduce across the default lab's WAN over a distance
    sweep, efficiency against the 0 km baseline), on whichever backend this machine supports."""
    argv = list(args._argv)
    argv[argv.index("main")] = "run"
    argv.insert(argv.index("run") + 1, MAIN_SCENARIO)
    ns = argparse.Namespace(**{**vars(args), "scenario": MAIN_SCENARIO, "resume": None, "ray_address": None,
                               "_argv": argv})
    return cmd_run(ns)


MAIN_SCENARIO = "allreduce-distance"


def cmd_vm_prepare(args) -> int:
    from harness.vm.kernel import prepare_kernel
    from harness.vm.qemu import choose_accel
    k = prepare_kernel(lambda m: err_console.print(m, highlight=False))
    accel, why = choose_accel()
    data = {"release": k.release, "suite": k.suite, "vmlinuz": k.vmlinuz, "initrd": k.initrd,
            "rxe_netns": k.rxe_netns, "accel": accel, "accel_why": why}
    if args.json:
        print_json(data)
    else:
        console.print(f"guest kernel {k.release} ({k.suite}), namespace-aware rxe: {k.rxe_netns}; "
                      f"accelerator {accel} ({why})", highlight=False)
    return 0


def cmd_vm_run(args) -> int:
    from harness.vm.kernel import prepare_kernel
    from harness.vm.qemu import Guest
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise CapabilityError("give the command to run after --, e.g. metrolab vm run -- uname -r")
    from harness.vm.reexec import command_stderr
    res = Guest(prepare_kernel()).run(argv, timeout=args.timeout, on_line=lambda line: print(line, flush=True),
                                      on_log=command_stderr)
    import shutil
    shutil.rmtree(res.results_dir, ignore_errors=True)
    return res.exit_code


def cmd_bench_vm(args) -> int:
    from harness.bench import bench_vm
    res = bench_vm(windows=args.windows)
    _print_bench("bench vm", res, args.json)
    return 0


RDMA_NEEDS = {"rxe": "Soft-RoCE between lab hosts"}


def cmd_rdma(args) -> int:
    code = _on_backend(args, RDMA_NEEDS)
    if code is not None:
        return code
    from harness.rdma.commands import rdma_test
    res = rdma_test(args, args.rdmacmd, progress=lambda m: None if args.json else err_console.print(m))
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
    code = _on_backend(args, RDMA_NEEDS)
    if code is not None:
        return code
    from harness.rdma.commands import gbn_experiment
    rows = gbn_experiment(losses=tuple(float(x) for x in args.losses.split(",")),
                          distances=tuple(float(x) for x in args.distances.split(",")), rate=args.rate,
                          iters=args.iters, progress=lambda m: None if args.json else err_console.print(m))
    if args.json:
        print_json(rows)
        return 0
    console.print(table("Go-Back-N: RDMA WRITE goodput vs loss and distance",
                        ["km", "loss", "measured Gb/s", "model Gb/s", "measured eff", "model eff",
                         "full-scale eff (100G)", "seq errors", "note"],
                        [[r["distance_km"], f"{r['loss']:g}", fmt(r.get("measured_gbps"), ".4f"),
                          fmt(r["model_gbps"], ".4f"), fmt(r.get("measured_efficiency"), ".3f"),
                          fmt(r["model_efficiency"], ".3f"), fmt(r["full_scale_efficiency"], ".3f"),
                          r.get("seq_errors", ""), r.get("error", "")] for r in rows]))
    return 0


def cmd_bench_rdma(args) -> int:
    code = _on_backend(args, RDMA_NEEDS)
    if code is not None:
        return code
    from harness.rdma.commands import bench_rdma
    res = bench_rdma()
    _print_bench("bench rdma (Soft-RoCE, same link)", res, args.json)
    return 0


def cmd_collectives(args) -> int:
    from harness.lab.select import needs as needs_of
    from harness.spec.loader import load_topology
    needs = needs_of(load_topology(args.topology or "rdma-pair"), rdma=args.backend_name == "verbs")
    if args.distance_km is not None or args.loss:
        needs["netem"] = "delay and loss on the WAN"
    code = _on_backend(args, needs)
    if code is not None:
        return code
    from harness.dist.commands import collectives_test
    res = collectives_test(args, progress=lambda m: None if args.json else err_console.print(m))
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


def cmd_bench_harness(args) -> int:
    from harness.bench import bench_harness
    _print_bench("bench harness (gloo AllReduce, bare vs metrolab run)", bench_harness(rounds=args.rounds), args.json)
    return 0


def cmd_bench_collectives(args) -> int:
    code = _on_backend(args, RDMA_NEEDS)
    if code is not None:
        return code
    from harness.dist.commands import bench_collectives
    _print_bench("bench collectives (2 hosts, one link; busbw in Gb/s)", bench_collectives(args.iters), args.json)
    return 0


def _run_dir(args, name: str) -> Path:
    if args.resume:
        return Path(args.resume).resolve()
    if args.out:
        return Path(args.out).resolve()
    import time as _t
    return (Path.cwd() / "metrolab-runs" / f"{name}-{_t.strftime('%Y%m%d-%H%M%S')}").resolve()


def cmd_workload(args) -> int:
    """A one-workload scenario from the command line, run like any other (`metrolab run`)."""
    import yaml

    def numbers(flag: str, text: str) -> list[float]:
        try:
            return [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise SpecError("metrolab workload", flag, text, "a comma-separated list of numbers") from None
    params = {}
    for item in args.param:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SpecError("metrolab workload", "--param", item, "write KEY=VALUE")
        params[key.strip()] = yaml.safe_load(value)
    w = {"kind": args.kind, "params": params} | ({"hosts": args.hosts.split(",")} if args.hosts else {})
    sweep = {"distance_km": numbers("--distance-km", args.distance_km), "loss": numbers("--loss", args.loss),
             "convergence": numbers("--convergence", args.convergence)}
    if args.links:
        sweep["links"] = args.links.split(",")
    data = {"name": args.kind, "topology": args.topology, "workloads": [w], "sweep": sweep,
            "repetitions": args.repetitions, "warmups": args.warmups, "scale": args.scale}
    from harness.scenario.spec import scenario_from_data
    scenario_from_data(data, "metrolab workload")  # bad input fails here, before a run directory exists
    if args.topology and Path(args.topology).exists():
        data["topology"] = str(Path(args.topology).resolve())
    args.resume = None
    run_dir = _run_dir(args, args.kind)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "workload-scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if not args.out:
        args._argv = [*args._argv, "--out", str(run_dir)]  # the guest (vm backend) writes to the same place
    args.out, args.scenario, args.quick, args.ray_address = str(run_dir), str(path), False, None
    return cmd_run(args)


def cmd_run(args) -> int:
    from harness.lab.select import choose, needs
    from harness.scenario.spec import load_scenario
    if not args.scenario and not args.resume:
        raise SpecError("metrolab run", "scenario", None, "name a scenario (see `metrolab scenarios`) or --resume RUN_DIR")
    ref = args.scenario
    if ref is None:  # resume: the scenario the run directory was made from
        meta = json.loads((Path(args.resume) / "meta.json").read_text()) if (Path(args.resume) / "meta.json").exists() \
            else None
        if meta is None:
            raise SpecError(args.resume, "", args.resume, "not a run directory (no meta.json); nothing to resume")
        ref = meta["scenario_source"]
        args.quick = args.quick or meta.get("quick", False)
    scn = load_scenario(ref, quick=args.quick)
    stats = scn.spec.statistics
    for flag, field in (("until_conclusive", "until_conclusive"), ("max_repetitions", "max_repetitions"),
                        ("max_minutes", "max_minutes"), ("seed", "seed")):
        value = getattr(args, flag, None)
        if value not in (None, False):
            setattr(stats, field, value)
    if stats.max_repetitions < scn.spec.repetitions and stats.until_conclusive:
        stats.max_repetitions = scn.spec.repetitions
    run_dir = _run_dir(args, scn.name)
    needed = needs(scn.topology)
    from workloads.registry import WORKLOADS
    if any(WORKLOADS[w.kind].needs_rdma_for(w) for w in scn.spec.workloads):
        needed["rxe"] = "Soft-RoCE between lab hosts"
    if any(d > 0 for d in scn.spec.sweep.distance_km) or any(x > 0 for x in scn.spec.sweep.loss) \
            or any(j > 0 for j in scn.spec.sweep.jitter):
        needed.setdefault("netem", "the sweep's distances, loss or jitter")
    from harness.policy.apply import marks_ecn
    ecn = [p.name for p in scn.spec.policies if marks_ecn(p) and p.name in scn.spec.sweep.policy]
    if ecn:
        needed["red"] = f"ECN marking (RED) in policy {', '.join(ecn)}"
    backend, why = choose(args.backend, needed)
    if backend == "vm":
        run_dir.mkdir(parents=True, exist_ok=True)
        err_console.print(f"backend: vm ({why})", highlight=False)
        from harness.vm.reexec import run_in_guest
        argv = [a for a in args._argv]
        if not args.resume and not args.out:
            argv += ["--out", str(run_dir)]
        # the guest measures, the host judges: statistics and plots are quick here, slow under TCG
        code = run_in_guest(argv, shares=(run_dir,), env={"METROLAB_HOST_JUDGES": "1"})
        outcome = run_dir / "outcome.json"
        if code != 0 or not outcome.exists():
            return code
        rep = _report_after_run(run_dir, args.json, quiet=True)
        _print_verdict(rep["verdict"], run_dir, args.json, extra=json.loads(outcome.read_text()) |
                       {"report": rep["files"]["html"]})
        return _exit_code(rep["status"], args.inconclusive)
    if not args.json:
        err_console.print(f"backend: netns ({why})", highlight=False)
    from harness.runner.run import run_scenario
    progress_ctx = _progress(args.json)
    with progress_ctx as progress:
        outcome = run_scenario(scn, run_dir, resume=bool(args.resume), ray_address=args.ray_address,
                               backend="vm" if os.environ.get("METROLAB_IN_GUEST") else "netns", progress=progress)
    if os.environ.get("METROLAB_HOST_JUDGES"):  # re-run in the guest for a host that judges and reports
        (run_dir / "outcome.json").write_text(json.dumps(outcome.summary(), default=str))
        err_console.print(f"measured {outcome.measured}, skipped {outcome.skipped} in {outcome.wall_s:.0f} s",
                          highlight=False)
        return 0
    if os.environ.get("METROLAB_IN_GUEST"):
        rep = None  # the host draws the report after the guest exits
        status = outcome.verdict.status
    else:
        rep = _report_after_run(run_dir, args.json, quiet=True)
        status = rep["status"]
    _print_verdict(outcome.verdict, run_dir, args.json,
                   extra=outcome.summary() | {"report": rep["files"]["html"] if rep else str(run_dir / "report.html")})
    return _exit_code(status, args.inconclusive)


class _progress:
    """A rich progress bar (points done, ETA) for a person at a terminal; plain lines otherwise."""

    def __init__(self, json_mode: bool):
        from harness.output import show_progress
        self.live = show_progress(json_mode)
        self.json_mode = json_mode
        self.done = 0
        self.total = None

    def __enter__(self):
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=err_console)
            self.bar.__enter__()
            self.task = self.bar.add_task("starting", total=None)
        return self.update

    def update(self, advance: int = 0, total: int | None = None, description: str | None = None) -> None:
        if total is not None:
            self.total = total
        self.done += advance
        if self.live:
            self.bar.update(self.task, advance=advance, total=self.total, description=description or None)
        elif description and not self.json_mode:
            err_console.print(f"[{self.done}/{self.total or '?'}] {description}", highlight=False)

    def __exit__(self, *exc):
        if self.live:
            self.bar.__exit__(*exc)


def _report_after_run(run_dir: Path, as_json: bool, quiet: bool = False) -> dict:
    from reports.build import build_report
    rep = build_report(run_dir)
    if not quiet and not as_json:
        err_console.print(f"report: {rep['files']['html']}", highlight=False)
    return rep


def _pct(v, digits: int = 1) -> str:
    return "" if v is None else f"{v * 100:+.{digits}f}"


def _print_verdict(verdict, run_dir: Path, as_json: bool, extra: dict | None = None) -> None:
    from dataclasses import asdict
    if as_json:
        print_json({"status": verdict.status, "passed": verdict.passed, "run_dir": str(run_dir), **(extra or {}),
                    "warnings": verdict.warnings,
                    "points": [asdict(p) for p in verdict.points], "criteria": [asdict(r) for r in verdict.results]})
        return
    # the first few workload metrics the points carry (busbw, exposed communication, TTFT, ...)
    shown: list[str] = []
    for p in verdict.points:
        shown += [m for m in p.metrics if m not in shown and m not in ("bytes", "gradient_bytes", "buckets",
                                                                      "cpu_load", "wan_bytes", "wan_drops")]
    shown = shown[:2]
    rows = []
    for p in verdict.points:
        deg = "" if p.efficiency_degradation is None else \
            f"{_pct(p.efficiency_degradation)} [{_pct(p.ci_low)}, {_pct(p.ci_high)}]"
        rows.append([p.workload, p.label, p.status if p.status == "ok" else f"FAILED: {(p.error or '')[:50]}",
                     p.repetitions, fmt(p.step_time_s * 1e3 if p.step_time_s else None, ".1f"),
                     fmt(p.cv * 100 if p.cv is not None else None, ".1f"), deg, _pct(p.predicted_degradation),
                     *[fmt(p.metrics.get(m), ".4g") for m in shown], (p.verdict or "").upper()])
    console.print(table("points (degradation % with its interval, paired by block)",
                        ["workload", "point", "status", "blocks", "step ms", "CV %", "degradation %", "model %",
                         *shown, "verdict"], rows))
    if verdict.results:
        console.print(table("acceptance", ["criterion", "point", "verdict", "why"],
                            [[r.criterion, r.label, r.verdict.upper(), r.message] for r in verdict.results]))
    for line in _quality_lines(verdict, (extra or {}).get("headroom") or {}):
        console.print(f"quality: {line}", highlight=False, markup=False)
    console.print(f"verdict: {verdict.status.upper()}   report: {run_dir / 'report.html'}", highlight=False)


def _quality_lines(verdict, headroom: dict) -> list[str]:
    """What a reader must know to trust the table: the noise floor, the headroom, physics checks."""
    out = []
    for p in verdict.points:
        if p.is_null and p.ci_low is not None:
            out.append(f"noise floor ({p.workload}, {p.label} vs its baseline): degradation "
                       f"[{p.ci_low:+.2%}, {p.ci_high:+.2%}]")
    for w, h in headroom.items():
        if h.get("capacity_ratio") is not None:
            out.append(f"{w}: emulated line rate / unshaped {h['transport']} capacity = {h['capacity_ratio']:.2f}"
                       + (" — above the limit: the host, not the network, may set the step time"
                          if h.get("host_bound") else ""))
        elif h.get("error"):
            out.append(f"{w}: {h['error']}")
        if h.get("overloaded"):
            out.append(f"{w}: offered load / service rate = {h['utilization']:.2f}: requests measure their own queue")
    return out + verdict.warnings


def cmd_report(args) -> int:
    rep = _report_after_run(Path(args.run_dir), args.json, quiet=True)
    if args.json:
        print_json({"status": rep["status"], "passed": rep["passed"], "files": rep["files"]})
    else:
        _print_verdict(rep["verdict"], Path(args.run_dir), False, extra={"headroom": rep["meta"].get("headroom")})
        for k, v in rep["files"].items():
            console.print(f"{k}: {v}", highlight=False)
    return _exit_code(rep["status"], args.inconclusive)


def cmd_sonic(args) -> int:
    from harness.policy import sonic_spec
    from harness.policy.sonic import diff, headroom
    spec, db = sonic_spec.load(args.spec)
    if args.soniccmd == "render":
        text = json.dumps(db, indent=2, sort_keys=True)
        if args.out:
            Path(args.out).write_text(text + "\n")
        if args.json or not args.out:
            print(text)
            return 0
        rows = []
        for p in spec.ports:
            h = headroom(p.distance_km, p.speed, spec.mtu)
            rows.append([p.name, f"{p.speed:g}G", f"{p.distance_km:g}", h["xoff"], h["size"]])
        console.print(table(f"{spec.switch}: lossless priorities {spec.lossless_priorities} (PG headroom, bytes)",
                            ["port", "speed", "km", "xoff", "size"], rows))
        console.print(f"{sum(len(v) for v in db.values())} entries in {len(db)} tables, consistent; written to {args.out}")
        return 0
    if args.soniccmd == "diff":
        from harness.policy.sonic_push import running_tables
        try:
            running = running_tables(Path(args.running).read_text(), db)
        except (OSError, json.JSONDecodeError) as exc:
            raise SpecError(args.running, "", args.running, f"not a readable config_db JSON ({exc})") from None
        changes = diff(running, db)
        _print_changes(changes, args.json)
        return 0
    from harness.policy.sonic_push import push
    extra = {}
    for kv in args.extra_var:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise SpecError("metrolab sonic apply", "--extra-var", kv, "expected KEY=VALUE")
        extra[k] = v
    hosts = push(db, args.inventory, check=args.check, reload=args.reload, limit=args.limit, dest=args.dest,
                 extra=extra)
    if not hosts:
        raise SpecError(args.inventory, "", args.inventory, "the inventory names no host (or --limit matched none)")
    if args.json:
        print_json({"check": args.check, "hosts": [h.__dict__ for h in hosts]})
    else:
        for h in hosts:
            state = "FAILED: " + h.failed if h.failed else ("would change" if args.check else "changed") + \
                f": {', '.join(h.changed) or 'nothing'}"
            console.print(f"[bold]{h.host}[/]: {state}", highlight=False)
            if h.diff is None:
                console.print("  running config not read (not a SONiC host?): no diff", highlight=False)
            else:
                _print_changes(h.diff, False)
    return 0 if all(h.ok and not h.failed for h in hosts) else 1


def _print_changes(changes, as_json: bool) -> None:
    if as_json:
        print_json([{"op": op, "table": t, "key": k, "running": a, "desired": b} for op, t, k, a, b in changes])
        return
    console.print(table(f"{len(changes)} changes", ["op", "table", "key", "running", "desired"],
                        [[op, t, k, json.dumps(a) if a is not None else "", json.dumps(b) if b is not None else ""]
                         for op, t, k, a, b in changes]))


def cmd_scenarios(args) -> int:
    from harness.scenario.spec import builtin_scenarios, read_yaml
    out = []
    for name, path in builtin_scenarios().items():
        data = read_yaml(path) or {}
        out.append({"name": name, "description": data.get("description", ""),
                    "workloads": [w.get("name") or w.get("kind") for w in data.get("workloads", [])], "path": str(path)})
    if args.json:
        print_json(out)
    else:
        console.print(table("built-in scenarios (metrolab run NAME [--quick])", ["name", "workloads", "description"],
                            [[s["name"], ", ".join(s["workloads"]), s["description"]] for s in out]))
    return 0


COMMANDS = {
    ("run", None): cmd_run, ("workload", None): cmd_workload, ("report", None): cmd_report, ("scenarios", None): cmd_scenarios,
    ("collectives", None): cmd_collectives, ("bench", "collectives"): cmd_bench_collectives,
    ("bench", "harness"): cmd_bench_harness, ("bench", "noise"): cmd_bench_noise,
    ("rdma", "bw"): cmd_rdma, ("rdma", "lat"): cmd_rdma, ("rdma", "gbn"): cmd_rdma_gbn,
    ("bench", "rdma"): cmd_bench_rdma,
    ("main", None): cmd_main,
    ("lab", "up"): cmd_lab_up, ("lab", "status"): cmd_lab_status, ("lab", "list"): cmd_lab_list,
    ("lab", "down"): cmd_lab_down, ("lab", "clean"): cmd_lab_clean, ("lab", "probe"): cmd_lab_probe,
    ("vm", "prepare"): cmd_vm_prepare, ("vm", "run"): cmd_vm_run,
    ("sonic", "render"): cmd_sonic, ("sonic", "diff"): cmd_sonic, ("sonic", "apply"): cmd_sonic,
    ("topology", None): cmd_topology, ("doctor", None): cmd_doctor, ("bench", "lab"): cmd_bench_lab, ("bench", "vm"): cmd_bench_vm,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args._argv = argv
    key = (args.cmd, getattr(args, "labcmd", None) or getattr(args, "benchcmd", None) or getattr(args, "vmcmd", None)
           or getattr(args, "rdmacmd", None) or getattr(args, "soniccmd", None))
    import signal

    owner = os.getpid()

    def on_term(signum, _frame):  # unwind (tearing labs down) like Ctrl-C
        if os.getpid() != owner:  # a helper pyroute2 forked and now stops: die, undo nothing
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        from harness.lab.netns import Interrupted
        raise Interrupted(f"interrupted by signal {signum}")

    # restored on return: main() called in-process (tests) must not leave its handler behind
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return COMMANDS[key](args)
    except SpecErrors as exc:
        for e in exc.errors:
            print(f"error: {e}", file=sys.stderr)
        return exc.exit_code
    except MetrolabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; the lab was taken down", file=sys.stderr)
        return 130
    except BaseException as exc:
        from harness.lab.netns import Interrupted
        if isinstance(exc, Interrupted):
            print(f"{exc}; the lab was taken down", file=sys.stderr)
            return 130
        if isinstance(exc, SystemExit):
            raise
        import traceback
        traceback.print_exc()
        print(f"metrolab: internal error ({type(exc).__name__}); exit {EXIT_INTERNAL}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
