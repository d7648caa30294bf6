//! The correlator: pure functions over the request records, the lifecycle
//! timeline and (in embedded mode) the service proxy's records, that give
//! every failed request exactly one [`Cause`] and a pod, and summarise them as
//! [`CauseGroup`]s with the evidence and the knob that fixes them.
//!
//! No IO, no clock: the same inputs always give the same answer, whatever the
//! order of the records (`rolltest report` rebuilds rely on it).
//!
//! Layout:
//! - `facts`: per-pod facts from the timeline (ready intervals, deletion,
//!   SIGTERM, exit, endpoint and proxy removal) and the capacity shortfall
//!   intervals (ready endpoints below the desired replicas).
//! - `route`: which pod served (or would have served) each failed request:
//!   the `x-rolltest-pod` header, the embedded proxy's records, or the last
//!   pod seen on the same keep-alive connection.
//! - `rules`: the cause rules, in priority order, each documented with the
//!   Kubernetes behaviour it models.
//! - `allowance`: how long node proxies may follow an EndpointSlice update
//!   (the scenario's, else measured from the run).
//! - `evidence`: the groups, their evidence and their fix text.
//!
//! [`Cause`]: crate::model::Cause

mod allowance;
mod evidence;
mod facts;
mod route;
mod rules;

use std::collections::HashMap;

pub use crate::model::ProxyMode;
use crate::model::{
    Attribution, CauseGroup, ConnRecord, FailedTry, Outcome, PodPropagation, ProxyRecord,
    RequestRecord, Timeline,
};
pub use allowance::{Allowance, AllowanceSource, MAX_MEASURED_US};

/// The allowance when a run has none given and nothing to measure it on:
/// 2 s (kube-proxy's 1 s `minSyncPeriod` on kind, plus its sync).
pub const DEFAULT_PROPAGATION_ALLOWANCE_US: u64 = 2_000_000;

/// Everything the correlator reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Every record of the run (ok ones help: their `x-rolltest-pod` header
    /// pins a keep-alive connection to a pod).
    pub records: &'a [RequestRecord],
    /// The lifecycle timeline.
    pub timeline: &'a Timeline,
    /// The generator's connections (empty in `rolltest report` rebuilds).
    pub conns: &'a [ConnRecord],
    /// The embedded proxy's records; empty against a real cluster and in
    /// rebuilds.
    pub proxy: &'a [ProxyRecord],
    /// How traffic reached the pods.
    pub proxy_mode: ProxyMode,
    /// Evidence times are printed in seconds from this (µs, run clock).
    pub load_started_us: u64,
    /// How long after the EndpointSlice update a node's proxy may still
    /// route to a removed endpoint (the scenario's `propagation_allowance`);
    /// `None`: measured from the run (slice update → first failure-free
    /// moment), else [`DEFAULT_PROPAGATION_ALLOWANCE_US`].
    pub propagation_allowance_us: Option<u64>,
}

/// The correlator over one run's input: the timeline's facts are built once,
/// here, and shared by [`attribute`](Correlation::attribute),
/// [`groups`](Correlation::groups) and [`propagation`](Correlation::propagation).
pub struct Correlation<'a> {
    input: Input<'a>,
    facts: facts::Facts,
    allowance: Allowance,
}

/// What the correlator read of a timeline (per-pod facts, capacity
/// shortfalls), kept to correlate the same timeline again without reading
/// it again ([`Correlation::into_facts`], [`Correlation::with_facts`]).
#[derive(Debug, Clone)]
pub struct TimelineFacts {
    facts: facts::Facts,
    slack_us: u64,
}

