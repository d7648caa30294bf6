#!/usr/bin/env bash
# rolltest against a real Kubernetes: starts scripts/realk8s (built from the
# official sources, run as processes), checks that kubectl works against it,
# runs the kind scenarios through `rolltest run --kubeconfig --context` and
# asserts their verdicts, then stops the cluster and asserts that nothing of
# the run is left on the machine. Also the faults: a second `up`, a component
# that dies, `up` killed with SIGKILL and then `down`, no root, no Go.
# The kind scenarios run as the real side of the differential test
# (scripts/differential.sh): each pair of scenarios/differential/README.md
# runs on the embedded cluster (before `up`: its proxy takes 127.0.0.1:30080)
# and on the real one; the table is printed side by side and the same verdict,
# the same dominant cause, 0 unexplained and every real failure attributed are
# asserted (DIFFERENTIAL_OUT: where the run directories go, default under
# the work directory, which is removed when every test passed and kept,
# its path printed, when one failed; DIFFERENTIAL_ONLY: some pairs only).
#
#     scripts/test-real-cluster.sh          (as root; installs the Debian packages it needs)
#
# Ends with "N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
REALK8S="$REPO/scripts/realk8s"
WORK="$(mktemp -d /tmp/test-real-cluster.XXXXXX)"
KUBECONFIG_FILE="$WORK/kubeconfig"
PASSED=0
FAILED=0
FAILURES=()
UP_PID=""

