//! The correlator's cause rules, one table row per rule and mode, the
//! evidence text, and its invariants (proptest).

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
        pod: Some(pod.into()),
        source: EventSource::Pod,
        kind,
    }
}

fn global(t_ms: u64, kind: LifecycleKind) -> LifecycleEvent {
    LifecycleEvent {
        at_us: t_ms * MS,
        server_us: None,
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
            propagation_allowance_us: correlate::DEFAULT_PROPAGATION_ALLOWANCE_US,
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

// ---- endpoint_lag: traffic to a pod that had stopped but was still routed to

#[test]
fn l4_new_connection_to_an_exited_pod_still_routed_is_endpoint_lag() {
    let mut c = Case::new(ProxyMode::L4);
    c.conns.push(conn(7, 10_500));
    c.proxy.push(prec(
        7,
        Some("old-1"),
        10_501,
        10_502,
        ProxyOutcome::ConnectFailed,
    ));
    c.records
        .push(rec(1, 10_500, 3, failed(ErrorKind::ConnectionReset)).on(7));
    assert_cause(&c.of(1), Cause::EndpointLag, Some("old-1"));
}

#[test]
fn l4_connection_routed_after_the_proxy_applied_the_removal_is_not_endpoint_lag() {
    // Routed at 12 s, after the proxy dropped old-1 at 11.5 s: the lag window
    // is closed, and old-1 was terminating, so not_ready does not fit either.
    let mut c = Case::new(ProxyMode::L4);
    c.conns.push(conn(7, 12_000));
    c.proxy.push(prec(
        7,
        Some("old-1"),
        12_000,
        12_001,
        ProxyOutcome::ConnectFailed,
    ));
    c.records
        .push(rec(1, 12_000, 3, failed(ErrorKind::ConnectionReset)).on(7));
    assert_cause(&c.of(1), Cause::Unexplained, Some("old-1"));
}

#[test]
fn l7_request_routed_to_an_exited_pod_is_endpoint_lag() {
    let mut c = Case::new(ProxyMode::L7);
    c.conns.push(conn(2, 1_000));
    c.proxy.push(prec(
        2,
        Some("old-1"),
        11_000,
        11_001,
        ProxyOutcome::Proxy {
            status: 502,
            reason: ProxyFailure::ConnectFailed,
        },
    ));
    c.records.push(
        rec(1, 11_000, 2, failed(ErrorKind::Http5xx))
            .on(2)
            .status(502),
    );
    assert_cause(&c.of(1), Cause::EndpointLag, Some("old-1"));
}

#[test]
fn external_refusal_inside_a_pods_window_is_endpoint_lag_on_that_pod() {
    // Window: old-1's SIGTERM (10.01 s) .. slice update (10.005 s) + 2 s.
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 11_800, 1, failed(ErrorKind::ConnectRefused)));
    c.records
        .push(rec(2, 15_000, 1, failed(ErrorKind::ConnectRefused)));
    assert_cause(&c.of(1), Cause::EndpointLag, Some("old-1"));
    assert_cause(&c.of(2), Cause::Unexplained, None);
}

// ---- killed_in_flight: cut by the exit, or on a pinned keep-alive connection

#[test]
fn l4_request_in_flight_across_the_exit_is_killed_in_flight() {
    let mut c = Case::new(ProxyMode::L4);
    c.conns.push(conn(3, 9_000));
    c.proxy.push(prec(
        3,
        Some("old-1"),
        9_000,
        10_020,
        ProxyOutcome::BackendReset,
    ));
    c.records
        .push(rec(1, 9_000, 5, Outcome::Ok).on(3).pod("old-1"));
    c.records
        .push(rec(2, 10_015, 10, failed(ErrorKind::ConnectionReset)).on(3));
    assert_cause(&c.of(2), Cause::KilledInFlight, Some("old-1"));
}

#[test]
fn a_failure_seen_a_few_ms_before_the_exit_event_is_still_killed_in_flight() {
    // Ends at 10.015 s; the exit is stamped 10.020 s.
    let mut c = Case::new(ProxyMode::L4);
    c.conns.push(conn(3, 9_000));
    c.proxy.push(prec(
        3,
        Some("old-1"),
        9_000,
        10_015,
        ProxyOutcome::BackendReset,
    ));
    c.records
        .push(rec(2, 10_012, 3, failed(ErrorKind::ConnectionReset)).on(3));
    assert_cause(&c.of(2), Cause::KilledInFlight, Some("old-1"));
}

