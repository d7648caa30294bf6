//! summary.json: the run's summary, the contract other tools read.

use super::{Finished, Reporter};
use crate::error::RunError;

/// Writes summary.json into the run directory.
pub(super) struct SummaryJson;

impl Reporter for SummaryJson {
    fn report(&self, run: &Finished<'_>) -> Result<(), RunError> {
        Ok(run.dir.write_summary(run.summary)?)
    }
}
