//! `[cluster]` and `[[actions]]`: which cluster the scenario runs against,
//! what it applies there, and the disruptions it fires while the load runs.
//!
//! Submodules: `embedded` (`[cluster.embedded]` and the one mapping to the
//! embedded cluster's proxy), `actions` (`[[actions]]`), `overrides`
//! (kubectl's flags over `[cluster]`).

mod actions;
mod embedded;
mod overrides;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rolltest_core::model::ProxyMode;
use serde::{Deserialize, Serialize};

pub(super) use actions::validate_actions;
pub use actions::{Action, ActionKind, ActionName, RawAction};
pub use embedded::{EmbeddedSpec, ROLLTEST_PLACEHOLDER, RawEmbedded, cluster_proxy};
pub(super) use overrides::apply_overrides;
pub use overrides::{ClusterOverrides, Overridden};

use super::values::{Offset, PositiveDuration};

/// `[cluster]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `embedded` or `kubeconfig`.
    pub mode: ClusterModeName,
    /// kubeconfig mode: the kubeconfig file (default: `$KUBECONFIG`, then
    /// `~/.kube/config`, like kubectl). Relative to the scenario file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// kubeconfig mode: the context (default: the current context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Namespace for the manifests and the watches (default: the context's,
    /// else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Manifest files applied (server-side apply, field manager `rolltest`)
    /// before the load starts; relative to the scenario file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<String>,
    /// The Deployment under test (default: the only one in the manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Delete what was applied when the run ends (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown: Option<bool>,
    /// Keep the load and the watches going this long after the rollout is
    /// complete and every old pod has exited (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<Offset>,
    /// Longest wait for the Deployment to be Available with ready endpoints
    /// before the load starts (default 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout: Option<PositiveDuration>,
    /// Longest wait, after the load's duration, for the rollout to complete
    /// and old pods to exit (default 300s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_timeout: Option<PositiveDuration>,
    /// How long after an EndpointSlice update the node proxies may still
    /// route to the endpoint it removed, for the correlator (default: measured
    /// from the run, where failures of a stale route stop; 2s when nothing
    /// can be measured). At most 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_allowance: Option<Offset>,
    /// `[cluster.embedded]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<RawEmbedded>,
}

/// `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterModeName {
    /// Start the embedded cluster in-process.
    Embedded,
    /// Use a real cluster through a kubeconfig.
    Kubeconfig,
}

/// Which cluster, validated.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Embedded or kubeconfig.
    pub mode: ClusterMode,
    /// Namespace (`None`: the kubeconfig context's, else `default`).
    pub namespace: Option<String>,
    /// Manifest files, resolved against the scenario's directory.
    pub manifests: Vec<PathBuf>,
    /// The Deployment under test (`None`: the only one in the manifests).
    pub deployment: Option<String>,
    /// Delete what was applied at the end.
    pub teardown: bool,
    /// Load and watches go on this long after everything settled.
    pub tail: Duration,
    /// Longest wait for Available before the load.
    pub ready_timeout: Duration,
    /// Longest wait after the load's duration for the rollout to settle.
    pub settle_timeout: Duration,
    /// The correlator's propagation allowance (`None`: measured).
    pub propagation_allowance: Option<Duration>,
    /// `rolltest run` flags that replaced `[cluster]` values (`None`: the
    /// scenario's own cluster). See [`ClusterOverrides`].
    pub overridden: Option<Overridden>,
}

impl ClusterSpec {
    /// The correlator's `propagation_allowance_us` (`None`: measure it).
    pub fn propagation_allowance_us(&self) -> Option<u64> {
        self.propagation_allowance
            .map(|a| u64::try_from(a.as_micros()).unwrap_or(u64::MAX))
    }
}

impl ClusterModeName {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterModeName::Embedded => "embedded",
            ClusterModeName::Kubeconfig => "kubeconfig",
        }
    }
}

