//! The kubelet's `killContainer` sequence for one container
//! (`pkg/kubelet/kuberuntime/kuberuntime_container.go`):
//! `Killing` → preStop, waited for at most the grace period (a hook still
//! running then is not killed; it dies with the group) → grace minus the
//! whole seconds the hook took, at least 2 → SIGTERM to the main process →
//! wait up to the grace → SIGKILL to the group → wait for the exit.
//!
//! The grace is at least 1 s whatever was asked (a delete with grace 0,
//! `terminationGracePeriodSeconds: 0`): the kubelet's
//! `calculateEffectiveGracePeriod` (`pkg/kubelet/pod_workers.go`) "always
//! supplies a grace period of 1", so the preStop hook gets up to 1 s and the
//! app still gets the 2 s minimum after SIGTERM.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::{
    ProcessError,
    exit::ExitInfo,
    hooks::{Hook, HookOutcome, run_hook},
    pod::PodProcess,
};

/// The kubelet's `minimumGracePeriodInSeconds`: the app always gets this
/// long between SIGTERM and SIGKILL.
const MIN_GRACE_SECONDS: i64 = 2;

/// The kubelet's floor on the effective grace period of a pod kill
/// (`calculateEffectiveGracePeriod`).
const MIN_EFFECTIVE_GRACE_SECONDS: i64 = 1;

/// How long a SIGKILLed process may take to be reaped before we give up.
const AFTER_SIGKILL: Duration = Duration::from_secs(10);

/// One step of a termination, as it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEvent {
    /// When it happened.
    pub at: Instant,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// What happened.
    pub kind: ProcessEventKind,
}

/// The steps of [`terminate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEventKind {
    /// `Normal Killing "Stopping container <name>"`.
    Killing,
    /// The preStop hook started.
    PreStopStarted,
    /// The preStop hook ended or the grace period ran out (`TimedOut`).
    PreStopFinished {
        /// How it ended.
        outcome: HookOutcome,
    },
    /// `Warning FailedPreStopHook "PreStopHook failed"`; shutdown continues.
    FailedPreStopHook {
        /// Why it failed.
        message: String,
    },
    /// SIGTERM went to the main process.
    SigtermSent,
    /// SIGKILL went to the whole group at the deadline.
    SigkillSent,
    /// The main process exited (always the last event).
    Exited(ExitInfo),
}

/// Stops `process` as the kubelet does, given the already resolved grace
/// period (below 1 counts as 1) and the container's preStop hook, sending
/// each step to `events` (a closed channel is fine). Returns the exit.
///
/// A process that already exited gets just `Killing` and `Exited`.
pub async fn terminate(
    process: &PodProcess,
    grace_seconds: i64,
    pre_stop: Option<&Hook>,
    events: &UnboundedSender<ProcessEvent>,
) -> Result<ExitInfo, ProcessError> {
    let emit = |kind| {
        let spec = process.spec();
        let _ = events.send(ProcessEvent {
            at: Instant::now(),
            pod: spec.pod.clone(),
            container: spec.container.clone(),
            kind,
        });
    };
    emit(ProcessEventKind::Killing);
    let mut grace = grace_seconds.max(MIN_EFFECTIVE_GRACE_SECONDS);
    if let Some(hook) = pre_stop.filter(|_| grace > 0)
        && process.try_wait()?.is_none()
    {
        emit(ProcessEventKind::PreStopStarted);
        let started = Instant::now();
        let result = run_hook(hook, &process.exec_context(), seconds(grace)).await;
        emit(ProcessEventKind::PreStopFinished {
            outcome: result.outcome.clone(),
        });
        if let HookOutcome::Failed { message } = result.outcome {
            emit(ProcessEventKind::FailedPreStopHook { message });
        }
        let whole = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
        grace = grace.saturating_sub(whole);
    }
    let grace = seconds(grace.max(MIN_GRACE_SECONDS));
    if process.signal(libc::SIGTERM)? {
        emit(ProcessEventKind::SigtermSent);
    }
    let exit = match tokio::time::timeout(grace, process.wait()).await {
        Ok(exit) => exit?,
        Err(_) => {
            if process.kill_group()? {
                emit(ProcessEventKind::SigkillSent);
            }
            tokio::time::timeout(AFTER_SIGKILL, process.wait())
                .await
                .map_err(|_| ProcessError::KillTimeout {
                    pid: process.pid(),
                    waited: AFTER_SIGKILL,
                })??
        }
    };
    emit(ProcessEventKind::Exited(exit));
    Ok(exit)
}

fn seconds(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}
