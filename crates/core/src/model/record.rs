//! One scheduled request and what became of it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::FailedTry;

/// How a failed request failed, classified from the real error source chain.
/// The names are part of the contract (records.csv, summary.json; README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The TCP connect was refused (nothing listening).
    ConnectRefused,
    /// The connection was reset, or closed by the peer before the response was complete.
    ConnectionReset,
    /// No complete response within the timeout (connect included).
    Timeout,
    /// The connect failed with "no route to host" or "network unreachable"
    /// (`EHOSTUNREACH`, `ENETUNREACH`): the address answers nobody, e.g. a
    /// pod whose network namespace is gone after ARP gave up on it.
    HostUnreachable,
    /// The server answered with a 5xx status (the code is kept in the record).
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// The server answered with a 4xx status.
    #[serde(rename = "http_4xx")]
    Http4xx,
    /// Anything else (malformed response, address errors, ...); the detail says what.
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectionReset,
        ErrorKind::Timeout,
        ErrorKind::HostUnreachable,
        ErrorKind::Http5xx,
        ErrorKind::Http4xx,
        ErrorKind::Other,
    ];

    /// The contract name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectionReset => "connection_reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::HostUnreachable => "host_unreachable",
            ErrorKind::Http5xx => "http_5xx",
            ErrorKind::Http4xx => "http_4xx",
            ErrorKind::Other => "other",
        }
    }

    /// Parses a contract name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Index into [`ErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cause a failed request is attributed to (README, "How failures are
/// attributed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Routed to a pod after it stopped serving, before the proxy removed it.
    EndpointLag,
    /// In flight on a pod (or on a connection pinned to it) when it exited or closed.
    KilledInFlight,
    /// The pod failed while it counted as Ready.
    NotReady,
    /// Too few ready endpoints for the load.
    Capacity,
    /// Sent on a reused keep-alive connection that the server closed at the
    /// same moment (idle timeout or drain), with no pod exit to blame.
    KeepaliveRace,
    /// None of the above fits the evidence.
    Unexplained,
}

impl Cause {
    /// Every cause, in report order.
    pub const ALL: [Cause; 6] = [
        Cause::EndpointLag,
        Cause::KilledInFlight,
        Cause::NotReady,
        Cause::Capacity,
        Cause::KeepaliveRace,
        Cause::Unexplained,
    ];

    /// The contract name.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::EndpointLag => "endpoint_lag",
            Cause::KilledInFlight => "killed_in_flight",
            Cause::NotReady => "not_ready",
            Cause::Capacity => "capacity",
            Cause::KeepaliveRace => "keepalive_race",
            Cause::Unexplained => "unexplained",
        }
    }

    /// Parses a contract name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// What failures without a cause are called wherever causes are named
    /// (compare.json's keys, the pages' legends).
    pub const UNATTRIBUTED: &'static str = "unattributed";

    /// The name of a failure's cause, or [`UNATTRIBUTED`](Self::UNATTRIBUTED).
    pub fn name_of(cause: Option<Cause>) -> &'static str {
        cause.map_or(Self::UNATTRIBUTED, Cause::as_str)
    }
}

/// What became of one scheduled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with a 1xx, 2xx or 3xx status (redirects are not followed).
    Ok,
    /// The request was sent and failed.
    Failed(ErrorKind),
    /// Never sent: the generator had `max_in_flight` requests outstanding when it
    /// was due (or could not send it before the run ended). A failure of the run,
    /// not of the target.
    Dropped,
}

impl Outcome {
    /// `ok`, `failed` or `dropped`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::Dropped => "dropped",
        }
    }

    /// The error kind of a failed request.
    pub fn error_kind(self) -> Option<ErrorKind> {
        match self {
            Outcome::Failed(kind) => Some(kind),
            _ => None,
        }
    }
}

/// One scheduled request. Times are microseconds on the run clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Sequence number: the request was the `seq`-th of the schedule.
    pub seq: u64,
    /// When the schedule said it should leave.
    pub intended_us: u64,
    /// When the generator started sending it (connect included); `None` if dropped.
    pub sent_us: Option<u64>,
    /// From the *intended* time to the complete response or the failure
    /// (so a late generator shows up as latency, never hidden); `None` if dropped.
    pub latency_us: Option<u64>,
    /// The HTTP status, when a response head arrived.
    pub status: Option<u16>,
    /// The outcome.
    pub outcome: Outcome,
    /// A short human detail for failures (e.g. "connection closed before response").
    pub detail: Option<String>,
    /// The pod that served it, from the `x-rolltest-pod` header (or a proxy record).
    pub pod: Option<String>,
    /// The generator's connection id (one per TCP connection it opened).
    pub conn: Option<u64>,
    /// The attributed cause of a failure (filled by the correlator).
    pub cause: Option<Cause>,
    /// The ingress's failed tries before the last one, when it retried the
    /// request (embedded `ingress-nginx`, from its proxy record); empty
    /// otherwise.
    pub failed_tries: Vec<FailedTry>,
}

impl RequestRecord {
    /// A request that was never sent.
    pub fn dropped(seq: u64, intended_us: u64) -> Self {
        Self {
            seq,
            intended_us,
            sent_us: None,
            latency_us: None,
            status: None,
            outcome: Outcome::Dropped,
            detail: None,
            pod: None,
            conn: None,
            cause: None,
            failed_tries: Vec::new(),
        }
    }

    /// The ingress tried more than one upstream for it.
    pub fn retried(&self) -> bool {
        !self.failed_tries.is_empty()
    }

    /// How late the generator sent it, in microseconds.
    pub fn schedule_lag_us(&self) -> Option<u64> {
        self.sent_us.map(|s| s.saturating_sub(self.intended_us))
    }
}
