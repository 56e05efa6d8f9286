"""`metrolab lab …`, `metrolab topology`, `metrolab doctor`: labs, their plans, and this machine."""

from __future__ import annotations

from typing import Any

from rich.progress import Progress

import metrolab
from metrolab.harness.backends import attach, find_state
from metrolab.harness.cli.common import add_backend, add_json, add_testbed, fmt_rate, teller
from metrolab.harness.output import console, err_console, fmt, print_json, show_progress, table


def register(sub) -> None:
    lab = sub.add_parser("lab", help="build, inspect, probe and remove emulated labs")
    labsub = lab.add_subparsers(dest="labcmd", metavar="ACTION", required=True)
    up = labsub.add_parser("up", help="build a lab from a topology (default: the embedded default)")
    up.add_argument("topology", nargs="?", help="topology YAML or built-in name")
    add_backend(up)
    add_testbed(up)
    up.add_argument("--best-effort", action="store_true",
                    help="apply what this kernel can and report the rest, instead of refusing")
    add_json(up)
    up.set_defaults(func=cmd_lab_up)
    st = labsub.add_parser("status", help="nodes, links, addresses and qdiscs of a running lab")
    st.add_argument("--lab", help="lab id (default: the only lab up)")
    add_json(st)
    st.set_defaults(func=cmd_lab_status)
    ls = labsub.add_parser("list", help="labs on this machine")
    add_json(ls)
    ls.set_defaults(func=cmd_lab_list)
    dn = labsub.add_parser("down", help="tear a running lab down")
    dn.add_argument("--lab", help="lab id (default: the only lab up)")
    dn.set_defaults(func=cmd_lab_down)
    cl = labsub.add_parser("clean", help="remove every lab and leftover of killed runs")
    add_json(cl)
    cl.set_defaults(func=cmd_lab_clean)
    pr = labsub.add_parser("probe", help="measure each link's RTT, rate and loss; configured vs measured")
    pr.add_argument("topology", nargs="?", help="build this topology for the probe, then remove it")
    pr.add_argument("--lab", help="probe this running lab")
    pr.add_argument("--links", help="comma-separated link names (default: all)")
    pr.add_argument("--duration", type=float, default=1.0, help="seconds of bulk traffic per link")
    pr.add_argument("--loss-packets", type=int, default=2000)
    pr.add_argument("--best-effort", action="store_true")
    add_backend(pr)
    add_json(pr)
    pr.set_defaults(func=cmd_lab_probe)

    topo = sub.add_parser("topology", help="validate a topology and show its plan")
    topo.add_argument("topology", nargs="?", help="topology YAML or built-in name")
    add_json(topo)
    topo.set_defaults(func=cmd_topology)

    doc = sub.add_parser("doctor", help="what this machine offers (qdiscs, nft, rxe, KVM, pyverbs, torch, Ray, GPUs)")
    add_json(doc)
    doc.set_defaults(func=cmd_doctor)


def cmd_topology(args) -> int:
    data = metrolab.topology_plan(args.topology or "default")
    if args.json:
        print_json(data)
        return 0
    console.print(f"[bold]{data['name']}[/] from {data['source']}: {data['hosts']} hosts, "
                  f"{data['switches']} switches, {len(data['links'])} links, {data['routes']} routes")
    console.print(table("nodes", ["node", "kind", "site", "role", "IPv4", "IPv6"],
                        [[n["name"], n["kind"], n["site"], n["role"], n["address"], n["address6"]] for n in data["nodes"]]))
    console.print(table("links", ["link", "a", "b", "rate", "one-way delay", "km"],
                        [[lk["name"], lk["a"], lk["b"], fmt_rate(lk["rate_bps"]), fmt(lk["delay_ms"], ".3f", " ms"),
                          lk["distance_km"]] for lk in data["links"]]))
    return 0


def cmd_lab_up(args) -> int:
    res = metrolab.lab_up(args.topology, testbed=args.testbed, strict=not args.best_effort, backend=args.backend,
                          say=None if args.json else lambda m: err_console.print(m, highlight=False))
    if args.json:
        print_json(res)
    elif "testbed" in res:
        console.print(f"lab [bold]{res['lab']}[/] is up on testbed {res['testbed']} ({len(res['machines'])} "
                      "machines configured); `metrolab lab down` undoes it")
    else:
        console.print(f"lab [bold]{res['lab']}[/] is up: {len(res['namespaces'])} namespaces "
                      f"(prefix {res['lab']}-); `metrolab lab status` shows it, `metrolab lab down` removes it")
        for link, what in res["skipped"].items():
            console.print(f"[yellow]not applied on {link}: {', '.join(what)}[/]")
    return 0


