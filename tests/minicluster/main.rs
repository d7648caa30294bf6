//! The embedded cluster (`rolltest-minicluster`) with real `rolltest serve`
//! pods, and rolltest's Kubernetes client side against it (`k8s_ops`: apply,
//! waits, actions; `timeline_watch`: the lifecycle watchers), as one test
//! binary: each module was a binary of its own, and linking them dominated
//! the test build on a 2-core machine. Tests that change process-wide state
//! (signal handlers, the child registry) stay in their own binary,
//! `tests/minicluster_process/`.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod bench;
mod controllers;
mod e2e;
mod k8s_ops;
mod kubelet;
mod pdb;
mod proxy;
mod timeline_watch;
mod verbs;
