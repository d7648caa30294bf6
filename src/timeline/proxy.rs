//! The embedded cluster's service proxies, in the shared model: each applied
//! endpoint set becomes per-pod [`LifecycleKind::ProxyApplied`] changes plus
//! one [`LifecycleKind::ProxyView`]; each served connection or request
//! becomes a [`ProxyRecord`].
//!
//! **Several proxies per Service.** The cluster runs one proxy per Service
//! port and listener (the ClusterIP and, for a NodePort Service, also
//! 127.0.0.1:nodePort; see `rolltest_minicluster::services`), all feeding the same
//! channel, and `ProxyEvent::Applied` does not say which proxy sent it. Each
//! endpoint change is therefore applied (and reported) once per listener,
//! at the same moment give or take thread wake-up jitter: the proxies get the
//! same update sequence at the same write instants and draw their delays
//! from the same seed. The collector keeps one merged view and reports a
//! set only when it differs from that view; a set that equals one applied
//! within [`SIBLING_WINDOW`] before the current view is a lagging sibling
//! replaying an older step and is skipped too (so a sibling can never make
//! the view go back). Sets are compared by pod and conditions, not address,
//! so the listeners of a multi-port Service collapse as well.
//!
//! **Several Services.** Proxies of other Services share the channel too;
//! [`ProxyCollector::only_pods`] restricts the view to the workload's pods
//! and ignores sets that list only other pods. (An empty set cannot be told
//! apart; it is taken as the workload's.)

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use rolltest_minicluster::proxy::{
    ConnectionEnd, Endpoint, Outcome, ProxyEvent, ProxyReason, UpstreamError,
};
use tokio::sync::mpsc::UnboundedReceiver;

use rolltest_core::model::{
    EventSource, FailedTry, LifecycleEvent, LifecycleKind, ProxyFailure, ProxyOutcome, ProxyRecord,
    RunClock, TryError,
};

/// Two applications of the same set this close together (by the proxies'
/// own clocks) are one update seen by two sibling listeners.
pub const SIBLING_WINDOW: Duration = Duration::from_millis(200);

/// How many past views are kept to recognise a lagging sibling.
const HISTORY: usize = 8;

/// An endpoint as the proxy used it: pod and the three conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    pod: String,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// Converts the proxies' reports; see the module docs.
#[derive(Debug)]
pub struct ProxyCollector {
    clock: RunClock,
    prefix: Option<String>,
    /// The current view, sorted by pod.
    view: Vec<State>,
    /// Recent views (oldest first) with the instant each was applied.
    history: VecDeque<(Instant, Vec<State>)>,
}

impl ProxyCollector {
    /// A collector for every pod on the channel.
    pub fn new(clock: RunClock) -> ProxyCollector {
        ProxyCollector {
            clock,
            prefix: None,
            view: Vec::new(),
            history: VecDeque::new(),
        }
    }

    /// Only pods whose name starts with `prefix` (e.g. `"<deployment>-"`).
    pub fn only_pods(mut self, prefix: impl Into<String>) -> ProxyCollector {
        self.prefix = Some(prefix.into());
        self
    }

    /// Handles one report: lifecycle events go to `events` (in order), a
    /// served connection or request comes back as its record.
    pub fn handle(
        &mut self,
        event: ProxyEvent,
        events: &mut Vec<LifecycleEvent>,
    ) -> Option<ProxyRecord> {
        match event {
            ProxyEvent::Applied { at, endpoints } => {
                self.applied(at, &endpoints, events);
                None
            }
            ProxyEvent::Served {
                client,
                pod,
                start,
                end,
                outcome,
                ..
            } => Some(ProxyRecord {
                client,
                pod,
                start_us: self.clock.micros(start),
                end_us: self.clock.micros(end),
                failed_tries: failed_tries(&outcome),
                outcome: convert(&outcome),
            }),
        }
    }

