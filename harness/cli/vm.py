"""`metrolab vm …`: the guest kernel that brings netem and Soft-RoCE where the host lacks them."""

from __future__ import annotations

import argparse

import metrolab
from metrolab.harness.cli.common import add_json
from metrolab.harness.output import console, err_console, print_json


def register(sub) -> None:
    vm = sub.add_parser("vm", help="the guest kernel that brings netem and Soft-RoCE where the host lacks them")
    vmsub = vm.add_subparsers(dest="vmcmd", metavar="ACTION", required=True)
    vp = vmsub.add_parser("prepare", help="fetch the guest kernel and build its initramfs (cached)")
    add_json(vp)
    vp.set_defaults(func=cmd_vm_prepare)
    vr = vmsub.add_parser("run", help="run a command inside the guest (after --)")
    vr.add_argument("argv", nargs=argparse.REMAINDER)
    vr.add_argument("--timeout", type=float, default=3600)
    vr.set_defaults(func=cmd_vm_run)


def cmd_vm_prepare(args) -> int:
    data = metrolab.vm_prepare(lambda m: err_console.print(m, highlight=False))
    if args.json:
        print_json(data)
    else:
        console.print(f"guest kernel {data['release']} ({data['suite']}), namespace-aware rxe: {data['rxe_netns']}; "
                      f"accelerator {data['accel']} ({data['accel_why']})", highlight=False)
    return 0


def cmd_vm_run(args) -> int:
    return metrolab.vm_run(args.argv[1:] if args.argv[:1] == ["--"] else args.argv, timeout=args.timeout,
                           on_line=lambda line: print(line, flush=True),
                           say=lambda m: err_console.print(m, highlight=False))  # stdout is the command's
