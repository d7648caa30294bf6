//! What an ingress that retries did to one request before its last try: the
//! upstreams it tried and why each failed (the embedded `ingress-nginx`
//! proxy's `proxy_next_upstream`). Carried by the proxy's record
//! ([`ProxyRecord::failed_tries`](super::ProxyRecord::failed_tries)) and,
//! once routed, by the request's
//! ([`RequestRecord::failed_tries`](super::RequestRecord::failed_tries)).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why one try of a request failed at the ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TryError {
    /// The connect was refused (nothing listening): nginx `error`.
    ConnectRefused,
    /// The connect timed out: nginx `timeout`.
    ConnectTimeout,
    /// The connect failed otherwise: nginx `error`.
    ConnectError,
    /// Closed or reset after the request was sent, before the response
    /// header: nginx `error`.
    Reset,
    /// No response header in time: nginx `timeout`.
    ReadTimeout,
    /// Cut after the response header (never retried).
    BodyCut,
}

impl TryError {
    /// Every error, in report order.
    pub const ALL: [TryError; 6] = [
        TryError::ConnectRefused,
        TryError::ConnectTimeout,
        TryError::ConnectError,
        TryError::Reset,
        TryError::ReadTimeout,
        TryError::BodyCut,
    ];

    /// The contract name (records.csv, summary.json).
    pub fn as_str(self) -> &'static str {
        match self {
            TryError::ConnectRefused => "connect_refused",
            TryError::ConnectTimeout => "connect_timeout",
            TryError::ConnectError => "connect_error",
            TryError::Reset => "reset",
            TryError::ReadTimeout => "read_timeout",
            TryError::BodyCut => "body_cut",
        }
    }

    /// Parses a contract name.
    pub fn parse(s: &str) -> Option<TryError> {
        TryError::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl fmt::Display for TryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed try: the pod it went to and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedTry {
    /// The pod.
    pub pod: String,
    /// Why.
    pub error: TryError,
}

/// Failed tries as records.csv writes them: `pod:error` joined by `;`
/// (pod names are DNS labels: neither character occurs in them).
pub fn format_failed_tries(tries: &[FailedTry]) -> String {
    let mut out = String::new();
    for (i, t) in tries.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(&t.pod);
        out.push(':');
        out.push_str(t.error.as_str());
    }
    out
}

/// Parses [`format_failed_tries`]' text (empty: none).
pub fn parse_failed_tries(s: &str) -> Result<Vec<FailedTry>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(';')
        .map(|t| {
            let (pod, error) = t
                .rsplit_once(':')
                .ok_or_else(|| format!("{t:?} is not pod:error"))?;
            let error = TryError::parse(error).ok_or_else(|| format!("unknown error {error:?}"))?;
            if pod.is_empty() {
                return Err(format!("{t:?} names no pod"));
            }
            Ok(FailedTry {
                pod: pod.to_owned(),
                error,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_tries_round_trip_as_text() {
        let tries = vec![
            FailedTry {
                pod: "api-7c9-a".into(),
                error: TryError::ConnectRefused,
            },
            FailedTry {
                pod: "api-7c9-b".into(),
                error: TryError::Reset,
            },
        ];
        let text = format_failed_tries(&tries);
        assert_eq!(text, "api-7c9-a:connect_refused;api-7c9-b:reset");
        assert_eq!(parse_failed_tries(&text), Ok(tries));
        assert_eq!(parse_failed_tries(""), Ok(Vec::new()));
        for bad in ["api", "api:nope", ":reset", "a:reset;"] {
            assert!(parse_failed_tries(bad).is_err(), "{bad}");
        }
        for e in TryError::ALL {
            assert_eq!(TryError::parse(e.as_str()), Some(e));
        }
    }
}
