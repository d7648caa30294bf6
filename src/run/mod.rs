//! The run orchestrator: scenario → run directory → (cluster ∥ load ∥
//! watchers) on one event stream → records × timeline → correlate →
//! verdict → outputs. A plain load is a run with no cluster and no actions;
//! `rolltest load` is a scenario built from flags; `rolltest report` takes
//! the same finish path from a run directory alone.
//!
//! Modules, each one step, importing one way (down this list):
//! - `flags`: `rolltest load`'s flags → a scenario;
//! - `execute`: the one orchestrator (setup, the phases, the facts);
//! - `cluster`: the cluster stage (start, apply, wait ready, warm up,
//!   actions, settle, teardown), `setup` what it needs before anything runs
//!   (manifests, subject, lint), `warmup` the warm-up;
//! - `phase`: the timed phases as a state machine over a `Window`;
//! - `dispatch`: the one consumer of the event stream, fanning it out;
//! - `finish`: evidence → summary → every output (shared with `report`);
//! - `output`: the outputs, one `Reporter` per file (summary.json,
//!   report.html, the terminal summary, JUnit).

mod cluster;
mod dispatch;
mod execute;
mod finish;
mod flags;
mod output;
mod phase;
mod setup;
mod warmup;

use std::path::{Path, PathBuf};

use rolltest_core::{ExitStatus, summary::Aggregate};

pub use crate::error::RunError;
pub use flags::{LoadOptions, run_load};
pub use setup::{KUBECONFIG, MANIFESTS_DIR};

use crate::{
    rundir::{self, RunDir},
    scenario::{ClusterOverrides, Scenario},
};
use finish::Evidence;

/// `rolltest run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Run directory (default under `reports/`).
    pub out: Option<PathBuf>,
    /// Hide the progress bar.
    pub quiet: bool,
    /// Validate only.
    pub check_only: bool,
    /// Also write JUnit XML here.
    pub junit: Option<PathBuf>,
    /// `--kubeconfig`, `--context`, `--namespace` over the scenario's `[cluster]`.
    pub overrides: ClusterOverrides,
}

/// Runs (or, with `check_only`, validates) a scenario file.
pub fn run_scenario(opts: RunOptions) -> Result<ExitStatus, RunError> {
    let mut scenario = Scenario::load(&opts.scenario)?;
    scenario.apply_overrides(&opts.overrides)?;
    output::check_junit(opts.junit.as_deref())?;
    if opts.check_only {
        let what = match &scenario.cluster {
            Some(cluster) => setup::check(&scenario, cluster)?,
            None => format!(
                "({} requests) to {}",
                scenario.load.scheduled_requests(),
                scenario.target.url
            ),
        };
        let sep = if scenario.cluster.is_some() { ";" } else { "" };
        println!(
            "{}: ok: scenario {:?}, {} req/s for {}{sep} {what}",
            opts.scenario.display(),
            scenario.name,
            scenario.load.rate,
            humantime::format_duration(scenario.load.duration),
        );
        return Ok(ExitStatus::Pass);
    }
    execute::execute(&scenario, opts.out, opts.quiet, opts.junit.as_deref())
}

/// Rebuilds summary.json and report.html of a run directory from its saved files.
pub fn rebuild_report(path: &Path) -> Result<ExitStatus, RunError> {
    let dir = RunDir::open(path)?;
    let facts = dir.read_facts()?;
    let text = dir.read(rundir::SCENARIO)?;
    let scenario = Scenario::parse(&text, Some(&dir.file(rundir::SCENARIO)))?;
    if let Some(cluster) = &facts.cluster {
        let mut records = Vec::new();
        dir.read_records(|r| records.push(r))?;
        let timeline: rolltest_core::model::Timeline =
            serde_json::from_str(&dir.read(rundir::TIMELINE)?).map_err(|e| {
                rundir::RunDirError::Malformed {
                    path: dir.file(rundir::TIMELINE),
                    line: e.line() as u64,
                    message: format!("not a rolltest timeline: {e}"),
                }
            })?;
        let mode = rolltest_core::correlate::ProxyMode::parse(&cluster.proxy)
            .unwrap_or(rolltest_core::correlate::ProxyMode::External);
        let evidence = Evidence::Cluster {
            records: &records,
            timeline: &timeline,
            proxy_mode: mode,
            read: None,
        };
        let summary = finish::finish(&dir, &facts, &scenario, evidence, None)?;
        return Ok(summary.verdict.exit_status());
    }
    let duration_us = (facts.duration_s * 1e6).round() as u64;
    let mut aggregate = Aggregate::new(facts.load_started_us, duration_us);
    dir.read_records(|r| aggregate.add(&r))?;
    let summary = finish::finish(&dir, &facts, &scenario, Evidence::Load(&aggregate), None)?;
    Ok(summary.verdict.exit_status())
}