    /// One applied endpoint set (see the module docs for de-duplication).
    pub fn applied(&mut self, at: Instant, endpoints: &[Endpoint], out: &mut Vec<LifecycleEvent>) {
        let mut set: Vec<State> = endpoints
            .iter()
            .filter(|e| self.prefix.as_deref().is_none_or(|p| e.pod.starts_with(p)))
            .map(|e| State {
                pod: e.pod.clone(),
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
            })
            .collect();
        if set.is_empty() && !endpoints.is_empty() {
            // Another Service's proxy.
            return;
        }
        set.sort_by(|a, b| a.pod.cmp(&b.pod));
        set.dedup_by(|a, b| a.pod == b.pod);
        if set == self.view {
            return;
        }
        let sibling = self.history.iter().rev().skip(1).any(|(when, old)| {
            *old == set && at.max(*when).duration_since(at.min(*when)) <= SIBLING_WINDOW
        });
        if sibling {
            return;
        }
        let at_us = self.clock.micros(at);
        let event = |pod: &str, kind| LifecycleEvent {
            at_us,
            server_us: None,
            server_precision_us: None,
            pod: Some(pod.to_string()),
            source: EventSource::Proxy,
            kind,
        };
        for s in &set {
            if !self.view.contains(s) {
                out.push(event(
                    &s.pod,
                    LifecycleKind::ProxyApplied {
                        present: true,
                        ready: s.ready,
                        serving: s.serving,
                        terminating: s.terminating,
                    },
                ));
            }
        }
        for old in &self.view {
            if !set.iter().any(|s| s.pod == old.pod) {
                out.push(event(
                    &old.pod,
                    LifecycleKind::ProxyApplied {
                        present: false,
                        ready: false,
                        serving: false,
                        terminating: false,
                    },
                ));
            }
        }
        let count = |f: fn(&State) -> bool| u32::try_from(set.iter().filter(|s| f(s)).count());
        out.push(LifecycleEvent {
            at_us,
            server_us: None,
            server_precision_us: None,
            pod: None,
            source: EventSource::Proxy,
            kind: LifecycleKind::ProxyView {
                ready: count(|s| s.ready).unwrap_or(u32::MAX),
                serving_terminating: count(|s| s.serving && s.terminating).unwrap_or(u32::MAX),
            },
        });
        self.history.push_back((at, set.clone()));
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.view = set;
    }

    /// Reads `rx` until it closes, sending the lifecycle events and records
    /// it makes of the reports to the run's stream. Returns the collector
    /// for a last look at its view.
    pub async fn run(
        mut self,
        mut rx: UnboundedReceiver<ProxyEvent>,
        events: crate::events::Events,
    ) -> ProxyCollector {
        use crate::events::RunEvent;
        let mut out = Vec::new();
        while let Some(ev) = rx.recv().await {
            if let Some(r) = self.handle(ev, &mut out) {
                events.send(RunEvent::Proxy(r));
            }
            for e in out.drain(..) {
                events.send(RunEvent::Lifecycle(e));
            }
        }
        self
    }

    /// Pods in the current view.
    pub fn pods_in_view(&self) -> Vec<String> {
        self.view.iter().map(|s| s.pod.clone()).collect()
    }
}

/// The proxy's outcome in the shared model. An l7 `400` for an unreadable
/// request body is the client's doing and maps to `ClientGone`.
pub fn convert(outcome: &Outcome) -> ProxyOutcome {
    match outcome {
        Outcome::Connection { end, .. } => match end {
            ConnectionEnd::Closed => ProxyOutcome::Closed,
            ConnectionEnd::NoEndpoints => ProxyOutcome::NoEndpoints,
            ConnectionEnd::ConnectFailed => ProxyOutcome::ConnectFailed,
            ConnectionEnd::BackendReset => ProxyOutcome::BackendReset,
            ConnectionEnd::ClientReset => ProxyOutcome::ClientReset,
        },
        Outcome::Response {
            status,
            proxy: None,
            ..
        } => ProxyOutcome::Backend { status: *status },
        Outcome::Response {
            status,
            proxy: Some(reason),
            ..
        } => match reason {
            ProxyReason::NoEndpoints => ProxyOutcome::Proxy {
                status: *status,
                reason: ProxyFailure::NoEndpoints,
            },
            ProxyReason::ConnectFailed => ProxyOutcome::Proxy {
                status: *status,
                reason: ProxyFailure::ConnectFailed,
            },
            ProxyReason::BackendClosed => ProxyOutcome::Proxy {
                status: *status,
                reason: ProxyFailure::BackendGone,
            },
            ProxyReason::Timeout => ProxyOutcome::Proxy {
                status: *status,
                reason: ProxyFailure::Timeout,
            },
            ProxyReason::BadRequest => ProxyOutcome::ClientGone,
        },
        Outcome::ClientGone => ProxyOutcome::ClientGone,
    }
}

