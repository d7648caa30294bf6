//! Rollouts under load, end to end, through the built binary: the scenarios
//! of `scenarios/embedded/` give the verdict and the dominant causes their
//! comments promise, and the same rollouts through `mode = "kubeconfig"`
//! against `rolltest cluster up` (the real-cluster path) agree.
//!
//! Each run takes 15-30 s of wall time (a real rollout with real delays);
//! the runs of this file go two at a time.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `rolltest run SCENARIO --out DIR --quiet`; returns the exit code,
/// the summary and the combined output.
fn run(scenario: &Path, out: &Path) -> (i32, Value, String) {
    let output = Command::new(common::bin())
        .arg("run")
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .output()
        .expect("run rolltest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = std::fs::read_to_string(out.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), summary, text)
}

fn cause(summary: &Value, name: &str) -> u64 {
    summary["errors_by_cause"][name].as_u64().unwrap_or(0)
}

fn failed(summary: &Value) -> u64 {
    summary["requests"]["failed"]
        .as_u64()
        .expect("requests.failed")
}

/// Every failed request has a cause, none of them `unexplained`, and the
/// causes' counts add up.
fn assert_all_explained(summary: &Value, text: &str) {
    let by_cause: u64 = summary["errors_by_cause"]
        .as_object()
        .expect("errors_by_cause")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(by_cause, failed(summary), "{text}");
    assert_eq!(cause(summary, "unexplained"), 0, "{text}");
}

fn assert_naive(code: i32, summary: &Value, text: &str) {
    assert_eq!(code, 1, "naive must fail:\n{text}");
    let n = failed(summary);
    assert!(n > 0, "{text}");
    assert_all_explained(summary, text);
    let lag_or_killed = cause(summary, "endpoint_lag") + cause(summary, "killed_in_flight");
    assert!(
        lag_or_killed * 10 >= n * 9,
        "mostly endpoint_lag and killed_in_flight, got {}:\n{text}",
        summary["errors_by_cause"]
    );
    assert!(cause(summary, "endpoint_lag") > 0, "{text}");
    // The evidence names the pods and the fix.
    let causes = summary["causes"].as_array().expect("causes");
    assert!(
        causes
            .iter()
            .any(|g| g["fix"].as_str().unwrap_or("").contains("preStop")),
        "{causes:?}"
    );
    // Measured propagation and the lint's verdict on the manifests.
    assert!(
        summary["propagation"]["max_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(
        summary["lint"]
            .as_array()
            .expect("lint")
            .iter()
            .any(|f| f["id"] == "RT001"),
        "the lint flags the missing preStop: {}",
        summary["lint"]
    );
}

fn assert_fixed(code: i32, summary: &Value, text: &str) {
    assert_eq!(code, 0, "fixed must pass:\n{text}");
    assert_eq!(failed(summary), 0, "{text}");
    assert_eq!(summary["requests"]["dropped"], 0, "{text}");
    // The rollout really happened while the load ran: pods of the old and of
    // the new ReplicaSet (`api-<template hash>-<suffix>`) both served.
    let pods = summary["pods"].as_object().expect("pods");
    let hashes: std::collections::BTreeSet<&str> = pods
        .keys()
        .filter_map(|p| p.rsplit_once('-').map(|(rs, _)| rs))
        .collect();
    assert_eq!(hashes.len(), 2, "old and new pods served: {pods:?}");
}

#[test]
fn naive_rollout_fails_with_lag_and_killed_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let (code, summary, text) = run(&repo().join("scenarios/embedded/naive.toml"), &out);
    assert_naive(code, &summary, &text);
    // The run directory is complete and its report rebuilds identically.
    for f in [
        "records.csv",
        "timeline.json",
        "report.html",
        "run.json",
        "scenario.toml",
        "kubeconfig",
        "manifests/deployment.yaml",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let timeline: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("timeline.json")).expect("read"))
            .expect("timeline is JSON");
    let events = timeline["events"].as_array().expect("events");
    for kind in [
        "action_started",
        "deletion_requested",
        "sigterm_sent",
        "container_exited",
        "endpoint_changed",
        "proxy_applied",
        "pod_ready",
    ] {
        assert!(events.iter().any(|e| e["event"] == kind), "no {kind}");
    }
    let report = std::fs::read_to_string(out.join("report.html")).expect("report");
    let before = std::fs::read_to_string(out.join("summary.json")).expect("summary");
    let rebuilt = Command::new(common::bin())
        .arg("report")
        .arg(&out)
        .output()
        .expect("report");
    assert_eq!(rebuilt.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(out.join("summary.json")).expect("summary"),
        before
    );
    assert_eq!(
        std::fs::read_to_string(out.join("report.html")).expect("report"),
        report
    );
}

