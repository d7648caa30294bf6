//! Why a command could not produce a verdict, and the exit status of each.

use rolltest_core::ExitStatus;
use rolltest_loadgen::LoadError;

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
    /// The run directory could not be written, or (for `report`) read.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The load could not start (exit 3).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The async runtime could not start (exit 3).
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A manifest could not be read or is not a Kubernetes object (exit 2).
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The scenario and its manifests do not fit together (exit 2).
    #[error("{0}")]
    Setup(String),
    /// The app under test never served (exit 3).
    #[error("{0}")]
    NotServing(String),
    /// The embedded cluster could not start (exit 3).
    #[error("the embedded cluster could not start: {0}")]
    Cluster(String),
    /// The cluster refused or failed an operation (exit 3; 2 for a manifest it
    /// refused as invalid).
    #[error(transparent)]
    K8s(#[from] crate::k8s::K8sError),
    /// The JUnit file could not be written (exit 3).
    #[error(transparent)]
    Junit(#[from] crate::junit::JunitError),
}

impl RunError {
    /// The exit status this error maps to.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            RunError::Scenario(_)
            | RunError::BadFlag { .. }
            | RunError::Manifest(_)
            | RunError::Setup(_) => ExitStatus::BadInput,
            RunError::RunDir(e) if e.is_input_error() => ExitStatus::BadInput,
            RunError::K8s(e) if e.is_input_error() => ExitStatus::BadInput,
            RunError::RunDir(_)
            | RunError::Load(_)
            | RunError::Runtime(_)
            | RunError::Cluster(_)
            | RunError::K8s(_)
            | RunError::NotServing(_)
            | RunError::Junit(_) => ExitStatus::RunError,
        }
    }
}

/// A [`RunError::BadFlag`] maker for `map_err`.
pub(super) fn bad(flag: &'static str) -> impl Fn(String) -> RunError {
    move |message| RunError::BadFlag { flag, message }
}
