# shellcheck shell=bash
# realk8s: building the components from their official Go modules, once per
# version, into $CACHE. Nothing is downloaded but Go modules (through the Go
# module proxy, pinned by the committed go.sum files) and Debian packages.

# Debian packages the cluster needs at run time (not the build).
#   iptables: kube-proxy's iptables mode runs iptables-restore (nft backend)
#   containernetworking-plugins: bridge, host-local, loopback
#   libseccomp-dev, pkg-config: building runc (built, as Debian's 1.1.5 fails with containerd 2)
#   busybox-static: `sleep` (and a shell) in images, for exec preStop hooks
#   conntrack: flushing the run's conntrack entries at teardown
#   openssl: the cluster's CA and certificates; gcc + libc6-dev: the static pause binary
#   util-linux: unshare, nsenter, setsid, flock; iproute2: ip
DEBIAN_PACKAGES=(iptables nftables curl libseccomp-dev pkg-config containernetworking-plugins busybox-static conntrack openssl gcc libc6-dev util-linux iproute2)
CNI_BIN_DIR=/usr/lib/cni

missing_packages() {
    local p missing=()
    for p in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    echo "${missing[*]}"
}

install_packages() {
    local missing
    missing="$(missing_packages)"
    [[ -z $missing ]] && return 0
    say "installing Debian packages: $missing"
    # shellcheck disable=SC2086
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } >"${TMPDIR:-/tmp}/realk8s-apt.log" 2>&1 ||
        die "apt-get install $missing failed; see ${TMPDIR:-/tmp}/realk8s-apt.log"
}

# One cache directory per component and version; its name carries a hash of
# the pins (go.mod, go.sum) and the build flags, so changing any of them
# builds anew next to the old one. (Not the Go version: a built cache serves
# a machine without Go.)
build_key() { # module dir, extra
    { cat "$1/go.mod" "$1/go.sum"; echo "$2"; } | sha256sum | cut -c1-12
}

go_build() { # name, module dir, version, extra env/flags description, binaries...
    local name="$1" dir="$2" version="$3" ldflags="$4" tags="$5"
    shift 5
    local out="$CACHE/$name-$version-$(build_key "$dir" "$ldflags $tags")"
    local b ok=1
    for b in "$@"; do [[ -x $out/$b ]] || ok=0; done
    if ((ok)); then
        echo "$out"
        return 0
    fi
    command -v go >/dev/null || usage_error "Go is not installed, and $name $version is not built yet (cache: $CACHE). Install Go 1.26 or later."
    mkdir -p "$out.tmp"
    say "building $name $version from its Go module (once; cached in $out)"
    (cd "$dir" && CGO_ENABLED="${GO_CGO:-0}" go build -trimpath ${tags:+-tags "$tags"} -ldflags "$ldflags" -o "$out.tmp/" tool) \
        >"$CACHE/$name-build.log" 2>&1 || {
        tail -n 30 "$CACHE/$name-build.log" >&2
        die "building $name failed; the whole log is $CACHE/$name-build.log"
    }
    rm -rf "$out" && mv "$out.tmp" "$out"
    echo "$out"
}

build_kubernetes() {
    local v="$K8S_VERSION" minor p l="-s -w"
    minor="${v#v1.}"
    minor="${minor%%.*}"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        l+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    K8S_BIN="$(go_build kubernetes "$REALK8S_SRC/build/kubernetes" "$v" "$l" "" \
        kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)"
}

build_etcd() {
    ETCD_BIN="$(go_build etcd "$REALK8S_SRC/build/etcd" "$ETCD_VERSION" "-s -w" "" server)"
    # Go names the binary after the package path's last element (server/v3 -> server).
    [[ -x $ETCD_BIN/etcd ]] || ln -f "$ETCD_BIN/server" "$ETCD_BIN/etcd"
}

