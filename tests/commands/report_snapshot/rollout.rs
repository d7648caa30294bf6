//! The rollout report: swimlanes, causes, propagation, findings, headline.

use super::*;

use rolltest_core::model::{
    CauseGroup, EventSource, Finding, LifecycleEvent, LifecycleKind, PodPropagation, Severity,
    Timeline,
};
use std::collections::BTreeMap;

/// The load starts 2 s into the run clock, so every rollout time is shown
/// 2 s earlier than its run-clock value.
const LOAD_START_US: u64 = 2_000_000;
const OLD_A: &str = "api-7c9f6d5b8-h2v4q";
const OLD_B: &str = "api-7c9f6d5b8-m8zt3";
const NEW_C: &str = "api-5d8b7c6f4-pk7wn";
const NEW_D: &str = "api-5d8b7c6f4-x9rsd";

/// Seconds from the load's start → µs on the run clock.
fn t(s: f64) -> u64 {
    LOAD_START_US + (s * 1e6).round() as u64
}

fn pod_ev(s: f64, pod: &str, source: EventSource, kind: LifecycleKind) -> LifecycleEvent {
    LifecycleEvent {
        at_us: t(s),
        server_us: None,
        server_precision_us: None,
        pod: Some(pod.into()),
        source,
        kind,
    }
}

/// A rollout restart of 2 replicas, old pods with a 1 s preStop sleep that
/// is shorter than the 2.5 s the proxy takes: pod A exits at once on
/// SIGTERM, pod B closes its listener on SIGTERM and is SIGKILLed at its
/// 3 s grace deadline.
fn rollout_timeline(old_a: &str, old_b: &str, new_c: &str, new_d: &str) -> Timeline {
    use EventSource as S;
    use LifecycleKind as K;
    let created = |hash: &str| K::PodCreated {
        replicaset: Some(format!("api-{hash}")),
        template_hash: Some(hash.into()),
    };
    let slice_down = K::EndpointChanged {
        ready: false,
        serving: true,
        terminating: true,
    };
    let proxy_down = K::ProxyApplied {
        present: true,
        ready: false,
        serving: true,
        terminating: true,
    };
    let proxy_gone = K::ProxyApplied {
        present: false,
        ready: false,
        serving: false,
        terminating: false,
    };
    let proxy_up = K::ProxyApplied {
        present: true,
        ready: true,
        serving: true,
        terminating: false,
    };
    let exited = |code: Option<i32>, signal: Option<i32>| K::ContainerExited {
        exit_code: code,
        signal,
        reason: Some(
            if signal.is_some() {
                "Error"
            } else {
                "Completed"
            }
            .into(),
        ),
    };
    let mut events = Vec::new();
    // The old pods exist before the run: listed by the watcher at 0.1 s on the run clock.
    for (pod, k) in [(old_a, 0.0), (old_b, 0.01)] {
        let mut e = pod_ev(-1.9 + k, pod, S::Pod, created("7c9f6d5b8"));
        e.server_us = Some(-28_000_000 + (k * 1e6) as i64);
        events.push(e);
        events.push(pod_ev(-1.9 + k, pod, S::Pod, K::PodReady));
    }
    events.push(LifecycleEvent {
        at_us: t(5.0),
        server_us: None,
        server_precision_us: None,
        pod: None,
        source: S::Action,
        kind: K::ActionStarted {
            index: 0,
            action: "rollout-restart".into(),
            target: "deployment api".into(),
        },
    });
    events.push(LifecycleEvent {
        at_us: t(5.05),
        server_us: None,
        server_precision_us: None,
        pod: None,
        source: S::Action,
        kind: K::ActionFinished {
            index: 0,
            action: "rollout-restart".into(),
            detail: Some("patched spec.template restartedAt".into()),
        },
    });
    // New pod C, then old pod A goes.
    events.push(pod_ev(5.1, new_c, S::Pod, created("5d8b7c6f4")));
    events.push(pod_ev(7.0, new_c, S::Pod, K::PodReady));
    events.push(pod_ev(7.5, new_c, S::Proxy, proxy_up.clone()));
    events.push(pod_ev(
        7.1,
        old_a,
        S::Pod,
        K::DeletionRequested { grace_seconds: 3 },
    ));
    events.push(pod_ev(7.1, old_a, S::Event, K::PreStopStarted));
    events.push(pod_ev(7.15, old_a, S::EndpointSlice, slice_down.clone()));
    events.push(pod_ev(8.1, old_a, S::Event, K::PreStopFinished));
    events.push(pod_ev(8.1, old_a, S::Event, K::SigtermSent));
    events.push(pod_ev(8.3, old_a, S::Pod, exited(Some(0), None)));
    events.push(pod_ev(8.4, old_a, S::EndpointSlice, K::EndpointRemoved));
    events.push(pod_ev(8.5, old_a, S::Pod, K::PodDeleted));
    events.push(pod_ev(9.6, old_a, S::Proxy, proxy_down.clone()));
    events.push(pod_ev(10.2, old_a, S::Proxy, proxy_gone.clone()));
    // New pod D, then old pod B goes.
    events.push(pod_ev(7.2, new_d, S::Pod, created("5d8b7c6f4")));
    events.push(pod_ev(9.0, new_d, S::Pod, K::PodReady));
    events.push(pod_ev(9.5, new_d, S::Proxy, proxy_up));
    events.push(pod_ev(
        9.1,
        old_b,
        S::Pod,
        K::DeletionRequested { grace_seconds: 3 },
    ));
    events.push(pod_ev(9.1, old_b, S::Event, K::PreStopStarted));
    events.push(pod_ev(9.12, old_b, S::EndpointSlice, slice_down));
    events.push(pod_ev(10.1, old_b, S::Event, K::PreStopFinished));
    events.push(pod_ev(10.1, old_b, S::Event, K::SigtermSent));
    events.push(pod_ev(11.7, old_b, S::Proxy, proxy_down));
    events.push(pod_ev(12.1, old_b, S::Event, K::SigkillSent));
    events.push(pod_ev(12.1, old_b, S::Pod, exited(None, Some(9))));
    events.push(pod_ev(12.2, old_b, S::EndpointSlice, K::EndpointRemoved));
    events.push(pod_ev(12.3, old_b, S::Pod, K::PodDeleted));
    events.push(pod_ev(14.0, old_b, S::Proxy, proxy_gone));
    let mut tl = Timeline { events };
    tl.sort();
    tl
}

