//! The service proxy of the embedded cluster: it listens on the Service's
//! address and forwards to the endpoints it has *learned*, which lag the
//! endpoints the control plane wrote by a propagation delay (the race that
//! rolltest exists to show).
//!
//! Two modes (kubernetes/kubernetes pkg/proxy: iptables kube-proxy routes only
//! new connections; an ingress proxies each request):
//! - [`ProxyMode::L4`] behaves like iptables kube-proxy: each new TCP
//!   connection picks a backend and stays pinned to it (like conntrack) until
//!   either side closes; a dead backend resets the client. With no usable
//!   endpoint the listener refuses connections, like kube-proxy's REJECT
//!   rule (see `gate`).
//! - [`ProxyMode::L7`] behaves like an HTTP ingress (nginx): each request picks
//!   a backend and is forwarded over a keep-alive pool; a refused backend is a
//!   502, no endpoints at all is a 503.
//! - [`ProxyMode::IngressNginx`] is the L7 proxy with ingress-nginx's
//!   defaults ([`IngressNginx`]): a failed try moves on to the next upstream
//!   (`proxy_next_upstream error timeout`, 3 tries), and endpoint changes
//!   reach the data path no more often than the controller's sync rate limit
//!   (see `sync`).
//!
//! Backend choice follows kube-proxy: round-robin over `ready` endpoints, and
//! only when there is none over `serving && terminating` ones.
//!
//! Dead pods on the network: a pod whose process exited while its sandbox
//! lives refuses (the kernel does it: nothing listens on its address). Once
//! the kubelet tore its sandbox down ([`IpAllocator::tear_down`]), a real
//! network drops packets to its address, so a new connection a stale view
//! still sends there is never answered: the L7 proxies' connect times out
//! (their connect timeout, then 504 or the next upstream); the L4 proxy,
//! whose client's `connect()` already succeeded on the proxy's listener,
//! holds the connection unanswered until the client gives up (or
//! [`DROPPED_CONNECT_TIMEOUT`], Linux's SYN retries, passes: then a reset).
//! The difference that remains: an L4 client sees its *request* time out,
//! where through iptables its *connect* would.
//!
//! Every client connection (L4) or request (L7) yields a
//! [`ProxyEvent::Served`] record naming the pod that served it, so attribution
//! in embedded mode is exact. Each applied endpoint change yields a
//! [`ProxyEvent::Applied`].
//!
//! The proxy runs on a thread of its own with a single-threaded Tokio
//! runtime (see [`ServiceProxy`]).
//!
//! Submodules: [`propagation`] (the delay and the batching sync runner),
//! `table` (the applied snapshot and backend choice), `l4` and `l7` (the
//! forwarders), `sync` (ingress-nginx's rate-limited endpoint sync).

mod gate;
mod l4;
mod l7;
pub mod propagation;
mod sync;
mod table;

use std::{
    net::SocketAddr,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

pub use propagation::{Propagation, PropagationParseError, SyncRunner};

use table::Shared;

use crate::process::IpAllocator;

/// One endpoint as the EndpointSlice controller writes it: the pod's address
/// and the three EndpointSlice conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod's name (the endpoint's `targetRef.name`).
    pub pod: String,
    /// The pod IP and the resolved target port.
    pub addr: SocketAddr,
    /// `conditions.ready`: serving and not terminating.
    pub ready: bool,
    /// `conditions.serving`: the pod's Ready condition, terminating or not.
    pub serving: bool,
    /// `conditions.terminating`: the pod has a deletion timestamp.
    pub terminating: bool,
}

/// How the proxy forwards traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// TCP forwarding like iptables kube-proxy: a backend per new connection,
    /// live connections pinned to their backend.
    L4,
    /// HTTP/1.1 reverse proxying like an ingress: a backend per request.
    L7 {
        /// After a connect error, retry an idempotent request (GET, HEAD, PUT,
        /// DELETE, OPTIONS) once on another endpoint, like nginx's
        /// `proxy_next_upstream error`.
        retry_connect_errors: bool,
    },
    /// HTTP/1.1 reverse proxying like ingress-nginx: a backend per request,
    /// failed tries retried on the next upstream, endpoint changes applied
    /// at its sync rate (see [`IngressNginx`]).
    IngressNginx(IngressNginx),
}

