//! rolltest proves, with evidence, whether a Kubernetes Deployment survives a
//! rolling update, drain or scale-down without dropping requests.
//!
//! Data flow (see `../shared/DESIGN.md`):
//!
//! ```text
//! scenario.toml ─► scenario::load ─► Scenario
//!                                       │
//!                     loadgen::run (pacer thread + client runtime)
//!                                       │  RequestRecord stream
//!                                       ▼
//!                  rundir::RecordWriter (records.csv, live counters, Aggregate)
//!                                       ▼
//!              summary::Summary ─► verdict ─► summary.json, report.html, exit code
//! ```
//!
//! `rolltest report RUN_DIR` re-reads `records.csv` and runs the bottom half
//! again, so every report can be rebuilt from the run directory alone.

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