#[test]
fn l4_keep_alive_connection_pinned_to_a_terminating_pod_is_killed_in_flight() {
    // Opened at 5 s to old-1; reused at 10.6 s, after old-1 exited but before
    // the proxy dropped it: not endpoint_lag (no new connection was routed).
    let mut c = Case::new(ProxyMode::L4);
    c.conns.push(conn(4, 5_000));
    c.proxy.push(prec(
        4,
        Some("old-1"),
        5_000,
        10_600,
        ProxyOutcome::BackendReset,
    ));
    c.records
        .push(rec(1, 5_000, 2, Outcome::Ok).on(4).pod("old-1"));
    c.records
        .push(rec(2, 10_600, 1, failed(ErrorKind::ConnectionReset)).on(4));
    assert_cause(&c.of(2), Cause::KilledInFlight, Some("old-1"));
}

#[test]
fn external_keep_alive_pinned_by_an_earlier_header_is_killed_in_flight() {
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 5_000, 2, Outcome::Ok).on(4).pod("old-2"));
    c.records
        .push(rec(2, 6_000, 2, Outcome::Ok).on(4).pod("old-1"));
    c.records
        .push(rec(3, 13_000, 1, failed(ErrorKind::ConnectionReset)).on(4));
    assert_cause(&c.of(3), Cause::KilledInFlight, Some("old-1"));
}

#[test]
fn l7_backend_gone_after_deletion_is_killed_in_flight() {
    let mut c = Case::new(ProxyMode::L7);
    c.conns.push(conn(2, 1_000));
    c.proxy.push(prec(
        2,
        Some("old-1"),
        10_012,
        10_021,
        ProxyOutcome::Proxy {
            status: 502,
            reason: ProxyFailure::BackendGone,
        },
    ));
    c.records.push(
        rec(1, 10_012, 9, failed(ErrorKind::Http5xx))
            .on(2)
            .status(502),
    );
    assert_cause(&c.of(1), Cause::KilledInFlight, Some("old-1"));
}

#[test]
fn external_reset_across_an_exit_is_killed_in_flight_on_that_pod() {
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 9_900, 130, failed(ErrorKind::Timeout)));
    assert_cause(&c.of(1), Cause::KilledInFlight, Some("old-1"));
}

// ---- not_ready: a Ready pod that could not serve

#[test]
fn five_hundred_from_a_ready_pod_is_not_ready() {
    let mut c = Case::new(ProxyMode::External);
    c.records.push(
        rec(1, 4_000, 2, failed(ErrorKind::Http5xx))
            .pod("new-2")
            .status(503),
    );
    assert_cause(&c.of(1), Cause::NotReady, Some("new-2"));
}

#[test]
fn l7_backend_503_from_a_ready_pod_is_not_ready() {
    let mut c = Case::new(ProxyMode::L7);
    c.conns.push(conn(2, 1_000));
    c.proxy.push(prec(
        2,
        Some("new-2"),
        4_000,
        4_002,
        ProxyOutcome::Backend { status: 503 },
    ));
    c.records.push(
        rec(1, 4_000, 2, failed(ErrorKind::Http5xx))
            .on(2)
            .status(503),
    );
    assert_cause(&c.of(1), Cause::NotReady, Some("new-2"));
}

#[test]
fn refusals_from_a_pod_that_crashed_after_ready_are_not_ready() {
    // new-2 exited at 20 s without a deletion; still Ready until 22 s.
    let mut c = Case::new(ProxyMode::L4);
    c.conns.push(conn(5, 20_100));
    c.proxy.push(prec(
        5,
        Some("new-2"),
        20_100,
        20_101,
        ProxyOutcome::ConnectFailed,
    ));
    c.records
        .push(rec(1, 20_100, 1, failed(ErrorKind::ConnectionReset)).on(5));
    assert_cause(&c.of(1), Cause::NotReady, Some("new-2"));
}

#[test]
fn external_refusal_after_a_crash_of_a_ready_pod_is_not_ready_on_it() {
    // new-2 exited at 20 s without a deletion and stayed Ready until 22 s;
    // node proxies may route to it for 2 s more.
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 23_000, 1, failed(ErrorKind::ConnectRefused)));
    c.records
        .push(rec(2, 25_000, 1, failed(ErrorKind::ConnectRefused)));
    assert_cause(&c.of(1), Cause::NotReady, Some("new-2"));
    assert_cause(&c.of(2), Cause::Unexplained, None);
}

// ---- capacity

#[test]
fn timeouts_while_fewer_endpoints_than_desired_are_capacity() {
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 30_500, 2_000, failed(ErrorKind::Timeout)));
    c.records
        .push(rec(2, 31_000, 1, failed(ErrorKind::Http5xx)).status(503));
    assert_cause(&c.of(1), Cause::Capacity, None);
    assert_cause(&c.of(2), Cause::Capacity, None);
}

