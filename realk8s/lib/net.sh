# shellcheck shell=bash
# realk8s: the host side of the network and everything `down` must undo there.
#
# What a run adds to the host (node 1 lives in the host's network namespace so
# that kube-proxy's localhost NodePorts answer on 127.0.0.1):
#   - blackhole routes for the pod, Service and node ranges (before anything starts)
#   - the node bridge rk8s0 with node 1's address, node k's veth rk8s-nK
#   - routes to node k's pod range via node k's address
#   - node 1's pod bridge rk8s-cni1 (the CNI bridge plugin makes it)
#   - the iptables chains of kube-proxy, the kubelet (KUBE-*) and our fence (RK8S-FENCE)
#   - sysctls (the kubelet's kernel.*/vm.*, kube-proxy's route_localnet, ip_forward)
# Everything a run changes is found again from the snapshots taken before it
# started ($STATE/before/), so `down` after a SIGKILL undoes it just the same.

BEFORE="$STATE/before"
IPT_TABLES=(filter nat mangle raw security)

chains_of() { # family table -> the table's chain names
    "$1-save" -t "$2" 2>/dev/null | awk '/^:/ { sub(/^:/, "", $1); print $1 }'
}

snapshot_host() {
    mkdir -p "$BEFORE"
    sysctl -a 2>/dev/null | sed 's/\t/ /g' >"$BEFORE/sysctl"
    local fam t
    for fam in iptables ip6tables; do
        for t in "${IPT_TABLES[@]}"; do chains_of "$fam" "$t"; done | sort -u >"$BEFORE/$fam-chains"
    done
    nft list tables 2>/dev/null | sort >"$BEFORE/nft-tables" || true
}

# Ranges that must not already be routed here: realk8s would capture or leak them.
check_ranges_free() {
    local r
    for r in "$POD_RANGE" "$SERVICE_RANGE" "$NODE_RANGE"; do
        if ip -4 route show table all | awk '{ print ($1 == "blackhole" || $1 == "unreachable" || $1 == "local" ? $2 : $1) }' | grep -qx "$r"; then
            usage_error "the range $r is already routed on this machine (ip route show table all); realk8s uses it for its cluster"
        fi
    done
    ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && usage_error "a network interface $NODE_BRIDGE exists already (a realk8s not cleaned up? run scripts/realk8s down)"
    return 0
}

# Blackholes first: from here on a packet for one of the cluster's ranges that
# no more specific route claims is dropped on this machine.
add_blackholes() {
    local r
    : >"$STATE/routes"
    for r in "$POD_RANGE" "$SERVICE_RANGE" "$NODE_RANGE"; do
        ip route add blackhole "$r" || die "adding the blackhole route $r failed"
        echo "$r" >>"$STATE/routes"
    done
}

# The fence: forwarded packets from a pod or node that leave the cluster's
# ranges are dropped (mangle FORWARD sees them after kube-proxy's DNAT). Pods
# have no business outside; nothing from this run reaches another host.
add_fence() {
    iptables -w -t mangle -N RK8S-FENCE
    iptables -w -t mangle -A RK8S-FENCE -d "$POD_RANGE" -j RETURN
    iptables -w -t mangle -A RK8S-FENCE -d "$NODE_RANGE" -j RETURN
    iptables -w -t mangle -A RK8S-FENCE -s "$POD_RANGE" -j DROP
    iptables -w -t mangle -A RK8S-FENCE -s "$NODE_RANGE" -j DROP
    iptables -w -t mangle -I FORWARD 1 -j RK8S-FENCE
}

set_host_sysctl() { # key value
    sysctl -qw "$1=$2" || die "sysctl $1=$2 failed"
}

setup_node_bridge() {
    ip link add "$NODE_BRIDGE" type bridge || die "creating the bridge $NODE_BRIDGE failed"
    ip addr add "$(node_ip 1)/24" dev "$NODE_BRIDGE"
    ip link set "$NODE_BRIDGE" up
    # Node k's pods are reached through node k; node 1 forwards between them.
    set_host_sysctl net.ipv4.ip_forward 1
}

# Wire node k's network namespace (held by process HOLDER) to the bridge.
setup_node_netns() { # k holder
    local k="$1" holder="$2" host_if="rk8s-n$1"
    ip link add "$host_if" type veth peer name eth0 netns "$holder" || die "creating the veth for node $k failed"
    ip link set "$host_if" master "$NODE_BRIDGE" up
    nsenter -t "$holder" -n sh -ec "
        ip link set lo up
        ip addr add $(node_ip "$k")/24 dev eth0
        ip link set eth0 up
        ip route add default via $(node_ip 1)
        sysctl -qw net.ipv4.ip_forward=1
        sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
    " || die "configuring node $k's network namespace failed"
    ip route add "$(node_pod_cidr "$k")" via "$(node_ip "$k")" dev "$NODE_BRIDGE"
}

