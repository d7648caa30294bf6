# shellcheck shell=bash
# realk8s: shared settings, logging and small helpers. Sourced by scripts/realk8s.

# ---- where things live ------------------------------------------------------
REALK8S_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"   # realk8s/ in the repository
REPO_ROOT="$(cd "$REALK8S_SRC/.." && pwd)"
# The state directory: logs of every component, certificates, etcd's data,
# each node's containerd root. One realk8s at a time per machine, so the path is
# fixed (an environment variable moves it). Logs stay after `down`.
STATE="${REALK8S_STATE_DIR:-/var/lib/rolltest-realk8s}"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
# Built binaries and images, by version, outside the repository: a second `up`
# reuses them.
CACHE="${REALK8S_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rolltest-realk8s}"

# ---- the cluster's addresses -------------------------------------------------
# The node network: a bridge on the host holds node 1's address; node k >= 2
# lives in its own network namespace behind a veth at 172.18.0.k. Pods of node k
# get 10.244.k.0/24, Services 10.96.0.0/16 (kind's defaults). Every one of
# these ranges gets a blackhole route before anything starts, so a packet no
# interface claims dies here.
NODE_NET_PREFIX="172.18.0"
NODE_RANGE="172.18.0.0/16"
POD_RANGE="10.244.0.0/16"
SERVICE_RANGE="10.96.0.0/16"
KUBERNETES_SERVICE_IP="10.96.0.1"
NODE_BRIDGE="rk8s0"
API_PORT="${REALK8S_API_PORT:-6443}"
ETCD_CLIENT_PORT=2379
ETCD_PEER_PORT=2380
CGROUP_PARENT="rolltest-realk8s"
PAUSE_IMAGE="registry.k8s.io/pause:3.10"
DEMO_IMAGE="rolltest-demo:v1"

# The nodes mirror the repository's kind-config.yaml: node 1 is the control
# plane (tainted NoSchedule when there are workers, as kubeadm does; the load's
# NodePort enters there), nodes 2.. are the workers, with kind's names for a
# cluster called "rolltest", so scenarios written for that kind cluster (which
# name nodes, like a drain) run here unchanged.
CLUSTER_NAME="${REALK8S_NAME:-rolltest}"
node_ip() { echo "$NODE_NET_PREFIX.$1"; }
node_name() {
    case "$1" in
    1) echo "$CLUSTER_NAME-control-plane" ;;
    2) echo "$CLUSTER_NAME-worker" ;;
    *) echo "$CLUSTER_NAME-worker$(($1 - 1))" ;;
    esac
}
node_pod_cidr() { echo "10.244.$1.0/24"; }
node_dir() { echo "$STATE/nodes/$1"; }

# ---- output -----------------------------------------------------------------
say() { printf 'realk8s: %s\n' "$*" >&2; }
die() {
    printf 'realk8s: error: %s\n' "$*" >&2
    exit "${DIE_CODE:-1}"
}
# Bad input or a missing prerequisite: exit 2, nothing touched.
usage_error() { DIE_CODE=2 die "$@"; }

now_ms() { date +%s%3N; }
PHASE_NAME=""
PHASE_START=0
phase() {
    PHASE_NAME="$1"
    PHASE_START=$(now_ms)
}
phase_done() {
    local ms=$(($(now_ms) - PHASE_START))
    printf 'realk8s: %-34s %6d.%01ds%s\n' "$PHASE_NAME" $((ms / 1000)) $(((ms % 1000) / 100)) "${1:+  ($1)}" >&2
    PHASE_NAME=""
}

# ---- versions (the committed go.mod files are the one source of truth) -------
mod_version() { # go.mod path, module path -> version
    awk -v m="$2" '$1 == "require" && $2 == m { print $3; exit } $1 == m { print $2; exit }' "$1"
}
K8S_VERSION="$(mod_version "$REALK8S_SRC/build/kubernetes/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(mod_version "$REALK8S_SRC/build/etcd/go.mod" go.etcd.io/etcd/server/v3)"
CONTAINERD_VERSION="$(mod_version "$REALK8S_SRC/build/containerd/go.mod" github.com/containerd/containerd/v2)"

# ---- processes --------------------------------------------------------------
# A started component: $PIDS/NAME holds "PID STARTTIME" so that `down` never
# signals a process that merely reuses the number.
proc_starttime() { awk '{ print $22 }' "/proc/$1/stat" 2>/dev/null; }
record_pid() { echo "$2 $(proc_starttime "$2")" >"$PIDS/$1"; }
recorded_pid() { # NAME -> PID if that very process still runs
    local f="$PIDS/$1" pid st
    [[ -f $f ]] || return 1
    read -r pid st <"$f" || return 1
    [[ -n $pid && "$(proc_starttime "$pid")" == "$st" ]] || return 1
    echo "$pid"
}
alive() { kill -0 "$1" 2>/dev/null; }

# Start a component in the background in its own session (a Ctrl-C on the
# terminal reaches `up`, which then stops everything in order), its output in
# $LOGS/NAME.log, without the lock's file descriptor.
# start_component NAME [nsenter args --] CMD...
start_component() {
    local name="$1"
    shift
    setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
    record_pid "$name" "$!"
    disown "$!"
}

# A component failed: say why and end the run; `up`'s exit handler shows the
# component's last log lines and tears down.
FAILED_COMPONENT=""
fail_component() { # NAME message
    FAILED_COMPONENT="$1"
    say "$2"
    exit 1
}

# Wait until CMD succeeds; the run ends (fail_component) if the component
# NAME dies first or SECONDS pass.
wait_for() { # NAME SECONDS WHAT CMD...   (WHAT: "healthy", "ready", ...)
    local name="$1" seconds="$2" what="$3"
    local deadline=$(($(date +%s) + seconds))
    shift 3
    while ! "$@" >/dev/null 2>&1; do
        recorded_pid "$name" >/dev/null || fail_component "$name" "$name exited before it was $what"
        (($(date +%s) < deadline)) || fail_component "$name" "$name was not $what within $seconds s"
        sleep 0.2
    done
}

show_log_tail() { # NAME
    local f="$LOGS/$1.log"
    [[ -f $f ]] || return 0
    printf 'realk8s: last lines of %s:\n' "$f" >&2
    tail -n 25 "$f" | sed 's/^/    /' >&2
}
