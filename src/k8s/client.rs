//! Connecting: a kubeconfig (a file, the environment like kubectl, or the
//! embedded cluster's text) becomes a [`Cluster`] — a kube client with kube's
//! automatic 429 retries off, its namespace, and proof that the server answers
//! and accepts the credentials.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
};

use super::{K8sError, classify};

/// Where the kubeconfig comes from.
#[derive(Debug, Clone)]
pub enum KubeconfigOrigin {
    /// Like kubectl: `$KUBECONFIG` (files merged), else `~/.kube/config`.
    Environment,
    /// One kubeconfig file.
    File(PathBuf),
    /// Kubeconfig text (the embedded cluster's).
    Text(String),
}

/// How to reach a cluster.
#[derive(Debug, Clone)]
pub struct KubeSource {
    /// The kubeconfig.
    pub kubeconfig: KubeconfigOrigin,
    /// The context (`None`: the kubeconfig's current context).
    pub context: Option<String>,
    /// The namespace (`None`: the context's, else `default`).
    pub namespace: Option<String>,
}

impl KubeSource {
    /// A kubeconfig's text, its current context and namespace.
    pub fn text(kubeconfig: impl Into<String>) -> Self {
        KubeSource {
            kubeconfig: KubeconfigOrigin::Text(kubeconfig.into()),
            context: None,
            namespace: None,
        }
    }

    /// A kubeconfig file (`None`: from the environment, like kubectl).
    pub fn file(path: Option<PathBuf>) -> Self {
        KubeSource {
            kubeconfig: path.map_or(KubeconfigOrigin::Environment, KubeconfigOrigin::File),
            context: None,
            namespace: None,
        }
    }

    /// With this context.
    pub fn with_context(mut self, context: Option<String>) -> Self {
        self.context = context;
        self
    }

    /// With this namespace.
    pub fn with_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    /// Where the kubeconfig comes from, in words (a path, "from $KUBECONFIG
    /// (...)", "~/.kube/config", "(embedded cluster)").
    pub fn describe(&self) -> String {
        match &self.kubeconfig {
            KubeconfigOrigin::Environment => match std::env::var_os("KUBECONFIG") {
                Some(v) if !v.is_empty() => format!("from $KUBECONFIG ({})", v.to_string_lossy()),
                _ => "~/.kube/config".into(),
            },
            KubeconfigOrigin::File(p) => p.display().to_string(),
            KubeconfigOrigin::Text(_) => "(embedded cluster)".into(),
        }
    }
}

/// A connected cluster: cheap to clone (the client is shared).
#[derive(Clone)]
pub struct Cluster {
    /// The kube client (automatic retries off).
    pub client: Client,
    /// The namespace manifests go to and the watches look at.
    pub namespace: String,
    /// The API server URL.
    pub server: String,
    /// The context used.
    pub context: String,
    /// The server's version (`v1.33.1`).
    pub version: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .field("server", &self.server)
            .field("context", &self.context)
            .field("version", &self.version)
            .finish()
    }
}

impl Cluster {
    /// An `Api` for a namespaced kind in the cluster's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Maps a kube error, naming the server and what was being done.
    pub(crate) fn err(&self, what: impl Into<String>, e: kube::Error) -> K8sError {
        classify(&self.server, what, e)
    }
}

fn load_error(origin: &str, e: KubeconfigError) -> K8sError {
    K8sError::Kubeconfig {
        origin: origin.to_string(),
        message: super::chain(&e),
    }
}

/// Connects: loads the kubeconfig, picks the context, builds the client with
/// `default_retry = false`, then checks the server answers (`/version`) and
/// lets this user list Deployments in the namespace.
pub async fn connect(source: &KubeSource) -> Result<Cluster, K8sError> {
    let origin = source.describe();
    let kubeconfig = match &source.kubeconfig {
        KubeconfigOrigin::Text(t) => {
            Kubeconfig::from_yaml(t).map_err(|e| load_error(&origin, e))?
        }
        KubeconfigOrigin::File(p) => {
            Kubeconfig::read_from(p).map_err(|e| load_error(&origin, e))?
        }
        KubeconfigOrigin::Environment => match Kubeconfig::read() {
            Ok(k) => k,
            Err(KubeconfigError::FindPath) => return Err(K8sError::NoKubeconfig),
            Err(KubeconfigError::ReadConfig(e, _))
                if e.kind() == std::io::ErrorKind::NotFound
                    && std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty()) =>
            {
                return Err(K8sError::NoKubeconfig);
            }
            Err(e) => return Err(load_error(&origin, e)),
        },
    };
    let available: Vec<String> = kubeconfig.contexts.iter().map(|c| c.name.clone()).collect();
    let context = match &source.context {
        Some(c) => {
            if !available.contains(c) {
                return Err(K8sError::ContextNotFound {
                    context: c.clone(),
                    origin,
                    available,
                });
            }
            c.clone()
        }
        None => match kubeconfig.current_context.clone().filter(|c| !c.is_empty()) {
            Some(c) if available.contains(&c) => c,
            Some(c) => {
                return Err(K8sError::ContextNotFound {
                    context: c,
                    origin,
                    available,
                });
            }
            None => return Err(K8sError::NoCurrentContext { origin, available }),
        },
    };
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| load_error(&origin, e))?;
    // Evictions refused by a PodDisruptionBudget (429) must reach us: we retry
    // them visibly, like kubectl, instead of kube's silent back-off.
    config.default_retry = false;
    if let Some(ns) = &source.namespace {
        config.default_namespace = ns.clone();
    }
    let namespace = config.default_namespace.clone();
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let client = Client::try_from(config).map_err(|e| K8sError::Client {
        what: format!("build a client for {server}"),
        message: super::chain(&e),
    })?;
    let version = client
        .apiserver_version()
        .await
        .map_err(|e| classify(&server, "read the server version", e))?;
    let cluster = Cluster {
        client,
        namespace,
        server,
        context,
        version: version.git_version,
    };
    // /version is public on real clusters; a namespaced list proves the
    // credentials (401) and the permissions (403).
    cluster
        .api::<Deployment>()
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            cluster.err(
                format!("list deployments in namespace {}", cluster.namespace),
                e,
            )
        })?;
    Ok(cluster)
}
