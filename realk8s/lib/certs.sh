# shellcheck shell=bash
# realk8s: the cluster's CA, certificates and kubeconfigs (openssl), as kubeadm
# lays them out for a kind node: one CA, a serving certificate for the API
# server, a client certificate per component, a service-account key pair.

PKI="$STATE/pki"

# make_cert NAME "SUBJECT" [SANS]   (SANS like "IP:127.0.0.1,DNS:localhost"; a
# certificate with SANs is for serving, without for a client)
make_cert() {
    local name="$1" subj="$2" sans="${3:-}" ext
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
    ext="$PKI/$name.ext"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [[ -n $sans ]]; then
            echo "extendedKeyUsage=serverAuth"
            echo "subjectAltName=$sans"
        else
            echo "extendedKeyUsage=clientAuth"
        fi
    } >"$ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 30 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null || die "signing the $name certificate failed"
    rm -f "$PKI/$name.csr" "$ext"
}

# kubeconfig FILE USER SERVER  (client certificate $PKI/USER.{crt,key}, embedded
# like kind's, context `realk8s`)
write_kubeconfig() {
    local file="$1" user="$2" server="$3"
    local ca crt key
    ca="$(base64 -w0 <"$PKI/ca.crt")"
    crt="$(base64 -w0 <"$PKI/$user.crt")"
    key="$(base64 -w0 <"$PKI/$user.key")"
    cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: realk8s
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: realk8s-$user
  user:
    client-certificate-data: $crt
    client-key-data: $key
contexts:
- name: realk8s
  context:
    cluster: realk8s
    user: realk8s-$user
current-context: realk8s
preferences: {}
EOF
    chmod 600 "$file.tmp"
    mv "$file.tmp" "$file"
}

make_pki() { # number of nodes
    local nodes="$1" k
    mkdir -p "$PKI"
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=realk8s-ca" -days 30 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -out "$PKI/ca.crt" 2>/dev/null || die "making the cluster CA failed"
    make_cert apiserver "/CN=kube-apiserver" \
        "IP:127.0.0.1,IP:$(node_ip 1),IP:$KUBERNETES_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    make_cert admin "/O=system:masters/CN=kubernetes-admin"
    make_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    make_cert controller-manager "/CN=system:kube-controller-manager"
    make_cert scheduler "/CN=system:kube-scheduler"
    make_cert kube-proxy "/CN=system:kube-proxy"
    for ((k = 1; k <= nodes; k++)); do
        make_cert "kubelet-$k" "/O=system:nodes/CN=system:node:$(node_name "$k")"
        make_cert "kubelet-serving-$k" "/CN=$(node_name "$k")" "IP:$(node_ip "$k"),DNS:$(node_name "$k")"
    done
    # The service-account token signing key (RSA, like kubeadm's sa.key).
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    chmod 600 "$PKI"/*.key

    local server="https://$(node_ip 1):$API_PORT"
    write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager "https://127.0.0.1:$API_PORT"
    write_kubeconfig "$STATE/scheduler.kubeconfig" scheduler "https://127.0.0.1:$API_PORT"
    write_kubeconfig "$STATE/kube-proxy.kubeconfig" kube-proxy "$server"
    for ((k = 1; k <= nodes; k++)); do
        write_kubeconfig "$(node_dir "$k")/kubelet.kubeconfig" "kubelet-$k" "$server"
    done
    write_kubeconfig "$STATE/admin.kubeconfig" admin "https://127.0.0.1:$API_PORT"
}
