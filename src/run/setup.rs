//! The setup of a cluster run, before anything runs: the manifests read,
//! the Deployment and Service under test picked, the lint findings, the
//! embedded cluster's options; and `rolltest run --check`'s line.

use rolltest_minicluster::{cluster::ClusterOptions, kubelet::ImageMap};
use tokio::sync::mpsc;

use rolltest_core::model::Severity;

use crate::{
    error::{RunError, SetupError},
    lint::{self, LintOptions},
    manifest::{self, Manifest},
    rundir::{self, RunDir},
    scenario::{ClusterMode, ClusterSpec, EmbeddedSpec, Overridden, Scenario},
};

/// Where the embedded cluster's kubeconfig is written in the run directory,
/// so `kubectl --kubeconfig DIR/kubeconfig get pods -w` can watch a run.
pub const KUBECONFIG: &str = "kubeconfig";
/// Copies of the manifests as applied (for `compare` and for the record).
pub const MANIFESTS_DIR: &str = "manifests";

/// What the setup found out about the objects under test.
pub(super) struct Subject {
    /// The Deployment under test.
    pub deployment: String,
    /// The Service whose endpoints are watched (and loaded, without a url).
    pub service: Option<String>,
    /// The manifests' objects, to apply.
    pub docs: Vec<serde_json::Value>,
    /// The manifests.
    pub manifests: Vec<Manifest>,
}

/// Reads the manifests and picks the Deployment and Service under test.
pub(super) fn subject(scenario: &Scenario, cluster: &ClusterSpec) -> Result<Subject, RunError> {
    let mut manifests = Vec::new();
    for path in &cluster.manifests {
        manifests.extend(manifest::load_file(path)?);
    }
    let named = |kind: &str| -> Vec<String> {
        manifests
            .iter()
            .filter(|m| m.kind == kind)
            .map(|m| m.name.clone())
            .collect()
    };
    let deployments = named("Deployment");
    let deployment = match (&cluster.deployment, deployments.as_slice()) {
        (Some(d), _) => d.clone(),
        (None, [one]) => one.clone(),
        (None, []) => return Err(SetupError::NoDeployment.into()),
        (None, many) => return Err(SetupError::ManyDeployments(many.to_vec()).into()),
    };
    let services = named("Service");
    let service = match &scenario.target.service {
        Some(Some(s)) => Some(s.clone()),
        Some(None) => match services.as_slice() {
            [one] => Some(one.clone()),
            [] => return Err(SetupError::NoService.into()),
            many => return Err(SetupError::ManyServices(many.to_vec()).into()),
        },
        // A url was given: watch the endpoints of the Service named, else
        // of the only one in the manifests, if any.
        None => match (&scenario.target.service_name, services.as_slice()) {
            (Some(s), _) => Some(s.clone()),
            (None, [one]) => Some(one.clone()),
            _ => None,
        },
    };
    let docs = manifests.iter().map(|m| m.value.clone()).collect();
    Ok(Subject {
        deployment,
        service,
        docs,
        manifests,
    })
}

/// Lint options for the run's manifests: the propagation the run expects.
pub(super) fn lint_options(cluster: &ClusterSpec) -> LintOptions {
    match &cluster.mode {
        ClusterMode::Embedded(e) => LintOptions {
            propagation: e.propagation.max,
            propagation_source: lint::PropagationSource::Flag,
            ..LintOptions::default()
        },
        ClusterMode::Kubeconfig { .. } => LintOptions::default(),
    }
}

/// `rolltest run --check` for a cluster scenario: the manifests parse, the
/// Deployment and Service are found; returns a line to print and the lint
/// findings.
pub fn check(scenario: &Scenario, cluster: &ClusterSpec) -> Result<String, RunError> {
    let subject = subject(scenario, cluster)?;
    let findings = lint::lint(&subject.manifests, &lint_options(cluster));
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let mode = cluster.mode.name().as_str();
    let flags = cluster.overridden.as_ref().map_or_else(String::new, |o| {
        format!(" ({})", overrides_note(cluster, o))
    });
    Ok(format!(
        "{} objects in {} manifest file(s); deployment {:?}{}; {} action(s); {mode} cluster{flags}; lint: {} finding(s), {errors} error(s)",
        subject.manifests.len(),
        cluster.manifests.len(),
        subject.deployment,
        subject
            .service
            .as_deref()
            .map_or_else(String::new, |s| format!(", service {s:?}")),
        scenario.actions.len(),
        findings.len(),
    ))
}

/// The cluster flags in words: `--context kind-b -n demo`, and `, instead
/// of the scenario's embedded cluster` when they switched the mode.
pub(super) fn overrides_note(cluster: &ClusterSpec, o: &Overridden) -> String {
    let mut note = o.flags.to_flags();
    if o.scenario_mode != cluster.mode.name() {
        note.push_str(&format!(
            ", instead of the scenario's {} cluster",
            o.scenario_mode.as_str()
        ));
    }
    note
}

pub(super) fn cluster_options(
    spec: &EmbeddedSpec,
    proxy_events: mpsc::UnboundedSender<rolltest_minicluster::proxy::ProxyEvent>,
    kubelet_signals: mpsc::UnboundedSender<rolltest_minicluster::kubelet::KubeletSignal>,
) -> ClusterOptions {
    let mut images = ImageMap::new();
    let me = std::env::current_exe()
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    for (image, command) in &spec.images {
        let mut command = command.clone();
        if command[0] == crate::scenario::cluster::ROLLTEST_PLACEHOLDER
            && let Some(me) = &me
        {
            command[0].clone_from(me);
        }
        images.push(image.clone(), command);
    }
    ClusterOptions {
        nodes: spec.nodes,
        proxy: spec.cluster_proxy(),
        propagation: spec.propagation,
        pod_start: spec.pod_start,
        proxy_events: Some(proxy_events),
        kubelet_signals: Some(kubelet_signals),
        images,
        ..ClusterOptions::default()
    }
}

/// Copies the manifests into the run directory's `manifests/`.
pub(super) fn copy_manifests(dir: &RunDir, cluster: &ClusterSpec) -> Result<(), RunError> {
    let target = dir.file(MANIFESTS_DIR);
    std::fs::create_dir_all(&target).map_err(|source| {
        RunError::RunDir(rundir::RunDirError::Write {
            path: target.clone(),
            source,
        })
    })?;
    for path in &cluster.manifests {
        let name = path.file_name().map_or_else(
            || "manifest.yaml".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        // Two files of the same name from different folders keep both.
        let mut dest = target.join(&name);
        let mut n = 2;
        while dest.exists() {
            dest = target.join(format!("{n}-{name}"));
            n += 1;
        }
        std::fs::copy(path, &dest).map_err(|source| {
            RunError::RunDir(rundir::RunDirError::Write { path: dest, source })
        })?;
    }
    Ok(())
}
