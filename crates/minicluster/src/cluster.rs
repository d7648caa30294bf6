//! The embedded cluster as one handle: the store seeded like a fresh kind
//! cluster (namespaces, nodes `embedded-node-1…N`), the API server over
//! HTTPS, and the kubeconfig that reaches it.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use serde_json::json;

use super::{
    api::{self, ApiState},
    controllers::Controllers,
    kubelet::{
        ImageMap, Kubelet, KubeletConfig, KubeletError, KubeletHandle, KubeletSignal, PodStart,
    },
    process::IpAllocator,
    proxy::{Propagation, ProxyEvent, ProxyMode, SyncRunner},
    resources::ResourceKind,
    server::{ApiServer, Credentials, ServerError},
    services::{ServiceAddress, ServiceProxies},
    store::{Store, now_rfc3339},
};

/// The context, cluster and user name in the kubeconfig.
pub const CONTEXT: &str = "rolltest-embedded";

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the API server listens (port 0: any free port).
    pub listen: SocketAddr,
    /// Number of nodes.
    pub nodes: u32,
    /// Serve plain HTTP without authentication (debugging only).
    pub insecure_http: bool,
    /// How Services forward traffic (`l4` like kube-proxy, `l7` like an
    /// ingress, `IngressNginx` like ingress-nginx).
    pub proxy: ProxyMode,
    /// How long a proxy takes to apply an endpoint change.
    pub propagation: Propagation,
    /// Where the proxies' attribution records go (`None`: discarded).
    pub proxy_events: Option<tokio::sync::mpsc::UnboundedSender<ProxyEvent>>,
    /// Where the kubelet's exact record goes (preStop start and end,
    /// SIGTERM, SIGKILL, exit, to the instant; `None`: not kept).
    pub kubelet_signals: Option<tokio::sync::mpsc::UnboundedSender<KubeletSignal>>,
    /// Image → local command rules (the `rolltest-demo*` default is always added).
    pub images: ImageMap,
    /// The rolltest binary that runs `rolltest-demo*` images (`serve`);
    /// `None`: this executable.
    pub demo_binary: Option<PathBuf>,
    /// Where pod logs go (`None`: a temporary directory removed on shutdown).
    pub work_dir: Option<PathBuf>,
    /// How long each pod takes from its binding to a running container
    /// (default [`DEFAULT_POD_START`](crate::kubelet::DEFAULT_POD_START);
    /// [`PodStart::NONE`]: at once).
    pub pod_start: PodStart,
}

/// Default endpoint propagation, `40ms..1040ms`: kube-proxy's sync period
/// with kind's `minSyncPeriod: 1s`, after about 40 ms of watch delivery and
/// iptables-restore, so that an EndpointSlice change is applied 0.04-1.04 s
/// after its write (`scripts/realk8s` measured median 0.54 s, max 0.90 s on
/// a kind-like cluster); see [`crate::proxy::propagation`].
pub const DEFAULT_PROPAGATION: Propagation = Propagation {
    min: std::time::Duration::from_millis(40),
    max: std::time::Duration::from_millis(1040),
};

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            nodes: 2,
            insecure_http: false,
            proxy: ProxyMode::L4,
            propagation: DEFAULT_PROPAGATION,
            proxy_events: None,
            kubelet_signals: None,
            images: ImageMap::new(),
            demo_binary: None,
            work_dir: None,
            pod_start: crate::kubelet::DEFAULT_POD_START,
        }
    }
}

/// A running embedded cluster.
pub struct EmbeddedCluster {
    /// The objects (controllers and tests read and write it directly).
    pub store: Arc<Store>,
    /// The API server.
    pub server: ApiServer,
    /// Credentials (`None` when serving insecure HTTP).
    pub credentials: Option<Credentials>,
    /// The control loops.
    controllers: Option<Controllers>,
    /// The service proxies.
    proxies: Option<ServiceProxies>,
    /// The kubelet running the pods.
    kubelet: Option<KubeletHandle>,
    _temp_dir: Option<tempfile::TempDir>,
}

