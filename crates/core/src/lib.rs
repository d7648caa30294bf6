//! rolltest's shared vocabulary and pure core: what a run records and how
//! a verdict is reached from it.
//!
//! No IO, no tokio, no kube: every function here maps values to values, so
//! `rolltest report` can rebuild a run from its directory byte for byte,
//! and the rules are tested with tables and properties.
//!
//! ```text
//! model::RequestRecord (one per scheduled request)
//!   └─► summary::Aggregate ─────────────────────────────┐
//! model::Timeline (LifecycleEvents on the run clock)    │
//!   + model::ProxyRecord (embedded proxy)               │
//!   └─► correlate::Correlation (facts built once)       │
//!         ::{attribute, groups, propagation}            │
//!         ─► model::{Attribution, CauseGroup, PodPropagation}
//!                                                       ▼
//!                    summary::Summary::build ─► verdict::judge ─► Verdict ─► ExitStatus
//! ```
//!
//! - [`model`]: records, the run clock, the lifecycle timeline, causes,
//!   evidence and lint findings;
//! - [`correlate`]: every failed request gets exactly one cause and a pod;
//! - [`summary`]: the fold over records and the `summary.json` shape;
//! - [`knobs`]: the knobs that fix each cause and the fix texts;
//! - [`stats`]: the one median;
//! - [`verdict`]: limits × figures → checks → pass, fail or inconclusive;
//! - [`exit`]: the exit codes, part of rolltest's contract.

pub mod correlate;
pub mod exit;
pub mod knobs;
pub mod model;
pub mod stats;
pub mod summary;
pub mod verdict;

pub use exit::ExitStatus;
