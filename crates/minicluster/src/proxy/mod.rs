//! The service proxy of the embedded cluster: it listens on the Service's
//! address and forwards to the endpoints it has *learned*, which lag the
//! endpoints the control plane wrote by a propagation delay (the race that
//! rolltest exists to show).
//!
//! Two modes (kubernetes/kubernetes pkg/proxy: iptables kube-proxy routes only
//! new connections; an ingress proxies each request):
//! - [`ProxyMode::L4`] behaves like iptables kube-proxy: each new TCP
//!   connection picks a backend and stays pinned to it (like conntrack) until
//!   either side closes; a dead backend resets the client.
//! - [`ProxyMode::L7`] behaves like an HTTP ingress (nginx): each request picks
//!   a backend and is forwarded over a keep-alive pool; a refused backend is a
//!   502, no endpoints at all is a 503.
//!
//! Backend choice follows kube-proxy: round-robin over `ready` endpoints, and
//! only when there is none over `serving && terminating` ones.
//!
//! Every client connection (L4) or request (L7) yields a
//! [`ProxyEvent::Served`] record naming the pod that served it, so attribution
//! in embedded mode is exact. Each applied endpoint change yields a
//! [`ProxyEvent::Applied`].
//!
//! The proxy runs on a thread of its own with a single-threaded Tokio
//! runtime (see [`ServiceProxy`]).
//!
//! Submodules: [`propagation`] (the delay and the ordered applier), `table`
//! (the applied snapshot and backend choice), `l4` and `l7` (the forwarders).

mod l4;
mod l7;
pub mod propagation;
mod table;

use std::{
    net::SocketAddr,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

pub use propagation::{Propagation, PropagationParseError};

use table::Shared;

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
        /// Why the proxy answered itself (502/503), `None` for a backend's
        /// response.
        proxy: Option<ProxyReason>,
        /// Backends tried (2 when the request was retried).
        attempts: u8,
    },
    /// An L7 request whose client went away before its response was ready.
    ClientGone,
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

/// Seed of the delay draws when the caller gives none.
const DEFAULT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

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
    updates: mpsc::UnboundedSender<propagation::Update>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ServiceProxy {
    /// Binds `listen` (port 0 picks a free one) and starts forwarding in
    /// `mode`, applying endpoint updates after a delay drawn from
    /// `propagation`. Starts with no endpoints.
    pub fn start(
        listen: SocketAddr,
        mode: ProxyMode,
        propagation: Propagation,
        events: mpsc::UnboundedSender<ProxyEvent>,
    ) -> Result<ServiceProxy, ProxyError> {
        Self::start_with_seed(listen, mode, propagation, DEFAULT_SEED, events)
    }

    /// [`start`](Self::start) with a fixed seed for the delay draws, so a
    /// test (or a replayed run) gets the same delays.
    pub fn start_with_seed(
        listen: SocketAddr,
        mode: ProxyMode,
        propagation: Propagation,
        seed: u64,
        events: mpsc::UnboundedSender<ProxyEvent>,
    ) -> Result<ServiceProxy, ProxyError> {
        // The runtime is built, and the listener bound, on the proxy's own
        // thread: a runtime must never be dropped inside another runtime's
        // task, which a failed bind here would otherwise do.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, ProxyError>>();
        let (updates, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
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
                let bound = {
                    let _guard = runtime.enter();
                    listen_on(listen)
                        .and_then(|l| l.local_addr().map(|a| (l, a)))
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
                let shared = Arc::new(Shared::new(events));
                let applier = propagation::run_applier(rx, propagation, seed, Arc::clone(&shared));
                runtime.block_on(async move {
                    tokio::spawn(applier);
                    match mode {
                        ProxyMode::L4 => tokio::spawn(l4::serve(listener, shared)),
                        ProxyMode::L7 {
                            retry_connect_errors,
                        } => tokio::spawn(l7::serve(listener, shared, retry_connect_errors)),
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
            updates,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Hands the proxy the desired endpoint set as the control plane just
    /// wrote it. It becomes the proxy's view after the propagation delay; see
    /// [`propagation`] for the ordering rule.
    pub fn update(&self, endpoints: Vec<Endpoint>) {
        self.update_written_at(Instant::now(), endpoints);
    }

    /// [`update`](Self::update) for an endpoint set written at `written`
    /// (the delay counts from then, like kube-proxy's lag counts from the
    /// EndpointSlice write). Calls must come in write order.
    pub fn update_written_at(&self, written: Instant, endpoints: Vec<Endpoint>) {
        // Fails only after shutdown, when there is nothing left to update.
        let _ = self.updates.send(propagation::Update {
            written,
            endpoints: endpoints.into(),
        });
    }

    /// Stops listening and ends every connection and pending update.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
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

/// Connect timeout towards a backend; loopback pods refuse at once when dead,
/// so this only bounds pathological cases.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
