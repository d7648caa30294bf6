//! What the correlator takes besides records and timeline (the embedded
//! proxy's and the generator's connection facts) and what it gives back (the
//! causes with their evidence, the measured propagation), plus the static
//! findings of the manifests. Plain data: the correlator, the lint, the
//! report, `summary.json` and `compare` share it.

use serde::{Deserialize, Serialize};

use super::{Cause, ErrorKind, FailedTry};

/// One TCP connection the load generator opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    /// The generator's connection id (`RequestRecord::conn`).
    pub conn: u64,
    /// The connection's local address (`ip:port`), as the server sees its peer.
    pub local: std::net::SocketAddr,
    /// When the connect started (µs, run clock).
    pub opened_us: u64,
}

/// What the embedded proxy saw of one connection (l4) or request (l7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRecord {
    /// The client's address as the proxy saw it.
    pub client: std::net::SocketAddr,
    /// The pod it was forwarded to (`None`: no endpoint).
    pub pod: Option<String>,
    /// Accepted (l4) or request head read (l7), µs on the run clock.
    pub start_us: u64,
    /// Closed (l4) or response handed to the client (l7).
    pub end_us: u64,
    /// How it went.
    pub outcome: ProxyOutcome,
    /// l7 that retries: the tries before the last one (which is `pod` with
    /// `outcome`), each failed and moved on to the next upstream; empty when
    /// the request was not retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tries: Vec<FailedTry>,
}

/// How a proxied connection or request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ProxyOutcome {
    /// l4: closed cleanly both ways.
    Closed,
    /// l4: no usable endpoint, the client was reset.
    NoEndpoints,
    /// l4: connecting to the backend failed, the client was reset.
    ConnectFailed,
    /// l4: the backend reset or failed mid-connection; the client was reset.
    BackendReset,
    /// l4: the client went away first.
    ClientReset,
    /// l7: a response from the backend with this status.
    Backend {
        /// The status.
        status: u16,
    },
    /// l7: the proxy answered itself (no endpoint, connect failed, backend
    /// died mid-request).
    Proxy {
        /// The status it answered (502, 503).
        status: u16,
        /// Why.
        reason: ProxyFailure,
    },
    /// l7: the client went away before the response was ready.
    ClientGone,
}

/// Why an l7 proxy answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyFailure {
    /// No ready (or serving) endpoint: 503.
    NoEndpoints,
    /// Connecting to the chosen backend failed: 502.
    ConnectFailed,
    /// The backend closed or reset the connection before a complete response: 502.
    BackendGone,
    /// The backend timed out (connect, or the response header): 504.
    Timeout,
}

/// The pod a request went to and the cause of its failure, for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// `RequestRecord::seq`.
    pub seq: u64,
    /// The pod, when known or inferred.
    pub pod: Option<String>,
    /// The cause.
    pub cause: Cause,
}

/// Failures of one cause on one pod (or on no pod), with what proves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CauseGroup {
    /// The cause.
    pub cause: Cause,
    /// The pod (`None`: spread over pods, or unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Failed requests in the group.
    pub count: u64,
    /// Send time of the first (µs, run clock).
    pub first_us: u64,
    /// Send time of the last.
    pub last_us: u64,
    /// Counts by error kind.
    pub kinds: std::collections::BTreeMap<ErrorKind, u64>,
    /// The evidence in words, with times in seconds from the load's start:
    /// "pod api-7c9-x exited at 12.31 s; the proxy still routed to it until
    /// 13.80 s; 41 requests refused".
    pub evidence: String,
    /// The knob that fixes it, with the value the evidence suggests.
    pub fix: String,
}

/// How long one pod's removal took to reach the Service's consumers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodPropagation {
    /// The pod.
    pub pod: String,
    /// Deletion requested (µs, run clock).
    pub deletion_us: u64,
    /// The EndpointSlice stopped listing it as ready (µs), if seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_us: Option<u64>,
    /// The embedded proxy applied that (µs), embedded mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_us: Option<u64>,
}

impl PodPropagation {
    /// Deletion → slice, ms.
    pub fn to_slice_ms(&self) -> Option<f64> {
        self.slice_us
            .map(|s| s.saturating_sub(self.deletion_us) as f64 / 1e3)
    }

    /// Deletion → proxy applied (or → slice where no proxy is seen), ms.
    pub fn total_ms(&self) -> Option<f64> {
        self.proxy_us
            .or(self.slice_us)
            .map(|s| s.saturating_sub(self.deletion_us) as f64 / 1e3)
    }
}

/// How bad a static finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing; never fails anything.
    Info,
    /// Likely to drop requests in some disruption.
    Warning,
    /// Drops requests on every rollout or drain; `rolltest lint` exits 1.
    Error,
}

/// One static finding about a manifest (`rolltest lint`, the report, summary.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable ID (`RT001`...).
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// The manifest file.
    pub file: String,
    /// 1-based line of the offending field (or of the object when the field is missing).
    pub line: usize,
    /// The field path (`spec.template.spec.containers[0].lifecycle.preStop`).
    pub path: String,
    /// The object, `Kind/name`.
    pub object: String,
    /// What is wrong, in one line.
    pub message: String,
    /// Why it matters, in one sentence.
    pub why: String,
    /// The fix.
    pub fix: String,
}
