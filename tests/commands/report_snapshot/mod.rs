//! report.html from a fixed, deterministic run: a golden snapshot (insta),
//! plus the properties a snapshot cannot show at a glance: self-contained
//! (nothing fetched), escaped data, deterministic, bounded size, and
//! sensible empty cases.
//!
//! Set `ROLLTEST_REPORT_DIR=/tmp/reports` to also write every report these
//! tests render to `<name>.html` there, to look at them in a browser.
//!
//! A plain load's report here; a rollout's (swimlanes, causes, propagation,
//! findings, headline) in `rollout.rs`.

mod rollout;

use rolltest::report;
use rolltest_core::{
    model::{Cause, ErrorKind, Outcome, RequestRecord},
    summary::{Aggregate, RunFacts, Summary},
    verdict::Limits,
};

/// A tiny seeded xorshift64, so the records never change.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const POD_OLD: &str = "api-6f7c9d84b5-k2x8p";
const POD_NEW: &str = "api-6f7c9d84b5-q4m7z";

/// 3,000 requests at 200 req/s over 15 s. Two pods share the load until the
/// old one terminates at 6 s: for 1.5 s, requests routed to it fail (502s
/// from the proxy, then connection resets, then timeouts), and the
/// generator drops a few while the timeouts hold its in-flight slots.
fn records(pod_old: &str, pod_new: &str) -> Vec<RequestRecord> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(3000);
    for seq in 0..3000u64 {
        let intended = seq * 5_000;
        let lag = 20 + rng.below(400);
        let to_old = seq % 2 == 0 && intended < 7_500_000;
        let mut r = RequestRecord {
            seq,
            intended_us: intended,
            sent_us: Some(intended + lag),
            latency_us: None,
            status: None,
            outcome: Outcome::Ok,
            detail: None,
            pod: None,
            conn: Some(if to_old { 1 } else { 2 }),
            cause: None,
            failed_tries: Vec::new(),
        };
        let fail = |r: &mut RequestRecord, kind, latency, detail: &str, cause| {
            r.outcome = Outcome::Failed(kind);
            r.latency_us = Some(latency);
            r.detail = Some(detail.to_string());
            r.cause = Some(cause);
        };
        if (7_000_000..7_200_000).contains(&intended) && seq % 8 == 1 {
            out.push(RequestRecord::dropped(seq, intended));
            continue;
        }
        if to_old && intended >= 6_000_000 {
            if intended < 6_600_000 {
                fail(
                    &mut r,
                    ErrorKind::Http5xx,
                    2_000 + rng.below(3_000),
                    "502 Bad Gateway",
                    Cause::EndpointLag,
                );
                r.status = Some(502);
            } else if intended < 7_000_000 {
                fail(
                    &mut r,
                    ErrorKind::ConnectionReset,
                    1_000 + rng.below(2_000),
                    "connection reset by peer",
                    Cause::KilledInFlight,
                );
                r.pod = Some(pod_old.to_string());
                r.conn = Some(3 + seq % 2);
            } else {
                fail(
                    &mut r,
                    ErrorKind::Timeout,
                    2_000_000 + rng.below(5_000),
                    "timed out after 2s",
                    Cause::Unexplained,
                );
            }
        } else {
            let slow = rng.below(100) < 2;
            let latency =
                800 + rng.below(2_500) + if slow { 20_000 + rng.below(180_000) } else { 0 };
            r.latency_us = Some(latency);
            r.status = Some(200);
            r.pod = Some(if to_old { pod_old } else { pod_new }.to_string());
        }
        out.push(r);
    }
    out
}

fn facts(scenario: &str, target: &str) -> RunFacts {
    RunFacts {
        scenario: scenario.into(),
        started_at: "2025-03-14T09:26:53Z".into(),
        target: target.into(),
        rate: 200.0,
        duration_s: 15.0,
        load_started_us: 0,
        ended_us: 15_003_900,
        interrupted: false,
        connections: 4,
        rolltest_version: "0.1.0".into(),
        cluster: None,
    }
}

/// Writes `html` to `$ROLLTEST_REPORT_DIR/<name>.html` when that is set.
fn dump(name: &str, html: &str) {
    if let Some(dir) = std::env::var_os("ROLLTEST_REPORT_DIR") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("create report dir");
        std::fs::write(dir.join(format!("{name}.html")), html).expect("write report");
    }
}

fn render_records(facts: &RunFacts, records: &[RequestRecord]) -> String {
    let duration_us = (facts.duration_s * 1e6) as u64;
    let mut agg = Aggregate::new(facts.load_started_us, duration_us);
    for r in records {
        agg.add(r);
    }
    let summary = Summary::build(facts, &agg, &Limits::default());
    report::render(&summary, &agg, facts, None)
}

const TARGET: &str = "http://127.0.0.1:30080/";

