#!/usr/bin/env bash
# Runs one scenario N times in a row and prints each verdict, so a "passes
# repeatably" claim is checked, not assumed.
#
#     scripts/repeat.sh scenarios/embedded/fixed.toml 5 [EXPECTED_EXIT]
#
# Exits 0 when every run exited EXPECTED_EXIT (default 0), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: scripts/repeat.sh SCENARIO [N] [EXPECTED_EXIT]}
n=${2:-5}
expected=${3:-0}
cargo build --release --locked --quiet
bin=target/release/rolltest
out=$(mktemp -d /tmp/rolltest-repeat-XXXXXX)
bad=0
for i in $(seq "$n"); do
  set +e
  "$bin" run "$scenario" --out "$out/$i" --quiet >"$out/$i.log" 2>&1
  code=$?
  set -e
  python3 - "$out/$i/summary.json" "$i" "$code" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
r = s["requests"]
lag = s["schedule_lag_ms"]
print(f"run {sys.argv[2]}: exit {sys.argv[3]} {s['verdict']:12} sent {r['sent']:6} failed {r['failed']:4} "
      f"causes {s['errors_by_cause']} lag p99 {lag['p99']} ms max {lag['max']} ms")
PY
  [ "$code" -eq "$expected" ] || bad=$((bad + 1))
done
echo "$((n - bad)) of $n runs exited $expected; run directories in $out"
[ "$bad" -eq 0 ]
