//! The scenario library (`scenarios/embedded/`, table in its README.md): one
//! broken/fixed pair per knob, each run through the built binary, giving
//! the verdict and the dominant cause its comment promises. Every scenario
//! file also passes `rolltest run --check`.
//!
//! Each run takes 15-35 s of wall time (a real rollout with real delays);
//! cargo runs the tests of this file two at a time on a 2-core machine.
//! The drain pair (drain-no-pdb / drain-pdb) and ready-too-early are run by
//! tests/rollout.rs; here they only go through `--check`.

mod common;

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use serde_json::Value;

fn library() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/embedded")
}

/// One finished run: exit code, summary, timeline events, records, output.
struct Run {
    code: i32,
    summary: Value,
    events: Vec<Value>,
    records: Vec<csv::StringRecord>,
    headers: csv::StringRecord,
    text: String,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    /// `rolltest run scenarios/embedded/NAME.toml --out TMP --quiet`, run
    /// again (`common::timely`, at most three runs) while the
    /// verdict is inconclusive only because the machine held the generator
    /// back (schedule lag over its limit: another build on the 2 cores):
    /// such a run proves nothing either way.
    fn of(name: &str) -> Run {
        common::timely(
            name,
            || Run::once(name),
            |run| (run.code, &run.summary, &run.text),
        )
    }

