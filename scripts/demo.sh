#!/usr/bin/env bash
# The main job, on the embedded cluster (no Docker, no kind, no cluster):
# a rolling restart of a 6-replica Deployment under 200 req/s, first as most
# tutorials write it (scenarios/embedded/naive.toml: expected FAIL, with the
# failed requests attributed to endpoint_lag and killed_in_flight), then with
# the five knobs set (fixed.toml: expected PASS, zero failed requests), then
# the two side by side.
#
#     scripts/demo.sh [OUT_DIR]        # default reports/demo-<UTC time>/
#
# Exits 0 when both verdicts are the expected ones, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin=target/release/rolltest
out=${1:-reports/demo-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

echo "== 1/2: naive rollout (expected: FAIL) =="
set +e
"$bin" run scenarios/embedded/naive.toml --out "$out/naive"
naive=$?
echo
echo "== 2/2: the same rollout with the five knobs (expected: PASS) =="
"$bin" run scenarios/embedded/fixed.toml --out "$out/fixed"
fixed=$?
set -e
echo
if "$bin" help compare >/dev/null 2>&1; then
  "$bin" compare "$out/naive" "$out/fixed" --out "$out/compare" || true
  echo
fi
echo "reports: $out/naive/report.html  $out/fixed/report.html"
if [ "$naive" -eq 1 ] && [ "$fixed" -eq 0 ]; then
  echo "as expected: naive failed (exit 1), fixed passed (exit 0)"
  exit 0
fi
echo "unexpected: naive exited $naive (expected 1), fixed exited $fixed (expected 0)"
exit 1
