//! Pods as local processes: the process layer of the embedded kubelet.
//!
//! Independent of Kubernetes API types; the kubelet translates Pod specs into
//! the plain structs here. What it owns:
//! - [`IpAllocator`]: one loopback address per pod (127.0.1.1, 127.0.1.2, …),
//!   never reused for the life of the cluster;
//! - [`PodProcess`]: a container's main process in its own process group, with
//!   stdout and stderr appended to a log file, SIGTERM to the main process only
//!   and SIGKILL to the whole group, as a container runtime does;
//! - [`ChildRegistry`] and [`OrphanGuard`]: no pod process outlives rolltest,
//!   whether it returns, panics, gets SIGTERM/SIGINT or even SIGKILL;
//! - [`Hook`] and [`run_hook`]: `exec`, `sleep` and `httpGet` lifecycle handlers;
//! - [`terminate`]: the kubelet's `killContainer` sequence (preStop → SIGTERM →
//!   grace → SIGKILL) reported as [`ProcessEvent`]s;
//! - [`probe_http`], [`probe_tcp`], [`probe_exec`] and the pure [`ProbeState`]
//!   threshold machine.
//!
//! # Why children are spawned from one dedicated thread
//!
//! Every child gets `PR_SET_PDEATHSIG(SIGKILL)`, so even a SIGKILLed rolltest
//! takes its pods down. The kernel sends that signal when the *thread* that
//! forked the child exits, not the process; tokio's blocking-pool threads exit
//! after 10 s idle and runtime workers exit when their runtime shuts down. So
//! all forks happen on one spawner thread that lives as long as the process
//! (see `spawn.rs`). PDEATHSIG only reaches direct children: a grandchild
//! (`sh -c 'sleep 30 & …'`) is re-parented and would survive, which is why a
//! tiny watchdog (`sh` reading a pipe whose write end only rolltest holds)
//! SIGKILLs every registered group when that pipe reaches end-of-file.

mod exec;
mod exit;
mod hooks;
mod ip;
mod pod;
mod probe;
mod probe_state;
mod registry;
mod spawn;
mod terminate;

use std::{io, path::PathBuf, time::Duration};

pub use exec::ExecContext;
pub use exit::ExitInfo;
pub use hooks::{Hook, HookOutcome, HookResult, HttpGetAction, run_hook};
pub use ip::IpAllocator;
pub use pod::{PodProcess, PodSpec};
pub use probe::{ProbeResult, probe_exec, probe_http, probe_tcp};
pub use probe_state::{ProbeKind, ProbeState, ProbeStatus};
pub use registry::{ChildRegistry, NO_WATCHDOG_ENV, OrphanGuard};
pub use terminate::{ProcessEvent, ProcessEventKind, terminate};

/// Errors of the process layer. Each says what failed and for which pod or
/// pid; the caller (the kubelet) turns them into container states or events.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The container log file could not be opened; check the directory.
    #[error("cannot open log file {path}: {source}")]
    LogFile {
        /// The log file path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// fork/exec failed (missing program, bad working directory, …).
    #[error("cannot start {program:?} for {what}: {source}")]
    Spawn {
        /// The program that was to run.
        program: String,
        /// Which pod/container or hook it was for.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The spawner thread is gone (it only ends if it panicked).
    #[error("the process spawner thread is gone")]
    SpawnerGone,
    /// Sending a signal failed.
    #[error("cannot send signal {signal} to {target}: {source}")]
    Signal {
        /// The signal number.
        signal: i32,
        /// `pid N` or `group N`.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Waiting for or watching a child failed.
    #[error("cannot wait for pid {pid}: {source}")]
    Wait {
        /// The child's pid.
        pid: i32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The child did not exit even after SIGKILL (uninterruptible sleep?).
    #[error("pid {pid} still running {waited:?} after SIGKILL")]
    KillTimeout {
        /// The child's pid.
        pid: i32,
        /// How long we waited after SIGKILL.
        waited: Duration,
    },
    /// Every loopback address was handed out once already.
    #[error("no loopback addresses left in 127.0.0.0/8")]
    IpsExhausted,
    /// Too many live process groups for the registry.
    #[error("too many live process groups (limit {0})")]
    RegistryFull(usize),
}