impl ClusterMode {
    /// `embedded` or `kubeconfig`.
    pub fn name(&self) -> ClusterModeName {
        match self {
            ClusterMode::Embedded(_) => ClusterModeName::Embedded,
            ClusterMode::Kubeconfig { .. } => ClusterModeName::Kubeconfig,
        }
    }
}

/// The cluster's kind.
#[derive(Debug, Clone)]
pub enum ClusterMode {
    /// The embedded cluster, started in-process.
    Embedded(EmbeddedSpec),
    /// A real cluster.
    Kubeconfig {
        /// The kubeconfig file (`None`: from the environment, like kubectl).
        path: Option<PathBuf>,
        /// The context (`None`: the current one).
        context: Option<String>,
    },
}

impl ClusterMode {
    /// How the load reaches the pods in this mode, which decides what the
    /// correlator makes of the proxy's records.
    pub fn proxy_mode(&self) -> ProxyMode {
        match self {
            ClusterMode::Embedded(e) => ProxyMode::Embedded(e.proxy),
            ClusterMode::Kubeconfig { .. } => ProxyMode::External,
        }
    }
}

/// The largest `propagation_allowance`.
const MAX_PROPAGATION_ALLOWANCE: Duration = Duration::from_secs(60);

/// Default `tail`.
pub const DEFAULT_TAIL: Duration = Duration::from_secs(2);
/// Default `ready_timeout`.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Default `settle_timeout`.
pub const DEFAULT_SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default drain timeout.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Checks `[cluster]`; `invalid(key, message)` builds the error.
pub(super) fn validate_cluster<E>(
    raw: &RawCluster,
    base: &Path,
    invalid: impl Fn(&str, String) -> E,
) -> Result<ClusterSpec, E> {
    let mode = match raw.mode {
        ClusterModeName::Embedded => {
            for (key, set) in [
                ("cluster.kubeconfig", raw.kubeconfig.is_some()),
                ("cluster.context", raw.context.is_some()),
            ] {
                if set {
                    return Err(invalid(key, "applies to mode = \"kubeconfig\" only".into()));
                }
            }
            ClusterMode::Embedded(embedded::validate(
                &raw.embedded.clone().unwrap_or_default(),
                base,
                &invalid,
            )?)
        }
        ClusterModeName::Kubeconfig => {
            if raw.embedded.is_some() {
                return Err(invalid(
                    "cluster.embedded",
                    "applies to mode = \"embedded\" only".into(),
                ));
            }
            ClusterMode::Kubeconfig {
                path: raw.kubeconfig.as_deref().map(|p| base.join(p)),
                context: raw.context.clone(),
            }
        }
    };
    if let Some(ns) = &raw.namespace
        && let Some(problem) = namespace_problem(ns)
    {
        return Err(invalid("cluster.namespace", problem));
    }
    if let Some(d) = &raw.deployment
        && !is_dns_subdomain(d)
    {
        return Err(invalid(
            "cluster.deployment",
            format!("{d:?} is not a valid object name"),
        ));
    }
    if raw.manifests.is_empty() && raw.deployment.is_none() {
        return Err(invalid(
            "cluster.manifests",
            "is required (or name an existing `deployment` to test)".into(),
        ));
    }
    let manifests = raw.manifests.iter().map(|m| base.join(m)).collect();
    let propagation_allowance = raw.propagation_allowance.map(|a| a.0);
    if propagation_allowance.is_some_and(|a| a > MAX_PROPAGATION_ALLOWANCE) {
        return Err(invalid(
            "cluster.propagation_allowance",
            format!(
                "is at most {}s (node proxies follow an EndpointSlice update within seconds)",
                MAX_PROPAGATION_ALLOWANCE.as_secs()
            ),
        ));
    }
    Ok(ClusterSpec {
        mode,
        namespace: raw.namespace.clone(),
        manifests,
        deployment: raw.deployment.clone(),
        teardown: raw.teardown.unwrap_or(false),
        tail: raw.tail.map_or(DEFAULT_TAIL, |t| t.0),
        ready_timeout: raw.ready_timeout.map_or(DEFAULT_READY_TIMEOUT, |t| t.0),
        settle_timeout: raw.settle_timeout.map_or(DEFAULT_SETTLE_TIMEOUT, |t| t.0),
        propagation_allowance,
        overridden: None,
    })
}

