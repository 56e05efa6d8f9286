#!/usr/bin/env bash
# What to read when a CI job fails: RDMA links and devices, the kernel's log, what metrolab sees.
# Every part is best effort (a missing tool is said, not fatal); always exits 0.
HERE=$(cd "$(dirname "$0")/../.." && pwd)
METROLAB=${METROLAB:-$HERE/.venv/bin/metrolab}
section() { printf '\n===== %s =====\n' "$*"; }
try() { "$@" 2>&1 || echo "(exit $?: $*)"; }
section "rdma link"; try rdma link
section "ibv_devinfo -v"; try ibv_devinfo -v
section "dmesg (last 200 lines)"; try dmesg | tail -n 200
section "metrolab doctor --json"; try "$METROLAB" doctor --json
section "metrolab lab list"; try "$METROLAB" lab list
exit 0
