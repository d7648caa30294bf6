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
        .push(rec(1, 9_900, 130, failed(ErrorKind::Timeout)).on(9));
    assert_cause(&c.of(1), Cause::KilledInFlight, Some("old-1"));
    // The same timeout without a connection: the connect itself went
    // unanswered, so it was in flight on no pod; old-1 had not exited
    // when it was sent, so no lag of old-1 either.
    c.records
        .push(rec(2, 9_900, 130, failed(ErrorKind::Timeout)));
    assert_ne!(c.of(2).cause, Cause::KilledInFlight);
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

// ---- keepalive_race: a reused connection the server closed under the request

#[test]
fn external_reset_on_a_reused_connection_to_a_running_pod_is_keepalive_race() {
    let mut c = Case::new(ProxyMode::External);
    // conn 4: ok from old-2 at 5 s, then idle; reset at 10.5 s, no byte back.
    c.records
        .push(rec(1, 5_000, 2, Outcome::Ok).on(4).pod("old-2"));
    c.records
        .push(rec(2, 10_500, 1, failed(ErrorKind::ConnectionReset)).on(4));
    // A reset as the first request of a new connection is no race.
    c.records
        .push(rec(3, 10_600, 1, failed(ErrorKind::ConnectionReset)).on(5));
    // A reset after a response head arrived is no race either.
    c.records
        .push(rec(4, 6_000, 2, Outcome::Ok).on(3).pod("old-2"));
    c.records.push(
        rec(5, 10_700, 1, failed(ErrorKind::ConnectionReset))
            .on(3)
            .status(200),
    );
    assert_cause(&c.of(2), Cause::KeepaliveRace, Some("old-2"));
    assert_ne!(c.of(3).cause, Cause::KeepaliveRace);
    assert_ne!(c.of(5).cause, Cause::KeepaliveRace);

    let t = timeline();
    let groups = correlate::groups(&c.input(&t), &[]);
    let race = groups
        .iter()
        .find(|g| g.cause == Cause::KeepaliveRace)
        .expect("keepalive_race group");
    assert_eq!(
        race.evidence,
        "1 request reset at 10.50 s on reused keep-alive connections to pod old-2: the server \
         closed each as the request was written (no response byte); the connections had idled \
         5.50 s before it and lived 5.50 s; the pod kept running, Ready, with no exit and no \
         termination"
    );
    assert!(
        race.fix
            .starts_with("keep the server's keep-alive idle timeout above the client's")
            && race.fix.contains("idled 5.50 s")
            && race.fix.contains("retry idempotent requests"),
        "{}",
        race.fix
    );
}

#[test]
fn a_reset_on_a_reused_connection_when_the_pod_crashed_is_not_a_race() {
    // new-2 crashed at 20 s (no deletion): a reset on its connection then
    // is the crash, not an idle close.
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 15_000, 2, Outcome::Ok).on(4).pod("new-2"));
    c.records
        .push(rec(2, 20_000, 5, failed(ErrorKind::ConnectionReset)).on(4));
    assert_cause(&c.of(2), Cause::NotReady, Some("new-2"));
}

/// A pod that drains (SIGTERM at 40.01 s, exit at 45 s) closes its idle
/// keep-alive connections: a request written into one is a race with the
/// drain's close (fixed by `Connection: close`), not a kill; once the pod
/// has exited, a request on its pinned connection is killed_in_flight.
#[test]
fn reused_connection_reset_while_the_pod_drains_is_keepalive_race() {
    let t = with_terminating("drain-1", LifecycleKind::SigtermSent, 45_000);
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 39_000, 2, Outcome::Ok).on(4).pod("drain-1"));
    c.records
        .push(rec(2, 41_000, 1, failed(ErrorKind::ConnectionReset)).on(4));
    c.records
        .push(rec(3, 39_500, 2, Outcome::Ok).on(5).pod("drain-1"));
    c.records
        .push(rec(4, 46_000, 1, failed(ErrorKind::ConnectionReset)).on(5));
    let input = c.input(&t);
    let attrs = correlate::attribute(&input);
    let cause = |seq| attrs.iter().find(|a| a.seq == seq).map(|a| a.cause);
    assert_eq!(cause(2), Some(Cause::KeepaliveRace));
    assert_eq!(cause(4), Some(Cause::KilledInFlight));
    let groups = correlate::groups(&input, &attrs);
    let race = groups
        .iter()
        .find(|g| g.cause == Cause::KeepaliveRace)
        .expect("race");
    assert!(
        race.evidence
            .contains("the pod was draining (terminating since 40.01 s) and had not exited"),
        "{}",
        race.evidence
    );
    assert!(
        race.fix.contains("`Connection: close` while draining"),
        "{}",
        race.fix
    );
}

// ---- what a real cluster's network does to a dead pod

#[test]
fn external_host_unreachable_after_the_exit_inside_a_pods_window_is_endpoint_lag() {
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 11_000, 3_000, failed(ErrorKind::HostUnreachable)));
    // Before old-1 exited, its address still answered: no lag of old-1.
    c.records
        .push(rec(2, 7_000, 3_000, failed(ErrorKind::HostUnreachable)));
    assert_cause(&c.of(1), Cause::EndpointLag, Some("old-1"));
    assert_cause(&c.of(2), Cause::Unexplained, None);
}