/// ingress-nginx's data path and endpoint sync, with its defaults
/// ([`IngressNginx::DEFAULT`]; sources: kubernetes/ingress-nginx
/// `internal/ingress/controller/config/config.go`, `pkg/flags/flags.go`,
/// `rootfs/etc/nginx/lua/balancer.lua`, and nginx's
/// `src/http/ngx_http_upstream.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressNginx {
    /// `proxy-next-upstream` (default `error timeout`): which failed tries
    /// move on to the next upstream.
    pub next_upstream: NextUpstream,
    /// `proxy-next-upstream-tries` (default 3): tries in all, the first
    /// included. A failed try on a reused keep-alive connection does not
    /// count (nginx's `u->peer.cached`).
    pub tries: u8,
    /// `proxy-connect-timeout` (default 5 s).
    pub connect_timeout: Duration,
    /// `proxy-read-timeout` (default 60 s): how long to wait for the
    /// response header once the request is sent.
    pub read_timeout: Duration,
    /// `1 / --sync-rate-limit` (default 0.3/s, so 3.33 s): the controller
    /// syncs (and posts endpoint changes to nginx) at most this often.
    pub min_sync_interval: Duration,
    /// `BACKENDS_SYNC_INTERVAL` of balancer.lua (1 s): nginx's workers pick
    /// up posted endpoints on this timer.
    pub backends_sync_interval: Duration,
}

impl IngressNginx {
    /// ingress-nginx's defaults.
    pub const DEFAULT: IngressNginx = IngressNginx {
        next_upstream: NextUpstream {
            error: true,
            timeout: true,
            non_idempotent: false,
        },
        tries: 3,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(60),
        // 1 / 0.3 s.
        min_sync_interval: Duration::from_nanos(3_333_333_333),
        backends_sync_interval: Duration::from_secs(1),
    };
}

impl Default for IngressNginx {
    fn default() -> Self {
        IngressNginx::DEFAULT
    }
}

/// nginx's `proxy_next_upstream` conditions this proxy models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextUpstream {
    /// `error`: an error connecting, sending the request or reading the
    /// response header (refused, reset, closed).
    pub error: bool,
    /// `timeout`: a timeout connecting, sending the request or reading the
    /// response header.
    pub timeout: bool,
    /// `non_idempotent`: also retry POST, LOCK and PATCH once the request
    /// was sent to an upstream (nginx never retries them then by default;
    /// before it was sent, on a connect error, it does).
    pub non_idempotent: bool,
}

/// Something the proxy did, sent on the events channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEvent {
    /// An endpoint set became the proxy's view.
    Applied {
        /// When it was applied.
        at: Instant,
        /// The endpoints as given to [`ServiceProxy::update`].
        endpoints: Arc<[Endpoint]>,
    },
    /// One client connection (L4) or one request (L7) is over.
    Served {
        /// The client's address as the proxy saw it (its peer address).
        client: SocketAddr,
        /// The pod it was forwarded to, if any.
        pod: Option<String>,
        /// That pod's address, if any.
        backend: Option<SocketAddr>,
        /// When the proxy accepted the connection (L4) or the request head (L7).
        start: Instant,
        /// When the connection was closed (L4) or the response was handed to
        /// the client connection (L7).
        end: Instant,
        /// How it went.
        outcome: Outcome,
    },
}

/// How one connection (L4) or request (L7) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An L4 connection.
    Connection {
        /// Bytes copied from the client to the backend.
        to_backend: u64,
        /// Bytes copied from the backend to the client.
        to_client: u64,
        /// How it ended.
        end: ConnectionEnd,
    },
    /// An L7 request.
    Response {
        /// The status the client got.
        status: u16,
        /// Why the proxy answered itself (502/503/504), `None` for a
        /// backend's response.
        proxy: Option<ProxyReason>,
        /// Every upstream tried, in order (more than one when the request
        /// was retried; none when there was no endpoint). The last one gave
        /// the response, or failed with the error the proxy answered for.
        tries: Vec<UpstreamTry>,
    },
    /// An L7 request whose client went away before its response was ready.
    ClientGone,
}

/// One upstream an L7 request was sent to (or tried to be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTry {
    /// The pod.
    pub pod: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Why the try failed; `None` when the upstream's response went back to
    /// the client.
    pub error: Option<UpstreamError>,
}

/// Why one try of an L7 request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The connect was refused (nothing listening): nginx `error`.
    ConnectRefused,
    /// The connect timed out (`proxy-connect-timeout`): nginx `timeout`.
    ConnectTimeout,
    /// The connect failed otherwise (unreachable, HTTP handshake): nginx `error`.
    ConnectError,
    /// The upstream closed or reset the connection after the request was
    /// sent, before a complete response header: nginx `error`.
    Reset,
    /// No response header within `proxy-read-timeout`: nginx `timeout`.
    ReadTimeout,
    /// The upstream failed after its response header (body cut short): never
    /// retried (nginx may already have answered the client).
    BodyCut,
}

