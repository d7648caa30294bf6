//! L7 forwarding like an HTTP ingress (nginx).
//!
//! Clients speak HTTP/1.1 with keep-alive to the proxy; every request picks a
//! backend (round-robin, see `table`) and is forwarded over a keep-alive
//! connection pool per backend. Request and response bodies are buffered
//! whole, as nginx buffers by default, so a backend that closes or resets
//! before a complete response becomes a clean 502 and the request can be
//! replayed on a retry.
//!
//! Proxy answers: no usable endpoint → 503; the last try failed connecting
//! (refused) or the backend closed or reset before a complete response → 502;
//! it timed out (connect, or the response header) → 504; each carries
//! `x-rolltest-proxy: <reason>`. A connect to a torn-down pod address (its
//! sandbox is gone: dropped packets) waits out the connect timeout, then
//! fails as nginx's would (`timeout`), see the `proxy` module docs.
//!
//! Retries ([`Policy`], from the [`ProxyMode`]):
//! - `L7 { retry_connect_errors: false }`: none.
//! - `L7 { retry_connect_errors: true }`: once, on another endpoint, after a
//!   connect error, for GET, HEAD, PUT, DELETE and OPTIONS only.
//! - `IngressNginx`: nginx's `proxy_next_upstream` (`ngx_http_upstream_next`
//!   in nginx's `src/http/ngx_http_upstream.c`): a try that failed with an
//!   `error` (refused, reset or closed before the response header) or a
//!   `timeout` (connect, or waiting for the header), each when enabled, moves
//!   on to the next upstream the balancer picks (ingress-nginx's Lua
//!   round-robin, which does not skip the failed one), up to `tries` in all;
//!   POST, LOCK and PATCH only before the request was sent (a connect
//!   failure) unless `non_idempotent`; never after the response header; a
//!   failed try on a reused keep-alive connection does not count toward the
//!   limit (`u->peer.cached`). Every try is in the request's record.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming, client::conn::http1 as client_http1, server::conn::http1 as server_http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

use super::{
    CONNECT_TIMEOUT, NextUpstream, Outcome, ProxyEvent, ProxyMode, ProxyReason, UpstreamError,
    UpstreamTry, table::Shared,
};

/// Idle keep-alive connections kept per backend (ingress-nginx's default
/// `upstream-keepalive-connections`).
const MAX_IDLE_PER_BACKEND: usize = 320;

/// The header naming why the proxy answered itself.
const PROXY_HEADER: &str = "x-rolltest-proxy";

type Sender = client_http1::SendRequest<Full<Bytes>>;

/// Tries of one request in all, whatever the policy: failed tries on reused
/// connections do not count toward a policy's limit, so this bounds them.
const MAX_TRIES_IN_ALL: usize = 16;

/// How the proxy treats a failed try; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    retry: Retry,
    connect_timeout: Duration,
    /// How long to wait for the response header once the request is sent
    /// (`None`: as long as the client waits).
    read_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Plain l7.
    Never,
    /// `l7_retry`: once, after a connect error, idempotent methods only, on
    /// another endpoint.
    ConnectErrorsOnce,
    /// nginx's `proxy_next_upstream` with `proxy_next_upstream_tries`.
    NextUpstream { when: NextUpstream, tries: u8 },
}

impl Policy {
    /// The policy of an L7 `mode` (L4 has none; it gets plain L7's).
    pub(crate) fn of(mode: &ProxyMode) -> Policy {
        match mode {
            ProxyMode::L4 => Policy::plain(Retry::Never),
            ProxyMode::L7 {
                retry_connect_errors,
            } => Policy::plain(if *retry_connect_errors {
                Retry::ConnectErrorsOnce
            } else {
                Retry::Never
            }),
            ProxyMode::IngressNginx(c) => Policy {
                retry: Retry::NextUpstream {
                    when: c.next_upstream,
                    tries: c.tries,
                },
                connect_timeout: c.connect_timeout,
                read_timeout: Some(c.read_timeout),
            },
        }
    }

    fn plain(retry: Retry) -> Policy {
        Policy {
            retry,
            connect_timeout: CONNECT_TIMEOUT,
            read_timeout: None,
        }
    }

    /// Whether a failed try counts toward the limit: not an `error` on a
    /// reused keep-alive connection (nginx: `u->peer.cached`).
    fn counts(&self, failed: Failed) -> bool {
        !failed.cached || failed.error.is_timeout()
    }

