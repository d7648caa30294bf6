//! The kube-rs side of `rolltest run`: one code path for the embedded cluster
//! and any real cluster reached through a kubeconfig.
//!
//! - [`client::connect`] builds a client from a kubeconfig (file, environment
//!   or text) with kube's automatic 429 retries **off**, and checks that the
//!   server answers and accepts the credentials.
//! - [`apply::apply`] / [`apply::teardown`] put the scenario's manifests in
//!   place (server-side apply, field manager `rolltest`) and take them away.
//! - [`watches::Watches`]: one kube-runtime watch and reflector store per kind
//!   of the workload (Deployment, ReplicaSets, pods, EndpointSlices), shared
//!   by the waits and the lifecycle timeline.
//! - [`wait::wait_ready`] / [`wait::wait_settled`] wait, as conditions over
//!   those stores, for the Deployment to serve and for a rollout to be over
//!   with every old pod gone.
//! - [`actions::run_action`] performs a scenario's disruption the way kubectl
//!   does on the wire (rollout restart, drain, delete, scale, set image) and
//!   reports it on the lifecycle timeline.
//!
//! Watchers of the workload's lifecycle live in `crate::timeline`, not here.

pub mod actions;
pub mod apply;
pub mod client;
pub mod wait;
pub mod watches;

use std::time::Duration;

pub use actions::{ActionReport, run_action, uncordon, unschedulable_nodes};
pub use apply::{AppliedObject, TeardownReport, apply, ensure_namespace, teardown};
pub use client::{Cluster, KubeSource, KubeconfigOrigin, connect};
pub use wait::{
    Progress, ReadyInfo, ServiceInfo, ServicePortInfo, SettledInfo, wait_ready, wait_ready_on,
    wait_settled, wait_settled_on,
};
pub use watches::{Shared, WatchItem, Watches};

/// Why a cluster operation failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// No kubeconfig was given and none was found in the environment.
    #[error(
        "no kubeconfig found: set $KUBECONFIG, create ~/.kube/config (e.g. `kind create cluster`), or name one with `kubeconfig = \"...\"` in [cluster] or `rolltest run --kubeconfig FILE`"
    )]
    NoKubeconfig,
    /// The kubeconfig could not be read or parsed.
    #[error("cannot load the kubeconfig {origin}: {message}")]
    Kubeconfig {
        /// Where it came from (a path, "from $KUBECONFIG", "text").
        origin: String,
        /// What went wrong.
        message: String,
    },
    /// The requested context is not in the kubeconfig.
    #[error("context {context:?} is not in the kubeconfig {origin} (contexts: {})", list_or_none(.available))]
    ContextNotFound {
        /// The context asked for.
        context: String,
        /// Where the kubeconfig came from.
        origin: String,
        /// The contexts it has.
        available: Vec<String>,
    },
    /// No context was asked for and the kubeconfig has no current context.
    #[error("the kubeconfig {origin} has no current-context; name one with `context = \"...\"` in [cluster] or `rolltest run --context NAME` (contexts: {})", list_or_none(.available))]
    NoCurrentContext {
        /// Where the kubeconfig came from.
        origin: String,
        /// The contexts it has.
        available: Vec<String>,
    },
    /// The API server did not answer (connection refused, DNS, TLS).
    #[error(
        "cannot reach the Kubernetes API server at {server}: {message} (is the cluster running? check the kubeconfig's server address, e.g. `kind get clusters`)"
    )]
    Unreachable {
        /// The server URL.
        server: String,
        /// The underlying error chain.
        message: String,
    },
    /// 401: the server rejected the credentials.
    #[error(
        "the API server at {server} rejected the credentials (401 Unauthorized) while trying to {what}: {message}; the kubeconfig's token or client certificate is wrong or expired"
    )]
    Unauthorized {
        /// The server URL.
        server: String,
        /// What was being done.
        what: String,
        /// The server's message.
        message: String,
    },
    /// 403: the credentials lack a permission.
    #[error(
        "forbidden (403) to {what}: {message}; the kubeconfig's user needs RBAC permission for it"
    )]
    Forbidden {
        /// What was being done.
        what: String,
        /// The server's message.
        message: String,
    },
    /// 404 on an object rolltest needs.
    #[error("{what}: not found{}", if .message.is_empty() { String::new() } else { format!(" ({})", .message) })]
    NotFound {
        /// The object, in words ("deployment api in namespace default").
        what: String,
        /// The server's message.
        message: String,
    },
    /// Any other refusal by the API server.
    #[error("cannot {what}: the API server answered {code} {reason}: {message}")]
    Api {
        /// What was being done.
        what: String,
        /// HTTP status.
        code: u16,
        /// The Status reason.
        reason: String,
        /// The Status message.
        message: String,
    },
    /// A client-side failure (decoding, building a request).
    #[error("cannot {what}: {message}")]
    Client {
        /// What was being done.
        what: String,
        /// The error chain.
        message: String,
    },
    /// A manifest is not something rolltest can apply.
    #[error("manifest #{index} ({name}): {message}")]
    InvalidManifest {
        /// 1-based position among the documents.
        index: usize,
        /// `Kind/name` as far as known.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The cluster does not serve this kind.
    #[error(
        "manifest #{index} ({kind}/{name}): the cluster does not serve kind {kind} in {api_version}"
    )]
    UnknownKind {
        /// 1-based position among the documents.
        index: usize,
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// `metadata.name`.
        name: String,
    },
    /// rolltest applies namespaced objects only.
    #[error(
        "manifest #{index} ({kind}/{name}): {kind} is cluster-scoped; rolltest applies namespaced objects only (create it beforehand)"
    )]
    ClusterScoped {
        /// 1-based position among the documents.
        index: usize,
        /// `kind`.
        kind: String,
        /// `metadata.name`.
        name: String,
    },
    /// A bounded wait ran out; `missing` says what was not there yet.
    #[error("timed out after {} waiting for {what}: {missing}", secs(*.waited))]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it waited.
        waited: Duration,
        /// What was still missing.
        missing: String,
    },
    /// The rollout cannot finish (progress deadline exceeded).
    #[error("deployment {deployment}: {message}")]
    RolloutFailed {
        /// The Deployment.
        deployment: String,
        /// Why.
        message: String,
    },
    /// An action cannot be carried out as asked.
    #[error("{action}: {message}")]
    Action {
        /// The action's `do`.
        action: String,
        /// Why.
        message: String,
    },
}