    fn once(name: &str) -> Run {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("run");
        let output = Command::new(common::bin())
            .arg("run")
            .arg(library().join(format!("{name}.toml")))
            .arg("--out")
            .arg(&out)
            .arg("--quiet")
            .output()
            .expect("run rolltest");
        let text = format!(
            "{name}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let json = |f: &str| -> Value {
            std::fs::read_to_string(out.join(f))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null)
        };
        let summary = json("summary.json");
        let events = json("timeline.json")["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let (headers, records) = match csv::Reader::from_path(out.join("records.csv")) {
            Ok(mut r) => (
                r.headers().cloned().unwrap_or_default(),
                r.records().map_while(Result::ok).collect(),
            ),
            Err(_) => (csv::StringRecord::new(), Vec::new()),
        };
        Run {
            code: output.status.code().unwrap_or(-1),
            summary,
            events,
            records,
            headers,
            text,
            out,
            _dir: dir,
        }
    }

    /// The summary `rolltest report` rebuilds from a copy of this run
    /// without the embedded kubelet's exact record (the timeline events of
    /// source `kubelet`): what the correlator infers from the Events and
    /// pod statuses a real kubelet publishes.
    fn inferred_without_exact_record(&self) -> Value {
        let copy = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(&self.out).expect("run dir") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::copy(&path, copy.path().join(path.file_name().expect("name")))
                    .expect("copy");
            }
        }
        let timeline = copy.path().join("timeline.json");
        let mut t: Value =
            serde_json::from_str(&std::fs::read_to_string(&timeline).expect("timeline"))
                .expect("timeline json");
        let events = t["events"].as_array_mut().expect("events");
        let before = events.len();
        events.retain(|e| e["source"] != "kubelet");
        assert!(events.len() < before, "the run has an exact record");
        std::fs::write(&timeline, t.to_string()).expect("write timeline");
        let output = Command::new(common::bin())
            .arg("report")
            .arg(copy.path())
            .output()
            .expect("rolltest report");
        // `report` exits with the rebuilt verdict's code, FAIL here.
        assert_eq!(
            output.status.code(),
            Some(1),
            "report: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(
            &std::fs::read_to_string(copy.path().join("summary.json")).expect("summary"),
        )
        .expect("summary json")
    }

    /// Without the exact record every failed request still has a cause,
    /// none `unexplained`, and `cause` still dominates; the counts per cause
    /// with and without it are printed.
    fn assert_inferred_alike(&self, cause: &str) {
        let inferred = self.inferred_without_exact_record();
        println!(
            "causes with the exact record {}, inferred without it {}",
            self.causes(),
            inferred["errors_by_cause"]
        );
        let by_cause = |s: &Value, c: &str| s["errors_by_cause"][c].as_u64().unwrap_or(0);
        let total: u64 = inferred["errors_by_cause"]
            .as_object()
            .expect("errors_by_cause")
            .values()
            .filter_map(Value::as_u64)
            .sum();
        let n = self.failed();
        assert_eq!(total, n, "inferred: {}", inferred["errors_by_cause"]);
        assert_eq!(
            by_cause(&inferred, "unexplained"),
            0,
            "{}",
            inferred["errors_by_cause"]
        );
        assert!(
            by_cause(&inferred, cause) * 10 >= n * 9,
            "{cause} must dominate without the exact record too, got {}",
            inferred["errors_by_cause"]
        );
    }

    fn cause(&self, name: &str) -> u64 {
        self.summary["errors_by_cause"][name].as_u64().unwrap_or(0)
    }

    fn failed(&self) -> u64 {
        self.summary["requests"]["failed"]
            .as_u64()
            .unwrap_or_else(|| panic!("no requests.failed:\n{}", self.text))
    }

    fn causes(&self) -> &Value {
        &self.summary["errors_by_cause"]
    }

    /// Every failed request has a cause, none `unexplained`.
    fn assert_all_explained(&self) {
        let by_cause: u64 = self.summary["errors_by_cause"]
            .as_object()
            .unwrap_or_else(|| panic!("no errors_by_cause:\n{}", self.text))
            .values()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(by_cause, self.failed(), "{}", self.text);
        assert_eq!(self.cause("unexplained"), 0, "{}", self.text);
    }

    /// FAIL (exit 1) with failures, all explained, at least 90% of them
    /// attributed to `cause`.
    fn assert_fails_with(&self, cause: &str) {
        assert_eq!(self.code, 1, "must fail:\n{}", self.text);
        assert_eq!(self.summary["verdict"], "fail", "{}", self.text);
        let n = self.failed();
        assert!(n > 0, "{}", self.text);
        self.assert_all_explained();
        assert!(
            self.cause(cause) * 10 >= n * 9,
            "{cause} must dominate, got {}:\n{}",
            self.causes(),
            self.text
        );
        self.assert_inferred_alike(cause);
    }

    /// PASS (exit 0) with no failed or dropped request.
    fn assert_passes(&self) {
        assert_eq!(self.code, 0, "must pass:\n{}", self.text);
        assert_eq!(self.summary["verdict"], "pass", "{}", self.text);
        assert_eq!(self.failed(), 0, "{}", self.text);
        assert_eq!(self.summary["requests"]["dropped"], 0, "{}", self.text);
    }

    /// INCONCLUSIVE (exit 4) because the rollout never completed.
    fn assert_stalled(&self) {
        assert_eq!(self.code, 4, "must be inconclusive:\n{}", self.text);
        assert_eq!(self.summary["verdict"], "inconclusive", "{}", self.text);
        let reasons = self.summary["inconclusive_reasons"].to_string();
        assert!(
            reasons.contains("did not settle"),
            "the stalled rollout is the reason: {reasons}\n{}",
            self.text
        );
    }

    /// The rollout never settled, and requests failed before that: the
    /// verdict stays FAIL (the failures are evidence) and the stall is
    /// listed in `problems`.
    fn assert_failed_and_stalled(&self) {
        assert_eq!(self.code, 1, "must fail:\n{}", self.text);
        let problems = self.summary["problems"].to_string();
        assert!(
            problems.contains("did not settle"),
            "the stalled rollout is listed: {problems}\n{}",
            self.text
        );
    }

    fn events_of(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.events.iter().filter(move |e| e["event"] == kind)
    }

    /// Pods ready before the action started: the old template's.
    fn old_pods(&self) -> BTreeSet<String> {
        let action = self
            .events_of("action_started")
            .filter_map(|e| e["at_us"].as_u64())
            .min()
            .unwrap_or_else(|| panic!("no action_started:\n{}", self.text));
        self.events_of("pod_ready")
            .filter(|e| e["at_us"].as_u64().is_some_and(|t| t < action))
            .filter_map(|e| e["pod"].as_str().map(str::to_string))
            .collect()
    }

    /// The pods named by failed records.
    fn failed_pods(&self) -> BTreeSet<String> {
        let col = |name: &str| {
            self.headers
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("records.csv has no {name} column"))
        };
        let (outcome, pod) = (col("outcome"), col("pod"));
        self.records
            .iter()
            .filter(|r| r.get(outcome).is_some_and(|o| o != "ok"))
            .map(|r| r.get(pod).unwrap_or("").to_string())
            .collect()
    }
}

