//! Correlator throughput: 1M records (3 % failed) against a 1,000-event
//! timeline, embedded L4 (connection lookups through proxy records) and
//! external (keep-alive history and time windows).
//!
//! `cargo test --release --test commands correlate_bench -- --ignored --nocapture`

use std::net::SocketAddr;
use std::time::Instant;

use rolltest_core::{
    correlate::{self, Input, ProxyMode},
    model::{
        ConnRecord, ErrorKind, EventSource, LifecycleEvent, LifecycleKind, Outcome, ProxyOutcome,
        ProxyRecord, RequestRecord, Timeline,
    },
};

const RECORDS: u64 = 1_000_000;
const PER_CONN: u64 = 100;
const PODS: u64 = 50;

fn event(t_us: u64, pod: Option<String>, kind: LifecycleKind) -> LifecycleEvent {
    LifecycleEvent {
        at_us: t_us,
        server_us: None,
        server_precision_us: None,
        pod,
        source: EventSource::Pod,
        kind,
    }
}

/// 50 pods replaced one after another, 20 events each: 1,000 events.
fn timeline() -> Timeline {
    let mut events = Vec::new();
    for p in 0..PODS {
        let pod = Some(format!("api-{p}"));
        let d = 10_000_000 + p * 18_000_000;
        let ev = |t: u64, kind| event(t, pod.clone(), kind);
        events.push(ev(0, LifecycleKind::PodReady));
        events.push(ev(
            d,
            LifecycleKind::DeletionRequested { grace_seconds: 30 },
        ));
        events.push(ev(
            d + 5_000,
            LifecycleKind::EndpointChanged {
                ready: false,
                serving: true,
                terminating: true,
            },
        ));
        events.push(ev(d + 10_000, LifecycleKind::SigtermSent));
        events.push(ev(
            d + 20_000,
            LifecycleKind::ContainerExited {
                exit_code: Some(0),
                signal: None,
                reason: None,
            },
        ));
        events.push(ev(
            d + 1_500_000,
            LifecycleKind::ProxyApplied {
                present: true,
                ready: false,
                serving: false,
                terminating: true,
            },
        ));
        events.push(ev(d + 1_600_000, LifecycleKind::EndpointRemoved));
        events.push(ev(d + 1_700_000, LifecycleKind::PodDeleted));
        for k in 0..12u64 {
            events.push(event(
                d + 100_000 * k,
                None,
                LifecycleKind::ProxyView {
                    ready: 3 + (k % 2) as u32,
                    serving_terminating: 0,
                },
            ));
        }
    }
    events.sort_by_key(|e| e.at_us);
    Timeline { events }
}

fn addr(conn: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + (conn % 50_000) as u16))
}

struct Data {
    records: Vec<RequestRecord>,
    conns: Vec<ConnRecord>,
    proxy: Vec<ProxyRecord>,
}

/// 1,000 requests/s; connections of 100 requests each, rotating over pods.
fn data(headers: bool) -> Data {
    let mut records = Vec::with_capacity(RECORDS as usize);
    let mut conns = Vec::new();
    let mut proxy = Vec::new();
    for seq in 0..RECORDS {
        let t = seq * 1_000;
        let conn = seq / PER_CONN;
        let pod = format!("api-{}", conn % PODS);
        if seq % PER_CONN == 0 {
            conns.push(ConnRecord {
                conn,
                local: addr(conn),
                opened_us: t,
            });
            proxy.push(ProxyRecord {
                client: addr(conn),
                pod: Some(pod.clone()),
                start_us: t + 50,
                end_us: t + PER_CONN * 1_000,
                outcome: ProxyOutcome::Closed,
                failed_tries: Vec::new(),
            });
        }
        let (outcome, latency) = match seq % 97 {
            0 => (Outcome::Failed(ErrorKind::ConnectionReset), 2_000),
            1 => (Outcome::Failed(ErrorKind::Timeout), 2_000_000),
            2 => (Outcome::Failed(ErrorKind::ConnectRefused), 500),
            _ => (Outcome::Ok, 3_000),
        };
        let ok = outcome == Outcome::Ok;
        records.push(RequestRecord {
            seq,
            intended_us: t,
            sent_us: Some(t),
            latency_us: Some(latency),
            status: ok.then_some(200),
            outcome,
            detail: None,
            pod: (ok && headers).then_some(pod),
            conn: Some(conn),
            cause: None,
            failed_tries: Vec::new(),
        });
    }
    Data {
        records,
        conns,
        proxy,
    }
}

