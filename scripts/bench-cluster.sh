#!/usr/bin/env bash
# bench-cluster.sh — figures for the embedded cluster (benchmarks print, they do not judge):
#   watch delivery latency, pod start, a 6-replica rollout, and the service
#   proxy's added latency (l4 and l7) and throughput against direct requests.
# The proxy part runs ROLLTEST_BENCH_ROUNDS (default 3) interleaved rounds at
# 5k req/s, each compared with its own direct run, and if haproxy or socat is
# installed it measures them too, as the floor for any user-space forwarder
# on this machine (references only, not dependencies).
# Everything runs on loopback; each part is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked --test minicluster bench:: -- --ignored --nocapture 2>&1 \
  | grep -E "^(watch|pod created|6-replica)"
cargo test --release --locked --test minicluster proxy::bench -- --ignored --nocapture 2>&1 \
  | grep -vE "^(running|test |$|\s+Running|\s+Finished|\s+Compiling)" || true
