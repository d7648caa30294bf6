//! The correlator's cause rules, one table row per rule and mode, the
//! evidence text, and its invariants (proptest); one test binary, a module
//! per subject: `rules` (a case per cause and mode), `evidence` (groups,
//! their text, propagation), `invariants` (proptest), `simulated` (whole
//! rollouts). The shared builders are here.

mod evidence;
mod invariants;
mod rules;
mod simulated;

use std::net::SocketAddr;

use proptest::prelude::*;
use rolltest_core::{
    correlate::{self, Input, ProxyMode},
    model::{
        Attribution, Cause, ConnRecord, ErrorKind, EventSource, LifecycleEvent, LifecycleKind,
        Outcome, ProxyFailure, ProxyOutcome, ProxyRecord, RequestRecord, Timeline,
    },
};

const MS: u64 = 1_000;

fn ev(t_ms: u64, pod: &str, kind: LifecycleKind) -> LifecycleEvent {
    LifecycleEvent {
        at_us: t_ms * MS,
        server_us: None,
        server_precision_us: None,
        pod: Some(pod.into()),
        source: EventSource::Pod,
        kind,
    }
}

fn global(t_ms: u64, kind: LifecycleKind) -> LifecycleEvent {
    LifecycleEvent {
        at_us: t_ms * MS,
        server_us: None,
        server_precision_us: None,
        pod: None,
        source: EventSource::EndpointSlice,
        kind,
    }
}

fn deployment(replicas: i32) -> LifecycleKind {
    LifecycleKind::DeploymentStatus {
        replicas,
        updated: replicas,
        ready: replicas,
        available: replicas,
        unavailable: 0,
    }
}

fn exited(code: i32) -> LifecycleKind {
    LifecycleKind::ContainerExited {
        exit_code: Some(code),
        signal: None,
        reason: None,
    }
}

fn proxy_applied(ready: bool) -> LifecycleKind {
    LifecycleKind::ProxyApplied {
        present: true,
        ready,
        serving: ready,
        terminating: !ready,
    }
}

/// Two replicas desired. `old-1` (no preStop, exits 10 ms after SIGTERM) is
/// replaced by `new-1`; `old-2` stays. The proxy applies `old-1`'s removal
/// 1.5 s after its deletion. `new-2` is Ready at 3 s and crashes at 20 s
/// without a deletion. From 30 s to 32 s only one endpoint is ready.
fn timeline() -> Timeline {
    let mut events = vec![
        global(0, deployment(2)),
        ev(0, "old-1", LifecycleKind::PodReady),
        ev(0, "old-2", LifecycleKind::PodReady),
        global(
            0,
            LifecycleKind::ProxyView {
                ready: 2,
                serving_terminating: 0,
            },
        ),
        // The rollout's new pods, created while the load runs.
        ev(
            2_000,
            "new-2",
            LifecycleKind::PodCreated {
                replicaset: None,
                template_hash: None,
            },
        ),
        ev(3_000, "new-2", LifecycleKind::PodReady),
        ev(9_000, "new-1", LifecycleKind::PodReady),
        global(
            9_000,
            LifecycleKind::ProxyView {
                ready: 4,
                serving_terminating: 0,
            },
        ),
        ev(
            10_000,
            "old-1",
            LifecycleKind::DeletionRequested { grace_seconds: 30 },
        ),
        ev(
            10_005,
            "old-1",
            LifecycleKind::EndpointChanged {
                ready: false,
                serving: true,
                terminating: true,
            },
        ),
        ev(10_010, "old-1", LifecycleKind::SigtermSent),
        ev(10_020, "old-1", exited(0)),
        ev(11_500, "old-1", proxy_applied(false)),
        global(
            11_500,
            LifecycleKind::ProxyView {
                ready: 3,
                serving_terminating: 0,
            },
        ),
        ev(20_000, "new-2", exited(1)),
        ev(22_000, "new-2", LifecycleKind::PodNotReady),
        global(
            30_000,
            LifecycleKind::ProxyView {
                ready: 1,
                serving_terminating: 0,
            },
        ),
        global(
            32_000,
            LifecycleKind::ProxyView {
                ready: 2,
                serving_terminating: 0,
            },
        ),
    ];
    events.sort_by_key(|e| e.at_us);
    Timeline { events }
}

