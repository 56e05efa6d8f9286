#!/usr/bin/env bash
# README command 1: install everything, then run the main job on the embedded default lab.
set -euo pipefail
cd "$(dirname "$0")/.."
# install's progress goes to stderr: stdout is the main job's own (its --json stays parseable)
scripts/install.sh >&2
exec .venv/bin/metrolab main "$@"
