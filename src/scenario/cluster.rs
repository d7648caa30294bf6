//! `[cluster]` and `[[actions]]`: which cluster the scenario runs against,
//! what it applies there, and the disruptions it fires while the load runs.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use rolltest_core::correlate::ProxyMode;
use rolltest_minicluster::proxy::Propagation;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::values::PositiveDuration;

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
    /// `[cluster.embedded]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<RawEmbedded>,
}

/// `[cluster.embedded]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbedded {
    /// Delay before a proxy sees an endpoint change: `"1s..2s"` or `"1500ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_propagation: Option<PropagationValue>,
    /// `l4` (kube-proxy, NodePort) or `l7` (ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyKind>,
    /// l7 only: retry idempotent requests once on connect errors, like
    /// nginx-ingress' `proxy_next_upstream` (default false, so failures show).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7_retry: Option<bool>,
    /// Number of nodes (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// Image → local command (the manifest's args are appended); a command
    /// of `"{rolltest}"` is this rolltest executable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, Vec<String>>,
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

/// The embedded proxy's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// TCP forwarding, connections pinned (kube-proxy, NodePort).
    L4,
    /// HTTP reverse proxy, a backend per request (ingress).
    L7,
}

/// A propagation range as a self-validating value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropagationValue(pub Propagation);

impl<'de> Deserialize<'de> for PropagationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Propagation>()
            .map(PropagationValue)
            .map_err(de::Error::custom)
    }
}

impl Serialize for PropagationValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// A duration that may be zero (`"0s"`, `"10s"`), e.g. an action's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(pub Duration);

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Offset;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"10s\" or \"1m 30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Offset, E> {
                if v.trim() == "0" {
                    return Ok(Offset(Duration::ZERO));
                }
                super::values::parse_duration(v)
                    .map(Offset)
                    .map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Offset {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::values::format_duration(self.0))
    }
}

/// One `[[actions]]` entry as written: `at`, `do` and the keys `do` takes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    /// Offset from the start of the load.
    pub at: Offset,
    /// `rollout-restart`, `drain-node`, `delete-pod`, `scale`, `set-image`.
    #[serde(rename = "do")]
    pub action: ActionName,
    /// rollout-restart, scale, set-image: the Deployment (default: the scenario's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// drain-node: the node (default: the node running most of the Deployment's pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// delete-pod: the pod (default: the Deployment's oldest pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// delete-pod, drain-node: override the pods' grace period (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<i64>,
    /// drain-node: give up evicting after this long (default 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<PositiveDuration>,
    /// scale: the new replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// set-image: the new image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// set-image: the container (default: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// `do`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionName {
    /// `kubectl rollout restart`.
    RolloutRestart,
    /// `kubectl drain`.
    DrainNode,
    /// `kubectl delete pod`.
    DeletePod,
    /// `kubectl scale`.
    Scale,
    /// `kubectl set image`.
    SetImage,
}

impl ActionName {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionName::RolloutRestart => "rollout-restart",
            ActionName::DrainNode => "drain-node",
            ActionName::DeletePod => "delete-pod",
            ActionName::Scale => "scale",
            ActionName::SetImage => "set-image",
        }
    }
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
    /// `rolltest run` flags that replaced `[cluster]` values (`None`: the
    /// scenario's own cluster). See [`ClusterOverrides`].
    pub overridden: Option<Overridden>,
}

