"""`metrolab testbed …`: real machines a topology maps onto (validated), and what derives from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import metrolab
from metrolab.harness.cli.common import RunProgress, add_json
from metrolab.harness.output import console, print_json, table
from metrolab.harness.testbed.hosts import NOT_CLEANED


def register(sub) -> None:
    tb = sub.add_parser("testbed", help="real testbeds: validate, provision (ansible), check, clean")
    tsub = tb.add_subparsers(dest="testbedcmd", metavar="ACTION", required=True)
    show = tsub.add_parser("show", help="validate a testbed file against its topology; machines and mapping")
    show.add_argument("testbed", help="testbed YAML")
    add_json(show)
    show.set_defaults(func=cmd_testbed_show)
    inv = tsub.add_parser("inventory", help="the ansible inventory of a testbed (groups by role)")
    inv.add_argument("testbed", help="testbed YAML")
    inv.add_argument("-o", "--out", help="write it here (default: print it)")
    add_json(inv)
    inv.set_defaults(func=cmd_testbed_inventory)
    rc = tsub.add_parser("ray-config", help="a Ray cluster launcher config (provider local) for the machines, "
                                            "if you start Ray with `ray up` instead of provisioning's ray_node role")
    rc.add_argument("testbed", help="testbed YAML")
    rc.add_argument("-o", "--out", help="write it here (default: print it)")
    add_json(rc)
    rc.set_defaults(func=cmd_testbed_ray_config)
    sb = tsub.add_parser("sandbox", help="a testbed of namespaces on this machine (each machine with its own sshd), "
                                         "to try the testbed commands without a lab")
    sbsub = sb.add_subparsers(dest="sandboxcmd", metavar="ACTION", required=True)
    sbu = sbsub.add_parser("up", help="build one for a topology (default metro-pair) or a scenario's topology")
    sbu.add_argument("topology", nargs="?", default="metro-pair", help="topology YAML or built-in name")
    sbu.add_argument("--scenario", help="take the topology of this scenario instead")
    add_json(sbu)
    sbu.set_defaults(func=cmd_sandbox_up)
    sbd = sbsub.add_parser("down", help="remove a sandbox (default: every one)")
    sbd.add_argument("--lab", help="its id (the testbed is named sandbox-ID)")
    add_json(sbd)
    sbd.set_defaults(func=cmd_sandbox_down)
    prov = tsub.add_parser("provision", help="prepare every machine (ansible/site.yml: RDMA, metrolab, Ray nodes, "
                                             "WAN emulators, switches); idempotent")
    prov.add_argument("testbed", help="testbed YAML")
    prov.add_argument("--check", action="store_true", help="ansible's dry run: what would change, nothing changed")
    add_json(prov)
    prov.set_defaults(func=cmd_testbed_provision)
    chk = tsub.add_parser("check", help="is every machine fit for a run: reachable, kernel, netem, RDMA and RoCEv2 "
                                        "GIDs, MTU along each link, versions equal to the controller's, Ray, clocks")
    chk.add_argument("testbed", help="testbed YAML")
    chk.add_argument("--scenario", help="judge for this scenario (its delay points need netem on the emulators)")
    add_json(chk)
    chk.set_defaults(func=cmd_testbed_check)
    cln = tsub.add_parser("clean", help="what a killed run left on the machines: Ray nodes (by PID file), "
                                        "impairments on the emulators, policy state on the switches")
    cln.add_argument("testbed", help="testbed YAML")
    cln.add_argument("--keep-nodes", action="store_true", help="undo what killed runs left of their labs only; "
                     "leave the Ray nodes running (a run can follow without provisioning again)")
    add_json(cln)
    cln.set_defaults(func=cmd_testbed_clean)


def cmd_testbed_show(args) -> int:
    tb = metrolab.testbed(args.testbed)
    rows: list[dict[str, Any]] = [
        {"machine": m.name, "mgmt": m.mgmt, "roles": list(m.roles),
         "nodes": sorted(n for n, mm in tb.spec.map.nodes.items() if mm == m.name),
         "interfaces": [x.name + (f" ({x.rdma})" if x.rdma else "") for x in m.interfaces]}
        for m in tb.spec.machines]
    links: list[dict[str, Any]] = [{"link": lm.link, "ports": list(lm.ports), "emulator": lm.emulator}
                                   for lm in tb.spec.map.links]
    if args.json:
        print_json({"testbed": tb.name, "topology": tb.topology.name, "machines": rows, "links": links})
        return 0
    console.print(f"[bold]{tb.name}[/] ({tb.source}): topology {tb.topology.name}, {len(rows)} machines, "
                  f"{len(links)} links mapped")
    console.print(table("machines", ["machine", "mgmt", "roles", "topology nodes", "interfaces"],
                        [[r["machine"], r["mgmt"], ", ".join(r["roles"]), ", ".join(r["nodes"]),
                          ", ".join(r["interfaces"])] for r in rows]))
    console.print(table("links", ["link", "ports", "across"],
                        [[lk["link"], " — ".join(lk["ports"]), lk["emulator"] or ""] for lk in links]))
    return 0


def cmd_testbed_inventory(args) -> int:
    inv = metrolab.testbed_inventory(args.testbed)
    if args.json:
        print_json(inv)
    else:
        text = yaml.safe_dump(inv, sort_keys=False)
        if args.out:
            Path(args.out).write_text(text)
            console.print(f"inventory of {len(inv['all']['hosts'])} machines written to {args.out}", highlight=False)
        else:
            print(text, end="")
    return 0


def cmd_sandbox_up(args) -> int:
    out = metrolab.sandbox_up(args.topology, scenario=args.scenario)
    if args.json:
        print_json(out)
    else:
        console.print(f"sandbox [bold]{out['lab']}[/]: {len(out['machines'])} machines, testbed {out['testbed']}\n"
                      f"run the testbed commands on its controller:\n"
                      f"  ip netns exec {out['controller']} metrolab testbed provision {out['testbed']}\n"
                      f"remove it with `metrolab testbed sandbox down --lab {out['lab']}`", highlight=False)
    return 0


def cmd_sandbox_down(args) -> int:
    removed = metrolab.sandbox_down(args.lab)
    if args.json:
        print_json({"removed": removed})
    else:
        console.print(f"removed: {' '.join(removed) or 'nothing'}", highlight=False)
    return 0


def cmd_testbed_ray_config(args) -> int:
    cfg = metrolab.testbed_ray_config(args.testbed)
    if args.json:
        print_json(cfg)
    elif args.out:
        Path(args.out).write_text(yaml.safe_dump(cfg, sort_keys=False))
        console.print(f"Ray cluster config for {cfg['max_workers'] + 1} machines written to {args.out} "
                      "(`ray up` it; stop the nodes with `metrolab testbed clean`, not `ray down`)", highlight=False)
    else:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
    return 0


def _progress(args):
    return RunProgress(args.json)


def _print_hosts(title: str, run, as_json: bool, check: bool = False, extra: dict | None = None,
                 ok: bool = True) -> int:
    """`ok`: what else the command did went well (a playbook's hosts are judged here)."""
    hosts = sorted(run.hosts.values(), key=lambda o: o.host) if run is not None else []
    failed = [o for o in hosts if not o.ok] or ([] if ok else ["the rest"])
    if as_json:
        print_json({"hosts": [o.to_dict() for o in hosts], "ok": not failed, "check": check} | (extra or {}))
    elif run is None:
        return 1 if failed else 0
    else:
        verb = "would change" if check else "changed"
        console.print(table(title, ["machine", "result", verb, "failure"],
                            [[o.host, "ok" if o.ok else ("unreachable" if o.unreachable else "FAILED"),
                              f"{len(o.changed)}: " + ", ".join(o.changed[:4]) + (" …" if len(o.changed) > 4 else "")
                              if o.changed else "0", o.failed or ""] for o in hosts]))
    return 1 if failed else 0


def cmd_testbed_provision(args) -> int:
    name = metrolab.testbed(args.testbed).name  # a bad file refused before anything starts
    with _progress(args) as progress:
        run = metrolab.testbed_provision(args.testbed, check=args.check, progress=lambda task: progress(description=task))
    if not args.json:
        console.print(table("ssh host keys", ["machine", "host", "key", "fingerprint"],
                            [[k["machine"], k["host"], k["state"], ", ".join(k["fingerprints"])] for k in run.host_keys]))
    return _print_hosts(f"provision {name}" + (" (--check)" if args.check else ""), run, args.json, args.check,
                        extra={"host_keys": run.host_keys})


def cmd_testbed_clean(args) -> int:
    name = metrolab.testbed(args.testbed).name
    with _progress(args) as progress:
        undone, run = metrolab.testbed_clean(args.testbed, keep_nodes=args.keep_nodes,
                                             progress=lambda task: progress(description=task))
    left = [u for u in undone if u.startswith(NOT_CLEANED)]
    if undone and not args.json:
        console.print("labs undone: " + ", ".join(undone), highlight=False)
    return _print_hosts(f"clean {name}", run, args.json, extra={"labs": undone}, ok=not left)


def cmd_testbed_check(args) -> int:
    with _progress(args) as progress:
        rep = metrolab.testbed_check(args.testbed, scenario=args.scenario,
                                     progress=lambda what: progress(description=what))
    if args.json:
        print_json(rep.to_dict())
    else:
        style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
        console.print(table(f"check {rep.testbed}", ["machine / link", "check", "result", "detail"],
                            [[f.machine, f.check, f.level, f.detail] for f in rep.findings]))
        console.print(f"verdict: [{style[rep.verdict]}]{rep.verdict}[/]")
    return 1 if rep.verdict == "fail" else 0
