"""`metrolab testbed …`: real machines a topology maps onto (validated), and what derives from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.cli.common import add_json
from harness.output import console, print_json, table


def register(sub) -> None:
    tb = sub.add_parser("testbed", help="real testbeds: validate a testbed file, write its ansible inventory")
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


def cmd_testbed_show(args) -> int:
    from harness.testbed.resolve import load_testbed
    tb = load_testbed(args.testbed)
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
    from harness.testbed.derive import inventory
    from harness.testbed.resolve import load_testbed
    inv = inventory(load_testbed(args.testbed))
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