/// The tries of an l7 request before its last one (each failed and was
/// retried), in the shared model; none for L4 or a request tried once.
pub fn failed_tries(outcome: &Outcome) -> Vec<FailedTry> {
    let Outcome::Response { tries, .. } = outcome else {
        return Vec::new();
    };
    let Some((_last, earlier)) = tries.split_last() else {
        return Vec::new();
    };
    earlier
        .iter()
        .filter_map(|t| {
            Some(FailedTry {
                pod: t.pod.clone(),
                error: try_error(t.error?),
            })
        })
        .collect()
}

fn try_error(error: UpstreamError) -> TryError {
    match error {
        UpstreamError::ConnectRefused => TryError::ConnectRefused,
        UpstreamError::ConnectTimeout => TryError::ConnectTimeout,
        UpstreamError::ConnectError => TryError::ConnectError,
        UpstreamError::Reset => TryError::Reset,
        UpstreamError::ReadTimeout => TryError::ReadTimeout,
        UpstreamError::BodyCut => TryError::BodyCut,
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc};

    use rolltest_minicluster::proxy::UpstreamTry;

    use super::*;

    fn tried(pod: &str, error: Option<UpstreamError>) -> UpstreamTry {
        UpstreamTry {
            pod: pod.into(),
            addr: SocketAddr::from(([127, 0, 1, 9], 8080)),
            error,
        }
    }

    fn ep(pod: &str, port: u16, ready: bool, terminating: bool) -> Endpoint {
        Endpoint {
            pod: pod.into(),
            addr: SocketAddr::from(([127, 0, 1, 2], port)),
            ready,
            serving: true,
            terminating,
        }
    }

    fn applied(at: Instant, eps: Vec<Endpoint>) -> ProxyEvent {
        ProxyEvent::Applied {
            at,
            endpoints: Arc::from(eps),
        }
    }

    fn names(out: &[LifecycleEvent]) -> Vec<String> {
        out.iter()
            .map(|e| format!("{}:{}", e.kind.name(), e.pod.as_deref().unwrap_or("-")))
            .collect()
    }

    #[test]
    fn sibling_listeners_report_each_change_once() {
        let clock = RunClock::start();
        let t0 = clock.origin();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = ProxyCollector::new(clock);
        let mut out = Vec::new();
        let s1 = vec![ep("a", 8080, true, false), ep("b", 8080, true, false)];
        let s2 = vec![ep("a", 8080, false, true), ep("b", 8080, true, false)];
        let s3 = vec![ep("b", 8080, true, false)];
        // Lockstep: ClusterIP then NodePort listener for each step.
        for (at, set) in [
            (ms(10), s1.clone()),
            (ms(11), s1.clone()),
            (ms(500), s2.clone()),
            (ms(501), s2.clone()),
        ] {
            assert!(c.handle(applied(at, set), &mut out).is_none());
        }
        assert_eq!(
            names(&out),
            [
                "proxy_applied:a",
                "proxy_applied:b",
                "proxy_view:-",
                "proxy_applied:a",
                "proxy_view:-"
            ]
        );
        out.clear();
        // Interleaved: one listener applies s3 before its sibling caught up with s2.
        c.handle(applied(ms(900), s3.clone()), &mut out);
        let s4 = vec![ep("b", 8080, true, false), ep("c", 8080, false, false)];
        c.handle(applied(ms(900), s4.clone()), &mut out);
        c.handle(applied(ms(905), s3.clone()), &mut out);
        c.handle(applied(ms(905), s4.clone()), &mut out);
        assert_eq!(
            names(&out),
            [
                "proxy_applied:a",
                "proxy_view:-",
                "proxy_applied:c",
                "proxy_view:-"
            ]
        );
        assert_eq!(
            out[0].kind,
            LifecycleKind::ProxyApplied {
                present: false,
                ready: false,
                serving: false,
                terminating: false
            }
        );
        assert_eq!(out[0].at_us, 900_000);
        // A genuine return to an earlier set, later than the window, is reported.
        out.clear();
        c.handle(applied(ms(2000), s3), &mut out);
        assert_eq!(names(&out), ["proxy_applied:c", "proxy_view:-"]);
        assert_eq!(c.pods_in_view(), ["b"]);
    }

    #[test]
    fn other_services_are_ignored_with_a_prefix() {
        let clock = RunClock::start();
        let mut c = ProxyCollector::new(clock).only_pods("api-");
        let mut out = Vec::new();
        c.applied(clock.origin(), &[ep("api-1", 80, true, false)], &mut out);
        c.applied(clock.origin(), &[ep("db-1", 5432, true, false)], &mut out);
        // Multi-port: same pods, other port: one change only.
        c.applied(clock.origin(), &[ep("api-1", 81, true, false)], &mut out);
        assert_eq!(names(&out), ["proxy_applied:api-1", "proxy_view:-"]);
        assert_eq!(
            out[1].kind,
            LifecycleKind::ProxyView {
                ready: 1,
                serving_terminating: 0
            }
        );
    }

    #[test]
    fn served_reports_become_records() {
        let clock = RunClock::start();
        let mut c = ProxyCollector::new(clock);
        let mut out = Vec::new();
        let client = SocketAddr::from(([127, 0, 0, 1], 5555));
        let r = c
            .handle(
                ProxyEvent::Served {
                    client,
                    pod: Some("api-1".into()),
                    backend: None,
                    start: clock.origin() + Duration::from_micros(10),
                    end: clock.origin() + Duration::from_micros(30),
                    outcome: Outcome::Response {
                        status: 502,
                        proxy: Some(ProxyReason::BackendClosed),
                        tries: vec![
                            tried("api-0", Some(UpstreamError::ConnectRefused)),
                            tried("api-1", Some(UpstreamError::Reset)),
                        ],
                    },
                },
                &mut out,
            )
            .expect("record");
        assert_eq!(
            r,
            ProxyRecord {
                client,
                pod: Some("api-1".into()),
                start_us: 10,
                end_us: 30,
                outcome: ProxyOutcome::Proxy {
                    status: 502,
                    reason: ProxyFailure::BackendGone
                },
                failed_tries: vec![FailedTry {
                    pod: "api-0".into(),
                    error: TryError::ConnectRefused
                }],
            }
        );
        assert!(out.is_empty());
        let l4 = Outcome::Connection {
            to_backend: 1,
            to_client: 2,
            end: ConnectionEnd::BackendReset,
        };
        assert_eq!(convert(&l4), ProxyOutcome::BackendReset);
        assert_eq!(
            convert(&Outcome::Response {
                status: 200,
                proxy: None,
                tries: vec![tried("api-1", None)],
            }),
            ProxyOutcome::Backend { status: 200 }
        );
        assert_eq!(failed_tries(&l4), []);
        let timed_out = Outcome::Response {
            status: 504,
            proxy: Some(ProxyReason::Timeout),
            tries: vec![tried("api-1", Some(UpstreamError::ReadTimeout))],
        };
        assert_eq!(failed_tries(&timed_out), [], "tried once: not retried");
        assert_eq!(
            convert(&timed_out),
            ProxyOutcome::Proxy {
                status: 504,
                reason: ProxyFailure::Timeout
            }
        );
    }
}
