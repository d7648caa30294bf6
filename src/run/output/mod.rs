//! The outputs of a finished run, each a [`Reporter`] in a file of its own:
//! summary.json, report.html, the terminal summary and (when asked) JUnit.
//! `run::finish` builds one [`Finished`] and hands it to every reporter of
//! [`reporters`], in order; `rolltest report` takes the same path (without
//! JUnit). Adding an output is a new file here and a line in [`reporters`].

mod junit;
mod report_html;
mod summary_json;
mod terminal;

use std::path::Path;

use rolltest_core::summary::{Aggregate, RunFacts, Summary};

pub(super) use junit::check_path as check_junit;

use crate::{error::RunError, report::Rollout, rundir::RunDir};

/// Everything a reporter may read of a finished run.
pub(super) struct Finished<'a> {
    /// The run directory.
    pub dir: &'a RunDir,
    /// The run's facts (run.json).
    pub facts: &'a RunFacts,
    /// The summary, judged.
    pub summary: &'a Summary,
    /// The records, aggregated.
    pub aggregate: &'a Aggregate,
    /// A cluster run's timeline and evidence (`None` for a plain load).
    pub rollout: Option<&'a Rollout<'a>>,
}

/// One output of a finished run.
pub(super) trait Reporter {
    /// Writes (or prints) the output.
    fn report(&self, run: &Finished<'_>) -> Result<(), RunError>;
}

/// The outputs of a run, in the order they are written: summary.json first
/// (the contract), the report, the terminal summary, then JUnit when a path
/// is given.
pub(super) fn reporters(junit: Option<&Path>) -> Vec<Box<dyn Reporter + '_>> {
    let mut all: Vec<Box<dyn Reporter>> = vec![
        Box::new(summary_json::SummaryJson),
        Box::new(report_html::ReportHtml),
        Box::new(terminal::Terminal),
    ];
    if let Some(path) = junit {
        all.push(Box::new(junit::Junit { path }));
    }
    all
}
