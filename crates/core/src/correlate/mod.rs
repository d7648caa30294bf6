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
//! - `evidence`: the groups, their evidence and their fix text.
//!
//! [`Cause`]: crate::model::Cause

mod evidence;
mod facts;
mod route;
mod rules;

use std::collections::HashMap;

use crate::model::{
    Attribution, CauseGroup, ConnRecord, Outcome, PodPropagation, ProxyRecord, RequestRecord,
    Timeline,
};

/// How traffic reached the pods, which decides what the proxy records mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyMode {
    /// The embedded L4 proxy (kube-proxy-like): one [`ProxyRecord`] per client
    /// TCP connection, the connection pinned to one pod.
    L4,
    /// The embedded L7 proxy (ingress-like): one [`ProxyRecord`] per request.
    L7,
    /// A real cluster: no proxy records; kube-proxy's per-connection pinning
    /// is assumed, and its propagation lag is bounded by
    /// [`Input::propagation_allowance_us`].
    External,
}

impl ProxyMode {
    /// The name `run.json` stores (`l4`, `l7`, `external`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::L4 => "l4",
            ProxyMode::L7 => "l7",
            ProxyMode::External => "external",
        }
    }

    /// Parses [`ProxyMode::as_str`]'s names.
    pub fn parse(s: &str) -> Option<ProxyMode> {
        [ProxyMode::L4, ProxyMode::L7, ProxyMode::External]
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    /// How far apart the generator's observations and the cluster's
    /// timestamps may be and still describe the same moment, µs.
    ///
    /// Embedded: 100 ms (the kubelet's events carry precise `eventTime`s on
    /// the same machine; the margin covers scheduling of the observers).
    /// External: 500 ms (many events are only observed through watches, which
    /// lag the change by a round trip or more).
    pub fn slack_us(self) -> u64 {
        match self {
            ProxyMode::L4 | ProxyMode::L7 => 100_000,
            ProxyMode::External => 500_000,
        }
    }
}

/// Default [`Input::propagation_allowance_us`]: 2 s.
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
    /// External mode: how long after the EndpointSlice update a node's proxy
    /// may still route to a removed endpoint (default 2 s).
    pub propagation_allowance_us: u64,
}

/// Gives every failed record (`Outcome::Failed`) exactly one attribution,
/// sorted by `seq`; ok and dropped records get none.
pub fn attribute(input: &Input) -> Vec<Attribution> {
    let ctx = rules::Ctx::new(input);
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
/// else from the record's own `cause` and `pod` (a `rolltest report` rebuild
/// from `records.csv`), else from attributing it now. Capacity failures form
/// one group without a pod (they are spread over pods by nature). The counts
/// sum to the number of failed records.
pub fn groups(input: &Input, attributions: &[Attribution]) -> Vec<CauseGroup> {
    let by_seq: HashMap<u64, &Attribution> = attributions.iter().map(|a| (a.seq, a)).collect();
    evidence::build(input, &by_seq)
}

/// Per deleted pod: deletion → the EndpointSlice stopped listing it as ready
/// → the embedded proxy applied that; sorted by deletion time.
pub fn propagation(input: &Input) -> Vec<PodPropagation> {
    facts::Facts::build(input.timeline, input.proxy_mode.slack_us()).propagation()
}