# ---- undo ---------------------------------------------------------------------

# Chains of ours: KUBE-* and CNI-* that did not exist before the run, and RK8S-*.
our_chains() { # family table
    local before="$BEFORE/$1-chains"
    chains_of "$1" "$2" | grep -E '^(KUBE-|CNI-|RK8S-)' |
        { if [[ -f $before ]]; then grep -vxFf "$before"; else grep -E '^RK8S-'; fi; } || true
}

cleanup_iptables() {
    local fam t chains line target
    for fam in iptables ip6tables; do
        command -v "$fam-save" >/dev/null || continue
        for t in "${IPT_TABLES[@]}"; do
            chains="$(our_chains "$fam" "$t")"
            [[ -z $chains ]] && continue
            # First the rules elsewhere that jump into our chains...
            while IFS= read -r line; do
                local chain="${line#-A }"
                chain="${chain%% *}"
                grep -qxF "$chain" <<<"$chains" && continue
                target="$(sed -nE 's/.* -[jg] ([^ ]+).*/\1/p' <<<"$line")"
                grep -qxF "$target" <<<"$chains" || continue
                eval "$fam -w -t $t -D ${line#-A }" 2>/dev/null || true
            done < <("$fam-save" -t "$t" 2>/dev/null | grep '^-A ')
            # ...then our chains themselves.
            while read -r c; do "$fam" -w -t "$t" -F "$c" 2>/dev/null || true; done <<<"$chains"
            while read -r c; do "$fam" -w -t "$t" -X "$c" 2>/dev/null || true; done <<<"$chains"
        done
    done
    # iptables-nft makes its tables when first used; drop those the run brought
    # into being once they are empty again (no rule left in them).
    if [[ -f $BEFORE/nft-tables ]] && command -v nft >/dev/null; then
        local tbl fam name
        while read -r tbl; do
            [[ -z $tbl ]] && continue
            read -r _ fam name <<<"$tbl"
            if ! nft list table "$fam" "$name" 2>/dev/null | grep -vE '^\s*((table|chain) .*\{|type .*;|\})?\s*$' | grep -q .; then
                nft delete table "$fam" "$name" 2>/dev/null || true
            fi
        done < <(nft list tables 2>/dev/null | sort | comm -13 "$BEFORE/nft-tables" -)
    fi
}

cleanup_links() {
    local l
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | sed 's/@.*//' | grep -E '^rk8s' || true); do
        ip link del "$l" 2>/dev/null || true
    done
}

cleanup_routes() {
    local r
    if [[ -f $STATE/routes ]]; then
        while read -r r; do
            [[ -n $r ]] && ip route del blackhole "$r" 2>/dev/null || true
        done <"$STATE/routes"
        rm -f "$STATE/routes"
    fi
}

# Put back every sysctl the run changed, from the snapshot taken before it.
# ip_forward first: writing it also sets every interface's forwarding (and
# with it accept_redirects' effective value); then whatever still differs.
restore_sysctls() {
    [[ -f $BEFORE/sysctl ]] || return 0
    local pass key val path cur
    for pass in first rest; do
        while IFS= read -r line; do
            key="${line%% = *}"
            val="${line#* = }"
            [[ $pass == first && $key != net.ipv4.ip_forward ]] && continue
            case "$key" in
            kernel.random.* | kernel.ns_last_pid | kernel.tainted | fs.* | kernel.pty.nr | net.netfilter.nf_conntrack_count | kernel.sched_* | vm.stat_*) continue ;;
            esac
            path="/proc/sys/${key//.//}"
            [[ -f $path && -w $path ]] || continue
            # Only entries whose owner may write them (sysctl -a lists read-only ones too).
            [[ "$(stat -c %A "$path")" == ?rw* ]] || continue
            cur="$(tr '\t' ' ' <"$path" 2>/dev/null)" || continue
            [[ $cur == "$val" ]] && continue
            if printf '%s' "$val" >"$path" 2>/dev/null; then
                say "restored sysctl $key = $val (was $cur)"
            fi
        done < <(if [[ $pass == first ]]; then grep '^net\.ipv4\.ip_forward = ' "$BEFORE/sysctl"; else
            # Only the lines that differ now (one `sysctl -a`, not one read per key).
            sysctl -a 2>/dev/null | sed 's/\t/ /g' | sort | comm -23 <(sort "$BEFORE/sysctl") -
        fi)
    done
}

flush_conntrack() {
    command -v conntrack >/dev/null || return 0
    local r
    for r in "$POD_RANGE" "$SERVICE_RANGE" "$NODE_RANGE"; do
        conntrack -D -d "$r" >/dev/null 2>&1 || true
        conntrack -D -s "$r" >/dev/null 2>&1 || true
        conntrack -D --reply-src "$r" >/dev/null 2>&1 || true
    done
}
