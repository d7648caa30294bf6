# shellcheck shell=bash
# realk8s: a node = containerd + kubelet + kube-proxy, like a kind node.
#
# Each node gets a private mount namespace, held by a small `holder` process,
# in which /run, /var/lib and /var/log are the node's own directories (under
# $STATE/nodes/K): containerd's shim sockets (/run/containerd/s), the pods'
# network namespaces, the kubelet's and CNI's files, pod logs and every mount
# the node makes stay there and vanish with the namespace. Node 1 shares the
# host's network namespace (kube-proxy's localhost NodePorts answer on
# 127.0.0.1); node k >= 2 has its own, wired to the node bridge.

# The holder: a mount namespace (and, for k >= 2, a network namespace) that
# lives until the holder and every process in it are gone.
start_node_holder() { # k
    local k="$1" dir net=()
    dir="$(node_dir "$k")"
    mkdir -p "$dir/run" "$dir/var-lib" "$dir/var-log"
    ((k >= 2)) && net=(--net)
    # shellcheck disable=SC2016
    # The state directory may itself lie under /var/lib or /run: keep it open
    # and bind it back where it was once the node's own directories cover them.
    start_component "node$k-holder" unshare --mount --propagation private "${net[@]}" -- sh -ec '
        exec 3<"$2"
        mount --make-rshared /
        mount --bind "$1/run" /run
        mount --bind "$1/var-log" /var/log
        mount --bind "$1/var-lib" /var/lib
        mkdir -p "$2"
        mount --no-canonicalize --bind /proc/self/fd/3 "$2"
        exec 3<&-
        touch "$1/holder-ready"
        exec sleep infinity' holder "$dir" "$STATE"
    wait_for "node$k-holder" 10 "set up" test -f "$dir/holder-ready"
    local holder
    holder="$(recorded_pid "node$k-holder")"
    readlink "/proc/$holder/ns/mnt" >"$dir/mnt-ns"
}

# NSENTER=(the command prefix that runs a program inside node k's namespaces)
node_nsenter() { # k
    local k="$1" holder
    holder="$(recorded_pid "node$k-holder")" || die "node $k's namespace holder is gone"
    NSENTER=(nsenter --target "$holder" --mount)
    ((k >= 2)) && NSENTER+=(--net)
    NSENTER+=(--)
}

write_node_configs() { # k
    local k="$1" dir name ip
    dir="$(node_dir "$k")"
    name="$(node_name "$k")"
    ip="$(node_ip "$k")"
    mkdir -p "$dir/containerd/root" "$dir/containerd/state" "$dir/cni/net.d" "$dir/cni/ipam" "$dir/kubelet"

    cat >"$dir/containerd/config.toml" <<EOF
# containerd for $name (config version 3, containerd 2.x). Everything it keeps
# is under $dir; /run/containerd (shim sockets) is the node's own /run.
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # Our machines run without CAP_SYS_RESOURCE in the bounding set, so no
  # process may lower its oom_score_adj below 0, and runc fails every pod
  # sandbox (the kubelet asks -998 for it) unless containerd clamps the value
  # at its own, as it does for rootless setups.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$RUNC"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN_DIR"]
    conf_dir = "$dir/cni/net.d"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF

    # Node k's pods: a bridge, addresses from 10.244.k.0/24, no masquerade (pods
    # have nowhere to go outside the cluster), no hostPort plugin. (containerd
    # runs the loopback plugin for each pod itself, from bin_dirs.)
    cat >"$dir/cni/net.d/10-realk8s.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "realk8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "rk8s-cni$k",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$(node_pod_cidr "$k")" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$dir/cni/ipam"
      }
    }
  ]
}
EOF

    # The kubelet: kind's settings (failSwapOn false, image GC and disk
    # eviction off) and local-up-cluster's (webhook authn/authz, no read-only
    # port), on cgroup v1 with the cgroupfs driver, pods under our own cgroup.
    cat >"$dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_PARENT/node$k
cgroupsPerQOS: true
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $((10248 + 100 * (k - 1)))
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $PKI/ca.crt }
authorization:
  mode: Webhook
