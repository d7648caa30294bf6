//! The run orchestrator: scenario → run directory → load (and, with a
//! `[cluster]`, the rollout around it) → summary, report and verdict.
//! `rolltest load` is a scenario built from flags, so it shares every step
//! after parsing. `rolltest report` rebuilds the bottom half from a run
//! directory alone.
//!
//! Dependencies run one way: this module only dispatches;
//! - `load`: a plain load run (`rolltest load`, or `rolltest run` without
//!   `[cluster]`);
//! - `rollout`: a rollout under load (it starts its load like `load` does);
//! - `outcome`: what every run ends with: JUnit, the terminal summary;
//! - `error`: [`RunError`], and the exit status each maps to.

mod error;
mod load;
mod outcome;
mod rollout;

use std::path::{Path, PathBuf};

use rolltest_core::{ExitStatus, summary::Aggregate};

pub use error::RunError;
pub use load::{LoadOptions, run_load};

use crate::{
    rundir::{self, RunDir},
    scenario::{ClusterOverrides, Scenario},
};

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
    outcome::check_junit(opts.junit.as_deref())?;
    if let Some(cluster) = &scenario.cluster {
        if opts.check_only {
            let line = rollout::check(&scenario, cluster)?;
            println!(
                "{}: ok: scenario {:?}, {} req/s for {}; {line}",
                opts.scenario.display(),
                scenario.name,
                scenario.load.rate,
                humantime::format_duration(scenario.load.duration),
            );
            return Ok(ExitStatus::Pass);
        }
        return rollout::execute(
            &scenario,
            cluster,
            opts.out,
            opts.quiet,
            opts.junit.as_deref(),
        );
    }
    if opts.check_only {
        println!(
            "{}: ok: scenario {:?}, {} req/s for {} ({} requests) to {}",
            opts.scenario.display(),
            scenario.name,
            scenario.load.rate,
            humantime::format_duration(scenario.load.duration),
            scenario.load.scheduled_requests(),
            scenario.target.url
        );
        return Ok(ExitStatus::Pass);
    }
    load::execute(&scenario, opts.out, opts.quiet, opts.junit.as_deref())
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
                RunError::Setup(format!(
                    "{}: not a rolltest timeline: {e}",
                    dir.file(rundir::TIMELINE).display()
                ))
            })?;
        let mode = rolltest_core::correlate::ProxyMode::parse(&cluster.proxy)
            .unwrap_or(rolltest_core::correlate::ProxyMode::External);
        let summary = rollout::finish(&dir, &facts, &records, &timeline, &scenario, mode)?;
        return Ok(summary.verdict.exit_status());
    }
    let duration_us = (facts.duration_s * 1e6).round() as u64;
    let mut aggregate = Aggregate::new(facts.load_started_us, duration_us);
    dir.read_records(|r| aggregate.add(&r))?;
    let summary = load::finish(&dir, &facts, &aggregate, &scenario)?;
    Ok(summary.verdict.exit_status())
}
