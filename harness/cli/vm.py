"""`metrolab vm …`: the guest kernel that brings netem and Soft-RoCE where the host lacks them."""

from __future__ import annotations

import argparse
import shutil

from metrolab.harness.cli.common import add_json
from metrolab.harness.errors import CapabilityError
from metrolab.harness.output import console, err_console, print_json
from metrolab.harness.vm.kernel import prepare_kernel
from metrolab.harness.vm.qemu import Guest, choose_accel
from metrolab.harness.vm.reexec import command_stderr


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
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise CapabilityError("give the command to run after --, e.g. metrolab vm run -- uname -r")
    res = Guest(prepare_kernel()).run(argv, timeout=args.timeout, on_line=lambda line: print(line, flush=True),
                                      on_log=command_stderr)
    shutil.rmtree(res.results_dir, ignore_errors=True)
    return res.exit_code

