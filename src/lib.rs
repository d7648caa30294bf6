//! rolltest proves, with evidence, whether a Kubernetes Deployment survives a
//! rolling update, drain or scale-down without dropping requests.
//!
//! This crate is the binary's side of the workspace (ARCHITECTURE.md at the
//! repository root has the whole map): the CLI, the orchestrator, the
//! Kubernetes client side and the outputs. It stands on `rolltest-core` (the
//! vocabulary, correlator, summary and verdict: pure), `rolltest-loadgen`
//! (the generator) and `rolltest-minicluster` (the embedded cluster).
//!
//! ```text
//! scenario.toml ─► Scenario::load ─► run::run_scenario
//!   ├─ [cluster] mode = "embedded": EmbeddedCluster::start (rolltest-minicluster)
//!   ├─ k8s::{connect, apply, wait_ready, run_action}      (kube-rs, both modes)
//!   ├─ timeline::start (watchers) ─► LifecycleEvent ─► timeline::finish ─► Timeline
//!   └─ rolltest_loadgen::start ─► RequestRecord ─► rundir::RecordWriter
//!                                                  (records.csv, Aggregate)
//!        ▼ rolltest-core
//!   correlate::{attribute, groups} ─► Summary::build ─► verdict::judge ─► ExitStatus
//!        ▼
//!   rundir (summary.json, timeline.json, run.json) · report::render · junit::write
//! ```
//!
//! `rolltest report RUN_DIR` (`run::rebuild_report`) reads records.csv,
//! timeline.json and run.json back and runs the bottom half again, so every
//! report can be rebuilt from the run directory alone.

pub mod cli;
pub mod cluster_up;
pub mod compare;
pub mod junit;
pub mod k8s;
pub mod lint;
pub mod manifest;
pub mod progress;
pub mod report;
pub mod run;
pub mod rundir;
pub mod scenario;
pub mod serve;
pub mod timeline;