/// 4,000 requests at 200 req/s over 20 s, routed round-robin over the pods
/// in the proxy's view at send time; failures where the timeline says so.
fn rollout_records(old_a: &str, old_b: &str, new_c: &str, new_d: &str) -> Vec<RequestRecord> {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    (0..4000u64)
        .map(|seq| {
            let rel = seq * 5_000;
            let s = rel as f64 / 1e6;
            let mut view: Vec<&str> = Vec::new();
            if s < 9.6 {
                view.push(old_a);
            }
            if s < 11.7 {
                view.push(old_b);
            }
            if s >= 7.5 {
                view.push(new_c);
            }
            if s >= 9.5 {
                view.push(new_d);
            }
            let pod = view[(seq as usize) % view.len()];
            let intended = LOAD_START_US + rel;
            let mut r = RequestRecord {
                seq,
                intended_us: intended,
                sent_us: Some(intended + 20 + rng.below(300)),
                latency_us: Some(900 + rng.below(2_500)),
                status: Some(200),
                outcome: Outcome::Ok,
                detail: None,
                pod: Some(pod.to_string()),
                conn: Some(seq % 4),
                cause: None,
                failed_tries: Vec::new(),
            };
            let fail = |r: &mut RequestRecord, kind, cause| {
                r.outcome = Outcome::Failed(kind);
                r.status = None;
                r.cause = Some(cause);
            };
            let (refused, reset) = (ErrorKind::ConnectRefused, ErrorKind::ConnectionReset);
            if pod == old_a && (8.3..9.6).contains(&s) {
                fail(&mut r, refused, Cause::EndpointLag);
            } else if pod == old_a && (8.1..8.3).contains(&s) && seq % 3 == 0 {
                fail(&mut r, reset, Cause::KilledInFlight);
                if seq % 4 == 0 {
                    // Neither header nor proxy record: the pod is unknown.
                    r.pod = None;
                }
            } else if pod == old_b && (10.1..11.7).contains(&s) {
                fail(&mut r, refused, Cause::EndpointLag);
            } else if pod == old_b && (9.9..10.1).contains(&s) && seq % 2 == 0 {
                // Hung in flight from SIGTERM until the SIGKILL at 12.1 s.
                fail(&mut r, reset, Cause::KilledInFlight);
                r.latency_us = Some(((12.1 - s) * 1e6) as u64);
            }
            r
        })
        .collect()
}

