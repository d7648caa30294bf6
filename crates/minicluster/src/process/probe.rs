//! One-shot probes as the kubelet runs them: `httpGet` (success iff
//! 200 ≤ status < 400), `tcpSocket` (connect) and `exec` (exit code 0), each
//! bounded by the probe's timeout. Messages follow the kubelet's wording,
//! e.g. `HTTP probe failed with statuscode: 503`.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::exec::{ExecContext, run_exec};

/// The kubelet's probe User-Agent.
const USER_AGENT: &str = "kube-probe/1.34";

/// One probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Whether the probe succeeded.
    pub success: bool,
    /// The probe output (for the `Unhealthy` event): empty on an HTTP or
    /// TCP success, the failure reason otherwise, a command's output for exec.
    pub message: String,
}

impl ProbeResult {
    fn ok(message: impl Into<String>) -> Self {
        ProbeResult {
            success: true,
            message: message.into(),
        }
    }

    fn fail(message: impl Into<String>) -> Self {
        ProbeResult {
            success: false,
            message: message.into(),
        }
    }
}

/// Why an HTTP GET produced no status.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum HttpError {
    /// No answer within the timeout.
    #[error(
        "Get \"{0}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    )]
    Timeout(String),
    /// Connecting failed.
    #[error("Get \"{url}\": dial tcp {addr}: connect: {reason}")]
    Connect {
        url: String,
        addr: SocketAddr,
        reason: String,
    },
    /// The request could not be built or the exchange failed.
    #[error("Get \"{url}\": {reason}")]
    Request { url: String, reason: String },
}

/// Connect failure text in Go's wording (`connection refused`, …).
fn connect_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        std::io::ErrorKind::AddrNotAvailable => "cannot assign requested address".into(),
        _ => e.to_string(),
    }
}

/// GET `path` from `addr` with `headers`; the status code, or why none came.
pub(crate) async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<u16, HttpError> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let url = format!("http://{addr}{path}");
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| HttpError::Connect {
                url: url.clone(),
                addr,
                reason: connect_reason(&e),
            })?;
        let request_error = |reason: String| HttpError::Request {
            url: url.clone(),
            reason,
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| request_error(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let mut builder = http::Request::get(path.as_str())
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::ACCEPT, "*/*")
            .header(http::header::CONNECTION, "close");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            builder = builder.header(http::header::HOST, addr.to_string());
        }
        for (k, v) in headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(Empty::new())
            .map_err(|e| request_error(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| request_error(e.to_string()));
        conn.abort();
        Ok(response?.status().as_u16())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(HttpError::Timeout(url.clone())))
}

/// An `httpGet` probe: success iff 200 ≤ status < 400.
pub async fn probe_http(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeResult {
    match http_get(addr, path, headers, timeout).await {
        Ok(status) if (200..400).contains(&status) => ProbeResult::ok(""),
        Ok(status) => ProbeResult::fail(format!("HTTP probe failed with statuscode: {status}")),
        Err(e) => ProbeResult::fail(e.to_string()),
    }
}

/// A `tcpSocket` probe: success iff a connection opens within `timeout`.
pub async fn probe_tcp(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => ProbeResult::ok(""),
        Ok(Err(e)) => {
            ProbeResult::fail(format!("dial tcp {addr}: connect: {}", connect_reason(&e)))
        }
        Err(_) => ProbeResult::fail(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// An `exec` probe: success iff `command` exits 0 within `timeout`; the
/// message is its output. A command still running at the timeout is
/// SIGKILLed (its own group, or just itself inside a container's group).
pub async fn probe_exec(command: &[String], ctx: &ExecContext, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, run_exec(command, ctx, "exec probe")).await {
        Err(_) => ProbeResult::fail(format!("command '{}' timed out", command.join(" "))),
        Ok(Err(e)) => ProbeResult::fail(e.to_string()),
        Ok(Ok(run)) if run.exit.success() => ProbeResult::ok(run.output),
        Ok(Ok(run)) if run.output.trim().is_empty() => ProbeResult::fail(run.failure_message()),
        Ok(Ok(run)) => ProbeResult::fail(run.output),
    }
}
