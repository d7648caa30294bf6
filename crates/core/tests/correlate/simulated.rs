//! Whole rollouts, simulated: no failure may stay unexplained.

use super::*;

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

/// A run attributes with the generator's connections and the proxy's
/// records, then its finish groups without them (as a rebuild from the run
/// directory does): the finish may reuse the attribution's reading of the
/// timeline and must get what a fresh reading gives; facts read for another
/// proxy mode are not reused.
#[test]
fn facts_kept_from_the_attribution_give_the_finish_what_a_fresh_reading_does() {
    let (c, t, _) = naive_rollout();
    let full = c.input(&t);
    let first = correlate::Correlation::new(full);
    let attrs = first.attribute();
    assert!(!attrs.is_empty());
    let read = first.into_facts();
    let finish_input = Input {
        conns: &[],
        proxy: &[],
        ..full
    };
    let fresh = correlate::Correlation::new(finish_input);
    let reused = correlate::Correlation::with_facts(finish_input, read.clone());
    assert_eq!(reused.groups(&attrs), fresh.groups(&attrs));
    assert_eq!(reused.groups(&[]), fresh.groups(&[]));
    assert_eq!(reused.propagation(), fresh.propagation());
    assert!(!fresh.propagation().is_empty());

    // Read for the embedded l4 proxy, used for a real cluster: read again.
    let external = Input {
        proxy_mode: ProxyMode::External,
        ..finish_input
    };
    assert_eq!(
        correlate::Correlation::with_facts(external, read).propagation(),
        correlate::Correlation::new(external).propagation()
    );
}
