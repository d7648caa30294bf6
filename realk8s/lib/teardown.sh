# shellcheck shell=bash
# realk8s: stopping everything a run started and undoing what it changed.
# Used by `up` (Ctrl-C, SIGTERM, a failed start, a component that died) and by
# `down` (after an `up` that was killed outright). Idempotent: each step looks
# for what is there, so it is safe when nothing is.

# Every process of the run: the recorded components; whatever lives in a
# node's mount namespace (containerd, shims, kubelet, kube-proxy, the holder);
# whatever is in the run's cgroups (the containers); and any process running a
# binary from realk8s's cache. One PID a line, sorted, each once.
run_processes() {
    run_process_candidates | sort -un
}

run_process_candidates() {
    local nss=() f p ns exe
    for f in "$STATE"/nodes/*/mnt-ns; do [[ -f $f ]] && nss+=("$(cat "$f")"); done
    for p in /proc/[0-9]*; do
        p="${p#/proc/}"
        [[ $p == "$$" || $p == "$BASHPID" ]] && continue
        if ((${#nss[@]})); then
            ns="$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" || continue
            for f in "${nss[@]}"; do [[ $ns == "$f" ]] && { echo "$p"; continue 2; }; done
        fi
        exe="$(readlink "/proc/$p/exe" 2>/dev/null)" || continue
        [[ $exe == "$CACHE"/* ]] && echo "$p"
    done
    find /sys/fs/cgroup/*/"$CGROUP_PARENT" -name cgroup.procs -exec cat {} + 2>/dev/null
    local name
    for f in "$PIDS"/*; do
        [[ -f $f ]] || continue
        name="$(basename "$f")"
        recorded_pid "$name" || true
    done
}

stop_component() { # NAME [grace seconds]
    local pid i
    pid="$(recorded_pid "$1")" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < ${2:-5} * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

kill_all_run_processes() {
    local round pids
    for round in 1 2 3 4 5 6 7 8 9 10; do
        pids="$(run_processes | grep -vx "$$" || true)"
        [[ -z $pids ]] && return 0
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.3
    done
    pids="$(run_processes || true)"
    [[ -z $pids ]]
}

remove_cgroups() {
    local c
    for c in /sys/fs/cgroup/*/"$CGROUP_PARENT"; do
        [[ -d $c ]] || continue
        find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
}

# Mounts under the state directory seen from the host (the nodes' own mounts
# live in their namespaces and went with them).
unmount_state() {
    local m
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v s="$STATE/" 'index($5, s) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
}

# What is left of the run, one line each; nothing means clean.
leftovers() {
    local pids l r fam t c
    pids="$(run_processes | tr '\n' ' ')"
    [[ -n ${pids// /} ]] && echo "processes: $pids"
    awk -v s="$STATE/" 'index($5, s) == 1 { print "mount: " $5 }' /proc/self/mountinfo
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | sed 's/@.*//' | grep -E '^rk8s' || true); do
        echo "network interface: $l"
    done
    for r in "$POD_RANGE" "$SERVICE_RANGE" "$NODE_RANGE"; do
        ip -4 route show table all 2>/dev/null | grep -E "(^| )${r//./\\.}( |$)" | sed 's/^/route: /'
    done
    for fam in iptables ip6tables; do
        command -v "$fam-save" >/dev/null || continue
        for t in "${IPT_TABLES[@]}"; do
            for c in $(our_chains "$fam" "$t"); do echo "$fam chain: $t/$c"; done
        done
    done
    for c in /sys/fs/cgroup/*/"$CGROUP_PARENT"; do
        [[ -d $c ]] && echo "cgroup: $c"
    done
    return 0
}

teardown() {
    local t0 left
    t0=$(now_ms)
    [[ -d $STATE ]] || return 0
    say "tearing down"
    local f
    # The kubelets first, so that none restarts a container being killed.
    for f in "$PIDS"/node*-kubelet "$PIDS"/node*-kube-proxy; do
        [[ -f $f ]] && stop_component "$(basename "$f")" 3
    done
    # Then everything else at once: containers, shims, containerd, the
    # holders and the control plane (etcd's data goes with the run).
    kill_all_run_processes || say "some processes would not die: $(run_processes | tr '\n' ' ')"
    remove_cgroups
    unmount_state
    cleanup_links
    cleanup_routes
    cleanup_iptables
    flush_conntrack
    restore_sysctls
    # The data (etcd, images, containers); the logs stay. Kept while a process
    # of the run survives, so that another `down` can still find it.
    if [[ -z "$(run_processes)" ]]; then
        rm -rf "$STATE/etcd" "$STATE/nodes" "$STATE/pki" "$PIDS" "$STATE"/*.kubeconfig "$STATE/up.pid"
    fi
    left="$(leftovers)"
    if [[ -n $left ]]; then
        say "left behind after teardown:"
        sed 's/^/    /' <<<"$left" >&2
        return 1
    fi
    rm -rf "$BEFORE"
    local ms=$(($(now_ms) - t0))
    say "teardown complete in $((ms / 1000)).$(((ms % 1000) / 100))s; logs stay in $LOGS"
}
