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
//! scenario.toml ─► Scenario::load ─► run::run_scenario ─► run::execute (one orchestrator)
//!   ├─ [cluster] run::cluster: EmbeddedCluster::start, k8s::{connect, apply},
//!   │            k8s::Watches (shared) ─► k8s::wait_ready_on · timeline::start_shared
//!   ├─ run::phase::drive: Loading ─► Acting ─► Settling ─► Tail ─► Draining
//!   ├─ rolltest_loadgen::start ─► RequestRecord batches ─► rundir::RecordWriter (records.csv)
//!   └─ events::RunEvent (phases, notes, request tallies, lifecycle, proxy, actions,
//!      problems) ─► run::dispatch ─► progress · timeline · problems
//!        ▼ rolltest-core
//!   correlate::Correlation ─► attribute, groups ─► Summary::build ─► verdict::judge ─► ExitStatus
//!        ▼
//!   run::finish ─► run::output reporters: summary.json · report.html · terminal · JUnit
//! ```
//!
//! `rolltest report RUN_DIR` (`run::rebuild_report`) reads records.csv,
//! timeline.json and run.json back and takes the same `run::finish` path,
//! so every report can be rebuilt from the run directory alone.

pub mod cli;
pub mod cluster_up;
pub mod compare;
pub mod error;
pub mod events;
pub mod html;
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