#[test]
fn proxy_without_endpoints_is_capacity() {
    let mut l7 = Case::new(ProxyMode::L7);
    l7.conns.push(conn(2, 1_000));
    l7.proxy.push(prec(
        2,
        None,
        15_000,
        15_000,
        ProxyOutcome::Proxy {
            status: 503,
            reason: ProxyFailure::NoEndpoints,
        },
    ));
    l7.records.push(
        rec(1, 15_000, 1, failed(ErrorKind::Http5xx))
            .on(2)
            .status(503),
    );
    assert_cause(&l7.of(1), Cause::Capacity, None);

    let mut l4 = Case::new(ProxyMode::L4);
    l4.conns.push(conn(2, 15_000));
    l4.proxy
        .push(prec(2, None, 15_000, 15_000, ProxyOutcome::NoEndpoints));
    l4.records
        .push(rec(1, 15_000, 1, failed(ErrorKind::ConnectionReset)).on(2));
    assert_cause(&l4.of(1), Cause::Capacity, None);
}

/// A liveness probe that restarts containers during the shortfall is named
/// in the capacity group's evidence, and the fix starts with it; without
/// such restarts the fix is about the rollout strategy alone.
#[test]
fn liveness_restarts_during_a_shortfall_are_named_in_the_evidence_and_fix() {
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 30_500, 2_000, failed(ErrorKind::Timeout)));
    c.records
        .push(rec(2, 31_000, 1, failed(ErrorKind::Http5xx)).status(503));
    let plain = timeline();
    let groups = correlate::groups(&c.input(&plain), &[]);
    let capacity = groups
        .iter()
        .find(|g| g.cause == Cause::Capacity)
        .expect("capacity group");
    assert!(!capacity.fix.contains("livenessProbe"), "{}", capacity.fix);

    let mut restarted = timeline();
    restarted.events.push(ev(
        30_000,
        "api-new-1",
        LifecycleKind::ProbeFailed {
            probe: "liveness".into(),
            message: "Liveness probe failed: HTTP probe failed with statuscode: 503".into(),
        },
    ));
    restarted.events.push(ev(
        30_800,
        "api-new-1",
        LifecycleKind::ContainerStarted { restart_count: 1 },
    ));
    restarted.sort();
    let groups = correlate::groups(&c.input(&restarted), &[]);
    let capacity = groups
        .iter()
        .find(|g| g.cause == Cause::Capacity)
        .expect("capacity group");
    assert!(
        capacity
            .evidence
            .contains("the liveness probe restarted 1 container (api-new-1)"),
        "{}",
        capacity.evidence
    );
    assert!(
        capacity
            .fix
            .starts_with("a livenessProbe that checks only the process"),
        "{}",
        capacity.fix
    );
}

// ---- unexplained

#[test]
fn a_timeout_with_enough_endpoints_and_no_event_is_unexplained() {
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 15_000, 2_000, failed(ErrorKind::Timeout)));
    c.records.push(
        rec(2, 16_000, 1, failed(ErrorKind::Http4xx))
            .pod("old-2")
            .status(404),
    );
    assert_cause(&c.of(1), Cause::Unexplained, None);
    assert_cause(&c.of(2), Cause::Unexplained, Some("old-2"));
}

#[test]
fn priority_killed_in_flight_beats_endpoint_lag() {
    // Sent on a new connection at 10.015 s (after SIGTERM, inside the lag
    // window) and cut by the exit at 10.02 s: both fit, killed wins.
    let mut c = Case::new(ProxyMode::L4);
    c.conns.push(conn(8, 10_015));
    c.proxy.push(prec(
        8,
        Some("old-1"),
        10_015,
        10_020,
        ProxyOutcome::BackendReset,
    ));
    c.records
        .push(rec(1, 10_015, 5, failed(ErrorKind::ConnectionReset)).on(8));
    assert_cause(&c.of(1), Cause::KilledInFlight, Some("old-1"));
}

// ---- groups and propagation

fn lag_run() -> Case {
    let mut c = Case::new(ProxyMode::L4);
    for i in 0..3u64 {
        let id = 10 + i;
        let t = 10_400 + 100 * i;
        c.conns.push(conn(id, t));
        c.proxy.push(prec(
            id,
            Some("old-1"),
            t,
            t + 1,
            ProxyOutcome::ConnectFailed,
        ));
        c.records
            .push(rec(i, t, 1, failed(ErrorKind::ConnectionReset)).on(id));
    }
    c.conns.push(conn(3, 9_000));
    c.proxy.push(prec(
        3,
        Some("old-1"),
        9_000,
        10_020,
        ProxyOutcome::BackendReset,
    ));
    c.records
        .push(rec(3, 9_000, 5, Outcome::Ok).on(3).pod("old-1"));
    c.records
        .push(rec(4, 10_015, 10, failed(ErrorKind::ConnectionReset)).on(3));
    c.records
        .push(rec(5, 30_500, 2_000, failed(ErrorKind::Timeout)));
    c.records.push(
        rec(6, 4_000, 2, failed(ErrorKind::Http5xx))
            .pod("new-2")
            .status(503),
    );
    c
}

