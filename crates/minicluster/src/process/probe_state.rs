//! The prober worker's result bookkeeping, without IO: consecutive results
//! are counted and the published status changes only when `successThreshold`
//! successes or `failureThreshold` failures in a row are reached
//! (kubernetes `pkg/kubelet/prober/worker.go` `doProbe`).

/// Which probe a state belongs to; decides the initial status and whether a
/// failure puts the worker on hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Starts as Failure: a new container is not ready until probed.
    Readiness,
    /// Starts as Success: a new container is alive until proven otherwise.
    Liveness,
    /// Starts as Unknown.
    Startup,
}

/// A probe's published result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStatus {
    /// Passing.
    Success,
    /// Failing.
    Failure,
    /// Not known yet.
    Unknown,
}

impl ProbeKind {
    /// The status of a new container before any probe ran.
    pub fn initial_status(self) -> ProbeStatus {
        match self {
            ProbeKind::Readiness => ProbeStatus::Failure,
            ProbeKind::Liveness => ProbeStatus::Success,
            ProbeKind::Startup => ProbeStatus::Unknown,
        }
    }
}

/// Threshold counting for one probe of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    kind: ProbeKind,
    success_threshold: u32,
    failure_threshold: u32,
    status: ProbeStatus,
    last: Option<bool>,
    run: u32,
    on_hold: bool,
}

impl ProbeState {
    /// A fresh state. Thresholds below 1 count as 1; liveness and startup
    /// probes always use a success threshold of 1 (the API requires it).
    pub fn new(kind: ProbeKind, success_threshold: u32, failure_threshold: u32) -> Self {
        let success_threshold = match kind {
            ProbeKind::Readiness => success_threshold.max(1),
            ProbeKind::Liveness | ProbeKind::Startup => 1,
        };
        ProbeState {
            kind,
            success_threshold,
            failure_threshold: failure_threshold.max(1),
            status: kind.initial_status(),
            last: None,
            run: 0,
            on_hold: false,
        }
    }

    /// The probe kind.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The published status.
    pub fn status(&self) -> ProbeStatus {
        self.status
    }

    /// Whether a liveness/startup failure stopped probing until the
    /// container restarts ([`reset`](Self::reset)).
    pub fn on_hold(&self) -> bool {
        self.on_hold
    }

    /// Records one probe result. Returns the new status iff it changed.
    pub fn record(&mut self, success: bool) -> Option<ProbeStatus> {
        if self.on_hold {
            return None;
        }
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let threshold = if success {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < threshold {
            return None;
        }
        let new = if success {
            ProbeStatus::Success
        } else {
            ProbeStatus::Failure
        };
        if !success && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            // The container is about to be killed: stop probing it.
            self.on_hold = true;
            self.run = 0;
        }
        self.set(new)
    }

    /// Forces the status (e.g. liveness and startup become Success once the
    /// pod is being deleted). Returns the new status iff it changed.
    pub fn set(&mut self, status: ProbeStatus) -> Option<ProbeStatus> {
        let changed = self.status != status;
        self.status = status;
        changed.then_some(status)
    }

    /// Starts over for a new (restarted) container.
    pub fn reset(&mut self) {
        *self = ProbeState::new(self.kind, self.success_threshold, self.failure_threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::{ProbeKind::*, ProbeStatus::*, *};

    /// (kind, success threshold, failure threshold, results, expected flips
    /// as (index, status)).
    type Case = (
        ProbeKind,
        u32,
        u32,
        &'static str,
        &'static [(usize, ProbeStatus)],
    );

    const CASES: &[Case] = &[
        // Readiness starts Failure: the first success flips at threshold 1…
        (Readiness, 1, 3, "s", &[(0, Success)]),
        // …and failures below the threshold change nothing.
        (Readiness, 1, 3, "sff", &[(0, Success)]),
        (Readiness, 1, 3, "sfff", &[(0, Success), (3, Failure)]),
        // A success in between resets the failure run.
        (Readiness, 1, 3, "sffsfff", &[(0, Success), (6, Failure)]),
        // Failures while already Failure never flip.
        (Readiness, 1, 3, "ffffff", &[]),
        (Readiness, 2, 1, "sfssf", &[(3, Success), (4, Failure)]),
        (Readiness, 3, 2, "ssfsss", &[(5, Success)]),
        // Liveness starts Success, flips to Failure, then holds.
        (Liveness, 1, 3, "sssfff", &[(5, Failure)]),
        (Liveness, 1, 1, "fssss", &[(0, Failure)]),
        // Startup starts Unknown: the first success flips.
        (Startup, 1, 3, "s", &[(0, Success)]),
        (Startup, 1, 2, "ff", &[(1, Failure)]),
        // Liveness ignores a success threshold above 1.
        (Liveness, 5, 1, "fs", &[(0, Failure)]),
    ];

    #[test]
    fn thresholds_table() {
        for &(kind, st, ft, results, expected) in CASES {
            let mut state = ProbeState::new(kind, st, ft);
            let flips: Vec<(usize, ProbeStatus)> = results
                .chars()
                .enumerate()
                .filter_map(|(i, c)| state.record(c == 's').map(|s| (i, s)))
                .collect();
            assert_eq!(flips, expected, "{kind:?} st={st} ft={ft} {results}");
        }
    }

    #[test]
    fn initial_statuses() {
        assert_eq!(ProbeState::new(Readiness, 1, 3).status(), Failure);
        assert_eq!(ProbeState::new(Liveness, 1, 3).status(), Success);
        assert_eq!(ProbeState::new(Startup, 1, 3).status(), Unknown);
    }

    #[test]
    fn hold_and_reset() {
        let mut s = ProbeState::new(Liveness, 1, 1);
        assert_eq!(s.record(false), Some(Failure));
        assert!(s.on_hold());
        assert_eq!(s.record(true), None);
        s.reset();
        assert!(!s.on_hold());
        assert_eq!(s.status(), Success);
        assert_eq!(s.set(Success), None);
        assert_eq!(s.set(Failure), Some(Failure));
    }
}
