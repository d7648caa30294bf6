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
/// the summary and the combined output. A run inconclusive only on schedule
/// lag (the machine held the generator back) proves nothing about the
/// rollout: it runs again into a fresh DIR, at most
/// three runs in all (`common::timely`).
fn run(scenario: &Path, out: &Path) -> (i32, Value, String) {
    common::timely(
        &scenario.display().to_string(),
        || {
            // A late run's directory goes: `--out` wants a fresh one.
            let _ = std::fs::remove_dir_all(out);
            run_once(scenario, out)
        },
        |(code, summary, text)| (*code, summary, text),
    )
}

fn run_once(scenario: &Path, out: &Path) -> (i32, Value, String) {
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

/// `exact`: the embedded cluster's own records (the proxy names each
/// connection's pod, the kubelet each exit to the instant). Without them
/// (the real-cluster path) an exit is known to its status second, and a
/// reset on a new connection inside that second counts as in flight at the
/// exit: the run may show no `endpoint_lag` at all (measured: 13 failures,
/// all killed_in_flight, seen once in CI), so only the sum is asked.
fn assert_naive(code: i32, summary: &Value, text: &str, exact: bool) {
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
    if exact {
        assert!(cause(summary, "endpoint_lag") > 0, "{text}");
    }
    // The evidence names the pods and the fix.
    let causes = summary["causes"].as_array().expect("causes");
    assert!(
        causes
            .iter()
            .any(|g| g["fix"].as_str().unwrap_or("").contains("preStop")),
        "{causes:?}"
    );
    // Measured propagation (deletion -> slice update, at least; on a cluster
    // whose endpoint controller is in process it may be 0 ms) and the lint's
    // verdict on the manifests.
    let pods = summary["propagation"]["pods"]
        .as_array()
        .expect("propagation pods");
    assert!(!pods.is_empty(), "{text}");
    assert!(
        pods.iter().any(|p| p["slice_us"].as_u64().is_some()),
        "a deleted pod's slice update is measured: {pods:?}"
    );
    assert!(
        summary["propagation"]["max_ms"]
            .as_f64()
            .is_some_and(|m| m >= 0.0),
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
    assert_naive(code, &summary, &text, true);
    // The embedded proxy lags on purpose: deletion -> proxy takes time.
    assert!(
        summary["propagation"]["max_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{text}"
    );
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
    assert_report_rebuilds(&out, || {
        let rebuilt = Command::new(common::bin())
            .arg("report")
            .arg(&out)
            .output()
            .expect("report");
        assert_eq!(rebuilt.status.code(), Some(1));
    });
}

/// `rebuild` (a `rolltest report` of the run directory `out`) writes
/// summary.json and report.html again, byte for byte as the run wrote them.
fn assert_report_rebuilds(out: &Path, rebuild: impl FnOnce()) {
    let report = std::fs::read(out.join("report.html")).expect("report");
    let before = std::fs::read(out.join("summary.json")).expect("summary");
    std::fs::remove_file(out.join("report.html")).expect("rm");
    std::fs::remove_file(out.join("summary.json")).expect("rm");
    rebuild();
    assert_eq!(
        std::fs::read(out.join("summary.json")).expect("summary"),
        before
    );
    assert_eq!(
        std::fs::read(out.join("report.html")).expect("report"),
        report
    );
}

/// `scenarios/embedded/naive.toml` with another `proxy`, written in `dir`
/// (the manifests by absolute path).
fn naive_through(dir: &Path, proxy: &str) -> PathBuf {
    let embedded = repo().join("scenarios/embedded");
    let text = std::fs::read_to_string(embedded.join("naive.toml")).expect("naive.toml");
    let text = text
        .replace("proxy = \"l7\"", &format!("proxy = \"{proxy}\""))
        .replace("\"naive/", &format!("\"{}/naive/", embedded.display()));
    assert!(text.contains(&format!("proxy = \"{proxy}\"")));
    let path = dir.join(format!("naive-{proxy}.toml"));
    std::fs::write(&path, text).expect("write scenario");
    path
}

fn median_propagation_ms(summary: &Value) -> f64 {
    summary["propagation"]["median_ms"].as_f64().unwrap_or(0.0)
}

/// The same naive rollout through plain l7 and through ingress-nginx: the
/// ingress retries (requests that succeed only after a retry, requests that
/// fail after 3 tries, each try in records.csv and the report), and its sync
/// rate limit keeps dead pods in its view longer. Fewer failures is not
/// asserted: the longer view usually outweighs the retries (see the printed
/// figures and README's ingress-nginx section).
#[test]
fn naive_through_ingress_nginx_shows_its_retries_and_its_slower_endpoint_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l7_out, nginx_out) = (dir.path().join("l7"), dir.path().join("nginx"));
    let (l7_code, l7, l7_text) = run(&naive_through(dir.path(), "l7"), &l7_out);
    let (code, nginx, text) = run(&naive_through(dir.path(), "ingress-nginx"), &nginx_out);
    let retries = &nginx["retries"];
    println!(
        "naive rollout, same scenario: l7 {} failed (exit {l7_code}), deletion -> proxy median {} ms; \
         ingress-nginx {} failed (exit {code}), deletion -> proxy median {} ms, {} retried: \
         {} ok after a retry, {} failed after retries {}, failed tries {}",
        failed(&l7),
        median_propagation_ms(&l7),
        failed(&nginx),
        median_propagation_ms(&nginx),
        retries["retried"],
        retries["ok_after_retry"],
        retries["failed_after_retry"],
        retries["failed_by_tries"],
        retries["failed_tries_by_error"],
    );
    assert_eq!(l7_code, 1, "{l7_text}");
    assert!(failed(&l7) > 0, "{l7_text}");
    assert!(
        l7.get("retries").is_none(),
        "plain l7 never retries: {l7_text}"
    );
    assert_eq!(code, 1, "naive fails through ingress-nginx too:\n{text}");
    assert_eq!(nginx["requests"]["dropped"], 0, "{text}");
    assert!(
        retries["ok_after_retry"].as_u64().unwrap_or(0) > 0,
        "the ingress hid failures by retrying: {text}"
    );
    assert!(
        retries["failed_by_tries"]["3"].as_u64().unwrap_or(0) > 0,
        "some requests failed after 3 tries: {text}"
    );
    assert!(
        retries["failed_tries_by_error"]["connect_refused"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{text}"
    );
    assert!(
        text.contains("ingress retries: ") && text.contains("succeeded only after a retry"),
        "{text}"
    );
    // The sync rate limit (at most one sync per 3.3 s, then the workers'
    // 1 s timer) comes on top of the same propagation delay.
    assert!(
        median_propagation_ms(&nginx) >= median_propagation_ms(&l7),
        "ingress-nginx applies endpoint changes later: {} vs {} ms",
        median_propagation_ms(&nginx),
        median_propagation_ms(&l7)
    );
    let records = std::fs::read_to_string(nginx_out.join("records.csv")).expect("records");
    assert!(
        records.lines().any(|l| l.contains(":connect_refused")),
        "records.csv names the failed tries"
    );
    let report = std::fs::read_to_string(nginx_out.join("report.html")).expect("report");
    assert!(report.contains("<h2>Ingress retries</h2>"));
    assert!(
        report.contains(": connect_refused → "),
        "the retried requests' tries are listed"
    );
    assert_report_rebuilds(&nginx_out, || {
        let rebuilt = Command::new(common::bin())
            .arg("report")
            .arg(&nginx_out)
            .output()
            .expect("report");
        assert_eq!(rebuilt.status.code(), Some(code));
    });
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
            assert_naive(code, &summary, &text, false);
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

/// Runs `rolltest ARGS` in `cwd` with `$KUBECONFIG` set to `kubeconfig_env`;
/// returns the exit code and the combined output.
fn rolltest_in(cwd: &Path, kubeconfig_env: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(common::bin())
        .current_dir(cwd)
        .env("KUBECONFIG", kubeconfig_env)
        .args(args)
        .output()
        .expect("run rolltest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// kubectl's flags choose the cluster, not the scenario's [cluster]: against
/// `rolltest cluster up` (whose kubeconfig's current context is
/// `rolltest-embedded`, client certificate, and whose second context is
/// `rolltest-embedded-token`):
/// - a kind-style scenario (`context = "kind-rolltest"`, kubeconfig from the
///   environment, here a file that does not exist) run with `--kubeconfig
///   kubeconfig` (relative to the current directory, not to the scenario's
///   folder), `--context rolltest-embedded-token` and `-n flags-a`;
/// - with `--kubeconfig` alone the scenario's context still applies, which
///   that kubeconfig lacks: exit 2 listing the contexts it has;
/// - an embedded scenario with a `[target] url` run with `--context
///   rolltest-embedded-token -n flags-b`, the kubeconfig from `$KUBECONFIG`
///   like kubectl, runs on that cluster in mode kubeconfig.
///
/// Each applies its Deployment in the flags' namespace of that cluster,
/// serves from its pods, and records the context, server and flags in
/// run.json; `rolltest report` rebuilds the run byte for byte.
#[test]
fn kubectl_flags_choose_the_cluster_context_and_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = ClusterUp::start(dir.path());
    let kubeconfig_text = std::fs::read_to_string(&cluster.kubeconfig).expect("kubeconfig");
    let server = kubeconfig_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server")
        .trim_end_matches('/')
        .to_string();
    let service = dir.path().join("service.yaml");
    let service_arg = service.display().to_string();
    std::fs::write(&service, SMALL_SERVICE).expect("service");
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir(&scenarios).expect("mkdir");
    std::fs::write(scenarios.join("deployment.yaml"), SMALL_DEPLOYMENT).expect("deployment");
    let no_kubeconfig = dir.path().join("no-such-kubeconfig");
    let absolute_kubeconfig = cluster.kubeconfig.display().to_string();

    for (name, namespace, scenario_mode) in [
        ("kind-style", "flags-a", "kubeconfig"),
        ("embedded", "flags-b", "embedded"),
    ] {
        // (`kubectl create namespace` sends protobuf, which the embedded API
        // server does not read: apply a manifest instead.)
        let ns = dir.path().join(format!("{namespace}.yaml"));
        std::fs::write(
            &ns,
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n"),
        )
        .expect("namespace");
        cluster.kubectl(&["apply", "-f", &ns.display().to_string()]);
        cluster.kubectl(&["apply", "-n", namespace, "-f", &service_arg]);
        let ip = cluster.kubectl(&[
            "get",
            "service",
            "api",
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        let cluster_toml = if scenario_mode == "kubeconfig" {
            "mode = \"kubeconfig\"\ncontext = \"kind-rolltest\"\n"
        } else {
            "mode = \"embedded\"\n"
        };
        let embedded_toml = if scenario_mode == "embedded" {
            "[cluster.embedded]\nproxy = \"l7\"\nnodes = 3\n"
        } else {
            ""
        };
        // What is under test is which cluster, context and namespace the
        // run took, not the generator's timing: some 50 requests give a p99 that
        // is their worst, so one scheduling hiccup of a loaded machine would
        // make the run inconclusive; the lag limit is loose here.
        let text = format!(
            "# {name}\nname = \"flags-{name}\"\n[target]\nurl = \"http://{}:80/\"\nservice = \"api\"\n[load]\nrate = 20\nduration = \"2s\"\n[cluster]\n{cluster_toml}manifests = [\"deployment.yaml\"]\nready_timeout = \"30s\"\ntail = \"500ms\"\n{embedded_toml}[verdict]\nmax_failed = 0\nmax_schedule_lag_p99_ms = 250\n",
            ip.trim()
        );
        let scenario = scenarios.join(format!("{name}.toml"));
        std::fs::write(&scenario, &text).expect("scenario");
        let scenario_arg = format!("scenarios/{name}.toml");
        let out = dir.path().join(format!("run-{name}"));
        let out_arg = out.display().to_string();
        let mut args = vec![
            "run",
            scenario_arg.as_str(),
            "--out",
            out_arg.as_str(),
            "--quiet",
        ];
        let env_kubeconfig = if scenario_mode == "kubeconfig" {
            // The scenario's context with the flag's kubeconfig alone: that
            // kubeconfig has no such context.
            let (code, text) = rolltest_in(
                dir.path(),
                &no_kubeconfig,
                &[
                    "run",
                    &scenario_arg,
                    "--out",
                    &format!("{out_arg}-no-context"),
                    "--kubeconfig",
                    "kubeconfig",
                ],
            );
            assert_eq!(code, 2, "{text}");
            assert!(
                text.contains("context \"kind-rolltest\" is not in the kubeconfig")
                    && text.contains("rolltest-embedded-token"),
                "{text}"
            );
            args.extend(["--kubeconfig", "kubeconfig"]);
            no_kubeconfig.clone()
        } else {
            cluster.kubeconfig.clone()
        };
        args.extend(["--context", "rolltest-embedded-token", "-n", namespace]);
        let (code, output) = rolltest_in(dir.path(), &env_kubeconfig, &args);
        assert_eq!(code, 0, "{args:?}:\n{output}");

        let summary = json(&out.join("summary.json"));
        assert_eq!(failed(&summary), 0, "{output}");
        let pods = summary["pods"].as_object().expect("pods");
        assert!(
            !pods.is_empty() && pods.keys().all(|p| p.starts_with("api-")),
            "{pods:?}"
        );
        let facts = json(&out.join("run.json"));
        let c = &facts["cluster"];
        assert_eq!(c["mode"], "kubeconfig", "{c}");
        assert_eq!(c["proxy"], "external", "{c}");
        assert_eq!(c["namespace"], namespace, "{c}");
        assert_eq!(c["context"], "rolltest-embedded-token", "{c}");
        assert_eq!(c["server"], server.as_str(), "{c}");
        assert_eq!(c["overrides"]["context"], "rolltest-embedded-token", "{c}");
        assert_eq!(c["overrides"]["namespace"], namespace, "{c}");
        assert_eq!(c["overrides"]["scenario_mode"], scenario_mode, "{c}");
        if scenario_mode == "kubeconfig" {
            assert_eq!(
                c["overrides"]["kubeconfig"],
                absolute_kubeconfig.as_str(),
                "{c}"
            );
            assert_eq!(c["kubeconfig"], absolute_kubeconfig.as_str(), "{c}");
        } else {
            assert!(c["overrides"].get("kubeconfig").is_none(), "{c}");
            assert!(
                c["kubeconfig"]
                    .as_str()
                    .is_some_and(|k| k.contains("$KUBECONFIG")),
                "{c}"
            );
        }
        // The Deployment went to the flags' namespace of that cluster.
        let applied = cluster.kubectl(&["get", "deployments", "-n", namespace, "-o", "name"]);
        assert_eq!(applied.trim(), "deployment.apps/api", "{output}");
        // scenario.toml: the file as written, under a comment naming the flags.
        let saved = std::fs::read_to_string(out.join("scenario.toml")).expect("scenario.toml");
        let header = saved.strip_suffix(text.as_str()).expect("the file follows");
        assert!(
            header.starts_with("# Run with `rolltest run ")
                && header.contains(&format!(
                    "--context rolltest-embedded-token -n {namespace}`"
                )),
            "{header}"
        );
        // `rolltest report` rebuilds the same summary and report from it.
        assert_report_rebuilds(&out, || {
            let (code, text) = rolltest_in(dir.path(), &no_kubeconfig, &["report", &out_arg]);
            assert_eq!(code, 0, "{text}");
        });
    }
    let default = cluster.kubectl(&["get", "deployments", "-n", "default", "-o", "name"]);
    assert!(default.trim().is_empty(), "{default}");
}