/// `rolltest run --kubeconfig FILE --context NAME -n NAMESPACE`: kubectl's
/// flags over the scenario's `[cluster]`.
///
/// Each flag replaces its own key and nothing else, in the scenario's mode:
/// - kubeconfig mode: `--kubeconfig` replaces `kubeconfig` (the scenario's
///   `context` still applies unless `--context` is given, and the other way
///   round), `--context` replaces `context`;
/// - embedded mode: `--kubeconfig` or `--context` runs the scenario on that
///   real cluster instead (mode kubeconfig, the same manifests and actions,
///   `[cluster.embedded]` unused; a kubeconfig not given comes from the
///   environment like kubectl's, a context not given is the current one).
///   The embedded cluster sends the load to the manifests' Service itself, so
///   the scenario's `[target]` must have a `url` (where that Service is
///   reachable on the real cluster); without one this is refused;
/// - `--namespace` replaces `namespace` in either mode.
///
/// A relative `--kubeconfig` is relative to the current directory, as for
/// kubectl (the scenario's `kubeconfig` key is relative to the scenario file);
/// it is made absolute here so the run's record names the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterOverrides {
    /// `--kubeconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// `-n/--namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ClusterOverrides {
    /// No flag given.
    pub fn is_empty(&self) -> bool {
        self.kubeconfig.is_none() && self.context.is_none() && self.namespace.is_none()
    }

    /// The flags as typed on a command line (`--kubeconfig F --context C -n N`).
    pub fn to_flags(&self) -> String {
        let mut out = Vec::new();
        if let Some(k) = &self.kubeconfig {
            out.push(format!("--kubeconfig {}", k.display()));
        }
        if let Some(c) = &self.context {
            out.push(format!("--context {c}"));
        }
        if let Some(n) = &self.namespace {
            out.push(format!("-n {n}"));
        }
        out.join(" ")
    }

    /// The names of the flags given, e.g. `--kubeconfig/--namespace`.
    pub fn names(&self) -> String {
        self.names_of(true)
    }

    /// The names of the flags given that choose the cluster (`--kubeconfig`,
    /// `--context`) and, with `namespace`, `--namespace`.
    fn names_of(&self, namespace: bool) -> String {
        let mut names = Vec::new();
        if self.kubeconfig.is_some() {
            names.push("--kubeconfig");
        }
        if self.context.is_some() {
            names.push("--context");
        }
        if namespace && self.namespace.is_some() {
            names.push("--namespace");
        }
        names.join("/")
    }
}

/// The flags that replaced `[cluster]` values, and what the scenario said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overridden {
    /// The flags, `--kubeconfig` made absolute.
    pub flags: ClusterOverrides,
    /// The scenario's own mode (the mode run differs when the flags switched
    /// an embedded scenario to a real cluster).
    pub scenario_mode: ClusterModeName,
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

/// Why the flags cannot apply to this scenario (bad input; the caller wraps
/// it with the flag's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OverrideProblem {
    /// The flag(s) at fault, e.g. `--namespace` or `--kubeconfig/--context`.
    pub flag: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Applies `flags` to a validated `[cluster]`. `has_url`: the scenario's
