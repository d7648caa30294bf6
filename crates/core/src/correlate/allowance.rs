//! The propagation allowance: how long after an EndpointSlice update a
//! node's proxy may still route new connections to the endpoint it removed.
//!
//! A real cluster publishes no moment at which each node's kube-proxy
//! applied the update (it syncs on its own clock: `minSyncPeriod`, 1 s on
//! kind, plus the time its iptables-restore takes). What a run does see is
//! the traffic: after a pod's EndpointSlice update, failures of the kinds a
//! stale route produces (refused, reset, unanswered, with no response) go on
//! until the proxies have caught up, then stop. So the allowance is, per
//! pod, the slice update to the first failure-free moment after it; the
//! slowest pod's is the run's. A scenario's `propagation_allowance` sets it
//! instead; a run with nothing to measure it on uses the default.

use super::facts::Facts;
use super::route::span;
use crate::model::{ErrorKind, Outcome, RequestRecord};

/// How long without a failure ends a pod's stretch of failures (µs): half
/// of kube-proxy's 1 s sync period on kind, several requests at any rate a
/// scenario runs.
const QUIET_US: i64 = 500_000;

/// The most a run may measure (µs): beyond it failures are another cause's.
pub const MAX_MEASURED_US: i64 = 10_000_000;

/// Where the allowance came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowanceSource {
    /// The scenario's `propagation_allowance`.
    Scenario,
    /// The run's own failures after each EndpointSlice update.
    Measured,
    /// Nothing to measure it on (no pod left the EndpointSlice): the default.
    Default,
}

/// The allowance (µs) and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// µs.
    pub us: u64,
    /// Its source.
    pub source: AllowanceSource,
}

/// The allowance for a run: `given` (the scenario's), else measured from
/// the records and the timeline's facts, else `default`.
///
/// The records' `pod` and `cause` are not read, so the run (before it
/// attributes) and `rolltest report` (after) measure the same.
pub(crate) fn allowance(
    given: Option<u64>,
    default: u64,
    facts: &Facts,
    records: &[RequestRecord],
) -> Allowance {
    if let Some(us) = given {
        return Allowance {
            us,
            source: AllowanceSource::Scenario,
        };
    }
    match measure(facts, records) {
        Some(us) => Allowance {
            us: u64::try_from(us).unwrap_or(0),
            source: AllowanceSource::Measured,
        },
        None => Allowance {
            us: default,
            source: AllowanceSource::Default,
        },
    }
}

/// The slowest pod's slice update → first failure-free moment (µs, at most
/// [`MAX_MEASURED_US`]); `None` when no pod left the EndpointSlice.
fn measure(facts: &Facts, records: &[RequestRecord]) -> Option<i64> {
    let updates: Vec<i64> = facts.pods.iter().filter_map(|p| p.slice_unready).collect();
    if updates.is_empty() {
        return None;
    }
    // Failures a stale route produces, while some endpoint was ready (with
    // none, nothing could have served them: capacity, not lag).
    let mut failures: Vec<i64> = records
        .iter()
        .filter(|r| r.status.is_none())
        .filter(|r| {
            matches!(
                r.outcome,
                Outcome::Failed(
                    ErrorKind::ConnectRefused
                        | ErrorKind::ConnectionReset
                        | ErrorKind::Timeout
                        | ErrorKind::HostUnreachable
                )
            )
        })
        .map(|r| span(r).0)
        .filter(|&s| facts.ready_at(s) != Some(0))
        .collect();
    failures.sort_unstable();
    updates
        .into_iter()
        .map(|u| {
            let mut last = u;
            let from = failures.partition_point(|&f| f < u);
            for &f in &failures[from..] {
                if f - last > QUIET_US || f - u > MAX_MEASURED_US {
                    break;
                }
                last = f;
            }
            last - u
        })
        .max()
}
