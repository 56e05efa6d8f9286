#!/usr/bin/env bash
# README command 2: install what the tests need (idempotent), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
# the slowest tests listed at the end: the suite must stay well inside CI's 90 minutes
exec .venv/bin/python -m pytest tests --durations=30 "$@"