/// `[target]` has a `url` (an embedded scenario may leave it out and load
/// the Service); `target_path` is the path the load asks for and `file` the
/// scenario's name, for the hint.
pub(super) fn apply_overrides(
    spec: &mut ClusterSpec,
    flags: &ClusterOverrides,
    has_url: bool,
    target_path: &str,
    file: &str,
) -> Result<(), OverrideProblem> {
    if flags.is_empty() {
        return Ok(());
    }
    let problem = |flag: &str, message: String| OverrideProblem {
        flag: flag.to_string(),
        message,
    };
    if let Some(ns) = &flags.namespace
        && let Some(message) = namespace_problem(ns)
    {
        return Err(problem("--namespace", message));
    }
    if let Some(c) = &flags.context
        && c.trim().is_empty()
    {
        return Err(problem(
            "--context",
            "must not be empty (leave the flag out for the scenario's context, else the kubeconfig's current one)".into(),
        ));
    }
    let kubeconfig = match &flags.kubeconfig {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(problem("--kubeconfig", "must name a file".into()));
        }
        // Relative to the current directory, like kubectl's flag.
        Some(p) => Some(std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        None => None,
    };
    let scenario_mode = spec.mode.name();
    let switches = kubeconfig.is_some() || flags.context.is_some();
    match &mut spec.mode {
        ClusterMode::Kubeconfig { path, context } => {
            if let Some(k) = &kubeconfig {
                *path = Some(k.clone());
            }
            if let Some(c) = &flags.context {
                *context = Some(c.clone());
            }
        }
        ClusterMode::Embedded(_) if switches => {
            if !has_url {
                return Err(problem(
                    &flags.names_of(false),
                    format!(
                        "runs the embedded scenario {file} on a real cluster, but its [target] has no url: the embedded cluster sends the load to the manifests' Service itself, and rolltest cannot know where that Service is reachable on another cluster. Add `url = \"http://HOST:PORT{target_path}\"` to [target]: the Service's address on that cluster, e.g. a kind NodePort http://127.0.0.1:30080{target_path} (a `path` key goes into the url)"
                    ),
                ));
            }
            spec.mode = ClusterMode::Kubeconfig {
                path: kubeconfig.clone(),
                context: flags.context.clone(),
            };
        }
        ClusterMode::Embedded(_) => {}
    }
    if let Some(ns) = &flags.namespace {
        spec.namespace = Some(ns.clone());
    }
    spec.overridden = Some(Overridden {
        flags: ClusterOverrides {
            kubeconfig,
            context: flags.context.clone(),
            namespace: flags.namespace.clone(),
        },
        scenario_mode,
    });
    Ok(())
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
            ClusterMode::Embedded(e) => match e.proxy {
                ProxyKind::L4 => ProxyMode::L4,
                ProxyKind::L7 => ProxyMode::L7,
            },
            ClusterMode::Kubeconfig { .. } => ProxyMode::External,
        }
    }
}

/// `[cluster.embedded]`, validated with defaults.
#[derive(Debug, Clone)]
pub struct EmbeddedSpec {
    /// Proxy propagation delay range.
    pub propagation: Propagation,
    /// Proxy kind.
    pub proxy: ProxyKind,
    /// l7 retries on connect errors.
    pub l7_retry: bool,
    /// Node count.
    pub nodes: u32,
    /// Image → command, in file order (paths as written: relative commands
    /// are resolved against the scenario's directory when they contain `/`).
    pub images: Vec<(String, Vec<String>)>,
}

/// One action, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Index in `[[actions]]`.
    pub index: usize,
    /// Offset from the start of the load.
    pub at: Duration,
    /// What to do.
    pub kind: ActionKind,
}

/// What an action does.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// Patch the pod template's `kubectl.kubernetes.io/restartedAt` annotation.
    RolloutRestart {
        /// The Deployment (`None`: the scenario's).
        deployment: Option<String>,
    },
    /// Cordon the node and evict each of its pods, retrying 429s.
    DrainNode {
        /// The node (`None`: the one running most of the Deployment's pods).
        node: Option<String>,
        /// Grace period override for the evictions.
        grace_period: Option<i64>,
        /// Give up after this long.
        timeout: Duration,
    },
    /// Delete one pod.
    DeletePod {
        /// The pod (`None`: the Deployment's oldest).
        pod: Option<String>,
        /// Grace period override.
        grace_period: Option<i64>,
    },
    /// Set the Deployment's replicas.
    Scale {
        /// The Deployment (`None`: the scenario's).
        deployment: Option<String>,
        /// The new count.
        replicas: i32,
    },
    /// Change a container's image.
    SetImage {
        /// The Deployment (`None`: the scenario's).
        deployment: Option<String>,
        /// The container (`None`: the first).
        container: Option<String>,
        /// The new image.
        image: String,
    },
}

impl ActionKind {
    /// The `do` name.
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::RolloutRestart { .. } => "rollout-restart",
            ActionKind::DrainNode { .. } => "drain-node",
            ActionKind::DeletePod { .. } => "delete-pod",
            ActionKind::Scale { .. } => "scale",
            ActionKind::SetImage { .. } => "set-image",
        }
    }
}