/// Why the embedded cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The kubelet failed.
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    /// The temporary work directory could not be made.
    #[error("cannot create the cluster's work directory: {0}")]
    WorkDir(#[source] std::io::Error),
    /// The service proxies' sync runner could not start its thread.
    #[error("cannot start the service proxies' sync runner: {0}")]
    ProxySync(#[source] std::io::Error),
    /// The executable's own path is unknown (needed to run rolltest-demo images).
    #[error("cannot find the rolltest executable to run rolltest-demo images: {0}")]
    Executable(#[source] std::io::Error),
}

impl EmbeddedCluster {
    /// Starts the cluster.
    pub async fn start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let store = Arc::new(Store::new());
        seed(&store, options.nodes);
        let credentials = if options.insecure_http {
            None
        } else {
            Some(Credentials::generate()?)
        };
        let state = ApiState::new(store.clone());
        let router_state = state.clone();
        let server = ApiServer::start(
            options.listen,
            move |address| {
                let _ = router_state.server_address.set(address);
                api::router(router_state)
            },
            credentials.as_ref(),
        )
        .await?;
        let controllers = Controllers::start(store.clone());
        let events = match &options.proxy_events {
            Some(tx) => tx.clone(),
            None => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(async move { while rx.recv().await.is_some() {} });
                tx
            }
        };
        let runner = SyncRunner::start(options.propagation).map_err(ClusterError::ProxySync)?;
        // One pod network: the kubelet allocates and tears down addresses,
        // the proxies see which are gone.
        let ips = Arc::new(IpAllocator::new());
        let proxies = ServiceProxies::start(
            store.clone(),
            options.proxy,
            runner,
            events,
            Arc::clone(&ips),
        );
        let (work_dir, temp_dir) = match &options.work_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("rolltest-cluster-")
                    .tempdir()
                    .map_err(ClusterError::WorkDir)?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let demo = match &options.demo_binary {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(ClusterError::Executable)?,
        };
        let mut images = options.images.clone();
        images.add_demo_default(demo);
        let kubelet = Kubelet::start(KubeletConfig {
            store: store.clone(),
            nodes: (1..=options.nodes.max(1))
                .map(|i| format!("embedded-node-{i}"))
                .collect(),
            images: Arc::new(images),
            work_dir,
            ips,
            signals: options.kubelet_signals.clone(),
            pod_start: options.pod_start,
        })?;
        let logs = kubelet.log_index();
        let _ = state
            .logs
            .set(Arc::new(move |ns: &str, pod: &str| logs(ns, pod)));
        Ok(EmbeddedCluster {
            store,
            server,
            credentials,
            controllers,
            proxies,
            kubelet: Some(kubelet),
            _temp_dir: temp_dir,
        })
    }

    /// The kubeconfig text (client certificate for the current context, a
    /// `-token` context with the bearer token; no user for insecure HTTP).
    pub fn kubeconfig(&self) -> String {
        match &self.credentials {
            Some(c) => c.kubeconfig(CONTEXT, &self.server.url),
            None => format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: {url}\n  name: {CONTEXT}\ncontexts:\n- context:\n    cluster: {CONTEXT}\n    namespace: default\n    user: {CONTEXT}\n  name: {CONTEXT}\ncurrent-context: {CONTEXT}\npreferences: {{}}\nusers:\n- name: {CONTEXT}\n  user: {{}}\n",
                url = self.server.url
            ),
        }
    }

    /// The service proxies' listeners running now.
    pub fn service_addresses(&self) -> Vec<ServiceAddress> {
        self.proxies
            .as_ref()
            .map(ServiceProxies::addresses)
            .unwrap_or_default()
    }

    /// Stops the controllers, the pods (every process), the service proxies
    /// and the API server.
    pub async fn shutdown(mut self) {
        if let Some(c) = self.controllers.take() {
            c.stop();
        }
        if let Some(k) = self.kubelet.take() {
            k.shutdown().await;
        }
        if let Some(p) = self.proxies.take() {
            p.stop();
        }
        self.server.shutdown().await;
    }
}

fn seed(store: &Store, nodes: u32) {
    let (Some(namespaces), Some(node_kind)) = (
        ResourceKind::find("", "v1", "namespaces"),
        ResourceKind::find("", "v1", "nodes"),
    ) else {
        return;
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let _ = store.create(
            namespaces,
            "",
            json!({"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
    }
    for i in 1..=nodes.max(1) {
        let name = format!("embedded-node-{i}");
        let now = now_rfc3339();
        let _ = store.create(
            node_kind,
            "",
            json!({
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                }},
                "spec": {},
                "status": {
                    "conditions": [{
                        "type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": now, "lastTransitionTime": now,
                    }],
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
                    "nodeInfo": {
                        "kubeletVersion": format!("v1.{}.0-rolltest", api::discovery_minor()),
                        "operatingSystem": "linux", "architecture": "amd64",
                        "containerRuntimeVersion": "rolltest://local-processes",
                        "kernelVersion": "", "osImage": "rolltest embedded", "kubeProxyVersion": "",
                        "machineID": "", "systemUUID": "", "bootID": "",
                    },
                    "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                    "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                },
            }),
        );
    }
}
