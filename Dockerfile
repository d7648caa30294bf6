# syntax=docker/dockerfile:1
#
# The demo app (`rolltest serve`) as a container image, for kind:
#
#     docker build -t rolltest-demo:v1 .
#     kind load docker-image rolltest-demo:v1 --name rolltest
#
# The manifests (scenarios/embedded/*/deployment.yaml, used unchanged by
# scenarios/kind/*.toml) name the image `rolltest-demo:v1`. A tag other than
# `latest` makes the default imagePullPolicy IfNotPresent, so the kubelet uses
# the image `kind load` put on the nodes and never tries a registry.

# ---- build ----
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# --locked: exactly the versions in Cargo.lock. The cache mounts (BuildKit)
# keep the registry and target/ between local builds; the binary is copied
# out of the cached target/ because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin rolltest \
    && cp target/release/rolltest /usr/local/bin/rolltest

# ---- run ----
# debian-slim rather than distroless: the fixed Deployment's preStop hook is
# `exec: ["sleep", "3"]`, which needs a `sleep` binary in the container
# (distroless has none). The binary needs only glibc (TLS is rustls + ring,
# built in).
FROM debian:bookworm-slim
COPY --from=builder /usr/local/bin/rolltest /usr/local/bin/rolltest
# Any non-root user will do; the app binds 8080, not a privileged port.
USER 65532:65532
EXPOSE 8080
# `rolltest serve` listens on $POD_IP:$PORT when those are set, else on
# 127.0.0.1:8080, which nothing outside the container can reach. The embedded
# cluster sets POD_IP and PORT for every pod; a real kubelet sets neither. So
# the image listens on every interface of the pod, port 8080 (the manifests'
# containerPort) here, in the ENTRYPOINT, and the manifests stay the same for
# both clusters: Kubernetes appends a container's `args` to the ENTRYPOINT
# (they replace only CMD), so `args: ["--on-sigterm", "exit", ...]` becomes
# `rolltest serve --listen 0.0.0.0:8080 --on-sigterm exit ...`. (Do not pass
# --listen again in `args`: it may be given once.) The pod's name for the
# x-rolltest-pod header comes from the host name, which Kubernetes sets to
# the pod's name.
# rolltest serve handles SIGTERM itself (drain / exit / ignore, per
# --on-sigterm), so it can run as PID 1 without an init.
ENTRYPOINT ["/usr/local/bin/rolltest", "serve", "--listen", "0.0.0.0:8080"]
