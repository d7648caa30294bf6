//! Exit codes are part of rolltest's contract (README, "Verdict and exit
//! codes"): CI scripts branch on them, so they live in one place.

/// What a rolltest command ended with, mapped 1:1 to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: the verdict passed (or a command without a verdict succeeded).
    Pass,
    /// 1: the verdict failed: the target dropped or slowed requests beyond the limits.
    Fail,
    /// 2: bad input: scenario, manifest, flags or a missing file.
    BadInput,
    /// 3: run error: the target or cluster could not be used at all.
    RunError,
    /// 4: inconclusive: the generator could not hold the rate, or the run was
    /// interrupted. Such a run proves nothing and never passes.
    Inconclusive,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Pass => 0,
            ExitStatus::Fail => 1,
            ExitStatus::BadInput => 2,
            ExitStatus::RunError => 3,
            ExitStatus::Inconclusive => 4,
        }
    }
}