#[test]
fn groups_carry_evidence_and_fix_text() {
    let c = lag_run();
    let t = timeline();
    let input = c.input(&t);
    let attrs = correlate::attribute(&input);
    let groups = correlate::groups(&input, &attrs);
    let causes: Vec<(Cause, Option<&str>, u64)> = groups
        .iter()
        .map(|g| (g.cause, g.pod.as_deref(), g.count))
        .collect();
    assert_eq!(
        causes,
        vec![
            (Cause::EndpointLag, Some("old-1"), 3),
            (Cause::KilledInFlight, Some("old-1"), 1),
            (Cause::NotReady, Some("new-2"), 1),
            (Cause::Capacity, None, 1),
        ]
    );
    let lag = &groups[0];
    assert_eq!(
        lag.evidence,
        "pod old-1 got SIGTERM at 10.01 s and exited at 10.02 s; the proxy still routed to it \
         until 11.50 s; 3 requests reset between 10.40 s and 10.60 s"
    );
    assert!(
        lag.fix.starts_with("preStop sleep ≥ 2 s")
            && lag
                .fix
                .ends_with("the slowest endpoint propagation measured was 1.50 s"),
        "{}",
        lag.fix
    );
    assert_eq!((lag.first_us, lag.last_us), (10_400 * MS, 10_600 * MS));
    assert_eq!(lag.kinds.get(&ErrorKind::ConnectionReset), Some(&3));

    let killed = &groups[1];
    assert!(
        killed.evidence.contains("SIGTERM at 10.01 s")
            && killed
                .evidence
                .contains("exited at 10.02 s (exit code 0), 10 ms after SIGTERM")
            && killed
                .evidence
                .contains("1 request was in flight when it exited"),
        "{}",
        killed.evidence
    );
    // Grace: no preStop + the slowest ok or killed request (10 ms) + 1 s,
    // rounded up: 2 s.
    assert!(
        killed.fix.contains(
            "terminationGracePeriodSeconds ≥ 2 s covers preStop (measured 0.00 s) + drain (the slowest request took 0.01 s)"
        ),
        "{}",
        killed.fix
    );
    assert!(killed.fix.starts_with("drain on SIGTERM"), "{}", killed.fix);

    let nr = &groups[2];
    assert_eq!(
        nr.evidence,
        "pod new-2 became Ready at 3.00 s; 1 request answered 503 at 4.00 s while it counted as Ready"
    );
    assert!(nr.fix.contains("minReadySeconds ≥ 1 s"), "{}", nr.fix);

    let cap = &groups[3];
    assert_eq!(
        cap.evidence,
        "between 30.00 s and 32.00 s only 1 of 2 desired endpoints were ready; 1 request timed out at 30.50 s"
    );
    assert!(cap.fix.contains("maxUnavailable: 0") && cap.fix.contains("PodDisruptionBudget"));
}

#[test]
fn evidence_times_count_from_the_load_start() {
    let c = lag_run();
    let t = timeline();
    let mut input = c.input(&t);
    input.load_started_us = 1_000 * MS;
    let groups = correlate::groups(&input, &correlate::attribute(&input));
    assert!(
        groups[0]
            .evidence
            .starts_with("pod old-1 got SIGTERM at 9.01 s and exited at 9.02 s")
    );
}

#[test]
fn groups_rebuild_from_records_alone_matches_the_run() {
    let c = lag_run();
    let t = timeline();
    let input = c.input(&t);
    let attrs = correlate::attribute(&input);
    let live = correlate::groups(&input, &attrs);

    // What `rolltest report` has: records.csv with pod + cause, the timeline.
    let mut records = c.records.clone();
    for r in &mut records {
        if let Some(a) = attrs.iter().find(|a| a.seq == r.seq) {
            r.pod = a.pod.clone();
            r.cause = Some(a.cause);
        }
    }
    let rebuilt = correlate::groups(
        &Input {
            records: &records,
            conns: &[],
            proxy: &[],
            ..input
        },
        &[],
    );
    assert_eq!(rebuilt, live);
}