/// In `[cluster.embedded.images]`, a command of `"{rolltest}"` is the
/// rolltest executable running the cluster (e.g. a demo image's v2 build:
/// `["{rolltest}", "serve", "--crash-after", "9s"]`).
pub const ROLLTEST_PLACEHOLDER: &str = "{rolltest}";

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
            let e = raw.embedded.clone().unwrap_or_default();
            let nodes = e.nodes.unwrap_or(2);
            if !(1..=64).contains(&nodes) {
                return Err(invalid(
                    "cluster.embedded.nodes",
                    format!("must be between 1 and 64 (got {nodes})"),
                ));
            }
            let proxy = e.proxy.unwrap_or(ProxyKind::L4);
            if e.l7_retry == Some(true) && proxy != ProxyKind::L7 {
                return Err(invalid(
                    "cluster.embedded.l7_retry",
                    "needs proxy = \"l7\"".into(),
                ));
            }
            let mut images = Vec::new();
            for (image, command) in &e.images {
                if command.is_empty() || command[0].trim().is_empty() {
                    return Err(invalid(
                        &format!("cluster.embedded.images.{image}"),
                        "must name a command, e.g. [\"./target/release/my-api\"]".into(),
                    ));
                }
                let mut command = command.clone();
                if command[0] != ROLLTEST_PLACEHOLDER
                    && command[0].contains('/')
                    && Path::new(&command[0]).is_relative()
                {
                    command[0] = base.join(&command[0]).to_string_lossy().into_owned();
                }
                images.push((image.clone(), command));
            }
            ClusterMode::Embedded(EmbeddedSpec {
                propagation: e
                    .endpoint_propagation
                    .map_or(rolltest_minicluster::cluster::DEFAULT_PROPAGATION, |p| p.0),
                proxy,
                l7_retry: e.l7_retry.unwrap_or(false),
                nodes,
                images,
            })
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
    Ok(ClusterSpec {
        mode,
        namespace: raw.namespace.clone(),
        manifests,
        deployment: raw.deployment.clone(),
        teardown: raw.teardown.unwrap_or(false),
        tail: raw.tail.map_or(DEFAULT_TAIL, |t| t.0),
        ready_timeout: raw.ready_timeout.map_or(DEFAULT_READY_TIMEOUT, |t| t.0),
        settle_timeout: raw.settle_timeout.map_or(DEFAULT_SETTLE_TIMEOUT, |t| t.0),
        overridden: None,
    })
}

