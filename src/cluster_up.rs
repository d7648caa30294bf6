//! `rolltest cluster up`: the embedded cluster alone, in the foreground, so
//! `kubectl` (or any kube client) can be pointed at it.

use std::{net::SocketAddr, path::PathBuf};

use rolltest_minicluster::{
    cluster::{ClusterOptions, EmbeddedCluster},
    process::ChildRegistry,
    proxy::{Propagation, ProxyMode},
};

use rolltest_core::ExitStatus;

/// Options of `rolltest cluster up`.
#[derive(Debug, Clone)]
pub struct ClusterUpOptions {
    /// Where to write the kubeconfig.
    pub kubeconfig: PathBuf,
    /// Number of nodes.
    pub nodes: u32,
    /// API server address (port 0: any free port).
    pub listen: SocketAddr,
    /// Plain HTTP, no authentication.
    pub insecure_http: bool,
    /// Service proxy mode.
    pub proxy: ProxyMode,
    /// Endpoint propagation delay.
    pub propagation: Propagation,
    /// Delay from a pod's binding to its container running.
    pub pod_start: rolltest_minicluster::kubelet::PodStart,
}

/// Why the cluster could not run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterUpError {
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The cluster could not start.
    #[error(transparent)]
    Cluster(#[from] rolltest_minicluster::cluster::ClusterError),
    /// The kubeconfig could not be written.
    #[error("cannot write the kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Bad flag value.
    #[error("--nodes: must be between 1 and 100 (got {0})")]
    Nodes(u32),
}

impl ClusterUpError {
    /// The exit status for this error.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            ClusterUpError::Nodes(_) => ExitStatus::BadInput,
            _ => ExitStatus::RunError,
        }
    }
}

/// Runs the cluster until Ctrl-C or SIGTERM.
pub fn cluster_up(opts: &ClusterUpOptions) -> Result<ExitStatus, ClusterUpError> {
    if !(1..=100).contains(&opts.nodes) {
        return Err(ClusterUpError::Nodes(opts.nodes));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ClusterUpError::Runtime)?;
    // Every pod process dies with this command, however it ends.
    let _orphans = ChildRegistry::global().guard();
    runtime.block_on(async {
        let cluster = EmbeddedCluster::start(&ClusterOptions {
            listen: opts.listen,
            nodes: opts.nodes,
            insecure_http: opts.insecure_http,
            proxy: opts.proxy,
            propagation: opts.propagation,
            pod_start: opts.pod_start,
            ..ClusterOptions::default()
        })
        .await?;
        write_private(&opts.kubeconfig, &cluster.kubeconfig()).map_err(|source| {
            ClusterUpError::Kubeconfig {
                path: opts.kubeconfig.clone(),
                source,
            }
        })?;
        let shown =
            std::path::absolute(&opts.kubeconfig).unwrap_or_else(|_| opts.kubeconfig.clone());
        println!(
            "embedded cluster up: {} ({} node{}){}",
            cluster.server.url,
            opts.nodes,
            if opts.nodes == 1 { "" } else { "s" },
            if opts.insecure_http {
                ", plain HTTP without authentication"
            } else {
                ""
            }
        );
        println!("kubeconfig: {}", shown.display());
        println!(
            "services: {} proxy, endpoint changes applied after {}; NodePorts listen on 127.0.0.1",
            match opts.proxy {
                ProxyMode::L4 => "l4 (kube-proxy)",
                ProxyMode::L7 { .. } => "l7 (ingress)",
                ProxyMode::IngressNginx(_) => "ingress-nginx (l7, its retries and sync rate)",
            },
            opts.propagation
        );
        println!();
        println!("  export KUBECONFIG={}", shown.display());
        println!("  kubectl get nodes");
        println!();
        println!("Ctrl-C stops it.");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ClusterUpError::Runtime)?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("stopping the embedded cluster");
        cluster.shutdown().await;
        Ok(ExitStatus::Pass)
    })
}

/// Writes a file readable by its owner only (it holds a private key).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}
