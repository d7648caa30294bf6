//! One failed request as the rollout sections need it (the swimlanes'
//! columns, the headline's shares, the causes table), and one request the
//! ingress retried (the retries section).

use rolltest_core::model::{Cause, ErrorKind, FailedTry, Outcome, RequestRecord};

/// One request the ingress retried, as the retries section lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetriedPoint {
    /// `RequestRecord::seq`.
    pub seq: u64,
    /// When it was sent (µs, run clock).
    pub sent_us: u64,
    /// The tries before the last, each failed.
    pub failed_tries: Vec<FailedTry>,
    /// The pod of the last try, when known.
    pub pod: Option<String>,
    /// The HTTP status the client got, if any.
    pub status: Option<u16>,
    /// How the request failed in the end (`None`: ok).
    pub failed: Option<ErrorKind>,
}

impl RetriedPoint {
    /// The retried point of a record the ingress retried (`None` otherwise).
    pub fn from_record(r: &RequestRecord) -> Option<Self> {
        r.retried().then(|| RetriedPoint {
            seq: r.seq,
            sent_us: r.sent_us.unwrap_or(r.intended_us),
            failed_tries: r.failed_tries.clone(),
            pod: r.pod.clone(),
            status: r.status,
            failed: r.outcome.error_kind(),
        })
    }
}

/// One failed request, as the swimlanes and the headline need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePoint {
    /// When it was sent (µs, run clock; the intended time when never sent).
    pub sent_us: u64,
    /// The pod it went to, when known or inferred.
    pub pod: Option<String>,
    /// Its attributed cause (`None`: not attributed).
    pub cause: Option<Cause>,
    /// How it failed.
    pub kind: ErrorKind,
}

impl FailurePoint {
    /// The failure point of a failed record (`None` for ok or dropped
    /// records), with the record's own pod and cause; overwrite them with
    /// the correlator's [`Attribution`](rolltest_core::model::Attribution) when the
    /// records do not carry it.
    pub fn from_record(r: &RequestRecord) -> Option<Self> {
        match r.outcome {
            Outcome::Failed(kind) => Some(FailurePoint {
                sent_us: r.sent_us.unwrap_or(r.intended_us),
                pod: r.pod.clone(),
                cause: r.cause,
                kind,
            }),
            Outcome::Ok | Outcome::Dropped => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_points_come_from_failed_records() {
        let mut r = RequestRecord::dropped(3, 1_000);
        assert_eq!(FailurePoint::from_record(&r), None);
        r.outcome = Outcome::Failed(ErrorKind::Timeout);
        r.pod = Some("p".into());
        r.cause = Some(Cause::Capacity);
        let f = FailurePoint::from_record(&r).expect("failed");
        assert_eq!(f.sent_us, 1_000);
        assert_eq!(f.pod.as_deref(), Some("p"));
        assert_eq!(f.cause, Some(Cause::Capacity));
        assert_eq!(f.kind, ErrorKind::Timeout);
    }
}