impl K8sError {
    /// Whether the user's input is at fault (a manifest the cluster refused
    /// as invalid, an unknown kind, a kubeconfig or context that does not
    /// exist): exit code 2 rather than 3.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            K8sError::NoKubeconfig
                | K8sError::Kubeconfig { .. }
                | K8sError::ContextNotFound { .. }
                | K8sError::NoCurrentContext { .. }
                | K8sError::InvalidManifest { .. }
                | K8sError::UnknownKind { .. }
                | K8sError::ClusterScoped { .. }
        )
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The HTTP status of an API refusal, if the error is one.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// An error and its sources, joined.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Turns a kube error into the matching [`K8sError`]; `what` says what was
/// being done ("get deployment api").
pub(crate) fn classify(server: &str, what: impl Into<String>, e: kube::Error) -> K8sError {
    let what = what.into();
    match e {
        kube::Error::Api(s) => match s.code {
            401 => K8sError::Unauthorized {
                server: server.to_string(),
                what,
                message: s.message,
            },
            403 => K8sError::Forbidden {
                what,
                message: s.message,
            },
            404 => K8sError::NotFound {
                what,
                message: s.message,
            },
            code => K8sError::Api {
                what,
                code,
                reason: s.reason,
                message: s.message,
            },
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_) => {
            K8sError::Unreachable {
                server: server.to_string(),
                message: chain(&e),
            }
        }
        other => K8sError::Client {
            what,
            message: chain(&other),
        },
    }
}

/// A label selector as the string a list or watch takes
/// (`app=api,tier in (a,b),!canary`).
pub fn selector_string(
    s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &s.match_labels {
        for (k, v) in m {
            parts.push(format!("{k}={v}"));
        }
    }
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        match e.operator.as_str() {
            "In" => parts.push(format!("{} in ({values})", e.key)),
            "NotIn" => parts.push(format!("{} notin ({values})", e.key)),
            "Exists" => parts.push(e.key.clone()),
            "DoesNotExist" => parts.push(format!("!{}", e.key)),
            _ => {}
        }
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    #[test]
    fn selectors_render_as_strings() {
        let s = LabelSelector {
            match_labels: Some([("app".to_string(), "api".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(selector_string(&s), "app=api,tier in (a,b),!canary");
    }

    #[test]
    fn api_refusals_map_to_actionable_errors() {
        let status = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "nope".into(),
                reason: "R".into(),
                ..kube::core::Status::success()
            }))
        };
        assert!(matches!(
            classify("https://x", "list pods", status(401)),
            K8sError::Unauthorized { .. }
        ));
        let e = classify("https://x", "list pods", status(403));
        assert!(
            e.to_string().contains("forbidden (403) to list pods"),
            "{e}"
        );
        assert!(matches!(
            classify("https://x", "get deployment api", status(404)),
            K8sError::NotFound { .. }
        ));
        assert!(matches!(
            classify("https://x", "patch", status(422)),
            K8sError::Api { code: 422, .. }
        ));
    }
}
