//! `rolltest lint`: each rule on a variation of the production-grade fixture,
//! the naive fixture hitting every knob, and the command's formats and exit
//! codes through the built binary.

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use rolltest::{
    lint::{self, LintOptions, PropagationSource},
    manifest::{self, Manifest},
};
use rolltest_core::model::{Finding, Severity};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lint")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

const DEPLOY: &str = "production/deployment.yaml";
const PDB: &str = "production/pdb.yaml";
const SVC: &str = "production/service.yaml";

/// Lints named texts together with default options.
fn lint_texts(texts: &[(&str, &str)]) -> Vec<Finding> {
    lint_with(texts, &LintOptions::default())
}

fn lint_with(texts: &[(&str, &str)], opts: &LintOptions) -> Vec<Finding> {
    let manifests: Vec<Manifest> = texts
        .iter()
        .flat_map(|(file, text)| manifest::parse(text, file).unwrap())
        .collect();
    lint::lint(&manifests, opts)
}

/// The production deployment with one edit, linted with its PDB and Service.
fn production_with(from: &str, to: &str) -> Vec<Finding> {
    let deploy = read(DEPLOY);
    assert!(deploy.contains(from), "fixture lacks {from:?}");
    let deploy = deploy.replacen(from, to, 1);
    lint_texts(&[(DEPLOY, &deploy), (PDB, &read(PDB)), (SVC, &read(SVC))])
}

/// IDs of findings at warning or error.
fn problems(findings: &[Finding]) -> BTreeSet<String> {
    findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .map(|f| f.id.clone())
        .collect()
}