/// The correlator's groups for the records above, with hand-written evidence.
fn rollout_causes(records: &[RequestRecord], old_a: &str) -> Vec<CauseGroup> {
    let mut groups: BTreeMap<(Cause, Option<String>), CauseGroup> = BTreeMap::new();
    for r in records {
        let (Outcome::Failed(kind), Some(cause)) = (r.outcome, r.cause) else {
            continue;
        };
        let sent = r.sent_us.unwrap_or(r.intended_us);
        let g = groups
            .entry((cause, r.pod.clone()))
            .or_insert_with(|| CauseGroup {
                cause,
                pod: r.pod.clone(),
                count: 0,
                first_us: sent,
                last_us: sent,
                kinds: BTreeMap::new(),
                evidence: String::new(),
                fix: String::new(),
            });
        g.count += 1;
        g.first_us = g.first_us.min(sent);
        g.last_us = g.last_us.max(sent);
        *g.kinds.entry(kind).or_default() += 1;
    }
    let mut out: Vec<CauseGroup> = groups.into_values().collect();
    for g in &mut out {
        let a = g.pod.as_deref() == Some(old_a);
        (g.evidence, g.fix) = match (g.cause, g.pod.is_some(), a) {
            (Cause::EndpointLag, _, true) => (
                format!("pod {old_a} exited at 8.30 s; the proxy still routed to it until 9.60 s; {} requests refused", g.count),
                "preStop sleep ≥ 3 s (measured propagation max 2.6 s + margin); terminationGracePeriodSeconds ≥ 33".into(),
            ),
            (Cause::EndpointLag, _, false) => (
                format!("pod stopped listening on SIGTERM at 10.10 s; the proxy still routed to it until 11.70 s; {} requests refused", g.count),
                "preStop sleep ≥ 3 s (measured propagation max 2.6 s + margin)".into(),
            ),
            (_, true, true) => (
                "in flight when the process exited on SIGTERM at 8.30 s without draining".into(),
                "drain on SIGTERM (finish in-flight requests, then exit)".into(),
            ),
            (_, true, false) => (
                "in flight since SIGTERM at 10.10 s; the process hung until SIGKILL at the 3 s grace deadline (12.10 s)".into(),
                "terminationGracePeriodSeconds ≥ preStop + drain (≥ 33)".into(),
            ),
            (_, false, _) => (
                "connections reset while the old pods exited; the pod is unknown (no header, l4 proxy record missing)".into(),
                "drain on SIGTERM".into(),
            ),
        };
    }
    out
}

fn rollout_findings() -> Vec<Finding> {
    vec![
        Finding {
            id: "RT004".into(),
            severity: Severity::Warning,
            file: "naive/deployment.yaml".into(),
            line: 1,
            path: "(PodDisruptionBudget)".into(),
            object: "Deployment/api".into(),
            message: "no PodDisruptionBudget selects the pods".into(),
            why: "a drain may evict every replica at once".into(),
            fix: "add a PodDisruptionBudget with maxUnavailable: 1".into(),
        },
        Finding {
            id: "RT001".into(),
            severity: Severity::Error,
            file: "naive/deployment.yaml".into(),
            line: 24,
            path: "spec.template.spec.containers[0].lifecycle.preStop".into(),
            object: "Deployment/api".into(),
            message: "preStop sleep 1s < the propagation (\"1s..3s\")".into(),
            why: "the pod stops serving before every proxy has removed it".into(),
            fix: "preStop: exec sleep 5".into(),
        },
    ]
}

fn rollout_propagation(old_a: &str, old_b: &str) -> Vec<PodPropagation> {
    vec![
        PodPropagation {
            pod: old_b.into(),
            deletion_us: t(9.1),
            slice_us: Some(t(9.12)),
            proxy_us: Some(t(11.7)),
        },
        PodPropagation {
            pod: old_a.into(),
            deletion_us: t(7.1),
            slice_us: Some(t(7.15)),
            proxy_us: Some(t(9.6)),
        },
    ]
}

fn rollout_facts(scenario: &str) -> RunFacts {
    RunFacts {
        scenario: scenario.into(),
        started_at: "2025-03-14T09:26:53Z".into(),
        target: TARGET.into(),
        rate: 200.0,
        duration_s: 20.0,
        load_started_us: LOAD_START_US,
        ended_us: LOAD_START_US + 20_004_100,
        interrupted: false,
        connections: 4,
        rolltest_version: "0.1.0".into(),
        cluster: None,
    }
}