impl<'a> Correlation<'a> {
    /// Reads the timeline once.
    pub fn new(input: Input<'a>) -> Correlation<'a> {
        Correlation::over(
            input,
            facts::Facts::build(input.timeline, input.proxy_mode.slack_us()),
        )
    }

    fn over(input: Input<'a>, facts: facts::Facts) -> Correlation<'a> {
        let allowance = allowance::allowance(
            input.propagation_allowance_us,
            DEFAULT_PROPAGATION_ALLOWANCE_US,
            &facts,
            input.records,
        );
        Correlation {
            input,
            facts,
            allowance,
        }
    }

    /// How long node proxies were allowed to follow an EndpointSlice update,
    /// and where that came from.
    pub fn allowance(&self) -> Allowance {
        self.allowance
    }

    /// Correlates `input` with facts already read from its timeline (by a
    /// [`Correlation`] over the same timeline, e.g. the run's attribution
    /// before the finish's groups); read again only if they were read for
    /// another proxy mode.
    pub fn with_facts(input: Input<'a>, facts: TimelineFacts) -> Correlation<'a> {
        if facts.slack_us != input.proxy_mode.slack_us() {
            return Correlation::new(input);
        }
        Correlation::over(input, facts.facts)
    }

    /// Ends the correlation, keeping what it read of the timeline.
    pub fn into_facts(self) -> TimelineFacts {
        TimelineFacts {
            slack_us: self.input.proxy_mode.slack_us(),
            facts: self.facts,
        }
    }

    /// Gives every failed record (`Outcome::Failed`) exactly one attribution,
    /// sorted by `seq`; ok and dropped records get none.
    pub fn attribute(&self) -> Vec<Attribution> {
        let input = &self.input;
        let ctx = rules::Ctx::new(input, &self.facts, self.allowance_us());
        let router = route::Router::new(input);
        let mut failed: Vec<&RequestRecord> = input
            .records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .collect();
        failed.sort_by_key(|r| r.seq);
        failed
            .into_iter()
            .map(|r| {
                let route = router.route(r);
                let (cause, pod) = ctx.classify(r, &route);
                Attribution {
                    seq: r.seq,
                    pod: pod.map(str::to_owned),
                    cause,
                }
            })
            .collect()
    }

    /// Groups the failures by (cause, pod) with their evidence and fix.
    ///
    /// Each failed record's cause and pod come from `attributions` (by `seq`),
    /// else from the record's own `cause` and `pod` (a `rolltest report`
    /// rebuild from `records.csv`), else from attributing it now. Capacity
    /// failures form one group without a pod (they are spread over pods by
    /// nature). The counts sum to the number of failed records.
    pub fn groups(&self, attributions: &[Attribution]) -> Vec<CauseGroup> {
        let by_seq: HashMap<u64, &Attribution> = attributions.iter().map(|a| (a.seq, a)).collect();
        evidence::build(self, &by_seq)
    }

    /// The ingress's failed tries of every request it retried, by `seq`
    /// (sorted): each sent request (ok or failed) is routed to its proxy
    /// record as a failure is; one whose pod header names another pod than
    /// the record's last try is left out. Only per-request proxies
    /// (`l7`, `ingress-nginx`) retry; otherwise, and without proxy records
    /// (a rebuild), none.
    pub fn failed_tries(&self) -> Vec<(u64, Vec<FailedTry>)> {
        let input = &self.input;
        if !input.proxy_mode.per_request() || input.proxy.iter().all(|p| p.failed_tries.is_empty())
        {
            return Vec::new();
        }
        let router = route::Router::new(input);
        let mut out: Vec<(u64, Vec<FailedTry>)> = input
            .records
            .iter()
            .filter(|r| r.outcome != Outcome::Dropped)
            .filter_map(|r| {
                let record = router.route(r).proxy?;
                let agrees = match (r.pod.as_deref(), record.pod.as_deref()) {
                    (Some(header), Some(last)) => header == last,
                    _ => true,
                };
                (agrees && !record.failed_tries.is_empty())
                    .then(|| (r.seq, record.failed_tries.clone()))
            })
            .collect();
        out.sort_by_key(|(seq, _)| *seq);
        out
    }

    /// Per deleted pod: deletion → the EndpointSlice stopped listing it as
    /// ready → the embedded proxy applied that; sorted by deletion time.
    pub fn propagation(&self) -> Vec<PodPropagation> {
        self.facts.propagation()
    }
}

impl Correlation<'_> {
    fn allowance_us(&self) -> i64 {
        i64::try_from(self.allowance.us).unwrap_or(i64::MAX)
    }
}

/// [`Correlation::attribute`] for one question about `input` (builds the
/// timeline's facts; ask one [`Correlation`] when asking more than one).
pub fn attribute(input: &Input) -> Vec<Attribution> {
    Correlation::new(*input).attribute()
}

/// [`Correlation::groups`] for one question about `input` (builds the
/// timeline's facts; ask one [`Correlation`] when asking more than one).
pub fn groups(input: &Input, attributions: &[Attribution]) -> Vec<CauseGroup> {
    Correlation::new(*input).groups(attributions)
}

/// [`Correlation::propagation`] for one question about `input` (builds the
/// timeline's facts; ask one [`Correlation`] when asking more than one).
pub fn propagation(input: &Input) -> Vec<PodPropagation> {
    Correlation::new(*input).propagation()
}