tlsCertFile: $PKI/kubelet-serving-$k.crt
tlsPrivateKeyFile: $PKI/kubelet-serving-$k.key
containerRuntimeEndpoint: unix://$dir/containerd.sock
imageServiceEndpoint: unix://$dir/containerd.sock
runtimeRequestTimeout: 2m
failSwapOn: false
imageGCHighThresholdPercent: 100
evictionHard:
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
resolvConf: $STATE/resolv.conf
serializeImagePulls: false
localStorageCapacityIsolation: false
# No CAP_SYS_RESOURCE here: the kubelet cannot lower its own oom_score_adj.
oomScoreAdj: 0
EOF

    # kube-proxy: iptables mode with kind's settings (minSyncPeriod 1s, no
    # conntrack sysctls: maxPerCore 0 and zero timeouts leave them as they are).
    cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $name
clientConnection:
  kubeconfig: $STATE/kube-proxy.kubeconfig
clusterCIDR: $POD_RANGE
bindAddress: $ip
oomScoreAdj: 0
healthzBindAddress: $( ((k == 1)) && echo 127.0.0.1 || echo "$ip"):10256
metricsBindAddress: 127.0.0.1:$((10249 + 100 * (k - 1)))
iptables:
  minSyncPeriod: 1s
  syncPeriod: 30s
  localhostNodePorts: true
conntrack:
  maxPerCore: 0
  min: null
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# cgroups for node k's pods, in every v1 hierarchy the kubelet uses.
make_node_cgroups() { # k
    local c
    for c in /sys/fs/cgroup/*/; do
        [[ -e $c/cgroup.procs ]] || continue
        [[ $c == */unified/ ]] && continue
        mkdir -p "$c$CGROUP_PARENT/node$1"
    done
    # cpuset: a child must carry cpus and mems before anything can join it.
    local cs=/sys/fs/cgroup/cpuset
    if [[ -d $cs/$CGROUP_PARENT ]]; then
        cat "$cs/cpuset.cpus" >"$cs/$CGROUP_PARENT/cpuset.cpus" 2>/dev/null || true
        cat "$cs/cpuset.mems" >"$cs/$CGROUP_PARENT/cpuset.mems" 2>/dev/null || true
        cat "$cs/cpuset.cpus" >"$cs/$CGROUP_PARENT/node$1/cpuset.cpus" 2>/dev/null || true
        cat "$cs/cpuset.mems" >"$cs/$CGROUP_PARENT/node$1/cpuset.mems" 2>/dev/null || true
    fi
}

start_containerd() { # k
    local k="$1" dir
    dir="$(node_dir "$k")"
    node_nsenter "$k"
    start_component "node$k-containerd" "${NSENTER[@]}" "$CONTAINERD_BIN/containerd" --config "$dir/containerd/config.toml"
    wait_for "node$k-containerd" 60 answering "$CONTAINERD_BIN/ctr" --address "$dir/containerd.sock" version
}

import_image() { # k tarball
    local dir
    dir="$(node_dir "$1")"
    "$CONTAINERD_BIN/ctr" --address "$dir/containerd.sock" -n k8s.io images import \
        --label io.cri-containerd.pinned=pinned "$2" >>"$LOGS/images.log" 2>&1 ||
        die "importing $(basename "$2") into node $1 failed; see $LOGS/images.log"
}

start_kubelet() { # k nodes
    local k="$1" dir taints=()
    dir="$(node_dir "$k")"
    ((k == 1 && $2 > 1)) && taints=(--register-with-taints node-role.kubernetes.io/control-plane:NoSchedule)
    node_nsenter "$k"
    start_component "node$k-kubelet" "${NSENTER[@]}" "$K8S_BIN/kubelet" \
        --config "$dir/kubelet/config.yaml" \
        --kubeconfig "$dir/kubelet.kubeconfig" \
        --root-dir "$dir/kubelet/root" \
        --cert-dir "$dir/kubelet/pki" \
        --hostname-override "$(node_name "$k")" \
        --node-ip "$(node_ip "$k")" \
        "${taints[@]}" \
        --v=2
}

start_kube_proxy() { # k
    local k="$1" dir
    dir="$(node_dir "$k")"
    node_nsenter "$k"
    start_component "node$k-kube-proxy" "${NSENTER[@]}" "$K8S_BIN/kube-proxy" --config "$dir/kube-proxy.yaml" --v=2
}
