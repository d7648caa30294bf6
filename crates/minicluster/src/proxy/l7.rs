//! L7 forwarding like an HTTP ingress (nginx).
//!
//! Clients speak HTTP/1.1 with keep-alive to the proxy; every request picks a
//! backend (round-robin, see `table`) and is forwarded over a keep-alive
//! connection pool per backend. Request and response bodies are buffered
//! whole, as nginx buffers by default, so a backend that closes or resets
//! before a complete response becomes a clean 502 and the request can be
//! replayed on a retry.
//!
//! Proxy answers: no usable endpoint → 503; backend connect refused → 502;
//! backend closed or reset before a complete response → 502; each carries
//! `x-rolltest-proxy: <reason>`. Retries happen only with
//! `retry_connect_errors`, only for idempotent methods, only after a connect
//! error, once, on another endpoint (nginx `proxy_next_upstream error`).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
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

use super::{CONNECT_TIMEOUT, Outcome, ProxyEvent, ProxyReason, table::Shared};

/// Idle keep-alive connections kept per backend (ingress-nginx's default
/// `upstream-keepalive-connections`).
const MAX_IDLE_PER_BACKEND: usize = 320;

/// The header naming why the proxy answered itself.
const PROXY_HEADER: &str = "x-rolltest-proxy";

type Sender = client_http1::SendRequest<Full<Bytes>>;

/// Everything a request handler needs.
struct Ctx {
    shared: Arc<Shared>,
    pool: Pool,
    retry_connect_errors: bool,
}

/// Accepts client connections until the task is aborted; aborting it drops
/// the `JoinSet`, which aborts every client connection with it.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, retry_connect_errors: bool) {
    let ctx = Arc::new(Ctx {
        shared,
        pool: Pool::default(),
        retry_connect_errors,
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

/// Why one forwarding attempt failed.
enum Failure {
    /// No connection to the backend could be made.
    Connect,
    /// The backend closed or reset before a complete response.
    Backend,
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
            return record.proxy_answer(StatusCode::BAD_REQUEST, ProxyReason::BadRequest, 0);
        };
        let may_retry = self.retry_connect_errors && is_idempotent(&parts.method);
        let mut attempts: u8 = 0;
        let mut avoid = None;
        loop {
            let Some(backend) = self.shared.pick(avoid) else {
                return if attempts == 0 {
                    record.proxy_answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ProxyReason::NoEndpoints,
                        0,
                    )
                } else {
                    // The retry found no other endpoint: the first failure stands.
                    record.proxy_answer(
                        StatusCode::BAD_GATEWAY,
                        ProxyReason::ConnectFailed,
                        attempts,
                    )
                };
            };
            attempts += 1;
            record.pod = Some(backend.pod);
            record.backend = Some(backend.addr);
            let outgoing = outgoing_request(&parts, body.clone());
            match self.pool.forward(backend.addr, outgoing).await {
                Ok(response) => {
                    record.outcome = Some(Outcome::Response {
                        status: response.status().as_u16(),
                        proxy: None,
                        attempts,
                    });
                    return response;
                }
                Err(Failure::Connect) if may_retry && attempts == 1 => avoid = Some(backend.addr),
                Err(Failure::Connect) => {
                    return record.proxy_answer(
                        StatusCode::BAD_GATEWAY,
                        ProxyReason::ConnectFailed,
                        attempts,
                    );
                }
                Err(Failure::Backend) => {
                    return record.proxy_answer(
                        StatusCode::BAD_GATEWAY,
                        ProxyReason::BackendClosed,
                        attempts,
                    );
                }
            }
        }
    }
}

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
    /// The proxy's own answer, recorded.
    fn proxy_answer(
        &mut self,
        status: StatusCode,
        reason: ProxyReason,
        attempts: u8,
    ) -> Response<Full<Bytes>> {
        self.outcome = Some(Outcome::Response {
            status: status.as_u16(),
            proxy: Some(reason),
            attempts,
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
    /// none is usable, and reads the whole response.
    async fn forward(
        &self,
        addr: SocketAddr,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Full<Bytes>>, Failure> {
        while let Some(mut sender) = self.take(addr) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return self.finish(addr, sender, response).await,
                // Not sent (the connection closed while idle): try another.
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(Failure::Backend),
                },
            }
        }
        let mut sender = connect(addr).await.ok_or(Failure::Connect)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| Failure::Backend)?;
        self.finish(addr, sender, response).await
    }

    /// Reads the whole response body, returns the connection to the pool and
    /// builds the response for the client.
    async fn finish(
        &self,
        addr: SocketAddr,
        sender: Sender,
        response: Response<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Failure> {
        let (mut parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|_| Failure::Backend)?
            .to_bytes();
        self.give_back(addr, sender);
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Full::new(body)))
    }
}

/// A new HTTP/1.1 connection to `addr`, its driver spawned; `None` when it
/// cannot be made.
async fn connect(addr: SocketAddr) -> Option<Sender> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = client_http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}
