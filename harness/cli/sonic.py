"""`metrolab sonic …`: SONiC config_db for a lossless RoCE class: render, diff, apply."""

from __future__ import annotations

import json
from pathlib import Path

import metrolab
from metrolab.harness.cli.common import add_json
from metrolab.harness.errors import SpecError
from metrolab.harness.output import console, print_json, table
from metrolab.harness.policy.sonic import headroom


def register(sub) -> None:
    son = sub.add_parser("sonic", help="SONiC config_db for a lossless RoCE class: render, diff, apply (ansible)")
    ssub = son.add_subparsers(dest="soniccmd", metavar="SONICCMD", required=True)
    sr = ssub.add_parser("render", help="config_db JSON from a port spec (headroom from distance and speed), checked")
    sr.add_argument("spec", help="YAML: ports (name, speed, distance_km), priorities, ECN, PFC watchdog, hash")
    sr.add_argument("-o", "--out", help="write the config_db JSON here (default: print it)")
    add_json(sr)
    sd = ssub.add_parser("diff", help="what applying the spec would add, remove or change in a running config_db")
    sd.add_argument("spec")
    sd.add_argument("running", help="a running config_db JSON (`show runningconfiguration all` on the switch)")
    add_json(sd)
    sa = ssub.add_parser("apply", help="push through ansible: config load (or --reload); --check is a dry run")
    sa.add_argument("spec")
    sa.add_argument("-i", "--inventory", required=True, help="ansible inventory (file, or 'host1,host2,')")
    sa.add_argument("--check", action="store_true", help="dry run: compare and diff, copy nothing, run no config command")
    sa.add_argument("--reload", action="store_true", help="merge into /etc/sonic/config_db.json and `config reload`")
    sa.add_argument("--limit", help="ansible --limit")
    sa.add_argument("--dest", help="where the fragment is staged on the switch (default /etc/sonic/metrolab_config_db.json)")
    sa.add_argument("-e", "--extra-var", action="append", default=[], metavar="KEY=VALUE",
                    help="an ansible variable, repeatable (ansible_user=admin)")
    add_json(sa)
    for p in (sr, sd, sa):
        p.set_defaults(func=cmd_sonic)


def cmd_sonic(args) -> int:
    if args.soniccmd == "render":
        spec, db = metrolab.sonic_config(args.spec)
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
        _print_changes(metrolab.sonic_diff(args.spec, args.running), args.json)
        return 0
    extra = {}
    for kv in args.extra_var:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise SpecError("metrolab sonic apply", "--extra-var", kv, "expected KEY=VALUE")
        extra[k] = v
    hosts = metrolab.sonic_apply(args.spec, args.inventory, check=args.check, reload=args.reload, limit=args.limit,
                                 dest=args.dest, extra=extra)
    if args.json:
        print_json({"check": args.check, "hosts": [h.__dict__ for h in hosts]})
    else:
        for o in hosts:
            state = "FAILED: " + o.failed if o.failed else ("would change" if args.check else "changed") + \
                f": {', '.join(o.changed) or 'nothing'}"
            console.print(f"[bold]{o.host}[/]: {state}", highlight=False)
            if o.diff is None:
                console.print("  running config not read (not a SONiC host?): no diff", highlight=False)
            else:
                _print_changes(o.diff, False)
    return 0 if all(h.ok and not h.failed for h in hosts) else 1


def _print_changes(changes, as_json: bool) -> None:
    if as_json:
        print_json([{"op": op, "table": t, "key": k, "running": a, "desired": b} for op, t, k, a, b in changes])
        return
    console.print(table(f"{len(changes)} changes", ["op", "table", "key", "running", "desired"],
                        [[op, t, k, json.dumps(a) if a is not None else "", json.dumps(b) if b is not None else ""]
                         for op, t, k, a, b in changes]))