#[test]
fn every_library_scenario_passes_check() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(library()).expect("read scenarios/embedded") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            names.push(path);
        }
    }
    names.sort();
    assert!(names.len() >= 17, "the library: {names:?}");
    for path in &names {
        let output = Command::new(common::bin())
            .args(["run", "--check"])
            .arg(path)
            .output()
            .expect("run rolltest");
        assert!(
            output.status.success(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The README's table lists every scenario.
    let readme = std::fs::read_to_string(library().join("README.md")).expect("README.md");
    for path in &names {
        let file = path.file_name().and_then(|f| f.to_str()).expect("name");
        assert!(readme.contains(file), "README.md lacks {file}");
    }
}

#[test]
fn prestop_broken_fails_with_endpoint_lag() {
    let run = Run::of("prestop-broken");
    run.assert_fails_with("endpoint_lag");
    // The lint names the missing preStop hook (RT001) before the run.
    assert!(
        run.summary["lint"]
            .as_array()
            .is_some_and(|l| l.iter().any(|f| f["id"] == "RT001")),
        "{}",
        run.summary["lint"]
    );
}

#[test]
fn prestop_fixed_passes() {
    let run = Run::of("prestop-fixed");
    run.assert_passes();
    // The rollout happened under load: the preStop hook ran on old pods.
    assert!(
        run.events_of("pre_stop_started").count() >= 3,
        "{}",
        run.text
    );
}

#[test]

fn grace_broken_fails_with_killed_in_flight() {
    let run = Run::of("grace-broken");
    run.assert_fails_with("killed_in_flight");
    assert!(run.events_of("sigkill_sent").count() >= 1, "{}", run.text);
}

#[test]

fn grace_fixed_passes() {
    let run = Run::of("grace-fixed");
    run.assert_passes();
    assert_eq!(run.events_of("sigkill_sent").count(), 0, "{}", run.text);
}

#[test]
fn sigterm_ignored_fails_with_killed_in_flight() {
    let run = Run::of("sigterm-broken");
    run.assert_fails_with("killed_in_flight");
    // The app ignored SIGTERM: the kubelet had to SIGKILL the old pods.
    assert!(run.events_of("sigkill_sent").count() >= 3, "{}", run.text);
}

#[test]
fn sigterm_drained_passes() {
    let run = Run::of("sigterm-fixed");
    run.assert_passes();
    assert_eq!(run.events_of("sigkill_sent").count(), 0, "{}", run.text);
}

#[test]
fn max_unavailable_broken_fails_with_capacity() {
    let run = Run::of("max-unavailable-broken");
    run.assert_fails_with("capacity");
}

#[test]
fn max_unavailable_fixed_passes() {
    let run = Run::of("max-unavailable-fixed");
    run.assert_passes();
}

#[test]
fn min_ready_broken_fails_once_every_old_pod_is_gone() {
    let run = Run::of("min-ready-broken");
    run.assert_fails_with("not_ready");
    // The rollout completed (the run is not inconclusive) and every old
    // pod was removed before the new ones crashed: the failures are all on
    // pods of the new template.
    let old = run.old_pods();
    assert_eq!(old.len(), 3, "{}", run.text);
    let deleted: BTreeSet<String> = run
        .events_of("deletion_requested")
        .filter_map(|e| e["pod"].as_str().map(str::to_string))
        .collect();
    assert!(old.is_subset(&deleted), "{old:?} {deleted:?}\n{}", run.text);
    assert!(
        run.failed_pods().is_disjoint(&old),
        "{:?}\n{}",
        run.failed_pods(),
        run.text
    );
}

#[test]
fn min_ready_fixed_halts_the_rollout_with_the_old_pods_serving() {
    let run = Run::of("min-ready-fixed");
    run.assert_failed_and_stalled();
    run.assert_all_explained();
    // No old pod was ever removed, so no capacity was lost; the only
    // failures are the one new (surge) pod's when it crashed.
    let old = run.old_pods();
    assert_eq!(old.len(), 3, "{}", run.text);
    assert_eq!(
        run.events_of("deletion_requested").count(),
        0,
        "{}",
        run.text
    );
    assert_eq!(run.cause("capacity"), 0, "{}", run.text);
    let failed = run.failed_pods();
    assert!(failed.len() <= 1, "{failed:?}\n{}", run.text);
    assert!(failed.is_disjoint(&old), "{failed:?}\n{}", run.text);
}

#[test]
fn startup_probe_missing_stalls_the_rollout_with_liveness_restarts() {
    let run = Run::of("startup-probe-broken");
    run.assert_stalled();
    assert_eq!(run.failed(), 0, "{}", run.text);
    // The new pods were killed by the liveness probe and restarted.
    assert!(
        run.events_of("probe_failed")
            .any(|e| e["probe"] == "liveness"),
        "{}",
        run.text
    );
    assert!(
        run.events_of("container_started")
            .any(|e| e["restart_count"].as_u64().unwrap_or(0) >= 1),
        "{}",
        run.text
    );
}

#[test]
fn startup_probe_fixed_passes_without_restart() {
    let run = Run::of("startup-probe-fixed");
    run.assert_passes();
    assert!(
        run.events_of("container_started")
            .all(|e| e["restart_count"].as_u64().unwrap_or(0) == 0),
        "{}",
        run.text
    );
    assert!(
        run.events_of("probe_failed")
            .all(|e| e["probe"] != "liveness"),
        "{}",
        run.text
    );
}

#[test]
fn every_pair_is_in_the_library() {
    for name in [
        "prestop-broken",
        "prestop-fixed",
        "grace-broken",
        "grace-fixed",
        "sigterm-broken",
        "sigterm-fixed",
        "drain-no-pdb",
        "drain-pdb",
        "max-unavailable-broken",
        "max-unavailable-fixed",
        "min-ready-broken",
        "min-ready-fixed",
        "startup-probe-broken",
        "startup-probe-fixed",
        "liveness-broken",
        "liveness-fixed",
        "ready-too-early",
        "keepalive-race-broken",
        "keepalive-race-fixed",
    ] {
        let path = library().join(format!("{name}.toml"));
        assert!(path.exists(), "{}", path.display());
    }
}

impl Run {
    /// Events of `kind` after the first action started.
    fn after_action<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        let action = self
            .events_of("action_started")
            .filter_map(|e| e["at_us"].as_u64())
            .min()
            .unwrap_or_else(|| panic!("no action_started:\n{}", self.text));
        self.events_of(kind)
            .filter(move |e| e["at_us"].as_u64().is_some_and(|t| t > action))
    }
}

/// The liveness pair, run one after the other: the same 2 s db outage
/// fails requests in both (the app cannot serve without db), but with a
/// livenessProbe on the dependency the pods are killed, restarted and held
/// in CrashLoopBackOff, so many more requests fail.
#[test]
fn liveness_on_a_dependency_restarts_and_amplifies_the_outage() {
    let broken = Run::of("liveness-broken");
    let fixed = Run::of("liveness-fixed");
    for run in [&broken, &fixed] {
        assert_eq!(run.code, 1, "must fail:\n{}", run.text);
        assert_eq!(run.summary["verdict"], "fail", "{}", run.text);
        run.assert_all_explained();
        assert!(
            run.cause("not_ready") + run.cause("capacity") == run.failed(),
            "only not_ready / capacity: {}\n{}",
            run.causes(),
            run.text
        );
    }
    // broken: the outage killed and restarted the api pods.
    assert!(
        broken
            .after_action("probe_failed")
            .any(|e| e["probe"] == "liveness"),
        "{}",
        broken.text
    );
    assert!(
        broken
            .after_action("container_started")
            .any(|e| e["restart_count"].as_u64().unwrap_or(0) >= 1),
        "{}",
        broken.text
    );
    // fixed: readiness only, nothing restarted.
    assert!(
        fixed
            .events_of("container_started")
            .all(|e| e["restart_count"].as_u64().unwrap_or(0) == 0),
        "{}",
        fixed.text
    );
    assert!(
        fixed
            .events_of("probe_failed")
            .all(|e| e["probe"] != "liveness"),
        "{}",
        fixed.text
    );
    // The restarts amplify: at least twice the failures.
    let (b, f) = (broken.failed(), fixed.failed());
    println!("liveness pair: broken {b} failed, fixed {f} failed");
    assert!(f > 0, "{}", fixed.text);
    assert!(
        b >= 2 * f,
        "broken {b} vs fixed {f}\n{}\n{}",
        broken.text,
        fixed.text
    );
}

impl Run {
    /// Index of a records.csv column.
    fn col(&self, name: &str) -> usize {
        self.headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("records.csv has no {name} column"))
    }
}

