//! `rolltest compare`: synthetic run directories written with the crate's
//! own types (records, summary, run facts, timeline) and the real manifests
//! of `scenarios/embedded/{naive,fixed}`; no cluster runs here.

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use rolltest::{
    compare::{self, Knob, KnobDiff},
    manifest,
    rundir::{self, RunDir},
};
use rolltest_core::{
    model::{
        Cause, ErrorKind, EventSource, Finding, LifecycleEvent, LifecycleKind, Outcome,
        RequestRecord, Severity, Timeline,
    },
    summary::{Aggregate, ClusterFacts, RunFacts, Summary},
    verdict::Limits,
};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a synthetic run looks like.
struct Spec {
    rate: f64,
    asked_duration_s: f64,
    /// Run-clock µs of the load start and of the rollout-restart action.
    load_start_us: u64,
    action_us: Option<u64>,
    /// Failures: (µs after the action, cause).
    failures: Vec<(u64, Cause)>,
    /// Manifest files copied into manifests/.
    manifests: Vec<PathBuf>,
    lint: Vec<Finding>,
    /// Give each of two pods a preStop of this many ms (None: no preStop).
    pre_stop_ms: Option<u64>,
    /// A rollout run (run.json `cluster`, timeline.json); false: a plain `rolltest load` run.
    rollout: bool,
}

impl Spec {
    fn new(scenario_dir: &str) -> Spec {
        let dir = repo().join("scenarios/embedded").join(scenario_dir);
        let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("scenario dir")
            .map(|e| e.expect("entry").path())
            .collect();
        manifests.sort();
        Spec {
            rate: 100.0,
            asked_duration_s: 4.0,
            load_start_us: 1_000_000,
            action_us: Some(2_000_000),
            failures: Vec::new(),
            manifests,
            lint: Vec::new(),
            pre_stop_ms: None,
            rollout: true,
        }
    }
}

fn finding(id: &str, path: &str) -> Finding {
    Finding {
        id: id.into(),
        severity: Severity::Error,
        file: "x.yaml".into(),
        line: 1,
        path: path.into(),
        object: "Deployment/api".into(),
        message: format!("{id} message"),
        why: "why".into(),
        fix: "fix".into(),
    }
}

fn pod_event(at_us: u64, pod: &str, source: EventSource, kind: LifecycleKind) -> LifecycleEvent {
    LifecycleEvent {
        at_us,
        server_us: None,
        server_precision_us: None,
        pod: Some(pod.into()),
        source,
        kind,
    }
}

