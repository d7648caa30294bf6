//! The kubelet's exact record: the moments only the embedded kubelet knows
//! to the instant (the preStop hook's start and end, SIGTERM, SIGKILL, the
//! main process's exit), sent on a channel of their own, like the service
//! proxies' records. A real kubelet publishes none of them: its Events say
//! `Killing` when the sequence starts and `FailedPreStopHook` when the hook
//! fails, and the exit shows in the pod status after the next relist. The
//! record is what a test checks the correlator's inference against, and what
//! rolltest uses for exactness in embedded mode.

use std::time::Instant;

/// One moment of a container's termination (or crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletSignal {
    /// When it happened (the instant the kubelet acted or saw it).
    pub at: Instant,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid.
    pub uid: String,
    /// The container.
    pub container: String,
    /// What happened.
    pub kind: SignalKind,
}

/// What happened at [`KubeletSignal::at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// The preStop hook started.
    PreStopStarted,
    /// The preStop hook ended (successfully, failed, or cut short by the
    /// grace period).
    PreStopFinished,
    /// SIGTERM went to the container's main process.
    Sigterm,
    /// SIGKILL went to the container's process group at the deadline.
    Sigkill,
    /// The main process exited (on its own, or for a signal).
    Exited {
        /// Its exit code (128 + signal when a signal killed it).
        code: Option<i32>,
        /// The signal that killed it.
        signal: Option<i32>,
    },
}