/// Renders a rollout report from the given pieces.
fn render_rollout(
    facts: &RunFacts,
    records: &[RequestRecord],
    timeline: &Timeline,
    causes: &[CauseGroup],
    propagation: &[PodPropagation],
    findings: &[Finding],
) -> String {
    let duration_us = (facts.duration_s * 1e6) as u64;
    let mut agg = Aggregate::new(facts.load_started_us, duration_us);
    for r in records {
        agg.add(r);
    }
    let limits = Limits {
        max_failed: Some(0),
        ..Limits::default()
    };
    let summary = Summary::build(facts, &agg, &limits);
    let failures: Vec<report::FailurePoint> = records
        .iter()
        .filter_map(report::FailurePoint::from_record)
        .collect();
    let rollout = report::Rollout {
        timeline,
        causes,
        failures: &failures,
        retried: &[],
        propagation,
        findings,
        load_started_us: facts.load_started_us,
        ended_us: facts.ended_us,
    };
    report::render(&summary, &agg, facts, Some(&rollout))
}

fn rollout_golden() -> String {
    let records = rollout_records(OLD_A, OLD_B, NEW_C, NEW_D);
    render_rollout(
        &rollout_facts("naive-rollout"),
        &records,
        &rollout_timeline(OLD_A, OLD_B, NEW_C, NEW_D),
        &rollout_causes(&records, OLD_A),
        &rollout_propagation(OLD_A, OLD_B),
        &rollout_findings(),
    )
}

#[test]
fn rollout_report_matches_snapshot() {
    let html = rollout_golden();
    dump("rollout", &html);
    insta::assert_snapshot!("rollout_report_html", html);
}

#[test]
fn rollout_report_shows_the_evidence() {
    let html = rollout_golden();
    assert_eq!(html, rollout_golden(), "deterministic");
    // The headline names the dominant cause with its share and pods.
    let failed = rollout_records(OLD_A, OLD_B, NEW_C, NEW_D)
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    assert!(
        html.contains(&format!(
            "<p class=\"headline\">FAIL: {failed} failed requests, 9"
        )),
        "{}",
        &html[..3000]
    );
    assert!(html.contains("% endpoint_lag on 2 pods, "));
    // One lane per pod, in creation order, and the unknown-pod lane last.
    let svg = &html[html.find("<svg class=\"lanes\"").expect("swimlanes")..];
    let lanes: Vec<usize> = [OLD_A, OLD_B, NEW_C, NEW_D, "unknown pod (no x-rolltest-pod"]
        .iter()
        .map(|p| svg.find(&format!("</title>{p}")).expect("lane label"))
        .collect();
    assert!(lanes.windows(2).all(|w| w[0] < w[1]), "{lanes:?}");
    // The action, SIGKILL, preStop bars and cause columns are drawn.
    assert!(html.contains("▶ rollout-restart deployment api"));
    assert!(html.contains("<title>SIGKILL: 12.10 s</title>"));
    assert!(html.contains("<title>preStop hook: 7.10 s → 8.10 s</title>"));
    assert!(html.contains("failed requests on api-7c9f6d5b8-h2v4q, cause endpoint_lag"));
    // Swimlanes sit right above the throughput chart, on the same x extent.
    let lanes_at = html.find("<svg class=\"lanes\"").expect("swimlanes");
    let tp_at = html
        .find("<h2>Throughput over time</h2>")
        .expect("throughput");
    assert!(lanes_at < tp_at);
    // Propagation: per pod and min / median / max of deletion → proxy.
    assert!(html.contains("<td class=\"n\">2500.0</td>"));
    assert!(html.contains("<td class=\"n\">2550.0</td>"));
    assert!(html.contains(
        "<td><strong>median</strong></td><td class=\"n\"></td><td class=\"n\">35.0</td>"
    ));
    // Findings, the error first, escaped.
    let rt001 = html.find("<td>RT001</td>").expect("RT001");
    let rt004 = html.find("<td>RT004</td>").expect("RT004");
    assert!(rt001 < rt004);
    assert!(html.contains("preStop sleep 1s &lt; the propagation (&quot;1s..3s&quot;)"));
    // Nothing fetched.
    for fetch in [
        "<script", "<link", "<img", "<iframe", "@import", "url(", "src=",
    ] {
        assert!(!html.contains(fetch), "{fetch} in the report");
    }
}

