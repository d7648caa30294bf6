//! The embedded cluster: a small, real Kubernetes control plane for one
//! machine, with pods as local processes on their own loopback IPs behind a
//! service proxy whose endpoint view lags like kube-proxy's.
//!
//! It depends on nothing in rolltest but `crate::model`, so it could become a
//! crate of its own. Parts so far:
//! - [`process`]: pods' processes (own process groups, never orphaned),
//!   loopback IPs, lifecycle hooks, probes and the kubelet's termination sequence;
//! - [`resources`], [`store`]: the API types served and the object store
//!   with resourceVersions and resumable watches;
//! - [`proxy`]: the service proxy (`l4` like kube-proxy, `l7` like an ingress)
//!   that applies endpoint changes only after a propagation delay.

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