#[test]
fn external_lag_evidence_names_the_slice_and_the_allowance() {
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 11_800, 1, failed(ErrorKind::ConnectRefused)));
    let mut t = timeline();
    t.events
        .retain(|e| !matches!(e.kind, LifecycleKind::ProxyApplied { .. }));
    let input = c.input(&t);
    let groups = correlate::groups(&input, &correlate::attribute(&input));
    assert_eq!(groups.len(), 1);
    assert_eq!(
        groups[0].evidence,
        "pod old-1 got SIGTERM at 10.01 s and exited at 10.02 s; the EndpointSlice marked it not \
         ready at 10.01 s and node proxies may route to it for 2.00 s more (until 12.01 s); \
         1 request refused at 11.80 s"
    );
    // 0.005 s measured + 2 s allowance + 0.5 s margin → 3 s.
    assert!(
        groups[0].fix.starts_with("preStop sleep ≥ 3 s"),
        "{}",
        groups[0].fix
    );
}

#[test]
fn propagation_measures_deletion_to_slice_to_proxy() {
    let t = timeline();
    let p = correlate::propagation(&Case::new(ProxyMode::L4).input(&t));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].pod, "old-1");
    assert_eq!(p[0].deletion_us, 10_000 * MS);
    assert_eq!(p[0].slice_us, Some(10_005 * MS));
    assert_eq!(p[0].proxy_us, Some(11_500 * MS));
    assert_eq!(p[0].total_ms(), Some(1_500.0));
}

#[test]
fn a_crash_before_deletion_is_not_a_termination_exit() {
    // new-2 crashed at 20 s; deleted at 40 s. A reset at 20.01 s is not
    // killed_in_flight (the crash was no termination) but not_ready.
    let mut t = timeline();
    t.events.push(ev(
        40_000,
        "new-2",
        LifecycleKind::DeletionRequested { grace_seconds: 30 },
    ));
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 19_990, 30, failed(ErrorKind::ConnectionReset)).on(9));
    c.records
        .push(rec(0, 19_000, 1, Outcome::Ok).on(9).pod("new-2"));
    let a = correlate::attribute(&c.input(&t));
    assert_eq!(a.len(), 1);
    assert_cause(&a[0], Cause::NotReady, Some("new-2"));
}

// ---- invariants

fn arb_record(seq: u64) -> impl Strategy<Value = RequestRecord> {
    let kinds = prop_oneof![
        Just(Outcome::Ok),
        Just(Outcome::Dropped),
        (0..6usize).prop_map(|i| Outcome::Failed(ErrorKind::ALL[i])),
    ];
    let pods = prop_oneof![
        Just(None),
        Just(Some("old-1")),
        Just(Some("old-2")),
        Just(Some("new-2")),
        Just(Some("ghost")),
    ];
    (
        0u64..40_000,
        0u64..3_000,
        kinds,
        pods,
        proptest::option::of(0u64..6),
    )
        .prop_map(move |(sent, lat, outcome, pod, conn)| {
            let mut r = rec(seq, sent, lat, outcome);
            if outcome == Outcome::Dropped {
                r = RequestRecord::dropped(seq, sent * MS);
            }
            r.pod = pod.map(Into::into);
            r.conn = conn;
            if outcome.error_kind() == Some(ErrorKind::Http5xx) {
                r.status = Some(503);
            }
            r
        })
}

fn arb_case() -> impl Strategy<Value = (Case, Vec<usize>)> {
    let mode = prop_oneof![
        Just(ProxyMode::L4),
        Just(ProxyMode::L7),
        Just(ProxyMode::External)
    ];
    (mode, 1usize..60).prop_flat_map(|(mode, n)| {
        let recs: Vec<_> = (0..n as u64).map(arb_record).collect();
        let proxy = proptest::collection::vec((0u64..6, 0u64..40_000, 0usize..4, 0usize..4), 0..20);
        let perm = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
        (recs, proxy, perm).prop_map(move |(records, proxy, perm)| {
            let pods = [None, Some("old-1"), Some("new-2"), Some("old-2")];
            let outcomes = [
                ProxyOutcome::ConnectFailed,
                ProxyOutcome::BackendReset,
                ProxyOutcome::Backend { status: 503 },
                ProxyOutcome::Proxy {
                    status: 502,
                    reason: ProxyFailure::BackendGone,
                },
            ];
            let case = Case {
                mode,
                conns: (0..6).map(|i| conn(i, i * 1_000)).collect(),
                proxy: proxy
                    .into_iter()
                    .map(|(c, t, p, o)| prec(c, pods[p], t, t + 5, outcomes[o]))
                    .collect(),
                records,
            };
            (case, perm)
        })
    })
}