/// Writes a run directory the way `rolltest run` does, with the crate's types.
fn write_run(dir: &Path, spec: &Spec) {
    let rd = RunDir::create(dir).expect("create run dir");
    let duration_us = (spec.asked_duration_s * 1e6) as u64;
    let interval = (1e6 / spec.rate) as u64;
    let anchor = spec.action_us.unwrap_or(spec.load_start_us);
    let mut failures = spec.failures.clone();
    failures.sort();
    let mut records = Vec::new();
    for seq in 0..(duration_us / interval) {
        let intended = spec.load_start_us + seq * interval;
        let fail = failures
            .iter()
            .position(|(t, _)| anchor + t <= intended)
            .map(|i| failures.remove(i));
        let mut r = RequestRecord {
            seq,
            intended_us: intended,
            sent_us: Some(intended + 50),
            latency_us: Some(10_000),
            status: Some(200),
            outcome: Outcome::Ok,
            detail: None,
            pod: Some("api-1".into()),
            conn: Some(0),
            cause: None,
            failed_tries: Vec::new(),
        };
        if let Some((_, cause)) = fail {
            r.status = Some(502);
            r.outcome = Outcome::Failed(ErrorKind::Http5xx);
            r.cause = Some(cause);
        }
        records.push(r);
    }
    rd.rewrite_records(&records).expect("records");
    let mut agg = Aggregate::new(spec.load_start_us, duration_us);
    for r in &records {
        agg.add(r);
    }
    let facts = RunFacts {
        scenario: dir.file_name().expect("name").to_string_lossy().into(),
        started_at: "2026-01-01T00:00:00.000Z".into(),
        target: "http://127.0.0.1:1/".into(),
        rate: spec.rate,
        duration_s: spec.asked_duration_s + 0.5,
        load_started_us: spec.load_start_us,
        ended_us: spec.load_start_us + duration_us + 500_000,
        interrupted: false,
        connections: 1,
        rolltest_version: "test".into(),
        cluster: spec.rollout.then(|| ClusterFacts {
            mode: "embedded".into(),
            namespace: "default".into(),
            deployment: "api".into(),
            service: Some("api".into()),
            proxy: "l7".into(),
            findings: spec.lint.clone(),
            asked_duration_s: spec.asked_duration_s,
            problems: Vec::new(),
            context: None,
            server: None,
            kubeconfig: None,
            overrides: None,
        }),
    };
    rd.write_facts(&facts).expect("run.json");
    let mut summary = Summary::build(&facts, &agg, &Limits::default());
    summary.lint = spec.lint.clone();
    rd.write_summary(&summary).expect("summary.json");
    if !spec.rollout {
        return;
    }
    let mut events = Vec::new();
    if let Some(at) = spec.action_us {
        events.push(LifecycleEvent {
            at_us: at,
            server_us: None,
            server_precision_us: None,
            pod: None,
            source: EventSource::Action,
            kind: LifecycleKind::ActionStarted {
                index: 0,
                action: "rollout-restart".into(),
                target: "deployment api".into(),
            },
        });
        for (i, pod) in ["api-old-1", "api-old-2"].into_iter().enumerate() {
            let del = at + 100_000 + i as u64 * 1_000_000;
            events.push(pod_event(
                del,
                pod,
                EventSource::Pod,
                LifecycleKind::DeletionRequested { grace_seconds: 30 },
            ));
            let mut t = del;
            if let Some(ps) = spec.pre_stop_ms {
                events.push(pod_event(
                    t,
                    pod,
                    EventSource::Event,
                    LifecycleKind::PreStopStarted,
                ));
                t += ps * 1000;
                events.push(pod_event(
                    t,
                    pod,
                    EventSource::Event,
                    LifecycleKind::PreStopFinished,
                ));
            }
            events.push(pod_event(
                t,
                pod,
                EventSource::Event,
                LifecycleKind::SigtermSent,
            ));
            events.push(pod_event(
                t + 20_000,
                pod,
                EventSource::Event,
                LifecycleKind::ContainerExited {
                    exit_code: Some(0),
                    signal: None,
                    reason: None,
                },
            ));
        }
    }
    let mut timeline = Timeline { events };
    timeline.sort();
    rd.write(
        rundir::TIMELINE,
        serde_json::to_string(&timeline).expect("timeline json"),
    )
    .expect("timeline");
    let mdir = dir.join("manifests");
    std::fs::create_dir_all(&mdir).expect("manifests dir");
    for m in &spec.manifests {
        std::fs::copy(m, mdir.join(m.file_name().expect("file name"))).expect("copy manifest");
    }
}

pub(crate) fn naive(tmp: &Path) -> PathBuf {
    let mut s = Spec::new("naive");
    s.failures = (0..10)
        .map(|i| (100_000 + i * 20_000, Cause::EndpointLag))
        .chain((0..3).map(|i| (150_000 + i * 10_000, Cause::KilledInFlight)))
        .collect();
    s.lint = vec![
        finding(
            "RT001",
            "spec.template.spec.containers[0].lifecycle.preStop",
        ),
        finding("RT011", "spec.strategy.rollingUpdate.maxUnavailable"),
    ];
    let dir = tmp.join("before");
    write_run(&dir, &s);
    dir
}

pub(crate) fn fixed(tmp: &Path) -> PathBuf {
    let mut s = Spec::new("fixed");
    s.pre_stop_ms = Some(3000);
    s.lint = vec![finding(
        "RT019",
        "spec.template.spec.containers[0].readinessProbe",
    )];
    let dir = tmp.join("after");
    write_run(&dir, &s);
    dir
}