    /// Whether a request of `method` whose last try failed with `error`,
    /// after `counted` counted tries, goes to the next upstream.
    fn next_upstream(&self, method: &Method, error: UpstreamError, counted: u8) -> bool {
        match self.retry {
            Retry::Never => false,
            Retry::ConnectErrorsOnce => {
                counted == 1 && !error.request_sent() && is_idempotent(method)
            }
            Retry::NextUpstream { when, tries } => {
                let condition = match error {
                    UpstreamError::BodyCut => false,
                    e if e.is_timeout() => when.timeout,
                    _ => when.error,
                };
                let unsafe_to_repeat =
                    error.request_sent() && is_non_idempotent(method) && !when.non_idempotent;
                counted < tries && condition && !unsafe_to_repeat
            }
        }
    }

    /// Whether the next try skips the endpoint that just failed (`l7_retry`;
    /// ingress-nginx's round-robin balancer does not).
    fn avoids_failed(&self) -> bool {
        self.retry == Retry::ConnectErrorsOnce
    }
}

/// Everything a request handler needs.
struct Ctx {
    shared: Arc<Shared>,
    pool: Pool,
    policy: Policy,
}

/// Accepts client connections until the task is aborted; aborting it drops
/// the `JoinSet`, which aborts every client connection with it.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, policy: Policy) {
    let ctx = Arc::new(Ctx {
        shared,
        pool: Pool::default(),
        policy,
    });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    connections.spawn(serve_client(client, peer, Arc::clone(&ctx)));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves one client connection (keep-alive) until it closes.
async fn serve_client(client: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>) {
    let _ = client.set_nodelay(true);
    let service = service_fn(move |request| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(ctx.handle(request, peer).await) }
    });
    // A client that misbehaves or leaves only ends its own connection.
    let _ = server_http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(client), service)
        .await;
}

/// One failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failed {
    error: UpstreamError,
    /// It failed on a reused keep-alive connection.
    cached: bool,
}

impl Ctx {
    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let mut record = Record {
            shared: &self.shared,
            client: peer,
            start: Instant::now(),
            pod: None,
            backend: None,
            outcome: None,
        };
        let (parts, body) = request.into_parts();
        let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
            return record.proxy_answer(
                StatusCode::BAD_REQUEST,
                ProxyReason::BadRequest,
                Vec::new(),
            );
        };
        let mut tries: Vec<UpstreamTry> = Vec::new();
        let mut counted: u8 = 0;
        let mut avoid = None;
        loop {
            let Some(backend) = self.shared.pick(avoid) else {
                // A retry that finds no endpoint: the last failure stands.
                return match tries.last().and_then(|t| t.error) {
                    Some(error) => record.give_up(error, tries),
                    None => record.proxy_answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ProxyReason::NoEndpoints,
                        tries,
                    ),
                };
            };
            record.pod = Some(backend.pod.clone());
            record.backend = Some(backend.addr);
            let outgoing = outgoing_request(&parts, body.clone());
            let gone = self.shared.torn_down(backend.addr);
            match self
                .pool
                .forward(backend.addr, gone, outgoing, &self.policy)
                .await
            {
                Ok(response) => {
                    tries.push(UpstreamTry {
                        pod: backend.pod,
                        addr: backend.addr,
                        error: None,
                    });
                    record.outcome = Some(Outcome::Response {
                        status: response.status().as_u16(),
                        proxy: None,
                        tries,
                    });
                    return response;
                }
                Err(failed) => {
                    tries.push(UpstreamTry {
                        pod: backend.pod,
                        addr: backend.addr,
                        error: Some(failed.error),
                    });
                    if self.policy.counts(failed) {
                        counted = counted.saturating_add(1);
                    }
                    if tries.len() >= MAX_TRIES_IN_ALL
                        || !self
                            .policy
                            .next_upstream(&parts.method, failed.error, counted)
                    {
                        return record.give_up(failed.error, tries);
                    }
                    if self.policy.avoids_failed() {
                        avoid = Some(backend.addr);
                    }
                }
            }
        }
    }
}

/// nginx's non-idempotent methods (`ngx_http_upstream_next`: POST, LOCK,
/// PATCH), not repeated once sent unless `non_idempotent`.
fn is_non_idempotent(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PATCH || method.as_str() == "LOCK"
}

/// `l7_retry`'s idempotent methods.
fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .contains(method)
}

/// Headers that belong to one hop and are not forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The request to send to the backend: same method, path, headers (minus
/// hop-by-hop ones) and body.
fn outgoing_request(parts: &http::request::Parts, body: Bytes) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.headers_mut() = parts.headers.clone();
    strip_hop_by_hop(request.headers_mut());
    request
}

/// The per-request attribution record; sent when dropped, so a request whose
/// client went away mid-flight is reported too.
struct Record<'a> {
    shared: &'a Shared,
    client: SocketAddr,
    start: Instant,
    pod: Option<String>,
    backend: Option<SocketAddr>,
    outcome: Option<Outcome>,
}

