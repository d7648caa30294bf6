//! The verdict: limits × summary figures → checks → pass, fail or inconclusive.
//!
//! Two kinds of checks. *Target* checks (failures, latency) fail the verdict.
//! *Generator* checks (dropped requests, schedule lag, achieved rate,
//! interruption) make it inconclusive: a run that did not deliver the asked
//! load proves nothing, so it can never pass. Inconclusive wins over fail for
//! the same reason: failures seen under a generator that fell behind may be
//! the generator's own doing.

use serde::{Deserialize, Serialize};

use crate::exit::ExitStatus;

/// The limits a run is judged by (from `[verdict]` or `rolltest load` flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Most failed requests allowed (`None`: no count limit).
    pub max_failed: Option<u64>,
    /// Most failed requests allowed as a share of those sent.
    pub max_failed_ratio: Option<f64>,
    /// p50 latency limit in ms.
    pub max_p50_ms: Option<f64>,
    /// p99 latency limit in ms.
    pub max_p99_ms: Option<f64>,
    /// p99.9 latency limit in ms.
    pub max_p999_ms: Option<f64>,
    /// Maximum latency limit in ms.
    pub max_latency_ms: Option<f64>,
    /// Generator: schedule-lag p99 above this (ms) makes the run inconclusive.
    pub max_schedule_lag_p99_ms: f64,
    /// Generator: achieved/asked rate below this makes the run inconclusive.
    pub min_achieved_ratio: f64,
}

/// Default generator limit on schedule lag p99, in ms. Generous on purpose: a
/// rollout test measures failures and latencies in the tens of milliseconds
/// and up, and a busy 2-core CI machine adds a few milliseconds of scheduling
/// noise; a generator that is really behind shows lag in the tens or hundreds.
pub const DEFAULT_MAX_SCHEDULE_LAG_P99_MS: f64 = 10.0;
/// Default generator limit on achieved/asked rate.
pub const DEFAULT_MIN_ACHIEVED_RATIO: f64 = 0.999;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_failed: Some(0),
            max_failed_ratio: None,
            max_p50_ms: None,
            max_p99_ms: None,
            max_p999_ms: None,
            max_latency_ms: None,
            max_schedule_lag_p99_ms: DEFAULT_MAX_SCHEDULE_LAG_P99_MS,
            min_achieved_ratio: DEFAULT_MIN_ACHIEVED_RATIO,
        }
    }
}

/// The verdict of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check held.
    Pass,
    /// A target check failed.
    Fail,
    /// A generator check failed, or the run was interrupted.
    Inconclusive,
}

impl Verdict {
    /// The exit status for this verdict.
    pub fn exit_status(self) -> ExitStatus {
        match self {
            Verdict::Pass => ExitStatus::Pass,
            Verdict::Fail => ExitStatus::Fail,
            Verdict::Inconclusive => ExitStatus::Inconclusive,
        }
    }

    /// `pass`, `fail` or `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// Who a check judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The system under test; a failure fails the verdict.
    Target,
    /// The load generator; a failure makes the run inconclusive.
    Generator,
}

/// One check: a named limit, the measured value and whether it held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// e.g. `max_failed`.
    pub name: String,
    /// The limit.
    pub limit: f64,
    /// The measured value (`None` when nothing was measured, e.g. no successful request).
    pub actual: Option<f64>,
    /// Whether the limit held.
    pub pass: bool,
    /// Target or generator.
    pub kind: CheckKind,
}

/// The figures the checks read.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Requests sent.
    pub sent: u64,
    /// Requests failed.
    pub failed: u64,
    /// Requests dropped by the generator.
    pub dropped: u64,
    /// Latency percentiles of successful requests, ms.
    pub p50_ms: Option<f64>,
    /// p99, ms.
    pub p99_ms: Option<f64>,
    /// p99.9, ms.
    pub p999_ms: Option<f64>,
    /// max, ms.
    pub max_ms: Option<f64>,
    /// Schedule lag p99, ms.
    pub lag_p99_ms: Option<f64>,
    /// Achieved / asked rate.
    pub achieved_ratio: f64,
    /// The run was interrupted.
    pub interrupted: bool,
}