log() { printf '\n== %s\n' "$*"; }
pass() {
    PASSED=$((PASSED + 1))
    printf 'ok    %s\n' "$1"
}
fail() {
    FAILED=$((FAILED + 1))
    FAILURES+=("$1")
    printf 'FAIL  %s\n' "$1"
    [[ -n ${2:-} ]] && printf '      %s\n' "$2"
}
check() { # name cmd...
    local name="$1"
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
elapsed() { echo $(($(date +%s) - $1))s; }

cleanup() {
    local rc=$?
    if [[ -n $UP_PID ]] && kill -0 "$UP_PID" 2>/dev/null; then
        kill -TERM "$UP_PID" 2>/dev/null
        wait "$UP_PID" 2>/dev/null
    fi
    "$REALK8S" down >/dev/null 2>&1 || true
    # The logs, kubeconfigs and differential output: kept only when a test failed.
    if ((rc == 0)); then
        rm -rf "$WORK"
    else
        echo "logs and run directories kept in $WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- what the machine looks like before (for "nothing left behind") ----------
host_state() {
    echo "# links"
    ip -o link show | awk -F': ' '{ print $2 }' | sed 's/@.*//' | sort
    echo "# routes"
    ip -4 route show table all | grep -v '^local\|^broadcast\|^multicast\|^fe80' | sort
    echo "# iptables chains"
    local t
    for t in filter nat mangle raw security; do
        iptables-save -t "$t" 2>/dev/null | awk -v t="$t" '/^:/ { print t, $1 }'
        ip6tables-save -t "$t" 2>/dev/null | awk -v t="$t" '/^:/ { print "v6", t, $1 }'
    done | sort
    echo "# iptables rules"
    iptables-save 2>/dev/null | grep '^-A' | sort
    echo "# nft tables"
    nft list tables 2>/dev/null | sort
    echo "# network namespaces (named)"
    ip netns list 2>/dev/null | sort
    echo "# mounts"
    awk '{ print $5 }' /proc/self/mountinfo | sort
    echo "# cgroups"
    ls -d /sys/fs/cgroup/*/rolltest-realk8s 2>/dev/null
    echo "# sysctls"
    sysctl net.ipv4.ip_forward net.ipv4.conf.all.route_localnet vm.overcommit_memory kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes 2>/dev/null
}
# Processes of the run: anything running a binary from realk8s's cache, any
# containerd shim, anything in the run's cgroups.
run_processes() {
    local p exe
    for p in /proc/[0-9]*; do
        exe="$(readlink "$p/exe" 2>/dev/null)" || continue
        case "$exe" in
        */rolltest-realk8s/* | *containerd-shim*) echo "${p#/proc/} $exe" ;;
        esac
    done
    cat /sys/fs/cgroup/*/rolltest-realk8s/cgroup.procs 2>/dev/null
}
# A named network namespace count does not show the pods' (anonymous) ones:
# count the distinct network namespaces of all processes too.
netns_count() { for p in /proc/[0-9]*/ns/net; do readlink "$p" 2>/dev/null; done | sort -u | wc -l; }

assert_clean() { # label
    local after diff procs
    after="$(host_state)"
    diff="$(diff <(echo "$BEFORE_STATE") <(echo "$after"))"
    procs="$(run_processes)"
    if [[ -z $diff && -z $procs && "$(netns_count)" == "$BEFORE_NETNS" ]]; then
        pass "$1: nothing left behind (processes, links, routes, chains, mounts, netns, cgroups, sysctls)"
    else
        fail "$1: nothing left behind" "diff before/after: ${diff:-none}; processes: ${procs:-none}; netns $(netns_count) vs $BEFORE_NETNS"
    fi
}

start_up() { # extra args...; sets UP_PID, UP_LOG
    UP_LOG="$WORK/up-$((++UP_COUNT)).log"
    # A shell without job control starts background commands with SIGINT
    # ignored, and a CI runner may have it ignored already: give `up` the
    # default disposition, as a terminal's Ctrl-C finds it.
    python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
        "$REALK8S" up --kubeconfig "$KUBECONFIG_FILE" "$@" >"$UP_LOG" 2>&1 &
    UP_PID=$!
}
UP_COUNT=0

wait_ready() { # seconds
    local deadline=$(($(date +%s) + $1))
    while ! grep -q '^realk8s: ready' "$UP_LOG"; do
        if ! kill -0 "$UP_PID" 2>/dev/null; then
            echo "realk8s up exited before it was ready:"
            tail -n 40 "$UP_LOG"
            return 1
        fi
        if (($(date +%s) >= deadline)); then
            echo "realk8s up was not ready within $1 s:"
            tail -n 40 "$UP_LOG"
            return 1
        fi
        sleep 1
    done
}

wait_exit() { # pid seconds -> exit code (124 on timeout)
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || {
            wait "$1"
            return $?
        }
        sleep 0.1
    done
    return 124
}

k() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# ---- setup -------------------------------------------------------------------
T0=$(date +%s)
log "Debian packages"
"$REALK8S" deps || exit 1
log "rolltest (cargo build --release --locked --bin rolltest: the load generator holds its rate on a busy machine)"
cargo build --release --locked --bin rolltest || exit 1
export REALK8S_ROLLTEST="$REPO/target/release/rolltest"
ROLLTEST="$REALK8S_ROLLTEST"
log "realk8s build (cached after the first time)"
t=$(date +%s)
"$REALK8S" build || exit 1
echo "build: $(elapsed "$t")"
"$REALK8S" down >/dev/null 2>&1 || true
BEFORE_STATE="$(host_state)"
BEFORE_NETNS="$(netns_count)"

# ---- the differential test, embedded side -----------------------------------------
# Before any real cluster is up: the embedded proxy listens on 127.0.0.1:30080,
# where kube-proxy's NodePort rules would take the traffic.
DIFF_OUT="${DIFFERENTIAL_OUT:-$WORK/differential}"
log "differential: each pair's embedded side (scripts/differential.sh embedded)"
t=$(date +%s)
ROLLTEST="$ROLLTEST" scripts/differential.sh embedded "$DIFF_OUT"
echo "embedded side: $(elapsed "$t")"

# ---- bad input -----------------------------------------------------------------
log "bad input"
out="$(setpriv --reuid=65534 --regid=65534 --clear-groups "$REALK8S" up 2>&1)"
rc=$?
[[ $rc == 2 && $out == *"needs root"* ]] && pass "up without root: exit 2, says root is needed" || fail "up without root" "rc=$rc: $out"
out="$(env PATH=/usr/sbin:/usr/bin:/sbin:/bin REALK8S_CACHE_DIR="$WORK/empty-cache" "$REALK8S" build 2>&1)"
rc=$?
[[ $rc == 2 && $out == *"Go is not installed"* ]] && pass "build without Go and an empty cache: exit 2, names Go" || fail "build without Go" "rc=$rc: $out"
out="$("$REALK8S" up --nodes 9 2>&1)"
rc=$?
[[ $rc == 2 && $out == *"--nodes must be"* ]] && pass "up --nodes 9: exit 2" || fail "up --nodes 9" "rc=$rc: $out"
out="$("$REALK8S" image rolltest-demo:latest /bin/true 2>&1)"
rc=$?
[[ $rc == 2 && $out == *"other than 'latest'"* ]] && pass "image with tag latest: exit 2" || fail "image :latest" "rc=$rc: $out"

log "a start that fails (kube-apiserver refuses --secure-port 70000)"
out="$(REALK8S_API_PORT=70000 "$REALK8S" up --kubeconfig "$WORK/bad" --nodes 1 2>&1)"
rc=$?
[[ $rc == 1 && $out == *"kube-apiserver exited before it was ready"* && $out == *"last lines of"*"kube-apiserver.log"* ]] &&
    pass "a failed start: exit 1, names kube-apiserver, shows its last log lines" || fail "a failed start" "rc=$rc: $out"
[[ $out == *"teardown complete"* ]] && pass "a failed start tears down" || fail "a failed start tears down" "$out"
assert_clean "after a failed start"

# ---- a cluster -----------------------------------------------------------------
log "realk8s up (3 nodes, like kind-config.yaml)"
t=$(date +%s)
start_up --nodes 3
if wait_ready 600; then
    pass "up: ready in $(elapsed "$t")"
    grep '^realk8s: ' "$UP_LOG" | sed 's/^/    /'
    # One line per phase, each with its time.
    missing=""
    for p in "build kubernetes" "network (blackholes first)" certificates etcd kube-apiserver \
        "controller-manager, scheduler" "node 1: containerd" "node 3: kubelet, kube-proxy" "nodes Ready"; do
        grep -F "realk8s: $p " "$UP_LOG" | grep -qE ' [0-9]+\.[0-9]s( |$)' || missing+=" [$p]"
    done
    [[ -z $missing ]] && pass "up prints each phase with its time" || fail "phase lines" "missing:$missing"
else
    fail "up: ready"
    echo "$FAILED failed; giving up"
    exit 1
fi

out="$("$REALK8S" up --kubeconfig "$WORK/other" 2>&1)"
rc=$?
[[ $rc == 2 && $out == *"another realk8s is running"* ]] && pass "a second up: exit 2, another realk8s is running" || fail "a second up" "rc=$rc: $out"

log "what the cluster is"
routes="$(ip -4 route show type blackhole)"
[[ $routes == *10.244.0.0/16* && $routes == *10.96.0.0/16* && $routes == *172.18.0.0/16* ]] &&
    pass "blackhole routes for the pod, Service and node ranges" || fail "blackhole routes" "$routes"
iptables -t mangle -C FORWARD -j RK8S-FENCE 2>/dev/null && pass "the fence drops forwarded traffic leaving the cluster's ranges" || fail "fence"
proxy_conf="$(curl -sS -m 5 http://127.0.0.1:10249/configz | python3 -c 'import json, sys
c = json.load(sys.stdin)["kubeproxy.config.k8s.io"]
print(c["mode"], c["iptables"]["minSyncPeriod"], c["conntrack"]["maxPerCore"])' 2>&1)"
[[ $proxy_conf == "iptables 1s 0" ]] &&
    pass "kube-proxy: iptables mode, minSyncPeriod 1s, no conntrack sysctls (its /configz)" || fail "kube-proxy config" "$proxy_conf"
iptables-save -t nat | grep -q -- '-A OUTPUT .*KUBE-SERVICES' && pass "kube-proxy's rules catch host traffic (nat OUTPUT -> KUBE-SERVICES)" || fail "KUBE-SERVICES in nat OUTPUT"
for n in rolltest-control-plane rolltest-worker2; do
    kubelet_conf="$(kubectl --kubeconfig "$KUBECONFIG_FILE" get --raw "/api/v1/nodes/$n/proxy/configz")"
    [[ $kubelet_conf == *'"cgroupDriver":"cgroupfs"'* && $kubelet_conf == *'"failCgroupV1":false'* ]] &&
        pass "$n's kubelet: cgroupfs driver, failCgroupV1 false (its /configz)" || fail "$n kubelet config" "$kubelet_conf"
done

log "kubectl against it"
k get nodes -o wide
ready_nodes="$(k get nodes --no-headers | awk '$2 == "Ready"' | wc -l)"
[[ $ready_nodes == 3 ]] && pass "kubectl get nodes: 3 Ready" || fail "kubectl get nodes: 3 Ready" "got $ready_nodes"
[[ "$(k get node rolltest-control-plane -o jsonpath='{.spec.taints[0].key}')" == node-role.kubernetes.io/control-plane ]] &&
    pass "the control-plane node is tainted like kind's" || fail "control-plane taint"
k version
check "kubectl apply" k apply -f scenarios/embedded/naive/deployment.yaml -f scenarios/embedded/naive/service.yaml
check "kubectl rollout status" k rollout status deployment/api --timeout=180s
k get pods -o wide
ready_pods="$(k get pods --no-headers | awk '$2 == "1/1" && $3 == "Running"' | wc -l)"
[[ $ready_pods == 6 ]] && pass "kubectl get pods: 6 pods 1/1 Running (READY column)" || fail "READY column" "$ready_pods of 6"
pod_ips="$(k get pods -o jsonpath='{.items[*].status.podIP}')"
[[ $pod_ips =~ 10\.244\.[23]\. && ! $pod_ips =~ 10\.244\.1\. ]] && pass "pods on the workers, in their own network namespaces ($pod_ips)" || fail "pod addresses" "$pod_ips"
# `rollout status` returns as soon as the pods are Ready; kube-proxy (minSyncPeriod 1s) may
# program their endpoints up to a sync later, and until then the NodePort rejects. So ask
# for up to 10 s (20 tries), and say how long it took.
nodeport_t0=$(date +%s%N)
for _ in $(seq 20); do
    hdr="$(curl -sS -m 5 -D - -o /dev/null http://127.0.0.1:30080/ 2>&1 | tr -d '\r' | grep -i -e '^x-rolltest-pod:' -e '^curl:')"
    [[ $hdr == *api-* ]] && break
    sleep 0.5
done
nodeport_ms=$((($(date +%s%N) - nodeport_t0) / 1000000))
[[ $hdr == *api-* ]] && pass "the Service answers at 127.0.0.1:30080 (localhost NodePort) ${nodeport_ms} ms after rollout status: $hdr" ||
    fail "localhost NodePort" "no answer in ${nodeport_ms} ms; last: $hdr"
pod="$(k get pods -o jsonpath='{.items[0].metadata.name}')"
check "kubectl logs" bash -c "kubectl --kubeconfig '$KUBECONFIG_FILE' logs '$pod' | grep -q ."
check "kubectl scale" k scale deployment/api --replicas=3
check "kubectl rollout restart" k rollout restart deployment/api
check "kubectl rollout status after restart" k rollout status deployment/api --timeout=180s
check "kubectl cordon" k cordon rolltest-worker2
check "kubectl drain" k drain rolltest-worker2 --ignore-daemonsets --timeout=120s
on_w2="$(k get pods -o wide --no-headers | awk '$7 == "rolltest-worker2"' | wc -l)"
[[ $on_w2 == 0 ]] && pass "drained: no pod left on rolltest-worker2" || fail "drain moved the pods" "$on_w2 left"
check "kubectl uncordon" k uncordon rolltest-worker2
check "kubectl delete" k delete -f scenarios/embedded/naive/deployment.yaml -f scenarios/embedded/naive/service.yaml --wait=true --timeout=120s

log "scripts/realk8s image"
check "image: build and import rolltest-custom:v1" "$REALK8S" image --user 65532:65532 rolltest-custom:v1 "$ROLLTEST" serve --listen 0.0.0.0:9090 --on-sigterm drain
pinned="$(/root/.cache/rolltest-realk8s/containerd-*/ctr --address /var/lib/rolltest-realk8s/nodes/2/containerd.sock -n k8s.io images ls 2>/dev/null | grep 'rolltest-custom:v1' || true)"
[[ $pinned == *io.cri-containerd.pinned=pinned* ]] && pass "image: imported pinned" || fail "image: imported pinned" "$pinned"
k run custom --image=rolltest-custom:v1 --restart=Never >/dev/null
if k wait pod/custom --for=condition=Ready --timeout=60s >/dev/null; then
    ip="$(k get pod custom -o jsonpath='{.status.podIP}')"
    # The pod answers from its own network namespace (the kubelet probes
    # nothing here, so ask from the node: its address is routed to the node).
    code="$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$ip:9090/healthz" || true)"
    [[ $code == 200 ]] && pass "image: the pod runs BINARY ARGS (serve on $ip:9090 answers 200)" || fail "image: pod answers" "code $code"
    [[ "$(k exec custom -- sleep 0 2>&1; echo $?)" == 0 ]] && pass "image: has sleep for exec preStop hooks" || fail "image: sleep inside"
else
    fail "image: the pod is Ready" "$(k describe pod custom | tail -5)"
fi
k delete pod custom --wait=false >/dev/null

# ---- rolltest against it ---------------------------------------------------------
causes() { # run dir
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("verdict", s["verdict"], "failed", s["requests"]["failed"], "causes", json.dumps(s.get("errors_by_cause", {})))' "$1/summary.json" 2>/dev/null
}
failed_requests() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"]["failed"])' "$1/summary.json" 2>/dev/null; }

# The kind scenarios (and the differential's own) on this cluster, each pair's
# real side; then the comparison with the embedded side run before `up`.
log "differential: each pair's real side (rolltest run ... --kubeconfig ... --context realk8s)"
t=$(date +%s)
ROLLTEST="$ROLLTEST" scripts/differential.sh real "$DIFF_OUT" "$KUBECONFIG_FILE" realk8s
echo "real side: $(elapsed "$t")"
RESULTS=()
for d in "$DIFF_OUT"/*/; do
    name="$(basename "$d")"
    [[ -f $d/real.rc ]] && RESULTS+=("$name: exit $(cat "$d/real.rc"); $(causes "$d/real")")
done
if [[ -f $DIFF_OUT/fixed/real.rc ]]; then
    [[ "$(failed_requests "$DIFF_OUT/fixed/real")" == 0 ]] && pass "kind/fixed: no failed request" || fail "kind/fixed: no failed request"
fi
log "differential: embedded vs real (run directories in $DIFF_OUT)"
scripts/differential.sh table "$DIFF_OUT"
if [[ -f $DIFF_OUT/assertions.tsv ]]; then
    while IFS=$'\t' read -r status what detail; do
        case $status in
            ok) pass "$what" ;;
            *) fail "$what" "$detail" ;;
        esac
    done <"$DIFF_OUT/assertions.tsv"
else
    fail "differential: the comparison ran"
fi

# ---- stop: Ctrl-C ----------------------------------------------------------------
log "Ctrl-C (SIGINT) to up"
kill -INT "$UP_PID"
wait_exit "$UP_PID" 120
rc=$?
UP_PID=""
[[ $rc == 0 ]] && pass "up after SIGINT: exit 0 after a clean teardown" || {
    fail "up after SIGINT: exit 0" "rc=$rc"
    tail -n 30 "$UP_LOG"
}
grep -q 'teardown complete' "$UP_LOG" && pass "up said its teardown was complete" || fail "teardown complete"
assert_clean "after Ctrl-C"

# ---- a component that dies -------------------------------------------------------------
log "a component dies while up runs"
start_up --nodes 2
if wait_ready 300; then
    kill -KILL "$(awk '{ print $1 }' /var/lib/rolltest-realk8s/pids/kube-scheduler)"
    wait_exit "$UP_PID" 120
    rc=$?
    UP_PID=""
    [[ $rc == 1 ]] && grep -q 'kube-scheduler died' "$UP_LOG" && pass "kube-scheduler killed: up says so, exits 1" ||
        fail "component death" "rc=$rc; $(tail -n 5 "$UP_LOG")"
    assert_clean "after a component died"
else
    fail "up (2 nodes) ready"
fi

# ---- SIGKILL, then down -------------------------------------------------------------
log "up killed with SIGKILL, then down"
start_up --nodes 2
if wait_ready 300; then
    k apply -f scenarios/embedded/naive/deployment.yaml -f scenarios/embedded/naive/service.yaml >/dev/null
    k rollout status deployment/api --timeout=180s >/dev/null
    kill -KILL "$UP_PID"
    wait "$UP_PID" 2>/dev/null
    UP_PID=""
    [[ -n "$(run_processes)" ]] && pass "after SIGKILL the cluster's processes are still there (as expected)" || fail "SIGKILL left processes"
    out="$("$REALK8S" down 2>&1)"
    rc=$?
    echo "$out" | sed 's/^/    /'
    [[ $rc == 0 ]] && pass "down: exit 0" || fail "down: exit 0" "rc=$rc"
    assert_clean "after SIGKILL and down"
    out="$("$REALK8S" down 2>&1)"
    rc=$?
    [[ $rc == 0 && $out == *"nothing to clean up"* ]] && pass "down again: nothing to clean up, exit 0" || fail "down idempotent" "rc=$rc: $out"
else
    fail "up (2 nodes) ready"
fi

log "what the correlator said on the real cluster"
printf '  %s\n' "${RESULTS[@]}"
echo
echo "real cluster tests took $(elapsed "$T0")"
((FAILED)) && printf 'failed: %s\n' "${FAILURES[@]}"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