fn ids(findings: &[Finding]) -> BTreeSet<String> {
    findings.iter().map(|f| f.id.clone()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn find<'a>(findings: &'a [Finding], id: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no {id} in {findings:#?}"))
}

#[test]
fn production_grade_lints_clean_across_files() {
    let manifests: Vec<Manifest> = [DEPLOY, PDB, SVC]
        .iter()
        .flat_map(|f| manifest::load_file(&fixture(f)).unwrap())
        .collect();
    let findings = lint::lint(&manifests, &LintOptions::default());
    assert_eq!(problems(&findings), set(&[]), "{findings:#?}");
    // Only the probe timing note.
    assert_eq!(ids(&findings), set(&["RT019"]));
    let f = find(&findings, "RT019");
    assert!(f.message.contains("after 10 s (5 s × 2)"), "{}", f.message);
    assert!(f.message.contains("after 90 s (30 s × 3)"), "{}", f.message);
    assert!(!lint::has_errors(&findings));
}

#[test]
fn naive_hits_every_knob() {
    let findings = lint_texts(&[("naive.yaml", &read("naive.yaml"))]);
    assert_eq!(
        ids(&findings),
        set(&[
            "RT001", "RT006", "RT007", "RT011", "RT015", "RT017", "RT018", "RT019"
        ]),
        "{findings:#?}"
    );
    // preStop, grace period, PDB, strategy, probes: each knob has a finding.
    let knob = |id: &str| lint::rule(id).unwrap().knob;
    let knobs: BTreeSet<&str> = findings.iter().map(|f| knob(&f.id)).collect();
    for k in ["preStop", "grace period", "PDB", "strategy", "probes"] {
        assert!(knobs.contains(k), "{k} missing from {knobs:?}");
    }
    assert!(lint::has_errors(&findings));
    // Sorted by file, line, id.
    let lines: Vec<usize> = findings.iter().map(|f| f.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn findings_carry_lines_paths_objects_and_text() {
    let findings = lint_texts(&[("naive.yaml", &read("naive.yaml"))]);
    let f = find(&findings, "RT001");
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.file, "naive.yaml");
    assert_eq!(f.path, "spec.template.spec.containers[0].lifecycle.preStop");
    assert_eq!(f.line, 17, "missing preStop points at its container");
    assert_eq!(f.object, "Deployment/api");
    assert!(!f.why.is_empty() && !f.fix.is_empty());
    assert_eq!(find(&findings, "RT018").line, 26);
    assert_eq!(
        find(&findings, "RT017").line,
        25,
        "initialDelaySeconds of the readiness probe"
    );
    assert_eq!(find(&findings, "RT011").line, 6, "missing strategy: spec");
    assert_eq!(find(&findings, "RT007").line, 13, "the pod labels");
}

#[test]
fn rt001_missing_pre_stop() {
    let f = production_with(
        "          lifecycle:\n            preStop:\n              exec:\n                command: [\"sleep\", \"15\"]\n",
        "",
    );
    assert_eq!(problems(&f), set(&["RT001"]), "{f:#?}");
    assert_eq!(find(&f, "RT001").line, 26);
}

#[test]
fn rt002_short_pre_stop_is_a_warning_by_default_and_an_error_when_measured() {
    let f = production_with("[\"sleep\", \"15\"]", "[\"sleep\", \"3\"]");
    assert_eq!(problems(&f), set(&["RT002"]));
    let rt002 = find(&f, "RT002");
    assert_eq!(rt002.severity, Severity::Warning);
    assert_eq!(rt002.line, 34);
    assert!(rt002.path.ends_with("lifecycle.preStop.exec.command"));

    let deploy = read(DEPLOY);
    let texts = [
        (DEPLOY, deploy.as_str()),
        (PDB, &read(PDB)),
        (SVC, &read(SVC)),
    ];
    let measured = LintOptions {
        propagation: Duration::from_secs(20),
        propagation_source: PropagationSource::Run("reports/x".into()),
        ..LintOptions::default()
    };
    let f = lint_with(&texts, &measured);
    let rt002 = find(&f, "RT002");
    assert_eq!(rt002.severity, Severity::Error);
    assert!(
        rt002.message.contains("measured in reports/x"),
        "{}",
        rt002.message
    );
    let given = LintOptions {
        propagation: Duration::from_secs(3),
        propagation_source: PropagationSource::Flag,
        ..LintOptions::default()
    };
    assert_eq!(problems(&lint_with(&texts, &given)), set(&[]));
}

#[test]
fn pre_stop_forms_shell_and_sleep_action() {
    let f = production_with("[\"sleep\", \"15\"]", "[\"/bin/sh\", \"-c\", \"sleep 5\"]");
    assert_eq!(problems(&f), set(&[]), "{f:#?}");
    let f = production_with(
        "              exec:\n                command: [\"sleep\", \"15\"]\n",
        "              sleep:\n                seconds: 15\n",
    );
    assert_eq!(problems(&f), set(&[]), "{f:#?}");
}

#[test]
fn rt003_http_pre_stop_has_unknown_duration() {
    let f = production_with(
        "              exec:\n                command: [\"sleep\", \"15\"]\n",
        "              httpGet:\n                path: /drain\n                port: http\n",
    );
    assert_eq!(problems(&f), set(&[]));
    assert_eq!(find(&f, "RT003").severity, Severity::Info);
}

#[test]
fn rt004_sleep_action_beyond_the_grace_period() {
    let f = production_with(
        "              exec:\n                command: [\"sleep\", \"15\"]\n",
        "              sleep:\n                seconds: 90\n",
    );
    assert_eq!(problems(&f), set(&["RT004", "RT005"]), "{f:#?}");
    assert_eq!(
        find(&f, "RT004").path,
        "spec.template.spec.containers[0].lifecycle.preStop.sleep.seconds"
    );
    assert_eq!(find(&f, "RT004").line, 34);
    let f = production_with(
        "              exec:\n                command: [\"sleep\", \"15\"]\n",
        "              sleep:\n                seconds: 0\n",
    );
    assert!(problems(&f).contains("RT004"), "{f:#?}");
}

#[test]
fn rt005_grace_shorter_than_pre_stop_plus_drain() {
    let f = production_with(
        "terminationGracePeriodSeconds: 60",
        "terminationGracePeriodSeconds: 18",
    );
    assert_eq!(problems(&f), set(&["RT005"]));
    let rt005 = find(&f, "RT005");
    assert_eq!(rt005.line, 24);
    assert!(
        rt005.message.contains("18 < preStop 15 s + drain 5 s"),
        "{}",
        rt005.message
    );
    // The drain time is an option.
    let deploy = read(DEPLOY).replace(
        "terminationGracePeriodSeconds: 60",
        "terminationGracePeriodSeconds: 18",
    );
    let short_drain = LintOptions {
        drain: Duration::from_secs(2),
        ..LintOptions::default()
    };
    let f = lint_with(&[(DEPLOY, &deploy), (PDB, &read(PDB))], &short_drain);
    assert_eq!(problems(&f), set(&[]), "{f:#?}");
}

#[test]
fn rt006_default_grace_is_noted() {
    let f = production_with("      terminationGracePeriodSeconds: 60\n", "");
    assert_eq!(problems(&f), set(&[]));
    assert_eq!(find(&f, "RT006").severity, Severity::Info);
    // The 30 s default cannot hold a 30 s sleep plus the drain.
    let deploy = read(DEPLOY)
        .replace("      terminationGracePeriodSeconds: 60\n", "")
        .replace("[\"sleep\", \"15\"]", "[\"sleep\", \"30\"]");
    let f = lint_texts(&[(DEPLOY, &deploy), (PDB, &read(PDB))]);
    assert_eq!(problems(&f), set(&["RT005"]));
}

#[test]
fn rt007_no_pdb() {
    let f = lint_texts(&[(DEPLOY, &read(DEPLOY)), (SVC, &read(SVC))]);
    assert_eq!(problems(&f), set(&["RT007"]));
    assert!(find(&f, "RT007").fix.contains("app: api"));
}

#[test]
fn rt008_pdb_blocking_drains() {
    let pdb = read(PDB);
    for (from, to) in [
        ("minAvailable: 2", "minAvailable: 6"),
        ("minAvailable: 2", "minAvailable: 100%"),
        ("minAvailable: 2", "minAvailable: 90%"), // ceil(5.4) = 6
        ("minAvailable: 2", "maxUnavailable: 0"),
        ("minAvailable: 2", "maxUnavailable: 0%"),
    ] {
        let p = pdb.replace(from, to);
        let f = lint_texts(&[(DEPLOY, &read(DEPLOY)), (PDB, &p)]);
        assert_eq!(problems(&f), set(&["RT008"]), "{to}: {f:#?}");
        let rt008 = find(&f, "RT008");
        assert_eq!((rt008.file.as_str(), rt008.line), (PDB, 6), "{to}");
        assert_eq!(rt008.object, "PodDisruptionBudget/api");
    }
    for ok in [
        "minAvailable: 5",
        "minAvailable: 50%",
        "maxUnavailable: 1",
        "maxUnavailable: 10%",
    ] {
        let p = pdb.replace("minAvailable: 2", ok);
        let f = lint_texts(&[(DEPLOY, &read(DEPLOY)), (PDB, &p)]);
        assert_eq!(problems(&f), set(&[]), "{ok}: {f:#?}");
    }
}

#[test]
fn rt009_two_pdbs() {
    let other = read(PDB).replace("name: api", "name: api-2");
    let f = lint_texts(&[
        (DEPLOY, &read(DEPLOY)),
        (PDB, &read(PDB)),
        ("pdb2.yaml", &other),
    ]);
    assert_eq!(problems(&f), set(&["RT009"]));
    assert!(
        find(&f, "RT009")
            .message
            .contains("PodDisruptionBudget/api-2")
    );
}

#[test]
fn rt010_pdb_selecting_nothing_and_namespaces() {
    let p = read(PDB).replace("app: api", "app: apl");
    let f = lint_texts(&[(DEPLOY, &read(DEPLOY)), (PDB, &p)]);
    assert_eq!(problems(&f), set(&["RT007", "RT010"]));
    assert_eq!(find(&f, "RT010").line, 7);
    // A PDB in another namespace protects nothing here.
    let d = read(DEPLOY).replace(
        "  name: api\n  labels",
        "  name: api\n  namespace: shop\n  labels",
    );
    let p = read(PDB).replace("  name: api\n", "  name: api\n  namespace: other\n");
    let f = lint_texts(&[(DEPLOY, &d), (PDB, &p)]);
    assert_eq!(problems(&f), set(&["RT007", "RT010"]));
}

#[test]
fn rt011_max_unavailable_unless_a_reason_is_given() {
    let f = production_with("maxUnavailable: 0", "maxUnavailable: 1");
    assert_eq!(problems(&f), set(&["RT011"]));
    assert!(find(&f, "RT011").message.contains("lets 1 of 6 pods"));
    assert_eq!(find(&f, "RT011").line, 15);
    let f = production_with(
        "  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 25%\n      maxUnavailable: 0\n",
        "",
    );
    assert_eq!(problems(&f), set(&["RT011"]), "the 25% default");
    assert!(find(&f, "RT011").message.contains("25% (default)"));
    let d = read(DEPLOY)
        .replace("maxUnavailable: 0", "maxUnavailable: 1")
        .replace(
            "  labels:\n    app: api\nspec:",
            "  labels:\n    app: api\n  annotations:\n    rolltest.dev/max-unavailable-reason: \"batch workers, capacity is spare\"\nspec:",
        );
    let f = lint_texts(&[(DEPLOY, &d), (PDB, &read(PDB))]);
    assert_eq!(problems(&f), set(&[]), "{f:#?}");
}

#[test]
fn rt012_and_rt013_surge() {
    let f = production_with(
        "maxSurge: 25%\n      maxUnavailable: 0",
        "maxSurge: 0\n      maxUnavailable: 1",
    );
    assert_eq!(problems(&f), set(&["RT011", "RT012"]));
    let f = production_with(
        "maxSurge: 25%\n      maxUnavailable: 0",
        "maxSurge: 0%\n      maxUnavailable: 0",
    );
    assert_eq!(problems(&f), set(&["RT013"]));
    assert_eq!(find(&f, "RT013").severity, Severity::Error);
    // A percentage rounds up: 1% of 6 is one pod of surge.
    let f = production_with("maxSurge: 25%", "maxSurge: 1%");
    assert_eq!(problems(&f), set(&[]));
}

#[test]
fn rt014_recreate() {
    let f = production_with(
        "    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 25%\n      maxUnavailable: 0\n",
        "    type: Recreate\n",
    );
    assert_eq!(problems(&f), set(&["RT014"]));
    assert_eq!(find(&f, "RT014").line, 12);
}

#[test]
fn rt015_min_ready_seconds() {
    let f = production_with("  minReadySeconds: 10\n", "");
    assert_eq!(problems(&f), set(&["RT015"]));
    let f = production_with("minReadySeconds: 10", "minReadySeconds: 0");
    assert_eq!(find(&f, "RT015").line, 10);
}

#[test]
fn rt016_to_rt018_probes() {
    let readiness = "          readinessProbe:\n            httpGet:\n              path: /healthz\n              port: http\n            periodSeconds: 5\n            failureThreshold: 2\n";
    let f = production_with(readiness, "");
    assert_eq!(problems(&f), set(&["RT016"]));
    assert_eq!(find(&f, "RT016").severity, Severity::Error);

    let startup = "          startupProbe:\n            httpGet:\n              path: /healthz\n              port: http\n            failureThreshold: 30\n            periodSeconds: 5\n";
    let d = read(DEPLOY)
        .replace(startup, "")
        .replace("            periodSeconds: 5\n            failureThreshold: 2\n", "            periodSeconds: 5\n            failureThreshold: 2\n            initialDelaySeconds: 20\n");
    let f = lint_texts(&[(DEPLOY, &d), (PDB, &read(PDB))]);
    assert_eq!(problems(&f), set(&["RT017"]), "{f:#?}");
    assert!(
        find(&f, "RT017")
            .path
            .ends_with("readinessProbe.initialDelaySeconds")
    );
    // A short delay needs no startupProbe.
    let d = read(DEPLOY).replace(startup, "");
    assert_eq!(
        problems(&lint_texts(&[(DEPLOY, &d), (PDB, &read(PDB))])),
        set(&[])
    );

    // Same path and port (named vs number) is the same check.
    let f = production_with(
        "path: /livez\n              port: http",
        "path: /healthz\n              port: 8080",
    );
    assert_eq!(problems(&f), set(&["RT018"]));
}

#[test]
fn rt019_uses_probe_defaults() {
    let f = production_with(
        "            periodSeconds: 5\n            failureThreshold: 2\n",
        "",
    );
    let rt019 = find(&f, "RT019");
    assert!(
        rt019
            .message
            .contains("readiness takes a failing pod out of rotation after 30 s (10 s × 3)"),
        "{}",
        rt019.message
    );
}

#[test]
fn rt020_service_selecting_nothing() {
    let s = read(SVC).replace("\"app\": \"api\"", "\"app\": \"web\"");
    let f = lint_texts(&[(DEPLOY, &read(DEPLOY)), (PDB, &read(PDB)), (SVC, &s)]);
    assert_eq!(problems(&f), set(&["RT020"]));
    assert_eq!(find(&f, "RT020").line, 6);
    // A Service alone is not compared with anything.
    assert!(lint_texts(&[(SVC, &s)]).is_empty());
}

#[test]
fn rt021_workers_are_skipped() {
    let d = read(DEPLOY).replace(
        "          ports:\n            - name: http\n              containerPort: 8080\n",
        "",
    );
    let f = lint_texts(&[(DEPLOY, &d)]);
    assert_eq!(ids(&f), set(&["RT021"]), "{f:#?}");
    // With a Service selecting it, it is serving even without declared ports.
    let f = lint_texts(&[(DEPLOY, &d), (SVC, &read(SVC)), (PDB, &read(PDB))]);
    assert!(!ids(&f).contains("RT021"));
}

#[test]
fn statefulsets_get_pod_checks_but_no_deployment_strategy() {
    let text = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  replicas: 3\n  serviceName: db\n  selector:\n    matchLabels: {app: db}\n  template:\n    metadata:\n      labels: {app: db}\n    spec:\n      containers:\n      - name: db\n        image: postgres\n        ports: [{containerPort: 5432}]\n";
    let f = lint_texts(&[("sts.yaml", text)]);
    assert_eq!(
        ids(&f),
        set(&["RT001", "RT006", "RT007", "RT015", "RT016"]),
        "{f:#?}"
    );
    assert!(f.iter().all(|f| f.object == "StatefulSet/db"));
}

#[test]
fn multi_document_and_list_files() {
    let all = format!("{}---\n{}\n---\n{}", read(DEPLOY), read(PDB), read(SVC));
    let m = manifest::parse(&all, "all.yaml").unwrap();
    assert_eq!(
        m.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>(),
        ["Deployment", "PodDisruptionBudget", "Service"]
    );
    assert_eq!(m[1].line, 55);
    assert_eq!(problems(&lint::lint(&m, &LintOptions::default())), set(&[]));

    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: policy/v1\n  kind: PodDisruptionBudget\n  metadata: {name: api}\n  spec:\n    maxUnavailable: 0\n    selector: {matchLabels: {app: api}}\n";
    let f = lint_texts(&[(DEPLOY, &read(DEPLOY)), ("list.yaml", list)]);
    assert_eq!(problems(&f), set(&["RT008"]));
    assert_eq!(
        (find(&f, "RT008").file.as_str(), find(&f, "RT008").line),
        ("list.yaml", 8)
    );
}

// ---- the command ----

fn rolltest(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolltest"))
        .args(args)
        .current_dir(fixture(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn exit_codes() {
    let o = rolltest(&["lint", DEPLOY, PDB, SVC], None);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("0 errors, 0 warnings, 1 info in 3 files (3 objects)"),
        "{}",
        stdout(&o)
    );

    let o = rolltest(&["lint", "naive.yaml"], None);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.starts_with("naive.yaml\n"), "{out}");
    assert!(out.contains("RT001") && out.contains("fix: "), "{out}");

    // Warnings alone do not fail.
    let o = rolltest(&["lint", DEPLOY, SVC], None);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("RT007"));

    let o = rolltest(&["lint", "nope.yaml"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read nope.yaml"),
        "{}",
        stderr(&o)
    );

    let o = rolltest(
        &["lint", "-"],
        Some("kind: Service\nmetadata:\n  name: [x\n"),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("<stdin>:"), "{}", stderr(&o));

    let o = rolltest(
        &["lint", "-"],
        Some("apiVersion: v1\nkind: Service\nmetadata:\n  labels: {}\n"),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("<stdin>:3:1:") && stderr(&o).contains("metadata.name"),
        "{}",
        stderr(&o)
    );

    for bad in [
        &["lint", DEPLOY, "--propagation", "soon"][..],
        &["lint", DEPLOY, "--format", "xml"],
        &["lint"],
        &["lint", DEPLOY, "--propagation", "3s", "--from-run", "x"],
    ] {
        let o = rolltest(bad, None);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
}

#[test]
fn stdin_and_flags() {
    let o = rolltest(
        &["lint", "-", PDB, "--propagation", "20s"],
        Some(&read(DEPLOY)),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("<stdin>\n"), "{out}");
    assert!(
        out.contains("RT002") && out.contains("given by --propagation"),
        "{out}"
    );

    let o = rolltest(&["lint", DEPLOY, PDB, "--drain", "50s"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("RT005"));
}

#[test]
fn from_run_reads_the_measured_propagation() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().to_str().unwrap();
    std::fs::write(
        dir.path().join("summary.json"),
        r#"{"propagation": {"max_ms": 16500}}"#,
    )
    .unwrap();
    let o = rolltest(
        &["lint", DEPLOY, PDB, "--from-run", run, "--format", "json"],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["summary"]["propagation_ms"], serde_json::json!(16500.0));
    let rt002 = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "RT002")
        .unwrap();
    assert_eq!(rt002["severity"], "error");

    std::fs::write(dir.path().join("summary.json"), r#"{"verdict": "pass"}"#).unwrap();
    let o = rolltest(&["lint", DEPLOY, "--from-run", run], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no propagation.max_ms"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn json_output_parses_back_into_findings() {
    let o = rolltest(&["lint", "naive.yaml", "--format", "json"], None);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let findings: Vec<Finding> = serde_json::from_value(v["findings"].clone()).unwrap();
    assert_eq!(findings, lint_texts(&[("naive.yaml", &read("naive.yaml"))]));
    let s = &v["summary"];
    assert_eq!(
        (
            s["errors"].as_u64(),
            s["warnings"].as_u64(),
            s["infos"].as_u64()
        ),
        (Some(1), Some(5), Some(2))
    );
    assert_eq!(
        (s["files"].as_u64(), s["objects"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(s["propagation_source"], "default");
    assert_eq!(s["drain_ms"], serde_json::json!(5000.0));
}

#[test]
fn sarif_output_has_rules_results_and_regions() {
    let o = rolltest(&["lint", "naive.yaml", "--format", "sarif"], None);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert!(v["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "rolltest");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), lint::RULES.len());
    for r in rules {
        assert!(r["id"].as_str().unwrap().starts_with("RT"));
        assert!(r["shortDescription"]["text"].is_string());
        assert!(r["help"]["text"].is_string());
    }
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    for res in results {
        let id = res["ruleId"].as_str().unwrap();
        let idx = res["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx]["id"], id);
        assert!(["error", "warning", "note"].contains(&res["level"].as_str().unwrap()));
        assert!(!res["message"]["text"].as_str().unwrap().is_empty());
        let loc = &res["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "naive.yaml");
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
    }
    let rt001 = results.iter().find(|r| r["ruleId"] == "RT001").unwrap();
    assert_eq!(rt001["level"], "error");
    assert_eq!(
        rt001["locations"][0]["physicalLocation"]["region"]["startLine"],
        17
    );
}

#[test]
fn replicas_come_from_an_hpa_when_unset() {
    let d = read(DEPLOY).replace("  replicas: 6\n", "");
    let hpa = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: api}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}\n  minReplicas: 3\n  maxReplicas: 10\n";
    // minAvailable 2 of the HPA's 3: drains can proceed.
    let f = lint_texts(&[(DEPLOY, &d), (PDB, &read(PDB)), ("hpa.yaml", hpa)]);
    assert_eq!(problems(&f), set(&[]), "{f:#?}");
    // Without the HPA the Deployment runs 1 replica and minAvailable 2 blocks every drain.
    let f = lint_texts(&[(DEPLOY, &d), (PDB, &read(PDB))]);
    assert_eq!(problems(&f), set(&["RT008"]));
}