fn rolltest(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(common::bin())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run rolltest");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn naive_to_fixed_concludes_with_the_causes_and_the_knobs_that_fixed_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let before = compare::load_run(&naive(tmp.path())).expect("before");
    let after = compare::load_run(&fixed(tmp.path())).expect("after");
    let c = compare::compare(&before, &after);
    assert_eq!(
        c.conclusion,
        "failed requests 13 → 0; endpoint_lag eliminated by preStop sleep 3 s; \
         killed_in_flight eliminated by terminationGracePeriodSeconds 12 and draining on SIGTERM; \
         verdict fail → pass"
    );
    let lag = c
        .failures_by_cause
        .iter()
        .find(|d| d.cause == "endpoint_lag")
        .expect("endpoint_lag row");
    assert_eq!((lag.before, lag.after, lag.delta), (10, 0, -10));
    // Aligned at the action: the failures sit just after 0 s.
    let first = &c.before.failures_over_time.bins[0];
    assert!(first.t_s >= 0.0 && first.t_s < 0.5, "{}", first.t_s);
    assert_eq!(c.before.load_start_s, -1.0);
    // Terminations from the timeline.
    assert_eq!(c.after.termination.pods.len(), 2);
    assert_eq!(c.after.termination.pre_stop_ms.median, Some(3000.0));
    assert_eq!(c.after.termination.to_sigterm_ms.median, Some(3000.0));
    assert_eq!(c.before.termination.pre_stop_ms.n, 0);
    assert_eq!(c.before.termination.sigterm_to_exit_ms.max, Some(20.0));
    // Lint: RT001 and RT011 gone, RT019 new.
    let gone: Vec<&str> = c.lint.disappeared.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(gone, ["RT001", "RT011"]);
    assert_eq!(c.lint.appeared[0].id, "RT019");
}

#[test]
fn worse_runs_say_so() {
    let tmp = tempfile::tempdir().expect("tmp");
    let before = compare::load_run(&fixed(tmp.path())).expect("before");
    let after = compare::load_run(&naive(tmp.path())).expect("after");
    let c = compare::compare(&before, &after);
    assert!(
        c.conclusion.starts_with("worse: failed requests 0 → 13; "),
        "{}",
        c.conclusion
    );
    assert!(
        c.conclusion
            .contains("endpoint_lag worse 0 → 10 after removing the preStop hook"),
        "{}",
        c.conclusion
    );
    assert!(
        c.conclusion.ends_with("verdict pass → fail"),
        "{}",
        c.conclusion
    );
}

fn knob_diffs(before: &str, after: &str) -> Vec<KnobDiff> {
    let b = manifest::parse(before, "before.yaml").expect("before yaml");
    let a = manifest::parse(after, "after.yaml").expect("after yaml");
    compare::diff_knobs(&b, &a)
}

