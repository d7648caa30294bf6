//! The kind setup, checked without Docker: the kind scenarios validate, their
//! manifests lint as expected, kind-config.yaml maps the port the Service and
//! the scenarios use, the Dockerfile's entrypoint plus the manifests' args is
//! a valid `rolltest serve` command line, `--check` takes kubectl's
//! `--kubeconfig`/`--context`/`-n`, and the CI workflow parses and only
//! names files that exist. (The kubeconfig path itself runs end to end
//! against `rolltest cluster up` in tests/rollout.rs,
//! `naive_and_fixed_through_a_kubeconfig_against_cluster_up`.)

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use clap::Parser as _;
use common::{bin, text};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rolltest(args: &[&str]) -> Output {
    Command::new(bin())
        .current_dir(repo())
        .args(args)
        .output()
        .expect("run rolltest")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const SCENARIOS: [&str; 2] = ["scenarios/kind/naive.toml", "scenarios/kind/fixed.toml"];

/// A kind scenario, as TOML, with its manifest paths resolved.
struct KindScenario {
    toml: toml::Table,
    manifests: Vec<PathBuf>,
}

fn scenario(rel: &str) -> KindScenario {
    let path = repo().join(rel);
    let toml: toml::Table = std::fs::read_to_string(&path)
        .expect("scenario")
        .parse()
        .expect("TOML");
    let base = path.parent().expect("dir");
    let manifests = toml["cluster"]["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| base.join(m.as_str().expect("path")))
        .collect();
    KindScenario { toml, manifests }
}

fn objects(s: &KindScenario) -> Vec<rolltest::manifest::Manifest> {
    s.manifests
        .iter()
        .flat_map(|p| rolltest::manifest::load_file(p).expect("manifest"))
        .collect()
}

#[test]
fn kind_scenarios_validate_with_check() {
    for (rel, errors) in [(SCENARIOS[0], 1), (SCENARIOS[1], 0)] {
        let out = rolltest(&["run", "--check", rel]);
        assert_eq!(out.status.code(), Some(0), "{rel}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains("kubeconfig cluster"), "{t}");
        assert!(t.contains("deployment \"api\", service \"api\""), "{t}");
        assert!(t.contains(&format!("{errors} error(s)")), "{t}");
        let s = scenario(rel);
        let cluster = &s.toml["cluster"];
        assert_eq!(cluster["mode"].as_str(), Some("kubeconfig"));
        assert_eq!(cluster["context"].as_str(), Some("kind-rolltest"));
        assert_eq!(cluster["teardown"].as_bool(), Some(true));
        // The kind scenarios run the embedded scenarios' manifests unchanged.
        for m in &s.manifests {
            assert!(
                m.starts_with(repo().join("scenarios/kind/../embedded")),
                "{}",
                m.display()
            );
        }
    }
}

/// kubectl's flags point a kind scenario elsewhere without editing it:
/// `--check` validates what would run and names the flags; a relative
/// `--kubeconfig` is relative to the current directory (here the
/// repository), not to the scenario's folder; a bad namespace is exit 2 in
/// the scenario key's words.
#[test]
fn kind_scenarios_take_kubeconfig_context_and_namespace_flags() {
    let out = rolltest(&[
        "run",
        "--check",
        SCENARIOS[0],
        "--kubeconfig",
        "ci/kubeconfig",
        "--context",
        "kind-other",
        "-n",
        "rollout-test",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let kubeconfig = repo().join("ci/kubeconfig");
    assert!(
        t.contains(&format!(
            "kubeconfig cluster (--kubeconfig {} --context kind-other -n rollout-test)",
            kubeconfig.display()
        )),
        "{t}"
    );
    let out = rolltest(&[
        "run",
        "--check",
        SCENARIOS[1],
        "--namespace",
        "Rollout_Test",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains(
            "--namespace: \"Rollout_Test\" is not a valid namespace name (lowercase letters, digits and '-')"
        ),
        "{t}"
    );
}

#[test]
fn kind_manifests_lint_naive_error_fixed_clean() {
    for (rel, code) in [(SCENARIOS[0], 1), (SCENARIOS[1], 0)] {
        let s = scenario(rel);
        let mut args = vec!["lint".to_string()];
        args.extend(s.manifests.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = rolltest(&args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(code), "{rel}: {t}");
        if code == 1 {
            assert!(t.contains("error    RT001"), "{t}");
        } else {
            assert!(!t.contains("RT001"), "{t}");
        }
    }
}

#[test]
fn kind_config_maps_the_services_node_port_to_the_scenarios_url() {
    let config = yaml(&repo().join("kind-config.yaml"));
    assert_eq!(config["kind"], "Cluster");
    assert_eq!(config["apiVersion"], "kind.x-k8s.io/v1alpha4");
    assert_eq!(config["name"], "rolltest");
    let nodes = config["nodes"].as_array().expect("nodes");
    let roles: Vec<&str> = nodes.iter().map(|n| n["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["control-plane", "worker", "worker"]);
    let mappings = nodes[0]["extraPortMappings"].as_array().expect("mappings");
    assert_eq!(mappings.len(), 1);
    let m = &mappings[0];
    assert_eq!(m["listenAddress"], "127.0.0.1");
    assert_eq!(m["protocol"], "TCP");
    for rel in SCENARIOS {
        let s = scenario(rel);
        let context = s.toml["cluster"]["context"].as_str().unwrap();
        assert_eq!(
            context,
            format!("kind-{}", config["name"].as_str().unwrap())
        );
        let url = s.toml["target"]["url"].as_str().unwrap();
        assert_eq!(url, format!("http://127.0.0.1:{}/", m["hostPort"]));
        let services: Vec<_> = objects(&s)
            .into_iter()
            .filter(|o| o.kind == "Service")
            .collect();
        assert_eq!(services.len(), 1, "{rel}");
        assert_eq!(services[0].value["spec"]["type"], "NodePort");
        assert_eq!(
            services[0].value["spec"]["ports"][0]["nodePort"], m["containerPort"],
            "{rel}: the Service's nodePort is the one kind maps"
        );
    }
}

/// `ENTRYPOINT [...]` of the final stage.
fn dockerfile() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let entrypoint = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).expect("exec form");
    (text, entrypoint)
}

#[test]
fn dockerfile_builds_locked_and_runs_serve_on_the_containers_port() {
    let (text, entrypoint) = dockerfile();
    let froms: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        froms,
        ["rust:1-bookworm AS builder", "debian:bookworm-slim"]
    );
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("COPY --from=builder /usr/local/bin/rolltest /usr/local/bin/rolltest"));
    assert!(
        repo().join("Cargo.lock").is_file(),
        "--locked needs Cargo.lock"
    );
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l == "target/"), "{ignore}");
    assert_eq!(entrypoint[0], "/usr/local/bin/rolltest");
    assert_eq!(entrypoint[1], "serve");

    for rel in SCENARIOS {
        let s = scenario(rel);
        for d in objects(&s).into_iter().filter(|o| o.kind == "Deployment") {
            let c = &d.value["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(
                c["image"], "rolltest-demo:v1",
                "the image the README builds"
            );
            assert!(
                c["imagePullPolicy"].is_null() || c["imagePullPolicy"] == "IfNotPresent",
                "a kind-loaded image must not be pulled"
            );
            // Kubernetes appends `args` to the ENTRYPOINT: the result must be a
            // valid command line.
            let mut argv = entrypoint.clone();
            argv[0] = "rolltest".into();
            argv.extend(
                c["args"]
                    .as_array()
                    .expect("args")
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string()),
            );
            let cli = rolltest::cli::Cli::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert!(matches!(cli.command, rolltest::cli::Command::Serve(_)));
            // It listens on every interface, on the containerPort the Service targets.
            let listen = argv
                .iter()
                .position(|a| a == "--listen")
                .map(|i| argv[i + 1].clone())
                .expect("--listen in the entrypoint");
            let port = c["ports"][0]["containerPort"].as_u64().unwrap();
            assert_eq!(listen, format!("0.0.0.0:{port}"));
            // An exec preStop hook needs its binary in the runtime image.
            if let Some(cmd) = c["lifecycle"]["preStop"]["exec"]["command"].as_array() {
                assert_eq!(cmd[0], "sleep");
                assert!(!froms[1].contains("distroless"), "no sleep in distroless");
            }
        }
        let service = objects(&s)
            .into_iter()
            .find(|o| o.kind == "Service")
            .expect("service");
        assert_eq!(service.value["spec"]["ports"][0]["targetPort"], 8080);
    }
}

#[test]
fn ci_workflow_parses_and_names_files_that_exist() {
    let wf = yaml(&repo().join("examples/ci/github-actions.yml"));
    assert!(wf["on"].get("push").is_some() && wf["on"].get("pull_request").is_some());
    let jobs = wf["jobs"].as_object().expect("jobs");
    assert_eq!(jobs.len(), 1);
    let steps = jobs.values().next().unwrap()["steps"]
        .as_array()
        .expect("steps");
    let uses = |prefix: &str| -> &Value {
        steps
            .iter()
            .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no step uses {prefix}"))
    };
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    let run_with = |needle: &str| -> usize {
        runs.iter()
            .position(|r| r.contains(needle))
            .unwrap_or_else(|| panic!("no step runs {needle:?}: {runs:?}"))
    };

    let kind = uses("helm/kind-action@");
    assert_eq!(kind["with"]["config"], "kind-config.yaml");
    assert!(
        repo()
            .join(kind["with"]["config"].as_str().unwrap())
            .is_file()
    );
    let config = yaml(&repo().join("kind-config.yaml"));
    assert_eq!(kind["with"]["cluster_name"], config["name"]);

    run_with("cargo build --release --locked");
    let build = run_with("docker build -t rolltest-demo:v1 .");
    assert!(repo().join("Dockerfile").is_file());
    let load = run_with("kind load docker-image rolltest-demo:v1 --name rolltest");
    let rollout = run_with("rolltest run scenarios/kind/fixed.toml");
    assert!(build < load && load < rollout);
    let command: Vec<&str> = runs[rollout].split_whitespace().collect();
    assert!(repo().join(command[0]).ends_with("target/release/rolltest"));
    assert!(repo().join(command[2]).is_file(), "{}", command[2]);
    let junit = command[command.iter().position(|a| *a == "--junit").unwrap() + 1];
    let out = command[command.iter().position(|a| *a == "--out").unwrap() + 1];
    assert!(
        runs.iter().all(|r| !r.contains("kubectl apply")),
        "rolltest applies the manifests itself"
    );

    let publish = uses("mikepenz/action-junit-report@");
    assert_eq!(publish["if"], "always()");
    assert_eq!(publish["with"]["report_paths"], junit);
    let upload = uses("actions/upload-artifact@");
    assert_eq!(upload["if"], "always()");
    let paths = upload["with"]["path"].as_str().unwrap();
    assert!(paths.lines().any(|l| l.trim().trim_end_matches('/') == out));
    assert!(paths.lines().any(|l| l.trim() == junit));
    // Every action is pinned to a major version at least.
    for s in steps {
        if let Some(u) = s["uses"].as_str() {
            assert!(u.contains("@v") || u.contains("@stable"), "{u}");
        }
    }
    // The scenario's own --check passes from the repository root, as CI runs it.
    let out = rolltest(&["run", "--check", command[2]]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