impl Record<'_> {
    /// The answer after the last try failed with `error`: 504 for a
    /// timeout, else 502 (nginx's `ngx_http_upstream_next`).
    fn give_up(&mut self, error: UpstreamError, tries: Vec<UpstreamTry>) -> Response<Full<Bytes>> {
        let (status, reason) = match error {
            e if e.is_timeout() => (StatusCode::GATEWAY_TIMEOUT, ProxyReason::Timeout),
            UpstreamError::ConnectRefused | UpstreamError::ConnectError => {
                (StatusCode::BAD_GATEWAY, ProxyReason::ConnectFailed)
            }
            _ => (StatusCode::BAD_GATEWAY, ProxyReason::BackendClosed),
        };
        self.proxy_answer(status, reason, tries)
    }

    /// The proxy's own answer, recorded.
    fn proxy_answer(
        &mut self,
        status: StatusCode,
        reason: ProxyReason,
        tries: Vec<UpstreamTry>,
    ) -> Response<Full<Bytes>> {
        self.outcome = Some(Outcome::Response {
            status: status.as_u16(),
            proxy: Some(reason),
            tries,
        });
        let text = format!("{status}: {}\n", reason.as_str());
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(PROXY_HEADER, HeaderValue::from_static(reason.as_str()));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        self.shared.emit(ProxyEvent::Served {
            client: self.client,
            pod: self.pod.take(),
            backend: self.backend,
            start: self.start,
            end: Instant::now(),
            outcome: self.outcome.take().unwrap_or(Outcome::ClientGone),
        });
    }
}

/// Idle keep-alive connections per backend, most recently used first.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
}

impl Pool {
    fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(&addr)?.pop()
    }

    fn give_back(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Forget backends whose connections have all gone (dead pods).
        if idle.len() > 64 {
            idle.retain(|_, senders| {
                senders.retain(|s| !s.is_closed());
                !senders.is_empty()
            });
        }
        let senders = idle.entry(addr).or_default();
        if senders.len() < MAX_IDLE_PER_BACKEND {
            senders.push(sender);
        }
    }

    /// Sends `request` to `addr` on an idle connection, or a new one when
    /// none is usable, and reads the whole response. `gone`: `addr` was torn
    /// down, a new connection is never answered.
    async fn forward(
        &self,
        addr: SocketAddr,
        gone: bool,
        mut request: Request<Full<Bytes>>,
        policy: &Policy,
    ) -> Result<Response<Full<Bytes>>, Failed> {
        while let Some(mut sender) = self.take(addr) {
            if sender.ready().await.is_err() {
                continue;
            }
            let sent = within(policy.read_timeout, sender.try_send_request(request)).await;
            let failed = |error| Failed {
                error,
                cached: true,
            };
            match sent {
                Some(Ok(response)) => {
                    return self.finish(addr, sender, response).await.map_err(failed);
                }
                None => return Err(failed(UpstreamError::ReadTimeout)),
                // Not sent (the connection closed while idle): try another.
                Some(Err(mut error)) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(failed(UpstreamError::Reset)),
                },
            }
        }
        let failed = |error| Failed {
            error,
            cached: false,
        };
        if gone {
            // The SYNs are dropped: nothing to do but wait for the timeout.
            tokio::time::sleep(policy.connect_timeout).await;
            return Err(failed(UpstreamError::ConnectTimeout));
        }
        let mut sender = connect(addr, policy.connect_timeout)
            .await
            .map_err(failed)?;
        let response = match within(policy.read_timeout, sender.send_request(request)).await {
            Some(Ok(response)) => response,
            Some(Err(_)) => return Err(failed(UpstreamError::Reset)),
            None => return Err(failed(UpstreamError::ReadTimeout)),
        };
        self.finish(addr, sender, response).await.map_err(failed)
    }

    /// Reads the whole response body, returns the connection to the pool and
    /// builds the response for the client.
    async fn finish(
        &self,
        addr: SocketAddr,
        sender: Sender,
        response: Response<Incoming>,
    ) -> Result<Response<Full<Bytes>>, UpstreamError> {
        let (mut parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|_| UpstreamError::BodyCut)?
            .to_bytes();
        self.give_back(addr, sender);
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Full::new(body)))
    }
}

/// `future`'s output, or `None` when `limit` passes first.
async fn within<F: std::future::Future>(limit: Option<Duration>, future: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, future).await.ok(),
        None => Some(future.await),
    }
}