const BASE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 6
  selector:
    matchLabels:
      app: api
  template:
    metadata:
      labels:
        app: api
    spec:
      containers:
        - name: api
          image: rolltest-demo:v1
          args: [\"--on-sigterm\", \"exit\"]
          readinessProbe:
            httpGet:
              path: /healthz
              port: 8080
            periodSeconds: 1
";

/// Applies a text edit to BASE and returns the one diff it must produce.
fn one_diff(from: &str, to: &str) -> KnobDiff {
    assert!(BASE.contains(from), "{from}");
    let after = BASE.replacen(from, to, 1);
    let d = knob_diffs(BASE, &after);
    assert_eq!(d.len(), 1, "{from} → {to}: {d:#?}");
    d.into_iter().next().expect("one")
}

#[test]
fn each_knob_is_detected() {
    let cases: Vec<(&str, &str, Knob, &str, &str, &str)> = vec![
        (
            "          readinessProbe:",
            "          lifecycle:\n            preStop:\n              sleep:\n                seconds: 5\n          readinessProbe:",
            Knob::PreStop,
            "spec.template.spec.containers[api].lifecycle.preStop",
            "none",
            "sleep action 5 s",
        ),
        (
            "    spec:\n      containers:",
            "    spec:\n      terminationGracePeriodSeconds: 45\n      containers:",
            Knob::GracePeriod,
            "spec.template.spec.terminationGracePeriodSeconds",
            "unset (default 30)",
            "45",
        ),
        (
            "  replicas: 6\n",
            "  replicas: 6\n  strategy:\n    rollingUpdate:\n      maxUnavailable: 0\n",
            Knob::Strategy,
            "spec.strategy.rollingUpdate.maxUnavailable",
            "unset (default 25%)",
            "0",
        ),
        (
            "  replicas: 6\n",
            "  replicas: 6\n  minReadySeconds: 5\n",
            Knob::MinReadySeconds,
            "spec.minReadySeconds",
            "unset (default 0)",
            "5",
        ),
        (
            "            periodSeconds: 1\n",
            "            periodSeconds: 2\n",
            Knob::Probes,
            "spec.template.spec.containers[api].readinessProbe.periodSeconds",
            "1",
            "2",
        ),
        (
            "          readinessProbe:",
            "          startupProbe:\n            tcpSocket:\n              port: 8080\n            failureThreshold: 30\n          readinessProbe:",
            Knob::Probes,
            "spec.template.spec.containers[api].startupProbe",
            "none",
            "tcpSocket :8080 every 10 s × 30",
        ),
        (
            "              path: /healthz",
            "              path: /ready",
            Knob::Probes,
            "spec.template.spec.containers[api].readinessProbe.handler",
            "httpGet /healthz :8080",
            "httpGet /ready :8080",
        ),
        (
            "  replicas: 6",
            "  replicas: 3",
            Knob::Replicas,
            "spec.replicas",
            "6",
            "3",
        ),
        (
            "[\"--on-sigterm\", \"exit\"]",
            "[\"--on-sigterm\", \"drain\"]",
            Knob::App,
            "spec.template.spec.containers[api].args",
            "--on-sigterm exit",
            "--on-sigterm drain",
        ),
        (
            "rolltest-demo:v1",
            "rolltest-demo:v2",
            Knob::App,
            "spec.template.spec.containers[api].image",
            "rolltest-demo:v1",
            "rolltest-demo:v2",
        ),
    ];
    for (from, to, knob, path, before, after) in cases {
        let d = one_diff(from, to);
        assert_eq!(
            (
                d.knob,
                d.path.as_str(),
                d.before_text.as_str(),
                d.after_text.as_str()
            ),
            (knob, path, before, after),
            "{from} → {to}"
        );
        assert!(d.effective);
    }
    // Spelling out a default is listed but has no effect.
    let d = one_diff(
        "  replicas: 6\n",
        "  replicas: 6\n  strategy:\n    type: RollingUpdate\n",
    );
    assert!(!d.effective);
    assert_eq!(d.before_text, "unset (default RollingUpdate)");
    // Nothing changed: no diff.
    assert!(knob_diffs(BASE, BASE).is_empty());
}

#[test]
fn pdb_added_and_changed() {
    let pdb = |spec: &str| {
        format!(
            "{BASE}---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: api\nspec:\n{spec}  selector:\n    matchLabels:\n      app: api\n"
        )
    };
    let added = knob_diffs(BASE, &pdb("  minAvailable: 2\n"));
    assert_eq!(added.len(), 1, "{added:#?}");
    assert_eq!(
        (
            added[0].knob,
            added[0].object.as_str(),
            added[0].before_text.as_str()
        ),
        (Knob::Pdb, "PodDisruptionBudget/api", "absent")
    );
    assert_eq!(added[0].after_text, "minAvailable 2");
    let changed = knob_diffs(&pdb("  minAvailable: 2\n"), &pdb("  maxUnavailable: 1\n"));
    let paths: Vec<&str> = changed.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["spec.minAvailable", "spec.maxUnavailable"]);
    let removed = knob_diffs(&pdb("  minAvailable: 2\n"), BASE);
    assert_eq!(removed[0].after_text, "absent");
}

#[test]
fn the_binary_writes_json_and_a_self_contained_page_and_exits_0() {
    let tmp = tempfile::tempdir().expect("tmp");
    naive(tmp.path());
    fixed(tmp.path());
    // Default --out, relative to the working directory.
    let (code, stdout, stderr) = rolltest(&["compare", "before", "after"], tmp.path());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("failed requests 13 → 0; endpoint_lag eliminated by preStop sleep 3 s"),
        "{stdout}"
    );
    let out = tmp.path().join("reports/compare-before-vs-after");
    assert!(
        stdout.contains("compare: reports/compare-before-vs-after/compare.html"),
        "{stdout}"
    );
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("compare.json")).expect("compare.json"),
    )
    .expect("json");
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["before"]["requests"]["failed"], 13);
    assert_eq!(json["after"]["requests"]["failed"], 0);
    assert_eq!(json["before"]["verdict"], "fail");
    assert_eq!(
        json["after"]["aligned_at"],
        "first action: rollout-restart deployment api"
    );
    let causes = json["failures_by_cause"].as_array().expect("causes");
    assert_eq!(causes.len(), Cause::ALL.len());
    assert_eq!(causes[1]["cause"], "killed_in_flight");
    assert_eq!(causes[1]["delta"], -3);
    for k in ["p50", "p90", "p99", "p999", "max"] {
        assert!(json["latency_ms"][k]["before"].is_number(), "{k}");
    }
    let knobs = json["knobs"].as_array().expect("knobs");
    let pre_stop = knobs
        .iter()
        .find(|k| k["knob"] == "pre_stop")
        .expect("preStop diff");
    assert_eq!(pre_stop["before"], Value::Null);
    assert_eq!(pre_stop["after"]["exec"]["command"][1], "3");
    assert!(
        knobs
            .iter()
            .any(|k| k["knob"] == "pdb" && k["after_text"] == "minAvailable 2")
    );
    assert_eq!(
        json["lint"]["disappeared"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(json["mismatches"].as_array().map(Vec::len), Some(0));

    let html = std::fs::read_to_string(out.join("compare.html")).expect("compare.html");
    assert!(html.contains("endpoint_lag eliminated by preStop sleep 3 s"));
    assert!(!html.contains("<script"), "no scripts");
    for attr in ["src=", "href=", "url("] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let rest = rest.trim_start_matches(['"', '\'']);
            assert!(
                !rest.starts_with("http://")
                    && !rest.starts_with("https://")
                    && !rest.starts_with("//"),
                "external reference at {i}: {}",
                &html[i..(i + 60).min(html.len())]
            );
        }
    }
    assert!(html.contains("<svg class=\"cmp\""));
}