/// The fixture with one more pod, `name`: Ready from the start, deleted at
/// 40 s, `step` (its preStop start or SIGTERM) at 40.01 s, exited at
/// `exit_ms`.
fn with_terminating(name: &str, step: LifecycleKind, exit_ms: u64) -> Timeline {
    let mut t = timeline();
    t.events.extend([
        ev(0, name, LifecycleKind::PodReady),
        ev(
            40_000,
            name,
            LifecycleKind::DeletionRequested { grace_seconds: 30 },
        ),
        ev(40_010, name, step),
        ev(exit_ms, name, exited(0)),
    ]);
    t.sort();
    t
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn conn(id: u64, opened_ms: u64) -> ConnRecord {
    ConnRecord {
        conn: id,
        local: addr(40_000 + id as u16),
        opened_us: opened_ms * MS,
    }
}

fn prec(
    conn: u64,
    pod: Option<&str>,
    start_ms: u64,
    end_ms: u64,
    outcome: ProxyOutcome,
) -> ProxyRecord {
    ProxyRecord {
        client: addr(40_000 + conn as u16),
        pod: pod.map(Into::into),
        start_us: start_ms * MS,
        end_us: end_ms * MS,
        outcome,
        failed_tries: Vec::new(),
    }
}

/// A record sent at `sent_ms` (on time) that took `lat_ms`.
fn rec(seq: u64, sent_ms: u64, lat_ms: u64, outcome: Outcome) -> RequestRecord {
    RequestRecord {
        seq,
        intended_us: sent_ms * MS,
        sent_us: Some(sent_ms * MS),
        latency_us: Some(lat_ms * MS),
        status: None,
        outcome,
        detail: None,
        pod: None,
        conn: None,
        cause: None,
        failed_tries: Vec::new(),
    }
}

fn failed(kind: ErrorKind) -> Outcome {
    Outcome::Failed(kind)
}

trait With {
    fn on(self, conn: u64) -> Self;
    fn pod(self, pod: &str) -> Self;
    fn status(self, status: u16) -> Self;
}

impl With for RequestRecord {
    fn on(mut self, conn: u64) -> Self {
        self.conn = Some(conn);
        self
    }
    fn pod(mut self, pod: &str) -> Self {
        self.pod = Some(pod.into());
        self
    }
    fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

#[derive(Debug)]
struct Case {
    mode: ProxyMode,
    records: Vec<RequestRecord>,
    conns: Vec<ConnRecord>,
    proxy: Vec<ProxyRecord>,
}

impl Case {
    fn new(mode: ProxyMode) -> Case {
        Case {
            mode,
            records: Vec::new(),
            conns: Vec::new(),
            proxy: Vec::new(),
        }
    }

    fn input<'a>(&'a self, timeline: &'a Timeline) -> Input<'a> {
        Input {
            records: &self.records,
            timeline,
            conns: &self.conns,
            proxy: &self.proxy,
            proxy_mode: self.mode,
            load_started_us: 0,
            propagation_allowance_us: Some(correlate::DEFAULT_PROPAGATION_ALLOWANCE_US),
        }
    }

    /// The attribution of record `seq`.
    fn of(&self, seq: u64) -> Attribution {
        let t = timeline();
        let all = correlate::attribute(&self.input(&t));
        all.into_iter()
            .find(|a| a.seq == seq)
            .unwrap_or_else(|| panic!("no attribution for {seq}"))
    }
}

fn assert_cause(a: &Attribution, cause: Cause, pod: Option<&str>) {
    assert_eq!((a.cause, a.pod.as_deref()), (cause, pod), "{a:?}");
}
