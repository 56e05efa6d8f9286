#!/usr/bin/env bash
# README command 2: install what the tests need (idempotent), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
# bytecode for our own modules: the guest mounts the tree read-only, so without it every rank and
# agent it starts compiles them again under TCG (and PYTHONDONTWRITEBYTECODE may be set here)
.venv/bin/python -m compileall -q -j 0 harness workloads netem reports scripts tests >/dev/null
# the slowest tests listed at the end: the suite must stay well inside CI's 90 minutes; pytest's
# exit status is the suite's, whatever a native library does at interpreter teardown (scripts/suite.py)
exec .venv/bin/python scripts/suite.py tests --durations=30 "$@"