/// keepalive-race-broken: no rollout, no pod exit, and still requests fail:
/// connection resets on keep-alive connections that had already served
/// requests, to the two Ready pods, while the app closed them for idleness.
#[test]
fn keepalive_race_broken_fails_with_resets_on_reused_connections() {
    let run = Run::of("keepalive-race-broken");
    assert_eq!(run.code, 1, "must fail:\n{}", run.text);
    assert_eq!(run.summary["verdict"], "fail", "{}", run.text);
    let n = run.failed();
    println!("keepalive-race-broken: {n} failed, causes {}", run.causes());
    // Measured 26-47 per run (scenarios/embedded/README.md; with a 100 ms
    // close delay a CI run once got 4).
    assert!(n >= 5, "too few races to show: {n}\n{}", run.text);
    assert_eq!(
        run.summary["errors_by_kind"]["connection_reset"].as_u64(),
        Some(n),
        "only resets: {}\n{}",
        run.summary["errors_by_kind"],
        run.text
    );
    run.assert_all_explained();
    // Nothing terminated: no pod exit to blame.
    for kind in ["deletion_requested", "sigterm_sent", "container_exited"] {
        assert_eq!(run.events_of(kind).count(), 0, "{kind}\n{}", run.text);
    }
    // Every failure was on a connection an earlier request had used
    // successfully: a reused keep-alive connection, never a new one.
    let (outcome, conn, intended) = (run.col("outcome"), run.col("conn"), run.col("intended_us"));
    let field = |r: &csv::StringRecord, i: usize| r.get(i).unwrap_or("").to_string();
    for failed in run.records.iter().filter(|r| field(r, outcome) != "ok") {
        let id = field(failed, conn);
        assert!(!id.is_empty(), "{failed:?}");
        let at: u64 = field(failed, intended).parse().expect("intended_us");
        assert!(
            run.records.iter().any(|r| field(r, conn) == id
                && field(r, outcome) == "ok"
                && field(r, intended).parse::<u64>().is_ok_and(|t| t < at)),
            "the first request on its connection: {failed:?}"
        );
    }
    // The cause: a race with the server's idle close, on the pod that
    // served the connection; its evidence gives the idle time, its fix the
    // idle timeouts.
    assert!(
        run.cause("keepalive_race") * 10 >= n * 9,
        "keepalive_race must dominate, got {}:\n{}",
        run.causes(),
        run.text
    );
    let group = run.summary["causes"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["cause"] == "keepalive_race"))
        .expect("a keepalive_race group");
    let evidence = group["evidence"].as_str().unwrap_or("");
    assert!(
        evidence.contains("on reused keep-alive connections to pod")
            && evidence.contains("the pod kept running, Ready, with no exit and no termination"),
        "{evidence}"
    );
    assert!(
        group["fix"].as_str().is_some_and(
            |f| f.starts_with("keep the server's keep-alive idle timeout above the client's")
        ),
        "{}",
        group["fix"]
    );
}

/// keepalive-race-fixed: the app's idle timeout above the client's.
#[test]
fn keepalive_race_fixed_passes() {
    let run = Run::of("keepalive-race-fixed");
    run.assert_passes();
}