def cmd_lab_status(args) -> int:
    st = metrolab.lab_status(args.lab)
    if args.json:
        print_json(st)
        return 0
    if st["backend"] == "hosts":
        console.print(f"lab [bold]{st['lab']}[/] backend hosts, testbed {st['testbed']}, topology {st['topology']}")
        console.print(table("machines", ["machine", "addresses", "routes"],
                            [[m, " ".join(f"{a['ifname']}:{a['local']}" for a in c.get("addresses", [])),
                              len(c.get("routes", []))] for m, c in sorted(st["configured"].items())]))
        console.print(table("links", ["link", "applied"],
                            [[lk, "; ".join(_applied(e) for e in ends)] for lk, ends in st["applied"].items()]))
        return 0
    console.print(f"lab [bold]{st['lab']}[/] backend {st['backend']} topology {st['topology']} ({st['source']})")
    rows = []
    for n in st["nodes"]:
        for i in n["interfaces"]:
            rows.append([n["node"], n["kind"], n["site"] or "", i["ifname"], i.get("peer", ""),
                         " ".join(i.get("addresses", [])), ",".join(i.get("qdiscs", [])), i.get("state", "")])
    console.print(table("nodes", ["node", "kind", "site", "if", "peer", "addresses", "qdiscs", "state"], rows))
    console.print(table("links", ["link", "a", "b", "rate", "one-way delay", "loss", "applied"],
                        [[lk["link"], lk["a"], lk["b"], fmt_rate(lk["rate_bps"]), fmt(lk["delay_ms"], ".3f", " ms"),
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
    rows = metrolab.labs()
    if args.json:
        print_json(rows)
    else:
        console.print(table("labs", ["lab", "backend", "status", "topology", "namespaces"],
                            [[r["lab"], r["backend"], r["status"], r["topology"], r["namespaces"]] for r in rows]))
    return 0


def cmd_lab_down(args) -> int:
    console.print(f"lab {metrolab.lab_down(args.lab)} removed")
    return 0


def cmd_lab_clean(args) -> int:
    removed = metrolab.lab_clean()
    if args.json:
        print_json({"removed": removed})
    else:
        console.print(f"removed {len(removed)} namespace(s)" + (f": {' '.join(removed)}" if removed else ""))
    return 0


def cmd_lab_probe(args) -> int:
    links = args.links.split(",") if args.links else None
    with Progress(console=err_console, transient=True, disable=not show_progress(args.json)) as progress:
        task = progress.add_task("probing links", total=len(links) if links else None)
        kw: dict[str, Any] = {"links": links, "duration": args.duration, "loss_packets": args.loss_packets,
                              "on_done": lambda m: progress.advance(task)}
        if args.topology is not None or (args.lab is None and not _labs_up()):  # its own lab, removed after
            res = metrolab.probe_links(args.topology or "default", strict=not args.best_effort, backend=args.backend,
                                       on_backend=teller(args), **kw)
        else:
            lab = attach(find_state(args.lab))
            try:
                res = metrolab.probed(lab, **kw)
            finally:
                lab.close_handles()
    if args.json:
        print_json(res)
        return 0
    rows = [[m["link"], f"{m['src']}->{m['dst']}", fmt(m["rtt_configured_ms"], ".3f"), fmt(m["rtt_ms"], ".3f"),
             fmt(m["rtt_excess_ms"], ".3f"), fmt_rate(m["rate_configured_bps"]), fmt_rate(m["rate_bps"]),
             fmt(m["rate_error"], "+.1%") if m["rate_error"] is not None else "-", fmt(m["loss_configured"], ".2g"),
             f"{m['loss']:.2g} ({m['loss_sent'] - m['loss_received']}/{m['loss_sent']})", "; ".join(m["notes"])]
            for m in res["links"]]
    console.print(table(f"lab {res['lab']}: configured vs measured",
                        ["link", "dir", "RTT cfg ms", "RTT ms", "RTT-0km ms", "rate cfg", "rate (wire)",
                         "rate err", "loss cfg", "loss", "notes"], rows))
    if res["netem_offset_us"]:
        console.print(f"netem overhead calibrated at {res['netem_offset_us']:.0f} us per qdisc and taken off "
                      "every configured delay; RTT-0km = this link's RTT floor (min of 100) minus that of the "
                      "undelayed links")
    return 0


def _labs_up() -> bool:
    return any(s["status"] == "up" for s in metrolab.labs())


def cmd_doctor(args) -> int:
    caps = metrolab.capabilities()
    if args.json:
        print_json(caps.to_dict())
        return 0
    console.print(f"kernel {caps.kernel}")
    console.print(table("what this machine offers", ["capability", "present", "detail"],
                        [[c.name, "yes" if c.present else "no", c.detail] for c in caps.items.values()]))
    return 0

