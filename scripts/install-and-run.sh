#!/usr/bin/env bash
# README command 1: install everything, then run the main job on the embedded default lab.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/metrolab main "$@"
