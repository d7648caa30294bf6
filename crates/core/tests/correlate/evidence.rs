//! The groups: their evidence and fix text, rebuilds from records alone,
//! and the measured propagation.

use super::*;

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
    // No pod was deleted when the shortfall began: the pods left the
    // endpoints on their own, and no rollout knob is implicated.
    assert!(
        cap.fix
            .starts_with("no rollout, eviction or deletion took these pods out"),
        "{}",
        cap.fix
    );
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
         ready at 10.01 s and node proxies may route to it for 2.00 s more (until 12.01 s; the \
         scenario's propagation_allowance); 1 request refused at 11.80 s"
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

/// Two watches deliver the deletion and the slice update: the slice seen
/// 3 ms before the deletion it follows measures no propagation, and the fix
/// says 0.00 s, never a negative time.
#[test]
fn a_slice_seen_before_its_deletion_measures_zero_not_negative() {
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 11_800, 1, failed(ErrorKind::ConnectRefused)));
    let mut t = timeline();
    t.events
        .retain(|e| !matches!(e.kind, LifecycleKind::ProxyApplied { .. }));
    for e in &mut t.events {
        if matches!(e.kind, LifecycleKind::EndpointChanged { .. }) {
            e.at_us = 9_997 * MS;
        }
    }
    let input = c.input(&t);
    let groups = correlate::groups(&input, &correlate::attribute(&input));
    assert_eq!(groups.len(), 1);
    assert!(
        groups[0]
            .fix
            .contains("the slowest EndpointSlice update measured was 0.00 s after deletion"),
        "{}",
        groups[0].fix
    );
    let p = correlate::propagation(&input);
    assert_eq!(p[0].slice_us, Some(9_997 * MS));
    assert_eq!(p[0].to_slice_ms(), Some(0.0));
}

/// The capacity fix names the knob of what took the pods: a drain's
/// evictions → a PodDisruptionBudget, a rollout → the strategy; pods that
/// left the endpoints with no deletion → no rollout knob at all.
#[test]
fn the_capacity_fix_follows_what_took_the_pods() {
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 30_500, 2_000, failed(ErrorKind::Timeout)));
    let fix_after = |action: Option<&str>| -> String {
        let mut t = timeline();
        if let Some(action) = action {
            t.events.push(LifecycleEvent {
                at_us: 29_000 * MS,
                server_us: None,
                server_precision_us: None,
                pod: None,
                source: EventSource::Action,
                kind: LifecycleKind::ActionStarted {
                    index: 0,
                    action: action.into(),
                    target: "x".into(),
                },
            });
            t.events.push(ev(
                29_900,
                "old-2",
                LifecycleKind::DeletionRequested { grace_seconds: 30 },
            ));
        }
        t.sort();
        let groups = correlate::groups(&c.input(&t), &[]);
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(groups[0].cause, Cause::Capacity);
        groups[0].fix.clone()
    };
    let drain = fix_after(Some("drain-node"));
    assert!(
        drain.starts_with("a PodDisruptionBudget") && !drain.contains("maxUnavailable: 0"),
        "{drain}"
    );
    let rollout = fix_after(Some("rollout-restart"));
    assert!(
        rollout.starts_with("maxUnavailable: 0 and maxSurge ≥ 1")
            && !rollout.contains("PodDisruptionBudget"),
        "{rollout}"
    );
    let outage = fix_after(None);
    assert!(
        outage.starts_with("no rollout, eviction or deletion") && !outage.contains("maxSurge"),
        "{outage}"
    );
}

/// not_ready fixes follow the evidence: an old pod its readiness probe took
/// out late → how fast the probe notices; one the liveness probe went on to
/// restart → the liveness probe alone; a rollout's new pod → minReadySeconds.
#[test]
fn the_not_ready_fix_follows_what_happened_to_the_pod() {
    let mut c = Case::new(ProxyMode::External);
    c.records.push(
        rec(1, 4_000, 2, failed(ErrorKind::Http5xx))
            .pod("old-2")
            .status(503),
    );
    let fix_with = |extra: Vec<LifecycleEvent>| -> (String, String) {
        let mut t = timeline();
        t.events.extend(extra);
        t.sort();
        let groups = correlate::groups(&c.input(&t), &[]);
        assert_eq!(groups[0].cause, Cause::NotReady, "{groups:?}");
        (groups[0].evidence.clone(), groups[0].fix.clone())
    };
    let (ev_late, late) = fix_with(vec![ev(5_000, "old-2", LifecycleKind::PodNotReady)]);
    assert!(
        ev_late.ends_with("its readiness probe took it out of the endpoints at 5.00 s"),
        "{ev_late}"
    );
    assert!(
        late.starts_with("a readiness probe that notices sooner: it took the pod out 1.00 s after it began to fail"),
        "{late}"
    );
    let (ev_live, live) = fix_with(vec![
        ev(
            6_000,
            "old-2",
            LifecycleKind::ProbeFailed {
                probe: "liveness".into(),
                message: "Liveness probe failed".into(),
            },
        ),
        ev(
            7_000,
            "old-2",
            LifecycleKind::ContainerStarted { restart_count: 1 },
        ),
    ]);
    assert!(
        ev_live.ends_with("the liveness probe restarted it afterwards"),
        "{ev_live}"
    );
    assert!(
        live.starts_with("a livenessProbe that checks only the process")
            && !live.contains("minReadySeconds"),
        "{live}"
    );
    let (_, plain) = fix_with(Vec::new());
    assert!(
        plain.starts_with("honest readiness") && !plain.contains("minReadySeconds"),
        "{plain}"
    );
}

/// A real kubelet publishes a preStop hook's start (its Killing event) but
/// not its end: the grace advice bounds the hook by start → exit instead of
/// calling it 0 s.
#[test]
fn the_grace_fix_bounds_a_prestop_whose_end_is_not_published() {
    let t = with_terminating("hook-1", LifecycleKind::PreStopStarted, 43_100);
    let mut c = Case::new(ProxyMode::External);
    c.records
        .push(rec(1, 39_000, 2, Outcome::Ok).on(4).pod("hook-1"));
    c.records
        .push(rec(2, 43_000, 200, failed(ErrorKind::ConnectionReset)).on(4));
    let groups = correlate::groups(&c.input(&t), &[]);
    let killed = groups
        .iter()
        .find(|g| g.cause == Cause::KilledInFlight)
        .expect("killed_in_flight");
    assert!(
        killed
            .evidence
            .contains("SIGTERM between 40.01 s and 43.10 s"),
        "{}",
        killed.evidence
    );
    assert!(
        killed.fix.contains(
            "terminationGracePeriodSeconds ≥ 5 s covers preStop (at most 3.09 s, from the Killing event to the exit"
        ),
        "{}",
        killed.fix
    );
}