#[test]
fn fixed_rollout_passes_with_no_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let (code, summary, text) = run(&repo().join("scenarios/embedded/fixed.toml"), &out);
    assert_fixed(code, &summary, &text);
}

#[test]
fn drain_fails_without_a_pdb_and_passes_with_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, summary, text) = run(
        &repo().join("scenarios/embedded/drain-no-pdb.toml"),
        &dir.path().join("no-pdb"),
    );
    assert_eq!(code, 1, "{text}");
    assert_all_explained(&summary, &text);
    assert!(
        cause(&summary, "capacity") * 2 > failed(&summary),
        "capacity dominates: {}\n{text}",
        summary["errors_by_cause"]
    );
    let (code, summary, text) = run(
        &repo().join("scenarios/embedded/drain-pdb.toml"),
        &dir.path().join("pdb"),
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(failed(&summary), 0, "{text}");
}

#[test]
fn ready_too_early_shows_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, summary, text) = run(
        &repo().join("scenarios/embedded/ready-too-early.toml"),
        &dir.path().join("run"),
    );
    assert_eq!(code, 1, "{text}");
    assert_all_explained(&summary, &text);
    assert!(
        cause(&summary, "not_ready") * 10 >= failed(&summary) * 9,
        "not_ready dominates: {}\n{text}",
        summary["errors_by_cause"]
    );
}

