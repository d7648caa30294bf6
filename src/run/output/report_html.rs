//! report.html: the self-contained report (`crate::report`).

use super::{Finished, Reporter};
use crate::{error::RunError, report, rundir};

/// Writes report.html into the run directory.
pub(super) struct ReportHtml;

impl Reporter for ReportHtml {
    fn report(&self, run: &Finished<'_>) -> Result<(), RunError> {
        let html = report::render(run.summary, run.aggregate, run.facts, run.rollout);
        Ok(run.dir.write(rundir::REPORT, html)?)
    }
}
