//! The embedded cluster: a small, real Kubernetes control plane for one
//! machine, with pods as local processes on their own loopback IPs behind a
//! service proxy whose endpoint view lags like kube-proxy's.
//!
//! It stands on its own: nothing of rolltest is imported, and any project's
//! tests can start one and point a kube client (or `kubectl`) at it:
//!
//! ```no_run
//! # async fn demo() -> Result<(), rolltest_minicluster::cluster::ClusterError> {
//! use rolltest_minicluster::cluster::{ClusterOptions, EmbeddedCluster};
//!
//! let cluster = EmbeddedCluster::start(&ClusterOptions::default()).await?;
//! std::fs::write("/tmp/embedded.kubeconfig", cluster.kubeconfig()).ok();
//! // ... apply manifests, run a rollout, watch pods ...
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Pods run local commands: [`kubelet::ImageMap`] maps image names to
//! command lines, and images named `rolltest-demo*` run a given binary's
//! `serve` subcommand (rolltest's demo app; [`cluster::ClusterOptions`]'s
//! `demo_binary`).
//!
//! [`cluster::EmbeddedCluster`] puts the parts together:
//! - [`resources`], [`store`]: the API types served, and the object store
//!   with one resourceVersion counter and resumable watches;
//! - [`api`], [`server`]: the HTTP API kube-rs and kubectl use (discovery,
//!   list/watch, patches, subresources, eviction, Table output, Status
//!   errors; bodies in JSON or Kubernetes protobuf), over HTTPS with the cluster's CA, client certificates and a token;
//! - [`controllers`]: deployment, replicaset, scheduler, endpointslice,
//!   disruption and garbage collection, run in-process on store changes;
//! - [`kubelet`], [`process`]: pods as processes in their own process groups
//!   on loopback IPs, probes, restarts, and the kubelet's termination
//!   sequence; nothing outlives rolltest;
//! - [`proxy`], [`services`]: a proxy per Service port (`l4` like kube-proxy,
//!   `l7` like an ingress, `IngressNginx` like ingress-nginx with its
//!   retries and sync rate) that applies endpoint changes only after a
//!   propagation delay, recording who served every connection or request
//!   (and, for l7, every upstream tried).

pub mod api;
pub mod cluster;
pub mod controllers;
pub mod kubelet;
pub mod process;
pub mod proxy;
pub mod resources;
pub mod server;
pub mod services;
pub mod store;