proptest! {
    #[test]
    fn every_failed_record_gets_exactly_one_attribution((case, perm) in arb_case()) {
        let t = timeline();
        let input = case.input(&t);
        let attrs = correlate::attribute(&input);
        let mut failed: Vec<u64> = case
            .records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .map(|r| r.seq)
            .collect();
        failed.sort_unstable();
        let seqs: Vec<u64> = attrs.iter().map(|a| a.seq).collect();
        prop_assert_eq!(&seqs, &failed);

        // Same answer whatever the order of the records.
        let shuffled: Vec<RequestRecord> = perm.iter().map(|&i| case.records[i].clone()).collect();
        let input2 = Input { records: &shuffled, ..input };
        prop_assert_eq!(&correlate::attribute(&input2), &attrs);
        prop_assert_eq!(&correlate::attribute(&input), &attrs);

        // Groups account for every failure, in any order.
        let groups = correlate::groups(&input, &attrs);
        prop_assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), failed.len() as u64);
        prop_assert_eq!(&correlate::groups(&input2, &attrs), &groups);
        for g in &groups {
            prop_assert_eq!(g.kinds.values().sum::<u64>(), g.count);
            prop_assert!(!g.evidence.is_empty() && !g.fix.is_empty());
        }
        // Groups without attributions attribute on their own, identically.
        prop_assert_eq!(&correlate::groups(&input, &[]), &groups);
    }
}

// ---- a whole naive rollout, simulated: no failure may stay unexplained

/// One pod of the simulated rollout (times in ms).
struct SimPod {
    name: &'static str,
    ready: u64,
    deletion: Option<u64>,
}

impl SimPod {
    const NO_PRESTOP_SIGTERM: u64 = 6;
    const EXIT_AFTER_SIGTERM: u64 = 3;
    const PROPAGATION: u64 = 1_300;
    fn sigterm(&self) -> u64 {
        self.deletion
            .map_or(u64::MAX, |d| d + Self::NO_PRESTOP_SIGTERM)
    }
    fn exit(&self) -> u64 {
        self.deletion.map_or(u64::MAX, |d| {
            d + Self::NO_PRESTOP_SIGTERM + Self::EXIT_AFTER_SIGTERM
        })
    }
    fn removed(&self) -> u64 {
        self.deletion.map_or(u64::MAX, |d| d + Self::PROPAGATION)
    }
}

