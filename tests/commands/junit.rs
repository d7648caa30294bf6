//! `--junit FILE`: the JUnit XML read back with a strict XML parser, end to
//! end through `rolltest load` and over hand-built summaries of rollout runs.

use crate::common;

use std::{fs, path::Path};

use common::{DemoApp, Misbehave, closed_port, code, misbehaving_server, rolltest, text};
use rolltest::junit;
use rolltest_core::summary::{RunFacts, Summary};
use serde_json::json;

/// One test case as read back.
#[derive(Debug)]
struct Case {
    classname: String,
    name: String,
    /// `failure`, `error` or `pass`.
    outcome: String,
    kind: String,
    message: String,
    body: String,
}

/// The suite as read back: its attributes, properties and cases.
#[derive(Debug)]
struct Suite {
    name: String,
    tests: usize,
    failures: usize,
    errors: usize,
    time: f64,
    timestamp: String,
    properties: Vec<(String, String)>,
    cases: Vec<Case>,
}

impl Suite {
    fn property(&self, name: &str) -> &str {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no property {name}: {:?}", self.properties))
    }

    fn case(&self, classname: &str, name: &str) -> &Case {
        self.cases
            .iter()
            .find(|c| c.classname == classname && c.name == name)
            .unwrap_or_else(|| panic!("no test case {classname} {name}: {:?}", self.cases))
    }
}

fn attr<T: std::str::FromStr>(node: roxmltree::Node<'_, '_>, name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    node.attribute(name)
        .unwrap_or_else(|| panic!("<{}> has no {name}", node.tag_name().name()))
        .parse()
        .expect("attribute value")
}

/// Parses the XML strictly and checks that the counts agree with the cases.
fn parse(xml: &str) -> Suite {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(suites.len(), 1, "one testsuite");
    let s = suites[0];
    assert_eq!(s.tag_name().name(), "testsuite");
    let mut properties = Vec::new();
    let mut cases = Vec::new();
    for n in s.children().filter(|n| n.is_element()) {
        match n.tag_name().name() {
            "properties" => {
                for p in n.children().filter(|n| n.is_element()) {
                    properties.push((attr(p, "name"), attr(p, "value")));
                }
            }
            "testcase" => {
                let _: f64 = attr(n, "time");
                let inner: Vec<_> = n.children().filter(|n| n.is_element()).collect();
                assert!(inner.len() <= 1, "at most one failure/error per case");
                let (outcome, kind, message, body) = match inner.first() {
                    Some(e) => (
                        e.tag_name().name().to_string(),
                        attr(*e, "type"),
                        attr(*e, "message"),
                        e.text().unwrap_or("").to_string(),
                    ),
                    None => ("pass".into(), String::new(), String::new(), String::new()),
                };
                cases.push(Case {
                    classname: attr(n, "classname"),
                    name: attr(n, "name"),
                    outcome,
                    kind,
                    message,
                    body,
                });
            }
            "system-out" => {}
            other => panic!("unexpected <{other}>"),
        }
    }
    let suite = Suite {
        name: attr(s, "name"),
        tests: attr(s, "tests"),
        failures: attr(s, "failures"),
        errors: attr(s, "errors"),
        time: attr(s, "time"),
        timestamp: attr(s, "timestamp"),
        properties,
        cases,
    };
    assert_eq!(suite.tests, suite.cases.len());
    let count = |o: &str| suite.cases.iter().filter(|c| c.outcome == o).count();
    assert_eq!(suite.failures, count("failure"));
    assert_eq!(suite.errors, count("error"));
    for (a, v) in [
        ("tests", suite.tests),
        ("failures", suite.failures),
        ("errors", suite.errors),
    ] {
        assert_eq!(attr::<usize>(root, a), v, "testsuites {a}");
    }
    suite
}