/// Checks each `[[actions]]` entry against what its `do` takes.
pub(super) fn validate_actions<E>(
    raw: &[RawAction],
    load_duration: Duration,
    invalid: impl Fn(&str, String) -> E,
) -> Result<Vec<Action>, E> {
    let mut out = Vec::with_capacity(raw.len());
    for (index, a) in raw.iter().enumerate() {
        let key = |k: &str| format!("actions[{index}].{k}");
        let allowed: &[&str] = match a.action {
            ActionName::RolloutRestart => &["deployment"],
            ActionName::DrainNode => &["node", "grace_period", "timeout"],
            ActionName::DeletePod => &["pod", "grace_period"],
            ActionName::Scale => &["deployment", "replicas"],
            ActionName::SetImage => &["deployment", "image", "container"],
        };
        let given = [
            ("deployment", a.deployment.is_some()),
            ("node", a.node.is_some()),
            ("pod", a.pod.is_some()),
            ("grace_period", a.grace_period.is_some()),
            ("timeout", a.timeout.is_some()),
            ("replicas", a.replicas.is_some()),
            ("image", a.image.is_some()),
            ("container", a.container.is_some()),
        ];
        for (name, set) in given {
            if set && !allowed.contains(&name) {
                return Err(invalid(
                    &key(name),
                    format!(
                        "`{name}` does not apply to do = \"{}\" (it takes: {})",
                        a.action.as_str(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        if a.at.0 >= load_duration {
            return Err(invalid(
                &key("at"),
                format!(
                    "is at or after the end of the load ({}): the disruption would go unobserved",
                    super::values::format_duration(load_duration)
                ),
            ));
        }
        if let Some(g) = a.grace_period
            && g < 0
        {
            return Err(invalid(
                &key("grace_period"),
                format!("must be 0 or more seconds (got {g})"),
            ));
        }
        let kind = match a.action {
            ActionName::RolloutRestart => ActionKind::RolloutRestart {
                deployment: a.deployment.clone(),
            },
            ActionName::DrainNode => ActionKind::DrainNode {
                node: a.node.clone(),
                grace_period: a.grace_period,
                timeout: a.timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |t| t.0),
            },
            ActionName::DeletePod => ActionKind::DeletePod {
                pod: a.pod.clone(),
                grace_period: a.grace_period,
            },
            ActionName::Scale => {
                let replicas = a
                    .replicas
                    .ok_or_else(|| invalid(&key("replicas"), "is required for scale".into()))?;
                if replicas < 0 {
                    return Err(invalid(
                        &key("replicas"),
                        format!("must be 0 or more (got {replicas})"),
                    ));
                }
                ActionKind::Scale {
                    deployment: a.deployment.clone(),
                    replicas,
                }
            }
            ActionName::SetImage => {
                let image = a
                    .image
                    .clone()
                    .filter(|i| !i.trim().is_empty())
                    .ok_or_else(|| invalid(&key("image"), "is required for set-image".into()))?;
                ActionKind::SetImage {
                    deployment: a.deployment.clone(),
                    container: a.container.clone(),
                    image,
                }
            }
        };
        out.push(Action {
            index,
            at: a.at.0,
            kind,
        });
    }
    out.sort_by_key(|a| a.at);
    Ok(out)
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
mod tests {
    use super::*;
    use crate::scenario::{Scenario, ScenarioError};

    const HEAD: &str = "name = \"t\"\n[load]\nrate = 10\nduration = \"20s\"\n";

    fn parse(rest: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(&format!("{HEAD}{rest}"), Some(Path::new("dir/s.toml")))
    }

    fn err(rest: &str) -> String {
        match parse(rest) {
            Ok(_) => panic!("accepted:\n{rest}"),
            Err(e) => e.to_string(),
        }
    }

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
                "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[cluster.embedded]\nl7_retry = true\n",
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

    #[test]
    fn actions_are_sorted_by_offset_and_keep_their_index() {
        let s = parse(
            "[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\n[[actions]]\nat = \"9s\"\ndo = \"scale\"\nreplicas = 2\n[[actions]]\nat = \"0s\"\ndo = \"delete-pod\"\ngrace_period = 0\n",
        )
        .expect("valid");
        assert_eq!(s.actions[0].index, 1);
        assert_eq!(s.actions[0].at, Duration::ZERO);
        assert_eq!(s.actions[1].index, 0);
        assert_eq!(
            s.actions[1].kind,
            ActionKind::Scale {
                deployment: None,
                replicas: 2
            }
        );
    }
    const KIND: &str = "[target]\nurl = \"http://127.0.0.1:30080/\"\n[cluster]\nmode = \"kubeconfig\"\nkubeconfig = \"kc.yaml\"\ncontext = \"kind-rolltest\"\nnamespace = \"demo\"\nmanifests = [\"d.yaml\"]\n";
    const EMBEDDED: &str = "[cluster]\nmode = \"embedded\"\nmanifests = [\"d.yaml\"]\n[cluster.embedded]\nproxy = \"l7\"\n";

    fn flags(
        kubeconfig: Option<&str>,
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> ClusterOverrides {
        ClusterOverrides {
            kubeconfig: kubeconfig.map(PathBuf::from),
            context: context.map(String::from),
            namespace: namespace.map(String::from),
        }
    }

    fn overridden(rest: &str, f: &ClusterOverrides) -> Result<Scenario, ScenarioError> {
        let mut s = parse(rest).expect("valid scenario");
        s.apply_overrides(f)?;
        Ok(s)
    }

    fn kubeconfig_of(s: &Scenario) -> (Option<PathBuf>, Option<String>) {
        match &s.cluster.as_ref().expect("cluster").mode {
            ClusterMode::Kubeconfig { path, context } => (path.clone(), context.clone()),
            ClusterMode::Embedded(_) => panic!("kubeconfig mode expected"),
        }
    }

    fn flag_error(rest: &str, f: &ClusterOverrides) -> (String, String) {
        match overridden(rest, f) {
            Ok(_) => panic!("accepted {f:?}"),
            Err(ScenarioError::Flag { flag, message }) => (flag, message),
            Err(e) => panic!("not a flag error: {e}"),
        }
    }

    #[test]
    fn no_flag_changes_nothing() {
        let text = format!("{HEAD}{KIND}");
        let s = overridden(KIND, &ClusterOverrides::default()).expect("ok");
        assert_eq!(s.text, text);
        assert!(s.cluster.expect("cluster").overridden.is_none());
    }

    #[test]
    fn kubeconfig_flags_replace_each_their_own_key() {
        let cwd = std::env::current_dir().expect("cwd");
        // --kubeconfig alone: the file from the flag, relative to the current
        // directory (the key was relative to the scenario's); the context stays.
        let s = overridden(KIND, &flags(Some("other/kc"), None, None)).expect("ok");
        assert_eq!(
            kubeconfig_of(&s),
            (Some(cwd.join("other/kc")), Some("kind-rolltest".into()))
        );
        let c = s.cluster.as_ref().expect("cluster");
        assert_eq!(c.namespace.as_deref(), Some("demo"));
        let o = c.overridden.as_ref().expect("overridden");
        assert_eq!(o.scenario_mode, ClusterModeName::Kubeconfig);
        assert_eq!(o.flags.kubeconfig, Some(cwd.join("other/kc")));
        // --context alone: the scenario's file (relative to the scenario).
        let s = overridden(KIND, &flags(None, Some("kind-b"), None)).expect("ok");
        assert_eq!(
            kubeconfig_of(&s),
            (Some(PathBuf::from("dir/kc.yaml")), Some("kind-b".into()))
        );
        // All three; an absolute --kubeconfig stays as it is.
        let s =
            overridden(KIND, &flags(Some("/etc/kc"), Some("kind-b"), Some("ns-2"))).expect("ok");
        assert_eq!(
            kubeconfig_of(&s),
            (Some(PathBuf::from("/etc/kc")), Some("kind-b".into()))
        );
        assert_eq!(
            s.cluster.expect("cluster").namespace.as_deref(),
            Some("ns-2")
        );
    }

    #[test]
    fn cluster_flags_switch_an_embedded_scenario_with_a_url_to_that_cluster() {
        let rest =
            format!("[target]\nurl = \"http://127.0.0.1:30080/x\"\nservice = \"api\"\n{EMBEDDED}");
        // --context alone: the kubeconfig comes from the environment.
        let s = overridden(&rest, &flags(None, Some("kind-rolltest"), None)).expect("ok");
        assert_eq!(kubeconfig_of(&s), (None, Some("kind-rolltest".into())));
        assert_eq!(s.target.url.to_string(), "http://127.0.0.1:30080/x");
        assert_eq!(s.target.service_name.as_deref(), Some("api"));
        let c = s.cluster.as_ref().expect("cluster");
        assert_eq!(c.manifests, vec![PathBuf::from("dir/d.yaml")]);
        assert_eq!(
            c.overridden.as_ref().map(|o| o.scenario_mode),
            Some(ClusterModeName::Embedded)
        );
        // --kubeconfig alone: that file's current context.
        let s = overridden(&rest, &flags(Some("kc"), None, Some("demo"))).expect("ok");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(kubeconfig_of(&s), (Some(cwd.join("kc")), None));
        assert_eq!(
            s.cluster.expect("cluster").namespace.as_deref(),
            Some("demo")
        );
    }

    #[test]
    fn namespace_alone_keeps_an_embedded_scenario_embedded() {
        let s = overridden(EMBEDDED, &flags(None, None, Some("demo"))).expect("ok");
        let c = s.cluster.expect("cluster");
        assert!(matches!(c.mode, ClusterMode::Embedded(_)));
        assert_eq!(c.namespace.as_deref(), Some("demo"));
        // The service target is still resolved by the embedded cluster.
        assert_eq!(s.target.service, Some(None));
    }

    #[test]
    fn switching_an_embedded_scenario_without_a_url_says_what_to_add() {
        let rest = format!("[target]\npath = \"/work\"\n{EMBEDDED}");
        for (f, named) in [
            (flags(Some("kc"), None, None), "--kubeconfig"),
            (flags(None, Some("kind-x"), Some("demo")), "--context"),
            (
                flags(Some("kc"), Some("kind-x"), None),
                "--kubeconfig/--context",
            ),
        ] {
            let (flag, message) = flag_error(&rest, &f);
            assert_eq!(flag, named);
            assert!(message.contains("dir/s.toml"), "{message}");
            assert!(message.contains("[target] has no url"), "{message}");
            assert!(
                message.contains("Add `url = \"http://HOST:PORT/work\"` to [target]"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_bad_namespace_flag_is_refused_in_the_keys_words() {
        let key =
            err("[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\nnamespace = \"Bad_NS\"\n");
        for rest in [EMBEDDED, KIND] {
            let (flag, message) = flag_error(rest, &flags(None, None, Some("Bad_NS")));
            assert_eq!(flag, "--namespace");
            assert!(
                key.ends_with(&format!("cluster.namespace: {message}")),
                "{key} / {message}"
            );
        }
        let e = overridden(KIND, &flags(None, None, Some(""))).expect_err("empty");
        assert_eq!(
            e.to_string(),
            "--namespace: \"\" is not a valid namespace name (lowercase letters, digits and '-')"
        );
        let (flag, _) = flag_error(KIND, &flags(None, Some(" "), None));
        assert_eq!(flag, "--context");
        let (flag, _) = flag_error(KIND, &flags(Some(""), None, None));
        assert_eq!(flag, "--kubeconfig");
    }

    #[test]
    fn cluster_flags_on_a_plain_load_scenario_are_refused() {
        let (flag, message) = flag_error(
            "[target]\nurl = \"http://127.0.0.1:9/\"\n",
            &flags(None, Some("kind-x"), Some("demo")),
        );
        assert_eq!(flag, "--context/--namespace");
        assert!(message.contains("has no [cluster]"), "{message}");
    }

    #[test]
    fn the_text_as_run_names_the_flags_and_parses_to_the_same_scenario() {
        let rest = format!(
            "[target]\nurl = \"http://127.0.0.1:30080/\"\n{EMBEDDED}[verdict]\nmax_p99_ms = 250\n"
        );
        let original = format!("{HEAD}{rest}");
        let s = overridden(&rest, &flags(Some("/k/config"), None, Some("demo"))).expect("ok");
        let header = s
            .text
            .strip_suffix(original.as_str())
            .expect("the file follows the header");
        assert!(
            header.starts_with("# Run with `rolltest run --kubeconfig /k/config -n demo`, which overrode [cluster] below:\n"),
            "{header}"
        );
        assert!(header.contains("mode = \"kubeconfig\", kubeconfig = \"/k/config\", the kubeconfig's current context, namespace = \"demo\""), "{header}");
        assert!(
            header.contains("the scenario's mode = \"embedded\" was not used"),
            "{header}"
        );
        assert!(
            header.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "{header}"
        );
        // `rolltest report` reads it back: the same name and limits.
        let again = Scenario::parse(&s.text, Some(Path::new("run/scenario.toml"))).expect("parses");
        assert_eq!(again.name, s.name);
        assert_eq!(again.limits, s.limits);
    }
}
