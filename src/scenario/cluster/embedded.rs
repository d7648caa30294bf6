//! `[cluster.embedded]`: the embedded cluster's shape as written and
//! validated, and the one place rolltest's [`ProxyKind`] becomes the cluster
//! crate's own input type.

use std::{collections::BTreeMap, path::Path};

use rolltest_core::model::ProxyKind;
use rolltest_minicluster::{kubelet::PodStart, proxy::Propagation};
use serde::{Deserialize, Serialize};

/// `[cluster.embedded]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbedded {
    /// How late a proxy applies endpoint changes: `"1s..2s"` (MIN after the
    /// write, synced at most once per MAX-MIN, like kube-proxy's
    /// `minSyncPeriod`) or `"1500ms"` (each change exactly that late).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_propagation: Option<Propagation>,
    /// `l4` (kube-proxy, NodePort), `l7` (ingress, no retries) or
    /// `ingress-nginx` (l7 with ingress-nginx's retries and sync rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyKind>,
    /// l7 only: retry idempotent requests once on connect errors, like
    /// nginx-ingress' `proxy_next_upstream` (default false, so failures show).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7_retry: Option<bool>,
    /// Number of nodes (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// How long each pod takes from its binding to a running container, like
    /// a real kubelet's sandbox, network and container start: `"500ms..900ms"`
    /// (each pod its own draw), `"700ms"`, or `"0s"` (at once); default
    /// [`DEFAULT_POD_START`](rolltest_minicluster::kubelet::DEFAULT_POD_START).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_start: Option<PodStart>,
    /// Image → local command (the manifest's args are appended); a command
    /// of `"{rolltest}"` is this rolltest executable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, Vec<String>>,
}

/// `[cluster.embedded]`, validated with defaults.
#[derive(Debug, Clone)]
pub struct EmbeddedSpec {
    /// Proxy propagation (delivery delay and sync period).
    pub propagation: Propagation,
    /// Proxy kind.
    pub proxy: ProxyKind,
    /// l7 retries on connect errors.
    pub l7_retry: bool,
    /// Node count.
    pub nodes: u32,
    /// Delay from a pod's binding to its container running.
    pub pod_start: PodStart,
    /// Image → command, in file order (paths as written: relative commands
    /// are resolved against the scenario's directory when they contain `/`).
    pub images: Vec<(String, Vec<String>)>,
}

impl EmbeddedSpec {
    /// The proxy the embedded cluster is started with.
    pub fn cluster_proxy(&self) -> rolltest_minicluster::proxy::ProxyMode {
        cluster_proxy(self.proxy, self.l7_retry)
    }
}

/// The one mapping from rolltest's [`ProxyKind`] to the embedded cluster's
/// own input type: the cluster crate stands alone (it imports nothing of
/// rolltest), so this boundary is where the two meet.
pub fn cluster_proxy(kind: ProxyKind, l7_retry: bool) -> rolltest_minicluster::proxy::ProxyMode {
    use rolltest_minicluster::proxy::ProxyMode as Cluster;
    match kind {
        ProxyKind::L4 => Cluster::L4,
        ProxyKind::L7 => Cluster::L7 {
            retry_connect_errors: l7_retry,
        },
        ProxyKind::IngressNginx => {
            Cluster::IngressNginx(rolltest_minicluster::proxy::IngressNginx::DEFAULT)
        }
    }
}

/// In `[cluster.embedded.images]`, a command of `"{rolltest}"` is the
/// rolltest executable running the cluster (e.g. a demo image's v2 build:
/// `["{rolltest}", "serve", "--crash-after", "9s"]`).
pub const ROLLTEST_PLACEHOLDER: &str = "{rolltest}";

/// Checks `[cluster.embedded]` (`e`, defaults for what it leaves out);
/// relative image commands are resolved against `base`.
pub(in crate::scenario) fn validate<E>(
    e: &RawEmbedded,
    base: &Path,
    invalid: impl Fn(&str, String) -> E,
) -> Result<EmbeddedSpec, E> {
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
            "needs proxy = \"l7\" (ingress-nginx retries by its own defaults)".into(),
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
    Ok(EmbeddedSpec {
        propagation: e
            .endpoint_propagation
            .unwrap_or(rolltest_minicluster::cluster::DEFAULT_PROPAGATION),
        proxy,
        l7_retry: e.l7_retry.unwrap_or(false),
        nodes,
        pod_start: e
            .pod_start
            .unwrap_or(rolltest_minicluster::kubelet::DEFAULT_POD_START),
        images,
    })
}

#[cfg(test)]
mod tests {
    use rolltest_minicluster::proxy::ProxyMode as Cluster;

    use super::*;

    #[test]
    fn the_proxy_kind_maps_to_the_clusters_mode_with_l7_retry_only_on_l7() {
        assert_eq!(cluster_proxy(ProxyKind::L4, false), Cluster::L4);
        assert_eq!(cluster_proxy(ProxyKind::L4, true), Cluster::L4);
        assert_eq!(
            cluster_proxy(ProxyKind::L7, true),
            Cluster::L7 {
                retry_connect_errors: true
            }
        );
        assert_eq!(
            cluster_proxy(ProxyKind::L7, false),
            Cluster::L7 {
                retry_connect_errors: false
            }
        );
        assert_eq!(
            cluster_proxy(ProxyKind::IngressNginx, false),
            Cluster::IngressNginx(rolltest_minicluster::proxy::IngressNginx::DEFAULT)
        );
    }
}
