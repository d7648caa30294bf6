#!/usr/bin/env bash
# Figures of the real cluster (scripts/realk8s), the anchors for the embedded
# cluster's defaults. As root, with no other realk8s running:
#
#     scripts/bench-realk8s.sh            # warm `up` time, pod created -> Ready, endpoint propagation
#     scripts/bench-realk8s.sh --cold     # also a cold build (empty Go build cache and realk8s cache;
#                                         # the Go module cache is kept): ~10-20 min on 2 cores
#
# Prints a table; nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(mktemp -d /tmp/bench-realk8s.XXXXXX)"
UP_PID=""
trap '[[ -n $UP_PID ]] && kill -TERM "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

scripts/realk8s deps >/dev/null
if [[ ${1:-} == --cold ]]; then
    echo "== cold build (empty GOCACHE and realk8s cache)"
    t=$(date +%s)
    GOCACHE="$WORK/gocache" REALK8S_CACHE_DIR="$WORK/cache" scripts/realk8s build 2>&1 | grep '^realk8s: build'
    echo "cold build: $(($(date +%s) - t)) s"
fi
scripts/realk8s build >/dev/null 2>&1

echo "== warm up (3 nodes)"
t=$(date +%s%3N)
scripts/realk8s up --kubeconfig "$WORK/kubeconfig" --nodes 3 >"$WORK/up.log" 2>&1 &
UP_PID=$!
until grep -q '^realk8s: ready' "$WORK/up.log"; do
    kill -0 "$UP_PID" 2>/dev/null || { cat "$WORK/up.log"; exit 1; }
    sleep 0.1
done
ms=$(($(date +%s%3N) - t))
grep -E '^realk8s: (etcd|kube-apiserver|controller|node|nodes)' "$WORK/up.log"
printf '%-44s %d.%d s\n' "up with a warm cache (3 nodes) -> ready" $((ms / 1000)) $(((ms % 1000) / 100))

echo "== pods and endpoint propagation"
args=("$@"); [[ ${1:-} == --cold ]] && args=("${@:2}")
python3 realk8s/bench.py --kubeconfig "$WORK/kubeconfig" "${args[@]}"
