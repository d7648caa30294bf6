//! The kubelet's vocabulary: how each step of a termination sequence becomes
//! an Event (`Killing`, `PreStopStarted`, `PreStopFinished`,
//! `FailedPreStopHook`, `SigtermSent`, `SigkillSent`, `ContainerExited`),
//! and the CrashLoopBackOff delays.

use std::time::Duration;

use super::probes::kind_name;
use crate::process::{ExitInfo, HookOutcome, ProbeKind, ProcessEventKind};

/// First CrashLoopBackOff delay; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// CrashLoopBackOff cap.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long resets the back-off.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// Why a termination sequence runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhy {
    /// The pod is being deleted.
    Delete,
    /// A liveness or startup probe failed: the container is restarted.
    Probe(ProbeKind),
}

/// CrashLoopBackOff: the first restart is immediate, then 10 s doubling to
/// 5 min; a container that ran 10 min resets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackOff {
    next: Duration,
}

impl BackOff {
    /// The delay before restarting a container that ran for `ran_for`.
    pub fn next(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= BACKOFF_RESET {
            self.next = Duration::ZERO;
        }
        let delay = self.next;
        self.next = if delay.is_zero() {
            FIRST_BACKOFF
        } else {
            (delay * 2).min(MAX_BACKOFF)
        };
        delay
    }
}

/// (type, reason, message) of the Event for one termination step of
/// container `name` whose main process is `pid`.
pub fn describe(
    kind: &ProcessEventKind,
    why: Option<StopWhy>,
    name: &str,
    pid: i32,
) -> (&'static str, &'static str, String) {
    match kind {
        ProcessEventKind::Killing => match why {
            Some(StopWhy::Probe(kind)) => (
                "Normal",
                "Killing",
                format!(
                    "Container {name} failed {} probe, will be restarted",
                    kind_name(kind).to_lowercase()
                ),
            ),
            _ => ("Normal", "Killing", format!("Stopping container {name}")),
        },
        ProcessEventKind::PreStopStarted => (
            "Normal",
            "PreStopStarted",
            format!("Running preStop hook of container {name}"),
        ),
        ProcessEventKind::PreStopFinished { outcome } => (
            "Normal",
            "PreStopFinished",
            match outcome {
                HookOutcome::Ok => format!("PreStop hook of container {name} finished"),
                HookOutcome::Failed { message } => {
                    format!("PreStop hook of container {name} failed: {message}")
                }
                HookOutcome::TimedOut => {
                    format!("PreStop hook of container {name} not completed in grace period")
                }
            },
        ),
        ProcessEventKind::FailedPreStopHook { .. } => (
            "Warning",
            "FailedPreStopHook",
            "PreStopHook failed".to_string(),
        ),
        ProcessEventKind::SigtermSent => (
            "Normal",
            "SigtermSent",
            format!("Sent SIGTERM to container {name} (pid {pid})"),
        ),
        ProcessEventKind::SigkillSent => (
            "Warning",
            "SigkillSent",
            format!("Grace period over: sent SIGKILL to container {name} (process group {pid})"),
        ),
        ProcessEventKind::Exited(exit) => ("Normal", "ContainerExited", exit_message(name, exit)),
    }
}

/// `Container app exited with code 143 (signal 15)`.
pub fn exit_message(name: &str, exit: &ExitInfo) -> String {
    let code = exit.code.map_or_else(|| "?".to_string(), |c| c.to_string());
    match exit.signal {
        Some(sig) => format!("Container {name} exited with code {code} (signal {sig})"),
        None => format!("Container {name} exited with code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn back_off_doubles_caps_and_resets() {
        let mut b = BackOff::default();
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..8).map(|_| b.next(short).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.next(BACKOFF_RESET), Duration::ZERO);
        assert_eq!(b.next(short), Duration::from_secs(10));
    }

    #[test]
    fn messages() {
        let killing = describe(&ProcessEventKind::Killing, Some(StopWhy::Delete), "app", 7);
        assert_eq!(
            killing,
            ("Normal", "Killing", "Stopping container app".into())
        );
        let probe = describe(
            &ProcessEventKind::Killing,
            Some(StopWhy::Probe(ProbeKind::Liveness)),
            "app",
            7,
        );
        assert_eq!(
            probe.2,
            "Container app failed liveness probe, will be restarted"
        );
        let failed = ProcessEventKind::FailedPreStopHook {
            message: "x".into(),
        };
        assert_eq!(describe(&failed, None, "app", 7).0, "Warning");
        let exit = ExitInfo {
            code: Some(137),
            signal: Some(9),
            at: Instant::now(),
        };
        assert_eq!(
            exit_message("app", &exit),
            "Container app exited with code 137 (signal 9)"
        );
    }
}