/// Judges the figures by the limits.
pub fn judge(limits: &Limits, f: &Figures) -> (Verdict, Vec<Check>) {
    let mut checks = Vec::new();
    let mut at_most = |name: &str, limit: f64, actual: Option<f64>, kind| {
        checks.push(Check {
            name: name.to_string(),
            limit,
            actual,
            pass: actual.is_some_and(|a| a <= limit),
            kind,
        });
    };
    use CheckKind::{Generator, Target};
    if let Some(limit) = limits.max_failed {
        at_most("max_failed", limit as f64, Some(f.failed as f64), Target);
    }
    if let Some(limit) = limits.max_failed_ratio {
        let ratio = if f.sent == 0 {
            None
        } else {
            Some(f.failed as f64 / f.sent as f64)
        };
        at_most("max_failed_ratio", limit, ratio, Target);
    }
    for (name, limit, actual) in [
        ("max_p50_ms", limits.max_p50_ms, f.p50_ms),
        ("max_p99_ms", limits.max_p99_ms, f.p99_ms),
        ("max_p999_ms", limits.max_p999_ms, f.p999_ms),
        ("max_latency_ms", limits.max_latency_ms, f.max_ms),
    ] {
        if let Some(limit) = limit {
            at_most(name, limit, actual, Target);
        }
    }
    at_most("max_dropped", 0.0, Some(f.dropped as f64), Generator);
    at_most(
        "max_schedule_lag_p99_ms",
        limits.max_schedule_lag_p99_ms,
        f.lag_p99_ms,
        Generator,
    );
    checks.push(Check {
        name: "min_achieved_ratio".into(),
        limit: limits.min_achieved_ratio,
        actual: Some(f.achieved_ratio),
        pass: f.achieved_ratio >= limits.min_achieved_ratio,
        kind: Generator,
    });
    let generator_ok = !f.interrupted
        && checks
            .iter()
            .filter(|c| c.kind == Generator)
            .all(|c| c.pass);
    let target_ok = checks.iter().filter(|c| c.kind == Target).all(|c| c.pass);
    let verdict = if !generator_ok {
        Verdict::Inconclusive
    } else if !target_ok {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    (verdict, checks)
}

/// The rule for a disruption that did not go as asked (an action failed,
/// the rollout never settled, a watch broke): a run that would pass proves
/// nothing and is inconclusive, with each problem as a reason; failures
/// already seen are evidence whatever happened after, so a failing run stays
/// failed (and an inconclusive one inconclusive). Returns the verdict and the
/// inconclusive reasons it adds.
pub fn with_problems(verdict: Verdict, problems: &[String]) -> (Verdict, Vec<String>) {
    if verdict == Verdict::Pass && !problems.is_empty() {
        (Verdict::Inconclusive, problems.to_vec())
    } else {
        (verdict, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_make_a_pass_inconclusive_and_leave_a_fail_failed() {
        let problems = vec!["the rollout did not settle: timed out".to_string()];
        assert_eq!(
            with_problems(Verdict::Pass, &problems),
            (Verdict::Inconclusive, problems.clone())
        );
        assert_eq!(
            with_problems(Verdict::Fail, &problems),
            (Verdict::Fail, Vec::new())
        );
        assert_eq!(
            with_problems(Verdict::Inconclusive, &problems),
            (Verdict::Inconclusive, Vec::new())
        );
        assert_eq!(
            with_problems(Verdict::Pass, &[]),
            (Verdict::Pass, Vec::new())
        );
    }

    fn healthy() -> Figures {
        Figures {
            sent: 1000,
            failed: 0,
            dropped: 0,
            p50_ms: Some(1.0),
            p99_ms: Some(5.0),
            p999_ms: Some(9.0),
            max_ms: Some(12.0),
            lag_p99_ms: Some(0.3),
            achieved_ratio: 1.0,
            interrupted: false,
        }
    }

    #[test]
    fn healthy_run_passes() {
        let (v, checks) = judge(&Limits::default(), &healthy());
        assert_eq!(v, Verdict::Pass);
        assert!(checks.iter().all(|c| c.pass));
    }

    #[test]
    fn failures_fail_by_default() {
        let f = Figures {
            failed: 1,
            ..healthy()
        };
        assert_eq!(judge(&Limits::default(), &f).0, Verdict::Fail);
    }

    #[test]
    fn ratio_and_latency_limits() {
        let limits = Limits {
            max_failed: None,
            max_failed_ratio: Some(0.01),
            max_p99_ms: Some(4.0),
            ..Limits::default()
        };
        let f = Figures {
            failed: 5,
            ..healthy()
        };
        let (v, checks) = judge(&limits, &f);
        assert_eq!(v, Verdict::Fail);
        let p99 = checks.iter().find(|c| c.name == "max_p99_ms").unwrap();
        assert!(!p99.pass);
        let ratio = checks
            .iter()
            .find(|c| c.name == "max_failed_ratio")
            .unwrap();
        assert!(ratio.pass);
    }

    #[test]
    fn generator_trouble_is_inconclusive_even_with_failures() {
        for f in [
            Figures {
                dropped: 1,
                failed: 10,
                ..healthy()
            },
            Figures {
                lag_p99_ms: Some(50.0),
                ..healthy()
            },
            Figures {
                achieved_ratio: 0.95,
                ..healthy()
            },
            Figures {
                interrupted: true,
                ..healthy()
            },
        ] {
            assert_eq!(
                judge(&Limits::default(), &f).0,
                Verdict::Inconclusive,
                "{f:?}"
            );
        }
    }

    #[test]
    fn latency_limit_without_successes_cannot_pass() {
        let limits = Limits {
            max_failed: None,
            max_p99_ms: Some(100.0),
            ..Limits::default()
        };
        let f = Figures {
            p99_ms: None,
            ..healthy()
        };
        assert_eq!(judge(&limits, &f).0, Verdict::Fail);
    }
}
