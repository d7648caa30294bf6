//! The kubelet's vocabulary: what each step of a termination sequence
//! publishes (a real kubelet's Events, `Killing` and `FailedPreStopHook`;
//! the other steps only in the exact record, [`super::KubeletSignal`]),
//! and the CrashLoopBackOff delays.

use std::time::Duration;

use super::{probes::kind_name, signals::SignalKind};
use crate::process::{Hook, ProbeKind, ProcessEventKind};

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

/// What a termination step publishes: the Event a real kubelet records for
/// it (`Killing`, `FailedPreStopHook`; none for the rest), and the exact
/// record's entry (none for `Killing` and `FailedPreStopHook`, whose
/// moments the Event already carries; the step after them is in the record).
pub fn publish(
    kind: &ProcessEventKind,
    why: Option<StopWhy>,
    name: &str,
    hook: Option<&Hook>,
    pod: &str,
) -> (
    Option<(&'static str, &'static str, String)>,
    Option<SignalKind>,
) {
    match kind {
        ProcessEventKind::Killing => (
            Some(match why {
                Some(StopWhy::Probe(kind)) => (
                    "Normal",
                    "Killing",
                    format!(
                        "Container {name} failed {} probe, will be restarted",
                        kind_name(kind).to_lowercase()
                    ),
                ),
                _ => ("Normal", "Killing", format!("Stopping container {name}")),
            }),
            None,
        ),
        ProcessEventKind::PreStopStarted => (None, Some(SignalKind::PreStopStarted)),
        ProcessEventKind::PreStopFinished { .. } => (None, Some(SignalKind::PreStopFinished)),
        ProcessEventKind::FailedPreStopHook { message } => (
            Some((
                "Warning",
                "FailedPreStopHook",
                hook_failed(hook, name, pod, message),
            )),
            None,
        ),
        ProcessEventKind::SigtermSent => (None, Some(SignalKind::Sigterm)),
        ProcessEventKind::SigkillSent => (None, Some(SignalKind::Sigkill)),
        ProcessEventKind::Exited(exit) => (
            None,
            Some(SignalKind::Exited {
                code: exit.code,
                signal: exit.signal,
            }),
        ),
    }
}

/// A real kubelet's `FailedPreStopHook` message (`pkg/kubelet/lifecycle/
/// handlers.go`): `Exec lifecycle hook ([sh -c exit 3]) for Container "app"
/// in Pod "web-1_default(UID)" failed - error: …, message: ""`.
pub fn hook_failed(hook: Option<&Hook>, name: &str, pod: &str, message: &str) -> String {
    match hook {
        Some(Hook::HttpGet(get)) => format!(
            "HTTP lifecycle hook ({}) for Container {name:?} in Pod {pod:?} failed - error: {message}",
            get.path
        ),
        Some(Hook::Exec { command }) => format!(
            "Exec lifecycle hook ([{}]) for Container {name:?} in Pod {pod:?} failed - error: {message}, message: \"\"",
            command.join(" ")
        ),
        _ => {
            format!("PreStop hook for Container {name:?} in Pod {pod:?} failed - error: {message}")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::process::ExitInfo;

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
    fn a_real_kubelets_events_and_the_exact_record() {
        let publish = |kind, why| publish(&kind, why, "app", None, "web-1_default(u)");
        let killing = publish(ProcessEventKind::Killing, Some(StopWhy::Delete));
        assert_eq!(
            killing,
            (
                Some(("Normal", "Killing", "Stopping container app".into())),
                None
            )
        );
        let probe = publish(
            ProcessEventKind::Killing,
            Some(StopWhy::Probe(ProbeKind::Liveness)),
        );
        assert_eq!(
            probe.0.map(|e| e.2).as_deref(),
            Some("Container app failed liveness probe, will be restarted")
        );
        assert_eq!(
            publish(ProcessEventKind::SigtermSent, Some(StopWhy::Delete)),
            (None, Some(SignalKind::Sigterm))
        );
        let exit = ExitInfo {
            code: Some(137),
            signal: Some(9),
            at: Instant::now(),
        };
        assert_eq!(
            publish(ProcessEventKind::Exited(exit), None),
            (
                None,
                Some(SignalKind::Exited {
                    code: Some(137),
                    signal: Some(9)
                })
            )
        );
        let hook = Hook::Exec {
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        };
        let failed = ProcessEventKind::FailedPreStopHook {
            message: "command exited with 3".into(),
        };
        let (event, exact) = super::publish(&failed, None, "app", Some(&hook), "web-1_default(u)");
        assert_eq!(exact, None);
        assert_eq!(
            event,
            Some((
                "Warning",
                "FailedPreStopHook",
                "Exec lifecycle hook ([sh -c exit 3]) for Container \"app\" in Pod \"web-1_default(u)\" failed - error: command exited with 3, message: \"\"".into()
            ))
        );
    }
}
