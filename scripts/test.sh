#!/usr/bin/env bash
# README command 2: install what the tests need (idempotent), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/python -m pytest tests "$@"
