//! Everything without a cluster. The `rolltest` commands run as a process:
//! `run` and `load` on plain load, `report`, `compare` (and their pages in
//! headless Chromium), `lint`, JUnit output, the kind scenarios' `--check`,
//! and the demo app (`serve`); the generator against loopback sockets
//! (`loadgen`); report.html from fixed runs against golden snapshots
//! (`report_snapshot`); the correlator's throughput (`correlate_bench`,
//! ignored: run it with `--release -- --ignored`). One test binary: each module was a
//! binary of its own, and linking them dominated the test build on a 2-core
//! machine.

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod cli;
mod compare;
mod correlate_bench;
mod junit;
mod kind;
mod lint;
mod loadgen;
mod report_snapshot;
mod serve;