/// What is wrong with a namespace name, in the words both the scenario key
/// and `--namespace` use; `None` when it is valid.
fn namespace_problem(ns: &str) -> Option<String> {
    (!is_dns_label(ns)).then(|| {
        format!("{ns:?} is not a valid namespace name (lowercase letters, digits and '-')")
    })
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
pub(super) mod test_support {
    use std::path::Path;

    use crate::scenario::{Scenario, ScenarioError};

    pub const HEAD: &str = "name = \"t\"\n[load]\nrate = 10\nduration = \"20s\"\n";

    pub fn parse(rest: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(&format!("{HEAD}{rest}"), Some(Path::new("dir/s.toml")))
    }

    pub fn err(rest: &str) -> String {
        match parse(rest) {
            Ok(_) => panic!("accepted:\n{rest}"),
            Err(e) => e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{err, parse};
    use super::*;
    use rolltest_core::model::ProxyKind;

    #[test]
    fn embedded_defaults_and_service_target() {
        let s = parse(
            "[cluster]\nmode = \"embedded\"\nmanifests = [\"m/d.yaml\"]\n[[actions]]\nat = \"3s\"\ndo = \"rollout-restart\"\n",
        )
        .expect("valid");
        let c = s.cluster.expect("cluster");
        assert_eq!(c.manifests, vec![PathBuf::from("dir/m/d.yaml")]);
        assert_eq!(c.tail, DEFAULT_TAIL);
        assert!(!c.teardown);
        let ClusterMode::Embedded(e) = c.mode else {
            panic!("embedded")
        };
        assert_eq!(e.nodes, 2);
        assert_eq!(e.proxy, ProxyKind::L4);
        assert_eq!(
            e.pod_start,
            rolltest_minicluster::kubelet::DEFAULT_POD_START
        );
        let slow = parse(
            "[cluster]\nmode = \"embedded\"\nmanifests = [\"m/d.yaml\"]\n[cluster.embedded]\npod_start = \"500ms..900ms\"\n",
        )
        .expect("valid");
        let Some(ClusterMode::Embedded(slow)) = slow.cluster.map(|c| c.mode) else {
            panic!("embedded")
        };
        assert_eq!(
            (slow.pod_start.min, slow.pod_start.max),
            (Duration::from_millis(500), Duration::from_millis(900))
        );
        let nginx = parse(
            "[cluster]\nmode = \"embedded\"\nmanifests = [\"m/d.yaml\"]\n[cluster.embedded]\nproxy = \"ingress-nginx\"\n",
        )
        .expect("valid");
        assert_eq!(
            nginx.cluster.map(|c| c.mode.proxy_mode()),
            Some(ProxyMode::Embedded(ProxyKind::IngressNginx))
        );
        assert_eq!(s.target.service, Some(None));
        assert_eq!(s.target.url.path(), "/");
        assert_eq!(
            s.actions,
            vec![Action {
                index: 0,
                at: Duration::from_secs(3),
                kind: ActionKind::RolloutRestart { deployment: None }
            }]
        );
    }

    #[test]
    fn propagation_allowance_is_measured_unless_set() {
        let base = "[cluster]\nmode = \"embedded\"\nmanifests = [\"d.yaml\"]\n";
        let measured = parse(base).expect("valid").cluster.expect("cluster");
        assert_eq!(measured.propagation_allowance_us(), None);
        let set = parse(&format!("{base}propagation_allowance = \"1500ms\"\n"))
            .expect("valid")
            .cluster
            .expect("cluster");
        assert_eq!(set.propagation_allowance_us(), Some(1_500_000));
        let e = err(&format!("{base}propagation_allowance = \"2m\"\n"));
        assert!(
            e.contains("cluster.propagation_allowance") && e.contains("at most 60s"),
            "{e}"
        );
    }

    #[test]
    fn resolve_service_keeps_the_path() {
        let mut s = parse(
            "[target]\npath = \"/work?x=1\"\nservice = \"api\"\n[cluster]\nmode = \"embedded\"\nmanifests = [\"d.yaml\"]\n",
        )
        .expect("valid");
        assert_eq!(s.target.service, Some(Some("api".into())));
        s.target
            .resolve_service("127.3.0.1:80".parse().expect("addr"));
        assert_eq!(s.target.url.to_string(), "http://127.3.0.1:80/work?x=1");
        assert_eq!(s.target.service, None);
    }

    #[test]
    fn kubeconfig_mode_needs_a_url_and_resolves_paths() {
        assert!(
            err("[cluster]\nmode = \"kubeconfig\"\nmanifests = [\"d.yaml\"]\n")
                .contains("target.url: is required")
        );
        let s = parse(
            "[target]\nurl = \"http://127.0.0.1:30080/\"\n[cluster]\nmode = \"kubeconfig\"\nkubeconfig = \"kc.yaml\"\ncontext = \"kind-x\"\nnamespace = \"demo\"\nmanifests = [\"d.yaml\"]\n",
        )
        .expect("valid");
        let c = s.cluster.expect("cluster");
        assert_eq!(c.namespace.as_deref(), Some("demo"));
        match c.mode {
            ClusterMode::Kubeconfig { path, context } => {
                assert_eq!(path, Some(PathBuf::from("dir/kc.yaml")));
                assert_eq!(context.as_deref(), Some("kind-x"));
            }
            ClusterMode::Embedded(_) => panic!("kubeconfig"),
        }
    }

    #[test]
    fn bad_cluster_and_actions_are_refused_with_their_key() {
        let cases = [
            (
                "[cluster]\nmode = \"docker\"\nmanifests = [\"d\"]\n",
                "cluster.mode",
            ),
            ("[cluster]\nmode = \"embedded\"\n", "cluster.manifests"),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\nkubeconfig = \"k\"\n",
                "cluster.kubeconfig",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\nnamespace = \"Bad_NS\"\n",
                "cluster.namespace",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[cluster.embedded]\nnodes = 0\n",
                "cluster.embedded.nodes",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[cluster.embedded]\nendpoint_propagation = \"3s..1s\"\n",
                "cluster.embedded.endpoint_propagation",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[cluster.embedded]\npod_start = \"900ms..500ms\"\n",
                "cluster.embedded.pod_start",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[cluster.embedded]\nl7_retry = true\n",
                "cluster.embedded.l7_retry",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[cluster.embedded]\nproxy = \"ingress-nginx\"\nl7_retry = true\n",
                "cluster.embedded.l7_retry",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[cluster.embedded]\nspeed = 1\n",
                "cluster.embedded.speed",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[[actions]]\nat = \"1s\"\ndo = \"reboot\"\n",
                "actions[0].do",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[[actions]]\nat = \"1s\"\ndo = \"scale\"\n",
                "actions[0].replicas",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[[actions]]\nat = \"1s\"\ndo = \"scale\"\nreplicas = -1\n",
                "actions[0].replicas",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[[actions]]\nat = \"1s\"\ndo = \"rollout-restart\"\nnode = \"n\"\n",
                "actions[0].node",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[[actions]]\nat = \"25s\"\ndo = \"rollout-restart\"\n",
                "actions[0].at",
            ),
            (
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[[actions]]\nat = \"1s\"\ndo = \"set-image\"\n",
                "actions[0].image",
            ),
            (
                "[target]\nurl = \"http://127.0.0.1:1/\"\n[[actions]]\nat = \"1s\"\ndo = \"rollout-restart\"\n",
                "actions",
            ),
            (
                "[target]\nurl = \"http://127.0.0.1:1/\"\npath = \"/x\"\n[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n",
                "target.path",
            ),
        ];
        for (rest, key) in cases {
            let e = err(rest);
            assert!(e.contains(&format!(": {key}")), "{key}: {e}");
            assert!(e.starts_with("dir/s.toml:"), "{e}");
        }
    }
}