fn golden() -> String {
    render_records(&facts("naive-rollout", TARGET), &records(POD_OLD, POD_NEW))
}

#[test]
fn report_matches_snapshot() {
    let html = golden();
    dump("report", &html);
    insta::assert_snapshot!("report_html", html);
}

#[test]
fn report_is_self_contained() {
    let html = golden();
    assert!(html.contains("<svg"));
    assert!(html.contains("<div class=\"v\">INCONCLUSIVE</div>"));
    // The only URLs: the target (as text) and the SVG namespace.
    let rest = html
        .replace(TARGET, "")
        .replace("http://www.w3.org/2000/svg", "");
    assert!(!rest.contains("http://"), "a URL other than the target");
    assert!(!rest.contains("https://"), "a URL other than the target");
    for fetch in [
        "<script", "<link", "<img", "<iframe", "@import", "url(", "src=",
    ] {
        assert!(!html.contains(fetch), "{fetch} in the report");
    }
}

#[test]
fn data_strings_are_escaped() {
    let evil = "<script>alert('x')</script>";
    let html = render_records(
        &facts(evil, "http://example.test/?a=1&b=\"><img src=x>"),
        &records("<b>pod</b>", "pod&co"),
    );
    assert!(!html.contains("<script"));
    assert!(!html.contains("<img"));
    assert!(!html.contains("<b>pod"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("a=1&amp;b=&quot;&gt;&lt;img src=x&gt;"));
    assert!(html.contains("&lt;b&gt;pod&lt;/b&gt;"));
    assert!(html.contains("pod&amp;co"));
}

#[test]
fn rendering_is_deterministic() {
    let a = golden();
    let b = golden();
    assert_eq!(a, b);
    // The same aggregate and summary rendered twice, too.
    let f = facts("naive-rollout", TARGET);
    let mut agg = Aggregate::new(0, 15_000_000);
    for r in records(POD_OLD, POD_NEW) {
        agg.add(&r);
    }
    let summary = Summary::build(&f, &agg, &Limits::default());
    assert_eq!(
        report::render(&summary, &agg, &f, None),
        report::render(&summary, &agg, &f, None)
    );
    assert_eq!(report::render(&summary, &agg, &f, None), a);
}

#[test]
fn empty_cases_render_sensibly() {
    let f = facts("empty", TARGET);
    let html = render_records(&f, &[]);
    dump("empty", &html);
    assert!(html.contains("no requests were scheduled"));
    assert!(html.contains("no successful requests"));
    assert!(html.contains("no failed requests"));
    assert!(html.ends_with("</html>\n"));

    // Everything failed: no latency charts, but throughput and errors.
    let failed: Vec<_> = (0..300u64)
        .map(|seq| RequestRecord {
            seq,
            intended_us: seq * 5_000,
            sent_us: Some(seq * 5_000 + 50),
            latency_us: Some(300),
            status: None,
            outcome: Outcome::Failed(ErrorKind::ConnectRefused),
            detail: Some("connection refused".into()),
            pod: None,
            conn: None,
            cause: None,
            failed_tries: Vec::new(),
        })
        .collect();
    let html = render_records(&f, &failed);
    dump("all-failed", &html);
    assert_eq!(html.matches("no successful requests").count(), 2);
    assert!(html.contains("connect_refused"));
    assert_eq!(html.matches("<svg").count(), 1);

    // Nothing failed.
    let ok: Vec<_> = records(POD_OLD, POD_NEW)
        .into_iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .collect();
    let html = render_records(&f, &ok);
    dump("no-failures", &html);
    assert!(html.contains("no failed requests"));
    assert_eq!(html.matches("<svg").count(), 3);
}

#[test]
fn ten_minute_run_stays_small() {
    let mut f = facts("long", TARGET);
    f.duration_s = 600.0;
    f.ended_us = 600_002_000;
    let mut rng = XorShift(7);
    let records: Vec<_> = (0..120_000u64)
        .map(|seq| {
            let intended = seq * 5_000;
            let failed = (300_000_000..301_000_000).contains(&intended);
            RequestRecord {
                seq,
                intended_us: intended,
                sent_us: Some(intended + 30 + rng.below(200)),
                latency_us: Some(500 + rng.below(5_000)),
                status: Some(if failed { 503 } else { 200 }),
                outcome: if failed {
                    Outcome::Failed(ErrorKind::Http5xx)
                } else {
                    Outcome::Ok
                },
                detail: None,
                pod: Some(format!("api-{}", seq % 3)),
                conn: Some(seq % 8),
                cause: None,
                failed_tries: Vec::new(),
            }
        })
        .collect();
    let html = render_records(&f, &records);
    dump("ten-minutes", &html);
    assert!(html.len() < 1_000_000, "report is {} bytes", html.len());
    // 6,000 buckets of 100 ms merged 4 by 4.
    assert!(html.contains("400 ms buckets (4 adjacent 100 ms buckets merged"));
}