/// `rolltest cluster up` in the background; killed (with its pods) on drop.
struct ClusterUp {
    child: Child,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl ClusterUp {
    fn start(dir: &Path) -> ClusterUp {
        let kubeconfig = dir.join("kubeconfig");
        let mut child = Command::new(common::bin())
            .args([
                "cluster",
                "up",
                "--endpoint-propagation",
                "1s..2s",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cluster up");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let up = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(up.contains("embedded cluster up"), "{up}");
        std::thread::spawn(move || for _ in lines {});
        ClusterUp {
            child,
            kubeconfig,
            cache: dir.join("kubectl-cache"),
        }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for ClusterUp {
    fn drop(&mut self) {
        // SIGINT, like Ctrl-C: the cluster stops its pods and exits.
        // SAFETY: kill takes a pid and a signal number.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The embedded scenario rewritten for `mode = "kubeconfig"`: the same
/// manifests (minus the Service, which the test created to learn its
/// address), the load to that address, the Service named for the watches.
fn kubeconfig_scenario(dir: &Path, name: &str, cluster: &ClusterUp, url: &str) -> PathBuf {
    let embedded = repo().join(format!("scenarios/embedded/{name}.toml"));
    let text = std::fs::read_to_string(&embedded).expect("scenario");
    let manifests_dir = repo().join("scenarios/embedded");
    let mut out = String::new();
    let mut skip_table = false;
    for line in text.lines() {
        if line.starts_with('[') {
            skip_table = line == "[cluster.embedded]" || line == "[target]";
        }
        if skip_table {
            continue;
        }
        if line.starts_with("mode = ") {
            out.push_str(&format!(
                "mode = \"kubeconfig\"\nkubeconfig = {:?}\n",
                cluster.kubeconfig.display().to_string()
            ));
        } else if line.starts_with("manifests = ") {
            out.push_str(&format!(
                "manifests = [{:?}]\n",
                manifests_dir
                    .join(format!("{name}/deployment.yaml"))
                    .display()
                    .to_string()
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!("[target]\nurl = \"{url}\"\nservice = \"api\"\n"));
    let path = dir.join(format!("{name}-kubeconfig.toml"));
    std::fs::write(&path, out).expect("write scenario");
    path
}

/// The real-cluster path: a kubeconfig with a CA, a client certificate and a
/// token, kube-rs over HTTPS, External attribution (no proxy records: pods
/// from the response header and time windows).
#[test]
fn naive_and_fixed_through_a_kubeconfig_against_cluster_up() {
    for (name, naive) in [("naive", true), ("fixed", false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = ClusterUp::start(dir.path());
        let service = dir.path().join("service.yaml");
        std::fs::write(
            &service,
            "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec:\n  selector: {app: api}\n  ports: [{port: 80, targetPort: 8080}]\n",
        )
        .expect("service");
        cluster.kubectl(&["apply", "-f", service.to_str().expect("path")]);
        let ip = cluster.kubectl(&["get", "service", "api", "-o", "jsonpath={.spec.clusterIP}"]);
        let scenario = kubeconfig_scenario(
            dir.path(),
            name,
            &cluster,
            &format!("http://{}:80/", ip.trim()),
        );
        let (code, summary, text) = run(&scenario, &dir.path().join("run"));
        let run_json: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("run/run.json")).expect("run.json"),
        )
        .expect("json");
        assert_eq!(run_json["cluster"]["mode"], "kubeconfig", "{text}");
        assert_eq!(run_json["cluster"]["proxy"], "external", "{text}");
        if naive {
            assert_naive(code, &summary, &text);
        } else {
            assert_fixed(code, &summary, &text);
        }
    }
}

/// A drain a PodDisruptionBudget blocks for good (minAvailable = replicas)
/// fails once its timeout passes: the run lists the failure in `problems`
/// and, having no failed request, is inconclusive (exit 4), never a pass;
/// and `teardown = true` deletes what was applied and uncordons the node the
/// failed drain left cordoned.
#[test]
fn a_drain_blocked_for_good_is_inconclusive_and_teardown_uncordons_its_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = ClusterUp::start(dir.path());
    let service = dir.path().join("service.yaml");
    std::fs::write(
        &service,
        "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec:\n  selector: {app: api}\n  ports: [{port: 80, targetPort: 8080}]\n",
    )
    .expect("service");
    cluster.kubectl(&["apply", "-f", service.to_str().expect("path")]);
    let ip = cluster.kubectl(&["get", "service", "api", "-o", "jsonpath={.spec.clusterIP}"]);
    let pdb = dir.path().join("pdb.yaml");
    std::fs::write(
        &pdb,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: api}\nspec:\n  minAvailable: 2\n  selector: {matchLabels: {app: api}}\n",
    )
    .expect("pdb");
    let deployment = repo().join("scenarios/embedded/drain/deployment.yaml");
    let scenario = dir.path().join("blocked.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"blocked-drain\"\n[target]\nurl = \"http://{}:80/\"\nservice = \"api\"\n[load]\nrate = 50\nduration = \"6s\"\n[cluster]\nmode = \"kubeconfig\"\nkubeconfig = {:?}\nmanifests = [{:?}, {:?}]\nteardown = true\ntail = \"1s\"\n[[actions]]\nat = \"1s\"\ndo = \"drain-node\"\nnode = \"embedded-node-1\"\ntimeout = \"3s\"\n",
            ip.trim(),
            cluster.kubeconfig.display().to_string(),
            deployment.display().to_string(),
            pdb.display().to_string(),
        ),
    )
    .expect("scenario");
    let (code, summary, text) = run(&scenario, &dir.path().join("run"));
    assert_eq!(code, 4, "{text}");
    assert_eq!(failed(&summary), 0, "{text}");
    let problems = summary["problems"].to_string();
    assert!(
        problems.contains("drain-node") && problems.contains("failed"),
        "{problems}\n{text}"
    );
    let unschedulable = cluster.kubectl(&[
        "get",
        "node",
        "embedded-node-1",
        "-o",
        "jsonpath={.spec.unschedulable}",
    ]);
    assert_ne!(
        unschedulable.trim(),
        "true",
        "the node stayed cordoned\n{text}"
    );
    let left = cluster.kubectl(&["get", "deployments", "-o", "name"]);
    assert!(left.trim().is_empty(), "teardown left {left}\n{text}");
}

/// Two replicas of the demo app with a readiness probe: quick to roll out.
const SMALL_DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, labels: {app: api}}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec:\n      containers:\n      - name: api\n        image: rolltest-demo:v1\n        ports: [{containerPort: 8080}]\n        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}\n";

/// A ClusterIP Service for [`SMALL_DEPLOYMENT`].
const SMALL_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec:\n  selector: {app: api}\n  ports: [{port: 80, targetPort: 8080}]\n";

/// An embedded scenario's `namespace`: the embedded cluster starts with
/// only `default` and the `kube-*` namespaces, so rolltest creates the
/// scenario's before applying (the apply used to fail: namespaces "demo"
/// not found).
#[test]
fn an_embedded_scenario_runs_in_its_own_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("deployment.yaml"), SMALL_DEPLOYMENT).expect("deployment");
    std::fs::write(dir.path().join("service.yaml"), SMALL_SERVICE).expect("service");
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        "name = \"embedded-namespace\"\n[target]\npath = \"/\"\n[load]\nrate = 20\nduration = \"2s\"\n[cluster]\nmode = \"embedded\"\nnamespace = \"demo\"\nmanifests = [\"deployment.yaml\", \"service.yaml\"]\ntail = \"500ms\"\n",
    )
    .expect("scenario");
    let out = dir.path().join("run");
    let (code, summary, text) = run(&scenario, &out);
    assert_eq!(code, 0, "{text}");
    assert_eq!(failed(&summary), 0, "{text}");
    let facts: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).expect("run.json"))
            .expect("json");
    assert_eq!(facts["cluster"]["mode"], "embedded", "{text}");
    assert_eq!(facts["cluster"]["namespace"], "demo", "{text}");
}
