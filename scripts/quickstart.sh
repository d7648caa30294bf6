#!/usr/bin/env bash
# The quick tour without a cluster: start the demo app, run the quickstart
# scenario against it, stop the app. Prints the verdict and the report's path;
# exits with rolltest's exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin=target/release/rolltest

"$bin" serve --listen 127.0.0.1:8080 --pod-name demo-1 2>/tmp/rolltest-quickstart-serve.log &
app=$!
trap 'kill "$app" 2>/dev/null; wait "$app" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q "listening on" /tmp/rolltest-quickstart-serve.log 2>/dev/null && break
  sleep 0.1
done
grep -q "listening on" /tmp/rolltest-quickstart-serve.log || {
  echo "the demo app did not start:"; cat /tmp/rolltest-quickstart-serve.log; exit 3; }

set +e
"$bin" run scenarios/quickstart.toml "$@"
code=$?
set -e
exit "$code"