impl UpstreamError {
    /// Whether the request had reached the upstream (nginx's
    /// `u->request_sent`): non-idempotent requests are not retried then.
    pub fn request_sent(self) -> bool {
        matches!(
            self,
            UpstreamError::Reset | UpstreamError::ReadTimeout | UpstreamError::BodyCut
        )
    }

    /// A timeout (nginx answers 504 when it gives up on one), not an error (502).
    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectTimeout | UpstreamError::ReadTimeout
        )
    }

    /// A short name (`connect_refused`, `reset`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::ConnectRefused => "connect_refused",
            UpstreamError::ConnectTimeout => "connect_timeout",
            UpstreamError::ConnectError => "connect_error",
            UpstreamError::Reset => "reset",
            UpstreamError::ReadTimeout => "read_timeout",
            UpstreamError::BodyCut => "body_cut",
        }
    }
}

/// How an L4 connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// Both sides closed cleanly (FIN both ways).
    Closed,
    /// No usable endpoint: the client was reset at once.
    NoEndpoints,
    /// Connecting to the backend failed (refused, unreachable, timed out);
    /// the client was reset.
    ConnectFailed,
    /// The backend reset or errored mid-stream; the client was reset.
    BackendReset,
    /// The client reset or errored mid-stream; the backend was reset.
    ClientReset,
}

/// Why the L7 proxy answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyReason {
    /// No usable endpoint (503).
    NoEndpoints,
    /// Connecting to the backend failed (502).
    ConnectFailed,
    /// The backend closed or reset before a complete response (502).
    BackendClosed,
    /// The backend timed out (connect or response header) on the last try
    /// (504).
    Timeout,
    /// The client's request body could not be read (400).
    BadRequest,
}

impl ProxyReason {
    /// The value of the `x-rolltest-proxy` header on the proxy's own answers.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyReason::NoEndpoints => "no-endpoints",
            ProxyReason::ConnectFailed => "connect-failed",
            ProxyReason::BackendClosed => "backend-closed",
            ProxyReason::Timeout => "upstream-timeout",
            ProxyReason::BadRequest => "bad-request",
        }
    }
}

/// Errors at the proxy's boundary.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address could not be bound.
    #[error("service proxy cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The proxy's own thread or runtime could not be created.
    #[error("service proxy cannot start its thread: {0}")]
    Thread(std::io::Error),
}

