//! Why a run (`rolltest run`, `load` or `report`) could not produce a
//! verdict, and the exit status each reason maps to. Every variant carries
//! its cause as a typed source; the CLI prints the chain and exits with
//! [`RunError::exit_status`].

use std::time::Duration;

use rolltest_core::ExitStatus;
use rolltest_loadgen::LoadError;
use rolltest_minicluster::cluster::ClusterError;

use crate::{rundir::RunDirError, scenario::ScenarioError};

/// Why a command could not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario is invalid (exit 2).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A command-line flag is invalid (exit 2).
    #[error("{flag}: {message}")]
    BadFlag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `rolltest load`'s flags do not make a scenario file (exit 2).
    #[error("flags: cannot write them as a scenario: {0}")]
    Flags(#[source] toml::ser::Error),
    /// The run directory could not be written, or (for `report`) read.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The load could not start (exit 3).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The async runtime could not start (exit 3).
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A task of the run (the generator's waiter) was lost (exit 3).
    #[error("a task of the run was lost: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// A manifest could not be read or is not a Kubernetes object (exit 2).
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The scenario and its manifests do not fit together (exit 2).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The app under test never served (exit 3).
    #[error(
        "the target {url} never answered {in_a_row} requests in a row below 500 within {} (last: {last}); check [target]",
        humantime::format_duration(*within)
    )]
    NotServing {
        /// The target URL.
        url: String,
        /// Answers in a row that were needed.
        in_a_row: u32,
        /// How long it was given.
        within: Duration,
        /// The last answer or error seen.
        last: String,
    },
    /// The embedded cluster could not start (exit 3).
    #[error("the embedded cluster could not start: {0}")]
    Cluster(#[source] ClusterError),
    /// The cluster refused or failed an operation (exit 3; 2 for a manifest it
    /// refused as invalid).
    #[error(transparent)]
    K8s(#[from] crate::k8s::K8sError),
    /// The JUnit file could not be written (exit 3).
    #[error(transparent)]
    Junit(#[from] crate::junit::JunitError),
}

/// The scenario's `[cluster]`, `[target]` and manifests do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No Deployment to test.
    #[error(
        "the manifests hold no Deployment: name the one to test with `deployment = \"...\"` in [cluster]"
    )]
    NoDeployment,
    /// More than one Deployment and none named.
    #[error(
        "the manifests hold {} Deployments ({}): name the one to test with `deployment = \"...\"` in [cluster]",
        .0.len(),
        .0.join(", ")
    )]
    ManyDeployments(Vec<String>),
    /// No url and no Service to load.
    #[error("[target] has no url and the manifests hold no Service to send the load to")]
    NoService,
    /// More than one Service and none named.
    #[error(
        "the manifests hold {} Services ({}): name the one to load with `service = \"...\"` in [target]",
        .0.len(),
        .0.join(", ")
    )]
    ManyServices(Vec<String>),
    /// The embedded cluster runs no proxy for the Service to load.
    #[error("the embedded cluster has no proxy listening for service {0}")]
    NoProxy(String),
}

impl RunError {
    /// The exit status this error maps to.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            RunError::Scenario(_)
            | RunError::BadFlag { .. }
            | RunError::Flags(_)
            | RunError::Manifest(_)
            | RunError::Setup(_) => ExitStatus::BadInput,
            RunError::RunDir(e) if e.is_input_error() => ExitStatus::BadInput,
            RunError::K8s(e) if e.is_input_error() => ExitStatus::BadInput,
            RunError::RunDir(_)
            | RunError::Load(_)
            | RunError::Runtime(_)
            | RunError::Task(_)
            | RunError::Cluster(_)
            | RunError::K8s(_)
            | RunError::NotServing { .. }
            | RunError::Junit(_) => ExitStatus::RunError,
        }
    }
}

/// A [`RunError::BadFlag`] maker for `map_err`.
pub(crate) fn bad(flag: &'static str) -> impl Fn(String) -> RunError {
    move |message| RunError::BadFlag { flag, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_problems_are_exit_2_and_run_problems_exit_3() {
        assert_eq!(
            RunError::Setup(SetupError::NoDeployment).exit_status(),
            ExitStatus::BadInput
        );
        assert_eq!(
            bad("--rate")("no".into()).exit_status(),
            ExitStatus::BadInput
        );
        let lost = RunError::Cluster(ClusterError::WorkDir(std::io::Error::other("no space")));
        assert_eq!(lost.exit_status(), ExitStatus::RunError);
        let serving = RunError::NotServing {
            url: "http://127.0.0.1:1/".into(),
            in_a_row: 3,
            within: Duration::from_secs(2),
            last: "HTTP 503".into(),
        };
        assert_eq!(serving.exit_status(), ExitStatus::RunError);
        assert_eq!(
            serving.to_string(),
            "the target http://127.0.0.1:1/ never answered 3 requests in a row below 500 within 2s (last: HTTP 503); check [target]"
        );
    }
}