/// Runs `rolltest load` with `--junit`; returns (exit code, suite, summary.json).
fn load_with_junit(url: &str, extra: &[&str]) -> (i32, Suite, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // A directory that does not exist yet: --junit creates it.
    let junit = dir.path().join("ci/junit.xml");
    let mut args = vec![
        "load",
        url,
        "-q",
        "--out",
        run.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = rolltest(&args);
    let text = text(&out);
    let xml = fs::read_to_string(&junit).unwrap_or_else(|e| panic!("{e}: {text}"));
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let suite = parse(&xml);
    assert_eq!(
        suite.property("report"),
        run.join("report.html").display().to_string()
    );
    assert!(Path::new(suite.property("report")).is_file());
    assert_eq!(
        suite.property("verdict"),
        summary["verdict"].as_str().unwrap()
    );
    assert!(
        text.contains(&format!("junit: {}", junit.display())),
        "{text}"
    );
    (code(&out), suite, summary, text)
}

/// The suite agrees with summary.json check by check.
fn agrees_with_summary(suite: &Suite, summary: &serde_json::Value) {
    let checks = summary["checks"].as_array().unwrap();
    for c in checks {
        let case = suite.case("rolltest.check", c["name"].as_str().unwrap());
        let expected = match (c["pass"].as_bool().unwrap(), c["kind"].as_str().unwrap()) {
            (true, _) => "pass",
            (false, "target") => "failure",
            (false, _) => "error",
        };
        assert_eq!(case.outcome, expected, "{case:?}");
    }
    let conclusive = suite.case("rolltest.run", "conclusive");
    let inconclusive = summary["verdict"] == "inconclusive";
    assert_eq!(
        conclusive.outcome == "error",
        inconclusive,
        "{conclusive:?}"
    );
    // Plain load attributes no cause: no cause test cases.
    assert!(suite.cases.iter().all(|c| c.classname != "rolltest.cause"));
    assert_eq!(suite.tests, checks.len() + 1);
}

#[test]
fn a_passing_load_writes_a_passing_suite() {
    let app = DemoApp::start(&[]);
    let (code, suite, summary, text) = load_with_junit(
        &app.url(),
        &["--rate", "100", "--duration", "1s", "--max-p99-ms", "1000"],
    );
    // On a loaded machine the generator may fall behind (inconclusive, 4);
    // whatever the verdict, the XML says what summary.json says.
    assert!(code == 0 || code == 4, "{text}");
    agrees_with_summary(&suite, &summary);
    assert_eq!(suite.name, "rolltest: load");
    assert_eq!(suite.property("scenario"), "load");
    assert_eq!(suite.property("target"), app.url());
    assert_eq!(suite.property("requests.scheduled"), "100");
    assert_eq!(suite.case("rolltest.check", "max_failed").outcome, "pass");
    assert_eq!(suite.case("rolltest.check", "max_p99_ms").outcome, "pass");
    assert!(
        suite.time >= 1.0,
        "the suite's time is the run's: {}",
        suite.time
    );
    assert_eq!(suite.timestamp.len(), 19, "{}", suite.timestamp);
    assert_eq!(
        &suite.timestamp[..19],
        &summary["started_at"].as_str().unwrap()[..19]
    );
    if code == 0 {
        assert_eq!((suite.failures, suite.errors), (0, 0));
    }
}

#[test]
fn a_failing_load_still_writes_the_file_with_the_failures() {
    let url = format!("http://{}/", closed_port());
    let (code, suite, summary, text) =
        load_with_junit(&url, &["--rate", "50", "--duration", "500ms"]);
    assert!(code == 1 || code == 4, "{text}");
    agrees_with_summary(&suite, &summary);
    let failed = suite.case("rolltest.check", "max_failed");
    assert_eq!(failed.outcome, "failure");
    assert_eq!(failed.kind, "max_failed");
    assert_eq!(failed.message, "max_failed: 25 is above the limit 0");
    assert!(failed.body.contains("25 failed"), "{}", failed.body);
    assert!(
        failed.body.contains("errors by kind: connect_refused 25"),
        "{}",
        failed.body
    );
    assert!(suite.failures >= 1);
}

#[test]
fn an_inconclusive_load_shows_errors_not_failures() {
    let url = format!("http://{}/", misbehaving_server(Misbehave::Stall));
    let (code, suite, summary, text) = load_with_junit(
        &url,
        &[
            "--rate",
            "100",
            "--duration",
            "500ms",
            "--timeout",
            "300ms",
            "--max-in-flight",
            "5",
        ],
    );
    assert_eq!(code, 4, "{text}");
    agrees_with_summary(&suite, &summary);
    let dropped = suite.case("rolltest.check", "max_dropped");
    assert_eq!(dropped.outcome, "error");
    assert!(dropped.message.starts_with("max_dropped: "), "{dropped:?}");
    assert!(dropped.body.contains("inconclusive"), "{dropped:?}");
    let conclusive = suite.case("rolltest.run", "conclusive");
    assert_eq!(conclusive.kind, "inconclusive");
    assert!(conclusive.message.contains("dropped"), "{conclusive:?}");
    assert!(suite.errors >= 2);
}

#[test]
fn a_junit_path_that_is_a_directory_is_bad_input_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = rolltest(&[
        "load",
        "http://127.0.0.1:9/",
        "--rate",
        "10",
        "--duration",
        "1s",
        "--out",
        dir.path().join("run").to_str().unwrap(),
        "--junit",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("--junit"), "{}", text(&out));
    assert!(!dir.path().join("run").exists(), "no run was started");
}

// ---- hand-built summaries of rollout runs ----

fn facts(cluster: bool) -> RunFacts {
    serde_json::from_value(json!({
        "scenario": "kind-naive",
        "started_at": "2026-11-25T03:12:01.123Z",
        "target": "http://127.0.0.1:30080/",
        "rate": 200.0,
        "duration_s": 20.0,
        "load_started_us": 3_000_000u64,
        "ended_us": 41_250_000u64,
        "interrupted": false,
        "connections": 12,
        "rolltest_version": "0.1.0",
        "cluster": if cluster { json!({
            "mode": "kubeconfig",
            "namespace": "default",
            "context": "kind-rolltest",
            "deployment": "api",
            "service": "api",
            "proxy": "external",
            "asked_duration_s": 20.0
        }) } else { serde_json::Value::Null },
    }))
    .unwrap()
}

const LAG_A: &str = "pod api-7c9-x exited at 12.31 s; the proxy still routed to it until 13.80 s; 30 requests refused";
const LAG_B: &str = "pod api-7c9-y exited at 15.02 s; the proxy still routed to it until 16.10 s; 11 requests refused";
const KILLED: &str =
    "4 requests in flight on api-7c9-x when it exited at 12.31 s (SIGTERM, no drain)";
const LAG_FIX: &str =
    "add a preStop sleep of at least 2 s (lifecycle.preStop.exec.command: [\"sleep\", \"2\"])";
const KILLED_FIX: &str = "drain on SIGTERM & size terminationGracePeriodSeconds > preStop + drain";

fn group(
    cause: &str,
    pod: &str,
    count: u64,
    kind: &str,
    evidence: &str,
    fix: &str,
) -> serde_json::Value {
    json!({
        "cause": cause, "pod": pod, "count": count, "first_us": 12_000_000u64,
        "last_us": 16_000_000u64, "kinds": {kind: count}, "evidence": evidence, "fix": fix
    })
}

fn summary(verdict: &str, patch: serde_json::Value) -> Summary {
    let mut s = json!({
        "verdict": verdict,
        "scenario": "kind-naive",
        "started_at": "2026-11-25T03:12:01.123Z",
        "interrupted": false,
        "target": "http://127.0.0.1:30080/",
        "rate": 200.0,
        "duration_s": 20.0,
        "requests": {"scheduled": 4000, "sent": 4000, "ok": 3955, "failed": 45, "dropped": 0},
        "achieved_rate": 200.0,
        "achieved_ratio": 1.0,
        "schedule_lag_ms": {"p50": 0.1, "p99": 0.4, "max": 2.0},
        "latency_ms": {"p50": 12.0, "p90": 18.0, "p99": 40.0, "p999": 90.0, "max": 120.0},
        "errors_by_kind": {"connect_refused": 41, "connection_reset": 4},
        "errors_by_cause": {"endpoint_lag": 41, "killed_in_flight": 4},
        "status_codes": {"200": 3955},
        "pods": {},
        "connections": 12,
        "lint": [],
        "causes": [
            group("endpoint_lag", "api-7c9-x", 30, "connect_refused", LAG_A, LAG_FIX),
            group("endpoint_lag", "api-7c9-y", 11, "connect_refused", LAG_B, LAG_FIX),
            group("killed_in_flight", "api-7c9-x", 4, "connection_reset", KILLED, KILLED_FIX),
        ],
        "checks": [
            {"name": "max_failed", "limit": 0.0, "actual": 45.0, "pass": false, "kind": "target"},
            {"name": "max_p99_ms", "limit": 500.0, "actual": 40.0, "pass": true, "kind": "target"},
            {"name": "max_dropped", "limit": 0.0, "actual": 0.0, "pass": true, "kind": "generator"},
            {"name": "max_schedule_lag_p99_ms", "limit": 10.0, "actual": 0.4, "pass": true, "kind": "generator"},
            {"name": "min_achieved_ratio", "limit": 0.999, "actual": 1.0, "pass": true, "kind": "generator"}
        ],
        "inconclusive_reasons": [],
        "rolltest_version": "0.1.0"
    });
    if let (Some(s), Some(p)) = (s.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(s).expect("a summary")
}

#[test]
fn a_failed_rollout_has_a_failure_per_cause_with_its_evidence_and_fix() {
    let s = summary("fail", json!({}));
    let xml = junit::render(&s, &facts(true), Path::new("reports/kind-naive-1"));
    let suite = parse(&xml);
    assert_eq!(suite.name, "rolltest: kind-naive");
    // 5 checks + conclusive + 6 causes.
    assert_eq!(suite.tests, 12);
    assert_eq!((suite.failures, suite.errors), (3, 0));
    assert_eq!(suite.time, 41.25);
    assert_eq!(suite.timestamp, "2026-11-25T03:12:01");
    assert_eq!(suite.property("verdict"), "fail");
    assert_eq!(suite.property("target"), "http://127.0.0.1:30080/");
    assert_eq!(suite.property("report"), "reports/kind-naive-1/report.html");
    assert_eq!(suite.property("cluster.mode"), "kubeconfig");
    assert_eq!(suite.property("cluster.context"), "kind-rolltest");

    let lag = suite.case("rolltest.cause", "endpoint_lag");
    assert_eq!(lag.outcome, "failure");
    assert_eq!(lag.kind, "endpoint_lag");
    assert_eq!(
        lag.message,
        format!("41 failed request(s) caused by endpoint_lag: {LAG_A}; {LAG_B}. Fix: {LAG_FIX}")
    );
    for text in [
        LAG_A,
        LAG_B,
        LAG_FIX,
        "api-7c9-x: 30 failed request(s) (connect_refused 30)",
    ] {
        assert!(lag.body.contains(text), "{text:?} not in {}", lag.body);
    }
    let killed = suite.case("rolltest.cause", "killed_in_flight");
    assert_eq!(killed.outcome, "failure");
    // The fix's `&` and the evidence's parentheses survive the round trip.
    assert!(killed.message.contains(KILLED), "{}", killed.message);
    assert!(killed.message.ends_with(&format!("Fix: {KILLED_FIX}")));
    for cause in ["not_ready", "capacity", "unexplained"] {
        assert_eq!(
            suite.case("rolltest.cause", cause).outcome,
            "pass",
            "{cause}"
        );
    }
    assert_eq!(
        suite.case("rolltest.check", "max_failed").outcome,
        "failure"
    );
    assert_eq!(suite.case("rolltest.check", "max_p99_ms").outcome, "pass");
    assert_eq!(suite.case("rolltest.run", "conclusive").outcome, "pass");
    // The raw text carries the escapes.
    assert!(xml.contains("drain on SIGTERM &amp; size"));
    assert!(xml.contains("[&quot;sleep&quot;, &quot;2&quot;]"));
}

#[test]
fn a_passing_rollout_passes_every_case() {
    let s = summary(
        "pass",
        json!({
            "requests": {"scheduled": 4000, "sent": 4000, "ok": 4000, "failed": 0, "dropped": 0},
            "errors_by_kind": {"connect_refused": 0},
            "errors_by_cause": {},
            "causes": [],
            "checks": [{"name": "max_failed", "limit": 0.0, "actual": 0.0, "pass": true, "kind": "target"}],
        }),
    );
    let suite = parse(&junit::render(&s, &facts(true), Path::new("r")));
    // 1 check + conclusive + 6 causes.
    assert_eq!((suite.tests, suite.failures, suite.errors), (8, 0, 0));
    assert!(
        suite.cases.iter().all(|c| c.outcome == "pass"),
        "{:?}",
        suite.cases
    );
}

#[test]
fn an_inconclusive_rollout_reports_errors_with_every_reason() {
    let s = summary(
        "inconclusive",
        json!({
            "checks": [
                {"name": "max_failed", "limit": 0.0, "actual": 45.0, "pass": false, "kind": "target"},
                {"name": "min_achieved_ratio", "limit": 0.999, "actual": 0.95, "pass": false, "kind": "generator"},
                {"name": "max_schedule_lag_p99_ms", "limit": 10.0, "actual": null, "pass": false, "kind": "generator"}
            ],
            "inconclusive_reasons": [
                "the generator sent 95% of the asked rate",
                "the rollout did not complete within 300 s"
            ],
        }),
    );
    let suite = parse(&junit::render(&s, &facts(true), Path::new("r")));
    let ratio = suite.case("rolltest.check", "min_achieved_ratio");
    assert_eq!(ratio.outcome, "error");
    assert_eq!(
        ratio.message,
        "min_achieved_ratio: 0.95 is below the limit 0.999"
    );
    let lag = suite.case("rolltest.check", "max_schedule_lag_p99_ms");
    assert_eq!(lag.outcome, "error");
    assert!(
        lag.message.contains("nothing was measured"),
        "{}",
        lag.message
    );
    let conclusive = suite.case("rolltest.run", "conclusive");
    assert_eq!(conclusive.outcome, "error");
    assert_eq!(
        conclusive.message,
        "the generator sent 95% of the asked rate; the rollout did not complete within 300 s"
    );
    assert!(
        conclusive
            .body
            .contains("- the rollout did not complete within 300 s")
    );
    // Target failures stay failures: the evidence is kept, the errors say it proves nothing.
    assert_eq!(
        suite.case("rolltest.check", "max_failed").outcome,
        "failure"
    );
    assert_eq!((suite.failures, suite.errors), (3, 3));
}

#[test]
fn names_and_texts_with_markup_and_control_characters_round_trip() {
    let nasty = "a<b>&\"c\" 'd' ]]> e\nf\tg\u{1}h";
    let read_back = "a<b>&\"c\" 'd' ]]> e\nf\tg\u{FFFD}h";
    let s = summary(
        "fail",
        json!({
            "scenario": nasty,
            "target": "http://127.0.0.1:30080/?q=1&r=<2>",
            "errors_by_cause": {"not_ready": 3},
            "causes": [group("not_ready", "p\"o<d>", 3, "http_5xx", nasty, nasty)],
        }),
    );
    let xml = junit::render(
        &s,
        &facts(true),
        Path::new("dir with \"quotes\" & <angles>"),
    );
    let suite = parse(&xml);
    assert_eq!(suite.name, format!("rolltest: {read_back}"));
    assert_eq!(suite.property("scenario"), read_back);
    assert_eq!(
        suite.property("target"),
        "http://127.0.0.1:30080/?q=1&r=<2>"
    );
    assert_eq!(
        suite.property("report"),
        "dir with \"quotes\" & <angles>/report.html"
    );
    let case = suite.case("rolltest.cause", "not_ready");
    assert_eq!(
        case.message,
        format!("3 failed request(s) caused by not_ready: {read_back}. Fix: {read_back}")
    );
    assert!(
        case.body.contains(&format!("evidence: {read_back}")),
        "{}",
        case.body
    );
    assert!(case.body.contains("p\"o<d>"), "{}", case.body);
    assert!(!xml.contains('\u{1}'));
}

#[test]
fn write_creates_the_directory_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/junit.xml");
    let s = summary("fail", json!({}));
    junit::write(&path, &s, &facts(false), Path::new("r")).unwrap();
    let suite = parse(&fs::read_to_string(&path).unwrap());
    // Without a cluster there are no cause test cases.
    assert_eq!(suite.tests, 6);
    let names: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["junit.xml"]);
}