/// A running service proxy.
///
/// It runs on its own thread with a single-threaded Tokio runtime, like
/// kube-proxy runs apart from the control plane: the data path is not slowed
/// by whatever else the caller's runtime does, and the caller needs no
/// runtime at all. Dropping it (or [`shutdown`](Self::shutdown)) closes the
/// listener, cuts live connections and waits (briefly, blocking) for the
/// thread to end.
#[derive(Debug)]
pub struct ServiceProxy {
    local_addr: SocketAddr,
    /// The data path's view.
    shared: Arc<Shared>,
    /// Where the sync runner applies changes: the data path's view, or
    /// ingress-nginx's controller in front of it.
    target: Arc<Shared>,
    runner: SyncRunner,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ServiceProxy {
    /// Binds `listen` (port 0 picks a free one) and starts forwarding in
    /// `mode`, applying endpoint updates `propagation` late, in batches on
    /// its own sync period (see [`propagation`]). Starts with no endpoints.
    pub fn start(
        listen: SocketAddr,
        mode: ProxyMode,
        propagation: Propagation,
        events: mpsc::UnboundedSender<ProxyEvent>,
    ) -> Result<ServiceProxy, ProxyError> {
        let runner = SyncRunner::start(propagation).map_err(ProxyError::Thread)?;
        ServiceProxy::start_synced(listen, mode, &runner, events)
    }

    /// [`start`](Self::start) with the sync runner it shares with other
    /// listeners: every listener of one runner switches to its new endpoint
    /// set in the same sync, as kube-proxy syncs every Service at once.
    pub fn start_synced(
        listen: SocketAddr,
        mode: ProxyMode,
        runner: &SyncRunner,
        events: mpsc::UnboundedSender<ProxyEvent>,
    ) -> Result<ServiceProxy, ProxyError> {
        ServiceProxy::start_on(listen, mode, runner, events, Arc::default())
    }

    /// [`start_synced`](Self::start_synced) on the pods' `network`: new
    /// connections to an address the kubelet tore down are treated as a real
    /// network treats them, never answered (see the module docs).
    pub fn start_on(
        listen: SocketAddr,
        mode: ProxyMode,
        runner: &SyncRunner,
        events: mpsc::UnboundedSender<ProxyEvent>,
        network: Arc<IpAllocator>,
    ) -> Result<ServiceProxy, ProxyError> {
        // The runtime is built, and the listener bound, on the proxy's own
        // thread: a runtime must never be dropped inside another runtime's
        // task, which a failed bind here would otherwise do.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, ProxyError>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = Arc::new(Shared::new(events, Arc::clone(&network)));
        let serving = Arc::clone(&shared);
        // ingress-nginx: the sync runner brings a change to the controller,
        // whose rate-limited sync brings it to the data path; the others
        // apply it when the runner does.
        let (target, staged) = match mode {
            ProxyMode::IngressNginx(_) => {
                let (staged_tx, staged) = mpsc::unbounded_channel();
                (Arc::new(Shared::new(staged_tx, network)), Some(staged))
            }
            ProxyMode::L4 | ProxyMode::L7 { .. } => (Arc::clone(&shared), None),
        };
        let thread = thread::Builder::new()
            .name(format!("proxy-{}", listen.port()))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ProxyError::Thread(e)));
                        return;
                    }
                };
                let bind = |source| ProxyError::Bind {
                    addr: listen,
                    source,
                };
                // L4: a gate that listens only while some endpoint is
                // usable (it starts with none); L7: a plain listener.
                let bound = {
                    let _guard = runtime.enter();
                    match mode {
                        ProxyMode::L4 => gate::Gate::bind(listen).map(|(gate, open)| {
                            let addr = gate.local_addr();
                            serving.install_gate(gate);
                            (Listening::Gated(open), addr)
                        }),
                        ProxyMode::L7 { .. } | ProxyMode::IngressNginx(_) => listen_on(listen)
                            .and_then(|l| l.local_addr().map(|a| (Listening::Plain(l), a))),
                    }
                    .map_err(bind)
                };
                let (listener, local_addr) = match bound {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(local_addr));
                runtime.block_on(async move {
                    if let (ProxyMode::IngressNginx(config), Some(staged)) = (mode, staged) {
                        let limit = sync::SyncLimit::from(&config);
                        tokio::spawn(sync::run(staged, limit, Arc::clone(&serving)));
                    }
                    match listener {
                        Listening::Gated(open) => tokio::spawn(l4::serve(open, serving)),
                        Listening::Plain(listener) => {
                            tokio::spawn(l7::serve(listener, serving, l7::Policy::of(&mode)))
                        }
                    };
                    let _ = stopped.await;
                });
                drop(runtime);
            })
            .map_err(ProxyError::Thread)?;
        let local_addr = match ready_rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(ProxyError::Thread(std::io::Error::other(
                    "the proxy thread ended early",
                )));
            }
        };
        Ok(ServiceProxy {
            local_addr,
            shared,
            target,
            runner: runner.clone(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Hands the proxy the desired endpoint set as the control plane just
    /// wrote it. It becomes the proxy's view at the first sync at least the
    /// propagation's `min` after now; see [`propagation`].
    pub fn update(&self, endpoints: Vec<Endpoint>) {
        self.update_written_at(Instant::now(), endpoints);
    }

    /// [`update`](Self::update) for an endpoint set written at `written`
    /// (the delay counts from then, like kube-proxy's lag counts from the
    /// EndpointSlice write). Calls must come in write order.
    pub fn update_written_at(&self, written: Instant, endpoints: Vec<Endpoint>) {
        self.runner.send(&self.target, written, endpoints.into());
    }

    /// Stops listening and ends every connection and pending update.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.target.close();
        self.shared.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic in the proxy thread has already been reported there.
            let _ = thread.join();
        }
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a proxy listens.
enum Listening {
    /// L4: each listening socket of the gate, while there is one.
    Gated(tokio::sync::watch::Receiver<Option<Arc<std::net::TcpListener>>>),
    /// L7: always.
    Plain(tokio::net::TcpListener),
}

/// Pending connections the kernel queues for the proxy. The default of 128
/// overflows when a load generator opens many connections at once, and a
/// dropped SYN costs the client a one-second retransmit.
const LISTEN_BACKLOG: u32 = 4096;

fn listen_on(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connect timeout towards a backend (plain L7; ingress-nginx has its own).
/// A live or exited pod's address answers at once (accepts or refuses); a
/// torn-down one never does, so this is what a stale view costs there.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the L4 proxy holds a client connection sent to a torn-down
/// address before resetting it: Linux's default `tcp_syn_retries` (6) gives
/// up a connect after 1+2+4+8+16+32+64 s. Clients give up long before.
pub const DROPPED_CONNECT_TIMEOUT: Duration = Duration::from_secs(127);
