#!/usr/bin/env bash
# Run one metrolab scenario as a CI gate, as root, and hand its verdict to GitHub Actions:
#   run-scenario.sh SCENARIO [--quick] [--inconclusive exit|pass|fail] [--out DIR] [--testbed FILE]
# Writes `verdict` (pass|fail|inconclusive|error) and `report-dir` to $GITHUB_OUTPUT and summary.md to
# $GITHUB_STEP_SUMMARY when those are set (they are on a runner), and exits with metrolab's code
# (0 pass, 1 fail, 5 inconclusive unless --inconclusive maps it, 2-4 bad input or environment).
set -uo pipefail
HERE=$(cd "$(dirname "$0")/../.." && pwd)
METROLAB=${METROLAB:-$HERE/.venv/bin/metrolab}
SCENARIO=${1:-}
[ -n "$SCENARIO" ] || { echo "usage: run-scenario.sh SCENARIO [--quick] [--inconclusive exit|pass|fail] [--out DIR]" >&2; exit 2; }
shift
QUICK=()
INCONCLUSIVE=exit
OUT=""
TESTBED=""
while (($#)); do
  case $1 in
    --quick) QUICK=(--quick) ;;
    --inconclusive) INCONCLUSIVE=${2:?--inconclusive needs exit, pass or fail}; shift ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    --testbed) TESTBED=${2:-}; shift ;;
    *) echo "run-scenario.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
TB=()
if [ -n "$TESTBED" ]; then TB=(--testbed "$TESTBED"); fi  # the lab's machines instead of this runner
OUT=${OUT:-$PWD/metrolab-runs/$(basename "$SCENARIO" .yaml)-${GITHUB_RUN_ID:-local}-${GITHUB_RUN_ATTEMPT:-0}}
mkdir -p "$(dirname "$OUT")"
JSON=$(mktemp)
"$METROLAB" run "$SCENARIO" "${QUICK[@]}" "${TB[@]}" --inconclusive "$INCONCLUSIVE" --out "$OUT" --json > "$JSON"
rc=$?
verdict=$(python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["status"])
except Exception: print("error")' "$JSON")
rm -f "$JSON"
echo "run-scenario: $SCENARIO: verdict $verdict (exit $rc), report in $OUT"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  { echo "verdict=$verdict"; echo "report-dir=$OUT"; } >> "$GITHUB_OUTPUT"
fi
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  if [ -f "$OUT/summary.md" ]; then cat "$OUT/summary.md" >> "$GITHUB_STEP_SUMMARY"
  else echo "metrolab run $SCENARIO: no summary (exit $rc)" >> "$GITHUB_STEP_SUMMARY"; fi
fi
exit $rc