/// A new HTTP/1.1 connection to `addr`, its driver spawned, or why it
/// cannot be made.
async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Sender, UpstreamError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(UpstreamError::ConnectTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(UpstreamError::ConnectRefused);
        }
        Ok(Err(_)) => return Err(UpstreamError::ConnectError),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = client_http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| UpstreamError::ConnectError)?;
    tokio::spawn(connection);
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::IngressNginx;

    use UpstreamError::*;

    fn nginx() -> Policy {
        Policy::of(&ProxyMode::IngressNginx(IngressNginx::DEFAULT))
    }

    fn fresh(error: UpstreamError) -> Failed {
        Failed {
            error,
            cached: false,
        }
    }

    #[test]
    fn ingress_nginx_retries_errors_and_timeouts_before_the_response_header() {
        let p = nginx();
        for error in [
            ConnectRefused,
            ConnectTimeout,
            ConnectError,
            Reset,
            ReadTimeout,
        ] {
            assert!(p.next_upstream(&Method::GET, error, 1), "{error:?}");
        }
        assert!(
            !p.next_upstream(&Method::GET, BodyCut, 1),
            "never after the response header"
        );
        let timeouts_off = Policy::of(&ProxyMode::IngressNginx(IngressNginx {
            next_upstream: NextUpstream {
                error: true,
                timeout: false,
                non_idempotent: false,
            },
            ..IngressNginx::DEFAULT
        }));
        assert!(timeouts_off.next_upstream(&Method::GET, Reset, 1));
        assert!(!timeouts_off.next_upstream(&Method::GET, ConnectTimeout, 1));
        assert!(!timeouts_off.next_upstream(&Method::GET, ReadTimeout, 1));
    }

    #[test]
    fn ingress_nginx_stops_at_its_try_limit() {
        let p = nginx();
        assert!(p.next_upstream(&Method::GET, ConnectRefused, 1));
        assert!(p.next_upstream(&Method::GET, ConnectRefused, 2));
        assert!(
            !p.next_upstream(&Method::GET, ConnectRefused, 3),
            "3 tries in all"
        );
        // A reset on a reused keep-alive connection does not count (nginx's
        // u->peer.cached); a timeout on one does.
        let cached = |error| Failed {
            error,
            cached: true,
        };
        assert!(!p.counts(cached(Reset)));
        assert!(p.counts(cached(ReadTimeout)));
        assert!(p.counts(fresh(Reset)));
        assert!(p.counts(fresh(ConnectRefused)));
    }

    #[test]
    fn ingress_nginx_repeats_non_idempotent_requests_only_if_never_sent() {
        let p = nginx();
        for method in [
            Method::POST,
            Method::PATCH,
            Method::from_bytes(b"LOCK").unwrap(),
        ] {
            assert!(
                p.next_upstream(&method, ConnectRefused, 1),
                "{method}: not sent yet"
            );
            assert!(
                p.next_upstream(&method, ConnectTimeout, 1),
                "{method}: not sent yet"
            );
            assert!(!p.next_upstream(&method, Reset, 1), "{method}: sent");
            assert!(!p.next_upstream(&method, ReadTimeout, 1), "{method}: sent");
        }
        for method in [Method::PUT, Method::DELETE, Method::HEAD] {
            assert!(p.next_upstream(&method, Reset, 1), "{method} is idempotent");
        }
        let non_idempotent = Policy::of(&ProxyMode::IngressNginx(IngressNginx {
            next_upstream: NextUpstream {
                non_idempotent: true,
                ..IngressNginx::DEFAULT.next_upstream
            },
            ..IngressNginx::DEFAULT
        }));
        assert!(non_idempotent.next_upstream(&Method::POST, Reset, 1));
    }

    #[test]
    fn plain_l7_never_retries_and_l7_retry_retries_connect_errors_once() {
        let plain = Policy::of(&ProxyMode::L7 {
            retry_connect_errors: false,
        });
        for error in [ConnectRefused, Reset, ReadTimeout] {
            assert!(!plain.next_upstream(&Method::GET, error, 1));
        }
        assert_eq!(plain.read_timeout, None);
        let once = Policy::of(&ProxyMode::L7 {
            retry_connect_errors: true,
        });
        assert!(once.next_upstream(&Method::GET, ConnectRefused, 1));
        assert!(!once.next_upstream(&Method::GET, ConnectRefused, 2));
        assert!(!once.next_upstream(&Method::GET, Reset, 1));
        assert!(!once.next_upstream(&Method::POST, ConnectRefused, 1));
        assert!(once.avoids_failed() && !nginx().avoids_failed());
        assert_eq!(nginx().connect_timeout, Duration::from_secs(5));
        assert_eq!(nginx().read_timeout, Some(Duration::from_secs(60)));
    }
}