#[test]
fn refusals_with_no_ready_endpoint_at_all_are_capacity_before_lag() {
    // No endpoint is ready from 11.6 s to 11.9 s (the rest went at once),
    // inside old-1's lag window: kube-proxy REJECTs, and nothing could have
    // served them anyway.
    let mut t = timeline();
    for (at, ready) in [(11_600, 0), (11_900, 1)] {
        t.events.push(global(
            at,
            LifecycleKind::ProxyView {
                ready,
                serving_terminating: 0,
            },
        ));
    }
    t.sort();
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 11_700, 1, failed(ErrorKind::ConnectRefused)));
    c.records
        .push(rec(2, 11_950, 1, failed(ErrorKind::ConnectRefused)));
    let attrs = correlate::attribute(&c.input(&t));
    assert_eq!(
        attrs.iter().map(|a| a.cause).collect::<Vec<_>>(),
        [Cause::Capacity, Cause::EndpointLag]
    );
}

#[test]
fn a_5xx_from_a_ready_pod_that_had_served_during_a_shortfall_is_capacity() {
    // 30-32 s: 1 of 2 endpoints ready. new-1 (Ready at 9 s) served at 9.5 s
    // and then answered 503 under the load: overloaded. old-2 answered 503
    // with nothing served since it became Ready: not ready to serve.
    let mut c = Case::new(ProxyMode::External);
    c.records.push(rec(1, 9_500, 2, Outcome::Ok).pod("new-1"));
    c.records.push(
        rec(2, 30_500, 2, failed(ErrorKind::Http5xx))
            .pod("new-1")
            .status(503),
    );
    c.records.push(
        rec(3, 30_600, 2, failed(ErrorKind::Http5xx))
            .pod("old-2")
            .status(503),
    );
    assert_cause(&c.of(2), Cause::Capacity, Some("new-1"));
    assert_cause(&c.of(3), Cause::NotReady, Some("old-2"));
}

#[test]
fn the_allowance_is_measured_from_the_run_when_no_scenario_sets_it() {
    // Refusals every 400 ms from 10.1 s to 13.3 s after old-1's slice update
    // at 10.005 s: node proxies took 3.3 s. The default 2 s would leave the
    // last ones unexplained.
    let mut c = Case::new(ProxyMode::External);
    for (i, at) in (10_100..=13_300).step_by(400).enumerate() {
        c.records
            .push(rec(i as u64 + 1, at, 1, failed(ErrorKind::ConnectRefused)));
    }
    let last = c.records.len() as u64;
    // A real cluster: no proxy records.
    let mut t = timeline();
    t.events
        .retain(|e| !matches!(e.kind, LifecycleKind::ProxyApplied { .. }));
    let fixed = c.input(&t);
    let a = correlate::attribute(&fixed);
    assert_eq!(a.last().map(|a| a.cause), Some(Cause::Unexplained));

    let measured = Input {
        propagation_allowance_us: None,
        ..fixed
    };
    let correlation = correlate::Correlation::new(measured);
    assert_eq!(
        correlation.allowance(),
        correlate::Allowance {
            us: 3_295_000,
            source: correlate::AllowanceSource::Measured
        }
    );
    let a = correlation.attribute();
    assert!(a.iter().all(|a| a.cause == Cause::EndpointLag), "{a:?}");
    assert_eq!(a.len() as u64, last);
    let groups = correlation.groups(&a);
    assert!(
        groups[0].evidence.contains(
            "node proxies may route to it for 3.29 s more (until 13.30 s; measured: the failures \
             a stale route causes stopped that long after the slowest EndpointSlice update)"
        ),
        "{}",
        groups[0].evidence
    );
}

#[test]
fn a_run_with_nothing_to_measure_keeps_the_default_allowance() {
    let mut c = Case::new(ProxyMode::External);
    c.records.push(rec(1, 1_000, 1, Outcome::Ok).pod("old-2"));
    let mut t = timeline();
    t.events
        .retain(|e| !matches!(e.kind, LifecycleKind::EndpointChanged { .. }));
    let input = Input {
        propagation_allowance_us: None,
        ..c.input(&t)
    };
    assert_eq!(
        correlate::Correlation::new(input).allowance(),
        correlate::Allowance {
            us: correlate::DEFAULT_PROPAGATION_ALLOWANCE_US,
            source: correlate::AllowanceSource::Default
        }
    );
}

// ---- intervals: a real cluster's seconds

/// old-1's exit known only as `finishedAt: 10 s` (seen at 10.9 s, after the
/// kubelet's relist): the exit lies in [10.01 s (its SIGTERM), 10.9 s]. A reset of a request
/// on it between 10.3 s and 10.35 s was in flight when it may have exited:
/// killed_in_flight, and the evidence says "between".
#[test]
fn an_exit_known_to_the_second_is_an_interval() {
    let mut t = timeline();
    for e in &mut t.events {
        if e.pod.as_deref() == Some("old-1")
            && matches!(e.kind, LifecycleKind::ContainerExited { .. })
        {
            e.at_us = 10_900 * MS;
            e.server_us = Some(10_000_000);
        }
    }
    t.sort();
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 10_300, 50, failed(ErrorKind::ConnectionReset)).on(3));
    let input = c.input(&t);
    let a = correlate::attribute(&input);
    assert_eq!(
        (a[0].cause, a[0].pod.as_deref()),
        (Cause::KilledInFlight, Some("old-1"))
    );
    let groups = correlate::groups(&input, &a);
    assert!(
        groups[0]
            .evidence
            .contains("exited between 10.01 s and 10.90 s (exit code 0)")
            && !groups[0].evidence.contains("ms after SIGTERM"),
        "{}",
        groups[0].evidence
    );
}
