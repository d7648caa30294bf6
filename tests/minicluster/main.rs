//! The embedded cluster (`rolltest-minicluster`) with real `rolltest serve`
//! pods, as one test binary: each module was a binary of its own, and
//! linking them dominated the test build on a 2-core machine. Tests that
//! change process-wide state (signal handlers, the child registry) stay in
//! their own binary, `tests/minicluster_process.rs`.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod bench;
mod controllers;
mod e2e;
mod kubelet;
mod proxy;