/// maxSurge 1 / maxUnavailable 0, no preStop, an app that exits 3 ms after
/// SIGTERM; the embedded L4 proxy lags 1.3 s. A request every 5 ms over a
/// pool of 4 keep-alive connections. Events are stamped 4 ms late (observed
/// through watches). Returns the case and the cause each failure must get.
fn naive_rollout() -> (Case, Timeline, Vec<(u64, Cause, &'static str)>) {
    let pods = [
        SimPod {
            name: "a1",
            ready: 0,
            deletion: Some(5_500),
        },
        SimPod {
            name: "a2",
            ready: 0,
            deletion: Some(7_500),
        },
        SimPod {
            name: "b1",
            ready: 5_000,
            deletion: None,
        },
        SimPod {
            name: "b2",
            ready: 7_000,
            deletion: None,
        },
    ];
    let late = 4;
    let mut events = vec![global(0, deployment(2))];
    for p in &pods {
        events.push(ev(p.ready, p.name, LifecycleKind::PodReady));
        if let Some(d) = p.deletion {
            events.push(ev(
                d + late,
                p.name,
                LifecycleKind::DeletionRequested { grace_seconds: 30 },
            ));
            events.push(ev(
                d + 2 + late,
                p.name,
                LifecycleKind::EndpointChanged {
                    ready: false,
                    serving: true,
                    terminating: true,
                },
            ));
            events.push(ev(p.sigterm() + late, p.name, LifecycleKind::SigtermSent));
            events.push(ev(p.exit() + late, p.name, exited(143)));
            events.push(ev(p.removed(), p.name, proxy_applied(false)));
        }
    }
    let in_view = |t: u64| -> Vec<&SimPod> {
        pods.iter()
            .filter(|p| p.ready <= t && t < p.removed())
            .collect()
    };
    let mut changes: Vec<u64> = pods.iter().flat_map(|p| [p.ready, p.removed()]).collect();
    changes.retain(|&t| t != u64::MAX);
    changes.sort_unstable();
    for t in changes {
        let ready = in_view(t).len() as u32;
        events.push(global(
            t,
            LifecycleKind::ProxyView {
                ready,
                serving_terminating: 0,
            },
        ));
    }
    events.sort_by_key(|e| e.at_us);

    let mut c = Case::new(ProxyMode::L4);
    let mut expected = Vec::new();
    let mut slots: [Option<(u64, usize)>; 4] = [None; 4];
    let (mut next_conn, mut rr) = (0u64, 0usize);
    for seq in 0..2_000u64 {
        let t = seq * 5;
        let slot = (seq % 4) as usize;
        let new = slots[slot].is_none();
        let (id, pi) = match slots[slot] {
            Some(s) => s,
            None => {
                let view = in_view(t);
                let pick = view[rr % view.len()];
                rr += 1;
                let pi = pods.iter().position(|p| p.name == pick.name).unwrap_or(0);
                next_conn += 1;
                c.conns.push(conn(next_conn, t));
                slots[slot] = Some((next_conn, pi));
                (next_conn, pi)
            }
        };
        let p = &pods[pi];
        let lat = 3;
        let cut = if new && t >= p.sigterm() {
            Some(Cause::EndpointLag)
        } else if t >= p.exit() || (t < p.exit() && p.exit() <= t + lat) {
            Some(Cause::KilledInFlight)
        } else {
            None
        };
        let r = rec(seq, t, lat, Outcome::Ok).on(id);
        match cut {
            None => c.records.push(r.pod(p.name).status(200)),
            Some(cause) => {
                c.records.push(RequestRecord {
                    outcome: failed(ErrorKind::ConnectionReset),
                    ..r
                });
                expected.push((seq, cause, p.name));
                slots[slot] = None;
            }
        }
        if slots[slot].is_none() || seq == 1_999 {
            // The proxy's record of the connection that just ended.
            let opened = c
                .conns
                .iter()
                .find(|k| k.conn == id)
                .map_or(t, |k| k.opened_us / MS);
            let outcome = match cut {
                Some(Cause::EndpointLag) => ProxyOutcome::ConnectFailed,
                Some(_) => ProxyOutcome::BackendReset,
                None => ProxyOutcome::Closed,
            };
            c.proxy
                .push(prec(id, Some(p.name), opened, t + lat, outcome));
        }
    }
    // Connections still open at the end.
    for &(id, pi) in slots.iter().flatten() {
        if !c.proxy.iter().any(|r| r.client == addr(40_000 + id as u16)) {
            let opened = c
                .conns
                .iter()
                .find(|k| k.conn == id)
                .map_or(0, |k| k.opened_us / MS);
            c.proxy.push(prec(
                id,
                Some(pods[pi].name),
                opened,
                10_000,
                ProxyOutcome::Closed,
            ));
        }
    }
    (c, Timeline { events }, expected)
}

#[test]
fn a_simulated_naive_rollout_has_every_failure_explained_l4_and_external() {
    let (mut c, t, expected) = naive_rollout();
    let kinds: std::collections::BTreeSet<Cause> = expected.iter().map(|e| e.1).collect();
    assert!(
        kinds.contains(&Cause::EndpointLag) && kinds.contains(&Cause::KilledInFlight),
        "the simulation should produce both: {expected:?}"
    );
    let got: Vec<(u64, Cause, String)> = correlate::attribute(&c.input(&t))
        .into_iter()
        .map(|a| (a.seq, a.cause, a.pod.unwrap_or_default()))
        .collect();
    let want: Vec<(u64, Cause, String)> = expected
        .iter()
        .map(|e| (e.0, e.1, e.2.to_owned()))
        .collect();
    assert_eq!(got, want, "embedded l4");

    // The same run against a "real cluster": no proxy records, no proxy
    // events; headers, keep-alive history and time windows only.
    c.mode = ProxyMode::External;
    c.proxy.clear();
    let mut t = t;
    t.events.retain(|e| {
        !matches!(
            e.kind,
            LifecycleKind::ProxyApplied { .. } | LifecycleKind::ProxyView { .. }
        )
    });
    let got: Vec<(u64, Cause, String)> = correlate::attribute(&c.input(&t))
        .into_iter()
        .map(|a| (a.seq, a.cause, a.pod.unwrap_or_default()))
        .collect();
    assert_eq!(got, want, "external");
}

#[test]
fn sigkill_at_the_grace_deadline_is_killed_in_flight_and_sizes_the_grace() {
    // slow-1 runs a 5 s preStop, ignores SIGTERM and is SIGKILLed at the
    // 10 s grace deadline; two requests of 1.5 s were on it.
    let mut t = timeline();
    for (ms, kind) in [
        (0, LifecycleKind::PodReady),
        (
            50_000,
            LifecycleKind::DeletionRequested { grace_seconds: 10 },
        ),
        (50_000, LifecycleKind::PreStopStarted),
        (55_000, LifecycleKind::PreStopFinished),
        (55_001, LifecycleKind::SigtermSent),
        (60_000, LifecycleKind::SigkillSent),
        (
            60_002,
            LifecycleKind::ContainerExited {
                exit_code: Some(137),
                signal: Some(9),
                reason: Some("Error".into()),
            },
        ),
    ] {
        t.events.push(ev(ms, "slow-1", kind));
    }
    t.events.sort_by_key(|e| e.at_us);
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(0, 40_000, 1_500, Outcome::Ok).on(1).pod("slow-1"));
    c.records
        .push(rec(1, 59_000, 1_010, failed(ErrorKind::ConnectionReset)).on(1));
    c.records
        .push(rec(2, 59_500, 510, failed(ErrorKind::ConnectionReset)).on(1));
    let input = c.input(&t);
    let attrs = correlate::attribute(&input);
    assert!(
        attrs
            .iter()
            .all(|a| a.cause == Cause::KilledInFlight && a.pod.as_deref() == Some("slow-1"))
    );
    let groups = correlate::groups(&input, &attrs);
    assert_eq!(groups.len(), 1);
    assert_eq!(
        groups[0].evidence,
        "pod slow-1: deleted at 50.00 s, preStop 50.00 s–55.00 s, SIGTERM at 55.00 s, SIGKILL at \
         60.00 s (grace period over), exited at 60.00 s (signal 9), 5001 ms after SIGTERM; \
         2 requests were in flight when it exited (2 requests reset)"
    );
    // preStop 5 s + the slowest request 1.5 s + 1 s → 8 s (rounded up).
    assert!(
        groups[0].fix.starts_with(
            "the grace period ran out and SIGKILL cut the requests: terminationGracePeriodSeconds ≥ 8 s"
        ),
        "{}",
        groups[0].fix
    );
}