# runc links libseccomp and needs cgo (its nsenter is C).
build_runc() {
    local v p=main
    v="$(mod_version "$REALK8S_SRC/build/runc/go.mod" github.com/opencontainers/runc)"
    RUNC_BIN="$(GO_CGO=1 go_build runc "$REALK8S_SRC/build/runc" "$v" \
        "-s -w -X $p.version=${v#v} -X $p.gitCommit=$v" "seccomp urfave_cli_no_docs" runc)"
    RUNC="$RUNC_BIN/runc"
}

build_containerd() {
    local v="$CONTAINERD_VERSION" p=github.com/containerd/containerd/v2/version
    CONTAINERD_BIN="$(go_build containerd "$REALK8S_SRC/build/containerd" "$v" \
        "-s -w -X $p.Version=$v -X $p.Revision=realk8s -X $p.Package=github.com/containerd/containerd/v2" \
        "no_btrfs no_devmapper no_zfs" containerd containerd-shim-runc-v2 ctr)"
}

# ---- images -------------------------------------------------------------------

# A docker-archive tarball that `ctr images import` accepts: one layer made of
# ROOTFS, an image config with ENTRYPOINT (a JSON array) and USER.
make_image_tar() { # out.tar, NAME:TAG, rootfs dir, entrypoint JSON, user
    local out="$1" ref="$2" rootfs="$3" entry="$4" user="$5" work diff
    work="$(mktemp -d)"
    tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
    diff="sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
    cat >"$work/config.json" <<EOF
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",
 "config":{"Entrypoint":$entry,"User":"$user","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"WorkingDir":"/"},
 "rootfs":{"type":"layers","diff_ids":["$diff"]}}
EOF
    printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$ref" >"$work/manifest.json"
    tar --sort=name --mtime=@0 -C "$work" -cf "$out.tmp" manifest.json config.json layer.tar
    mv "$out.tmp" "$out"
    rm -rf "$work"
}

# The pause image, from upstream's own source (build/pause/linux/pause.c in the
# k8s.io/kubernetes module), linked statically: the only file in its image.
build_pause_image() {
    local src dir out
    out="$CACHE/images/pause-$K8S_VERSION.tar"
    if [[ -f $out ]]; then
        PAUSE_TAR="$out"
        return 0
    fi
    command -v go >/dev/null || usage_error "Go is not installed, and the pause image is not built yet (cache: $CACHE). Install Go 1.26 or later."
    # The module's directory in the Go module cache (downloaded if it is not there).
    src="$(cd "$REALK8S_SRC/build/kubernetes" && go mod download -json k8s.io/kubernetes |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/build/pause/linux/pause.c"
    [[ -f $src ]] || die "pause.c not found in the k8s.io/kubernetes module ($src)"
    mkdir -p "$CACHE/images"
    dir="$(mktemp -d)"
    gcc -Os -static -Wall -DVERSION="$K8S_VERSION-realk8s" -o "$dir/pause" "$src" ||
        die "compiling pause.c failed (gcc and libc6-dev are needed)"
    strip "$dir/pause" 2>/dev/null || true
    make_image_tar "$out" "$PAUSE_IMAGE" "$dir" '["/pause"]' "65535:65535"
    rm -rf "$dir"
    PAUSE_TAR="$out"
}

# An image whose entrypoint is BINARY ARGS..., with BINARY's shared libraries
# (as ldd lists them, at the same paths) and busybox's `sleep` and `sh`, so that
# exec preStop hooks like ["sleep", "3"] work.
build_binary_image() { # out.tar, NAME:TAG, user, BINARY, ARGS...
    local out="$1" ref="$2" user="$3" bin="$4"
    shift 4
    [[ -f $bin && -x $bin ]] || usage_error "$bin is not an executable file"
    local root lib entry a
    root="$(mktemp -d)"
    mkdir -p "$root/usr/local/bin" "$root/bin" "$root/tmp" "$root/etc"
    chmod 1777 "$root/tmp"
    cp "$bin" "$root/usr/local/bin/$(basename "$bin")"
    # Debug info only makes the layer big (a debug build of rolltest is ~280 MB).
    strip --strip-debug "$root/usr/local/bin/$(basename "$bin")" 2>/dev/null || true
    # Shared libraries and the dynamic loader, at the paths the binary asks for.
    while read -r lib; do
        [[ -f $lib ]] || continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done < <(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
    cp /bin/busybox "$root/bin/busybox"
    for a in sleep sh true cat; do ln -s busybox "$root/bin/$a"; done
    printf 'root:x:0:0:root:/:/bin/sh\nnonroot:x:65532:65532:nonroot:/:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
    entry="[\"/usr/local/bin/$(basename "$bin")\""
    for a in "$@"; do entry+=",$(json_string "$a")"; done
    entry+="]"
    make_image_tar "$out" "$ref" "$root" "$entry" "$user"
    rm -rf "$root"
}

json_string() { # a JSON string literal
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}

# The rolltest binary the demo image carries: $REALK8S_ROLLTEST, else the newest
# of target/{release,debug}/rolltest, else a debug build.
rolltest_binary() {
    if [[ -n ${REALK8S_ROLLTEST:-} ]]; then
        [[ -x $REALK8S_ROLLTEST ]] || usage_error "REALK8S_ROLLTEST=$REALK8S_ROLLTEST is not an executable"
        echo "$REALK8S_ROLLTEST"
        return
    fi
    local r="$REPO_ROOT/target/release/rolltest" d="$REPO_ROOT/target/debug/rolltest"
    if [[ -x $r && (! -x $d || $r -nt $d) ]]; then
        echo "$r"
    elif [[ -x $d ]]; then
        echo "$d"
    else
        command -v cargo >/dev/null || usage_error "no rolltest binary in target/ and no cargo to build one"
        say "building rolltest (cargo build --locked --bin rolltest)"
        (cd "$REPO_ROOT" && cargo build --locked --bin rolltest) >&2 || die "cargo build failed"
        echo "$d"
    fi
}

build_demo_image() {
    local bin key
    bin="$(rolltest_binary)"
    # The binary and this recipe make the image.
    key="$(cat "$bin" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)"
    DEMO_TAR="$CACHE/images/rolltest-demo-$key.tar"
    if [[ ! -f $DEMO_TAR ]]; then
        mkdir -p "$CACHE/images"
        rm -f "$CACHE"/images/rolltest-demo-*.tar   # older binaries' images
        # What Dockerfile gives the demo app: `rolltest serve` on every
        # interface of the pod, port 8080, as user 65532.
        build_binary_image "$DEMO_TAR" "$DEMO_IMAGE" "65532:65532" "$bin" serve --listen 0.0.0.0:8080
    fi
}