fn run(mode: ProxyMode, d: &Data, t: &Timeline) {
    let input = Input {
        records: &d.records,
        timeline: t,
        conns: &d.conns,
        proxy: if mode == ProxyMode::External {
            &[]
        } else {
            &d.proxy
        },
        proxy_mode: mode,
        load_started_us: 0,
        propagation_allowance_us: Some(correlate::DEFAULT_PROPAGATION_ALLOWANCE_US),
    };
    let start = Instant::now();
    let correlation = correlate::Correlation::new(input);
    let attrs = correlation.attribute();
    let attributed = start.elapsed();
    let groups = correlation.groups(&attrs);
    let total = start.elapsed();
    let failed = d
        .records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    assert_eq!(attrs.len(), failed);
    assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), failed as u64);
    println!(
        "{mode:?}: {} records ({failed} failed), {} events: attribute {:.0} ms, attribute+groups {:.0} ms, {} groups",
        d.records.len(),
        t.events.len(),
        attributed.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        groups.len()
    );
}

/// The whole post-run path of `rolltest run`: attribute, fill the records,
/// rewrite records.csv, aggregate, group, summarize and render report.html.
fn end_to_end(d: &mut Data, t: &Timeline) {
    use rolltest::{report, rundir::RunDir};
    use rolltest_core::{
        summary::{Aggregate, PropagationStats, RunFacts, Summary},
        verdict::Limits,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let run = RunDir::create(&dir.path().join("run")).expect("run dir");
    let start = Instant::now();
    let input = Input {
        records: &d.records,
        timeline: t,
        conns: &d.conns,
        proxy: &d.proxy,
        proxy_mode: ProxyMode::L4,
        load_started_us: 0,
        propagation_allowance_us: Some(correlate::DEFAULT_PROPAGATION_ALLOWANCE_US),
    };
    let attrs = correlate::attribute(&input);
    let by_seq: std::collections::HashMap<u64, &rolltest_core::model::Attribution> =
        attrs.iter().map(|a| (a.seq, a)).collect();
    for r in &mut d.records {
        if let Some(a) = by_seq.get(&r.seq) {
            r.cause = Some(a.cause);
            if r.pod.is_none() {
                r.pod.clone_from(&a.pod);
            }
        }
    }
    let attributed = start.elapsed();
    run.rewrite_records(&d.records).expect("records.csv");
    let written = start.elapsed();
    let last = d.records.iter().map(|r| r.intended_us).max().unwrap_or(0);
    let mut agg = Aggregate::new(0, last);
    for r in &d.records {
        agg.add(r);
    }
    let input = Input {
        records: &d.records,
        timeline: t,
        conns: &[],
        proxy: &[],
        proxy_mode: ProxyMode::L4,
        load_started_us: 0,
        propagation_allowance_us: Some(correlate::DEFAULT_PROPAGATION_ALLOWANCE_US),
    };
    let groups = correlate::groups(&input, &[]);
    let facts = RunFacts {
        scenario: "bench".into(),
        started_at: "2026-01-01T00:00:00.000Z".into(),
        target: "http://127.0.0.1:1/".into(),
        rate: 10_000.0,
        duration_s: last as f64 / 1e6,
        load_started_us: 0,
        ended_us: last,
        interrupted: false,
        connections: 64,
        rolltest_version: "bench".into(),
        cluster: None,
    };
    let mut summary = Summary::build(&facts, &agg, &Limits::default());
    summary.causes = groups;
    summary.propagation = Some(PropagationStats::new(correlate::propagation(&input)));
    let failures: Vec<report::FailurePoint> = d
        .records
        .iter()
        .filter_map(report::FailurePoint::from_record)
        .collect();
    let propagation = summary
        .propagation
        .as_ref()
        .map(|p| p.pods.clone())
        .unwrap_or_default();
    let rollout = report::Rollout {
        timeline: t,
        causes: &summary.causes,
        failures: &failures,
        retried: &[],
        propagation: &propagation,
        findings: &[],
        load_started_us: 0,
        ended_us: last,
    };
    let html = report::render(&summary, &agg, &facts, Some(&rollout));
    run.write("report.html", &html).expect("report");
    let total = start.elapsed();
    println!(
        "end to end: {} records, {} events: attribute {:.0} ms, + records.csv rewritten {:.0} ms, + aggregate, groups, summary and report.html ({} KB) {:.0} ms",
        d.records.len(),
        t.events.len(),
        attributed.as_secs_f64() * 1e3,
        written.as_secs_f64() * 1e3,
        html.len() / 1024,
        total.as_secs_f64() * 1e3,
    );
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn one_million_records_correlated_and_reported() {
    let t = timeline();
    let mut d = data(true);
    end_to_end(&mut d, &t);
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn one_million_records_against_a_thousand_events() {
    let t = timeline();
    assert_eq!(t.events.len(), 1_000);
    let d = data(true);
    run(ProxyMode::L4, &d, &t);
    run(ProxyMode::External, &d, &t);
}