#[test]
fn different_rate_or_duration_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().expect("tmp");
    naive(tmp.path());
    let mut s = Spec::new("fixed");
    s.rate = 50.0;
    s.asked_duration_s = 6.0;
    write_run(&tmp.path().join("other"), &s);
    let out = tmp.path().join("cmp");
    let out_s = out.to_str().expect("utf-8");
    let (code, stdout, stderr) =
        rolltest(&["compare", "before", "other", "--out", out_s], tmp.path());
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("not comparable"), "{stderr}");
    assert!(
        stderr.contains("rate 100 req/s before, 50 req/s after"),
        "{stderr}"
    );
    assert!(
        stderr.contains("duration 4 s before, 6 s after"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(!out.join("compare.json").exists());

    let (code, stdout, stderr) = rolltest(
        &["compare", "before", "other", "--out", out_s, "--force"],
        tmp.path(),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: compared with --force"),
        "{stderr}"
    );
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("compare.json")).expect("compare.json"),
    )
    .expect("json");
    assert_eq!(json["mismatches"].as_array().map(Vec::len), Some(2));
    let html = std::fs::read_to_string(out.join("compare.html")).expect("html");
    assert!(html.contains("Compared with --force"));
}

#[test]
fn non_run_directories_are_refused_with_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    naive(tmp.path());
    std::fs::create_dir(tmp.path().join("empty")).expect("mkdir");
    let (code, _, stderr) = rolltest(&["compare", "before", "empty"], tmp.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("empty is not a rolltest run directory: no summary.json"),
        "{stderr}"
    );
    let (code, _, stderr) = rolltest(&["compare", "missing", "before"], tmp.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("missing is not a rolltest run directory"),
        "{stderr}"
    );
    // A summary that is not one.
    std::fs::write(tmp.path().join("before/summary.json"), "{\"verdict\": 3}").expect("write");
    let (code, _, stderr) = rolltest(&["compare", "before", "before"], tmp.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a rolltest summary"), "{stderr}");
    assert!(!tmp.path().join("reports").exists());
}

#[test]
fn help_documents_the_exit_codes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (code, stdout, _) = rolltest(&["compare", "--help"], tmp.path());
    assert_eq!(code, 0);
    assert!(
        stdout.contains("Exit codes: 0 the comparison was written"),
        "{stdout}"
    );
    assert!(stdout.contains("--force"), "{stdout}");
}

#[test]
fn plain_load_runs_align_at_the_load_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let load = |name: &str, failures: Vec<(u64, Cause)>, start: u64| {
        let mut s = Spec::new("naive");
        s.rollout = false;
        s.action_us = None;
        s.manifests.clear();
        s.load_start_us = start;
        s.failures = failures;
        let dir = tmp.path().join(name);
        write_run(&dir, &s);
        compare::load_run(&dir).expect("load run")
    };
    let before = load("a", vec![(1_500_000, Cause::Capacity)], 1_000_000);
    let after = load("b", vec![], 3_000_000);
    let c = compare::compare(&before, &after);
    assert_eq!(c.before.aligned_at, "load start (no action)");
    assert_eq!((c.before.load_start_s, c.after.load_start_s), (0.0, 0.0));
    assert_eq!(c.before.failures_over_time.bins[0].t_s, 1.5);
    assert!(c.knobs.is_empty());
    assert!(c.before.termination.pods.is_empty());
    assert_eq!(
        c.conclusion,
        "failed requests 1 → 0; capacity eliminated (no knob that fixes it changed); verdict fail → pass"
    );
    let html = compare::render(&c);
    assert!(html.contains("no difference in preStop"), "knob note");
}
