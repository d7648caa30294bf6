# shellcheck shell=bash
# realk8s: the control plane, with the flags envtest, kwok and
# local-up-cluster.sh use: etcd, kube-apiserver, kube-controller-manager (every
# default controller), kube-scheduler. All on this host, talking over loopback.

start_etcd() {
    mkdir -p "$STATE/etcd"
    start_component etcd "$ETCD_BIN/etcd" \
        --name realk8s \
        --data-dir "$STATE/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "realk8s=http://127.0.0.1:$ETCD_PEER_PORT" \
        --unsafe-no-fsync \
        --log-level warn
    wait_for etcd 30 healthy curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

api_get() { # path
    curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "https://127.0.0.1:$API_PORT$1"
}

start_apiserver() {
    start_component kube-apiserver "$K8S_BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --bind-address 0.0.0.0 \
        --secure-port "$API_PORT" \
        --advertise-address "$(node_ip 1)" \
        --tls-cert-file "$PKI/apiserver.crt" \
        --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --service-account-key-file "$PKI/sa.pub" \
        --service-account-signing-key-file "$PKI/sa.key" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --authorization-mode Node,RBAC \
        --enable-admission-plugins NodeRestriction \
        --allow-privileged=true \
        --service-cluster-ip-range "$SERVICE_RANGE" \
        --service-node-port-range 30000-32767 \
        --kubelet-preferred-address-types InternalIP \
        --profiling=false \
        --v=1
    wait_for kube-apiserver 120 ready api_get /readyz
}

start_controller_manager() {
    start_component kube-controller-manager "$K8S_BIN/kube-controller-manager" \
        --kubeconfig "$STATE/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 \
        --service-account-private-key-file "$PKI/sa.key" \
        --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" \
        --cluster-signing-key-file "$PKI/ca.key" \
        --use-service-account-credentials=true \
        --controllers '*' \
        --leader-elect=false \
        --service-cluster-ip-range "$SERVICE_RANGE" \
        --cluster-cidr "$POD_RANGE" \
        --allocate-node-cidrs=false \
        --v=1
}

start_scheduler() {
    cat >"$STATE/scheduler.yaml" <<EOC
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $STATE/scheduler.kubeconfig
leaderElection:
  leaderElect: false
EOC
    start_component kube-scheduler "$K8S_BIN/kube-scheduler" \
        --config "$STATE/scheduler.yaml" \
        --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
        --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 \
        --v=1
}