#[test]
fn rollout_strings_are_escaped() {
    let (a, b, c, d) = ("<b>a</b>", "b&\"x\"", "c'<i>", "d<script>");
    let records = rollout_records(a, b, c, d);
    let mut causes = rollout_causes(&records, a);
    causes[0].evidence = "<img src=x onerror=alert(1)>".into();
    causes[0].fix = "</td><script>".into();
    let html = render_rollout(
        &rollout_facts("evil"),
        &records,
        &rollout_timeline(a, b, c, d),
        &causes,
        &rollout_propagation(a, b),
        &rollout_findings(),
    );
    assert!(!html.contains("<script"));
    assert!(!html.contains("<img"));
    assert!(!html.contains("<b>a"));
    assert!(!html.contains("<i>"));
    assert!(html.contains("&lt;b&gt;a&lt;/b&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
}

#[test]
fn rollout_without_failures_or_findings_says_so() {
    let records: Vec<_> = rollout_records(OLD_A, OLD_B, NEW_C, NEW_D)
        .into_iter()
        .map(|mut r| {
            r.outcome = Outcome::Ok;
            r.cause = None;
            r
        })
        .collect();
    let html = render_rollout(
        &rollout_facts("fixed"),
        &records,
        &rollout_timeline(OLD_A, OLD_B, NEW_C, NEW_D),
        &[],
        &[],
        &[],
    );
    dump("rollout-pass", &html);
    assert!(html.contains("<p class=\"headline\">PASS: no failed requests out of 4000 sent</p>"));
    assert!(html.contains("no pod was deleted while the load ran"));
    assert!(html.contains("no findings: the manifests pass every static check"));
    assert!(!html.contains("unknown pod"));

    // Failures, but the correlator attributed none.
    let records: Vec<_> = rollout_records(OLD_A, OLD_B, NEW_C, NEW_D)
        .into_iter()
        .map(|mut r| {
            r.cause = None;
            r
        })
        .collect();
    let html = render_rollout(
        &rollout_facts("unattributed"),
        &records,
        &rollout_timeline(OLD_A, OLD_B, NEW_C, NEW_D),
        &[],
        &[],
        &[],
    );
    assert!(html.contains("failed requests, no cause attributed</p>"));
    assert!(html.contains("but no cause was attributed to them"));
    assert!(html.contains("failed: unattributed"));
}

#[test]
fn two_hundred_thousand_failures_stay_under_a_megabyte() {
    // 10 minutes at 1,000 req/s; a fifth of them fail, spread over 6 pods
    // (one lane each, plus unknown) and every cause.
    let mut f = rollout_facts("big");
    f.rate = 1000.0;
    f.duration_s = 600.0;
    f.ended_us = LOAD_START_US + 600_002_000;
    let pods: Vec<String> = (0..6).map(|i| format!("api-5d8b7c6f4-p{i:04}")).collect();
    let mut rng = XorShift(11);
    let records: Vec<RequestRecord> = (0..1_000_000u64)
        .map(|seq| {
            let intended = LOAD_START_US + seq * 600;
            let failed = seq % 5 == 0;
            let pod = if failed && seq % 7 == 0 {
                None
            } else {
                Some(pods[(seq % 6) as usize].clone())
            };
            RequestRecord {
                seq,
                intended_us: intended,
                sent_us: Some(intended + rng.below(200)),
                latency_us: Some(500 + rng.below(5_000)),
                status: Some(if failed { 503 } else { 200 }),
                outcome: if failed {
                    Outcome::Failed(ErrorKind::Http5xx)
                } else {
                    Outcome::Ok
                },
                detail: None,
                pod,
                conn: Some(seq % 8),
                cause: failed.then(|| Cause::ALL[(seq / 5 % 5) as usize]),
                failed_tries: Vec::new(),
            }
        })
        .collect();
    let failures = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    assert_eq!(failures, 200_000);
    let mut tl = rollout_timeline(OLD_A, OLD_B, NEW_C, NEW_D);
    for p in &pods {
        tl.events
            .push(pod_ev(1.0, p, EventSource::Pod, LifecycleKind::PodReady));
    }
    tl.sort();
    let html = render_rollout(
        &f,
        &records,
        &tl,
        &[],
        &rollout_propagation(OLD_A, OLD_B),
        &rollout_findings(),
    );
    dump("rollout-big", &html);
    println!("report with 200,000 failures: {} bytes", html.len());
    assert!(html.len() < 1_000_000, "report is {} bytes", html.len());
    assert!(html.contains("failed requests on api-5d8b7c6f4-p0003, cause capacity"));
    // Without cause groups the causes still come from the failures.
    assert!(html.contains("200000 failed requests, 20% endpoint_lag on 6 pods, "));
    assert!(html.contains("3 more causes</p>"));
    assert!(html.contains("the correlator recorded no evidence for these causes"));
}
