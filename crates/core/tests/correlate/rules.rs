//! One case per cause rule and proxy mode, and their priority.

use super::*;

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

#[test]
fn external_timeout_after_the_exit_inside_a_pods_window_is_endpoint_lag() {
    // old-1 exited at 10.02 s; its window runs to 12.005 s. A request sent
    // at 11 s that timed out went to its torn-down address through a stale
    // proxy; one sent at 13 s is past every window, and one sent at 7 s,
    // before old-1 was deleted, is not its lag.
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 11_000, 2_000, failed(ErrorKind::Timeout)));
    c.records
        .push(rec(2, 13_000, 2_000, failed(ErrorKind::Timeout)));
    c.records
        .push(rec(3, 7_000, 2_000, failed(ErrorKind::Timeout)));
    assert_cause(&c.of(1), Cause::EndpointLag, Some("old-1"));
    assert_ne!(c.of(2).cause, Cause::EndpointLag);
    assert_ne!(c.of(3).cause, Cause::EndpointLag);
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
