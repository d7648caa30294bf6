#!/usr/bin/env bash
# Does watching the rollout cost the load generator anything? Runs
# scenarios/embedded/fixed.toml at a higher rate (default 2000 req/s) on the
# embedded cluster and prints the schedule lag the generator measured while
# the rollout, its watchers and the proxy's reports ran.
#
#     scripts/bench-rollout.sh [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-2000}
cargo build --release --locked --quiet
bin=target/release/rolltest
scenario=scenarios/embedded/.bench-fixed-$rate.toml
trap 'rm -f "$scenario"' EXIT
sed -e "s/^rate = .*/rate = $rate/" -e "s/^name = .*/name = \"bench-rollout-$rate\"/" \
  scenarios/embedded/fixed.toml >"$scenario"
out=$(mktemp -d /tmp/rolltest-bench-rollout-XXXXXX)
set +e
"$bin" run "$scenario" --out "$out/run" --quiet
set -e
python3 - "$out/run/summary.json" "$out/run/timeline.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t = json.load(open(sys.argv[2]))
lag = s["schedule_lag_ms"]
print(f"rate {s['rate']} req/s, achieved {s['achieved_rate']:.1f}; {s['requests']['sent']} sent, "
      f"{s['requests']['failed']} failed; {len(t['events'])} lifecycle events watched")
print(f"schedule lag during the rollout: p50 {lag['p50']} ms, p99 {lag['p99']} ms, max {lag['max']} ms")
PY
