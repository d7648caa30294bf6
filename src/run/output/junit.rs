//! JUnit XML (`--junit PATH`), written after summary.json whatever the verdict.

use std::path::Path;

use super::{Finished, Reporter};
use crate::error::{RunError, bad};

/// A `--junit` path that cannot be written is bad input, found before the run.
pub(in crate::run) fn check_path(path: Option<&Path>) -> Result<(), RunError> {
    match path {
        Some(p) => crate::junit::check_path(p).map_err(bad("--junit")),
        None => Ok(()),
    }
}

/// Writes the JUnit file to `path` and says where.
pub(super) struct Junit<'a> {
    pub path: &'a Path,
}

impl Reporter for Junit<'_> {
    fn report(&self, run: &Finished<'_>) -> Result<(), RunError> {
        crate::junit::write(self.path, run.summary, run.facts, run.dir.path())?;
        println!("  junit: {}", self.path.display());
        Ok(())
    }
}