/// The L7 proxy: a backend per request, a 502 when the backend is gone.
#[test]
fn a_simulated_l7_rollout_has_every_failure_explained() {
    let pods = [
        ("a1", 0u64, Some(5_500u64)),
        ("b1", 5_000, None),
        ("b2", 5_000, None),
    ];
    let stop = |d: Option<u64>| d.map_or(u64::MAX, |d| d + 6);
    let exit = |d: Option<u64>| d.map_or(u64::MAX, |d| d + 9);
    let removed = |d: Option<u64>| d.map_or(u64::MAX, |d| d + 1_300);
    let mut events = vec![global(0, deployment(2))];
    for &(name, ready, d) in &pods {
        events.push(ev(ready, name, LifecycleKind::PodReady));
        if let Some(d) = d {
            events.push(ev(
                d,
                name,
                LifecycleKind::DeletionRequested { grace_seconds: 30 },
            ));
            events.push(ev(stop(Some(d)), name, LifecycleKind::SigtermSent));
            events.push(ev(exit(Some(d)), name, exited(0)));
            events.push(ev(removed(Some(d)), name, proxy_applied(false)));
        }
    }
    events.sort_by_key(|e| e.at_us);
    let t = Timeline { events };
    let mut c = Case::new(ProxyMode::L7);
    c.conns = (0..4).map(|i| conn(i, 0)).collect();
    let mut want = Vec::new();
    for (rr, seq) in (0..2_000u64).enumerate() {
        let now = seq * 5;
        let view: Vec<_> = pods
            .iter()
            .filter(|p| p.1 <= now && now < removed(p.2))
            .collect();
        let &(name, _, d) = view[rr % view.len()];
        let id = seq % 4;
        let lat = 4;
        let (outcome, cause) = if now >= stop(d) {
            let o = ProxyOutcome::Proxy {
                status: 502,
                reason: ProxyFailure::ConnectFailed,
            };
            (o, Some(Cause::EndpointLag))
        } else if exit(d) <= now + lat {
            let o = ProxyOutcome::Proxy {
                status: 502,
                reason: ProxyFailure::BackendGone,
            };
            (o, Some(Cause::KilledInFlight))
        } else {
            (ProxyOutcome::Backend { status: 200 }, None)
        };
        c.proxy.push(prec(id, Some(name), now, now + lat, outcome));
        let r = rec(seq, now, lat, Outcome::Ok).on(id);
        c.records.push(match cause {
            None => r.pod(name).status(200),
            Some(cause) => {
                want.push((seq, cause, name.to_owned()));
                RequestRecord {
                    outcome: failed(ErrorKind::Http5xx),
                    ..r.status(502)
                }
            }
        });
    }
    assert!(want.iter().any(|w| w.1 == Cause::EndpointLag));
    assert!(want.iter().any(|w| w.1 == Cause::KilledInFlight));
    let got: Vec<(u64, Cause, String)> = correlate::attribute(&c.input(&t))
        .into_iter()
        .map(|a| (a.seq, a.cause, a.pod.unwrap_or_default()))
        .collect();
    assert_eq!(got, want);
}
