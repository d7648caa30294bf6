//! Low-level children: fork on one long-lived thread, watch exits through a
//! pidfd, reap exactly once, never signal a reaped (reusable) pid.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits
//! (prctl(2): "the parent thread"), so forking from a tokio worker or
//! blocking-pool thread would SIGKILL pods when that thread retires. Every
//! fork therefore happens on [`spawner`], a plain thread whose sender lives in
//! a static: it only ends with the process, which is exactly when the signal
//! should fire.

use std::{
    io,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    process::Command,
    sync::{Mutex, MutexGuard, OnceLock, mpsc},
    time::{Duration, Instant},
};

use tokio::io::unix::AsyncFd;

use super::{ProcessError, exit::ExitInfo, registry::ChildRegistry};

type Job = Box<dyn FnOnce() + Send>;

/// The sender of the spawner thread, started on first use.
fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        // If the thread cannot start, the receiver drops and every spawn
        // reports SpawnerGone.
        let _ = std::thread::Builder::new()
            .name("rolltest-spawner".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            });
        Mutex::new(tx)
    })
}

/// The sender of the reaper thread, which does blocking `waitpid` for
/// children whose handle was dropped before they were reaped.
fn reaper() -> &'static Mutex<mpsc::Sender<i32>> {
    static REAPER: OnceLock<Mutex<mpsc::Sender<i32>>> = OnceLock::new();
    REAPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<i32>();
        let _ = std::thread::Builder::new()
            .name("rolltest-reaper".into())
            .spawn(move || {
                while let Ok(pid) = rx.recv() {
                    let mut status = 0;
                    // SAFETY: plain syscall on our own child.
                    while unsafe { libc::waitpid(pid, &mut status, 0) } == -1
                        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
                    {
                    }
                }
            });
        Mutex::new(tx)
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Which process group a new child goes into.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Group {
    /// A new group led by the child; registered with the [`ChildRegistry`]
    /// and SIGKILLed as a whole when the child exits or the handle drops.
    New,
    /// An existing group (a pod's), e.g. for an exec hook.
    Join(i32),
}

/// A child process we own: reaped exactly once, signalled only while it is
/// not reaped (so its pid cannot have been reused).
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pid: i32,
    pgid: i32,
    /// Whether this child leads (and owns) its process group.
    owns_group: bool,
    /// Raw pidfd until the first wait turns it into an `AsyncFd`.
    pidfd: Mutex<Option<OwnedFd>>,
    async_fd: tokio::sync::OnceCell<Option<AsyncFd<OwnedFd>>>,
    exit: Mutex<Option<ExitInfo>>,
}

/// Spawns `cmd` on the spawner thread, in `group`, with PDEATHSIG=SIGKILL.
pub(crate) fn spawn(
    mut cmd: Command,
    group: Group,
    what: &str,
) -> Result<ChildHandle, ProcessError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let parent = std::process::id() as libc::pid_t;
    match group {
        Group::New => cmd.process_group(0),
        Group::Join(pgid) => cmd.process_group(pgid),
    };
    // SAFETY: the closure only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) == -1
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    let what = what.to_string();
    let job: Job = Box::new(move || {
        let result = match cmd.spawn() {
            Err(source) => Err(ProcessError::Spawn {
                program,
                what,
                source,
            }),
            Ok(child) => {
                let pid = child.id() as i32;
                // Register at once so no signal/panic path can miss it.
                match group {
                    Group::New => match ChildRegistry::global().register(pid) {
                        Ok(()) => Ok(pid),
                        Err(e) => {
                            // SAFETY: plain syscall on our fresh, unreaped child.
                            unsafe { libc::kill(-pid, libc::SIGKILL) };
                            let _ = lock(reaper()).send(pid);
                            Err(e)
                        }
                    },
                    Group::Join(_) => Ok(pid),
                }
            }
        };
        let _ = tx.send(result);
    });
    lock(spawner())
        .send(job)
        .map_err(|_| ProcessError::SpawnerGone)?;
    let pid = rx.recv().map_err(|_| ProcessError::SpawnerGone)??;
    let (pgid, owns_group) = match group {
        Group::New => (pid, true),
        Group::Join(pgid) => (pgid, false),
    };
    // SAFETY: plain syscall; `pid` is our unreaped child, so it cannot be reused.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = (fd >= 0).then(|| {
        // SAFETY: the kernel just gave us this descriptor.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    });
    Ok(ChildHandle {
        pid,
        pgid,
        owns_group,
        pidfd: Mutex::new(pidfd),
        async_fd: tokio::sync::OnceCell::new(),
        exit: Mutex::new(None),
    })
}

fn errno() -> io::Error {
    io::Error::last_os_error()
}

impl ChildHandle {
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    pub(crate) fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Sends `signal` to the process itself. `Ok(false)` if it already exited.
    pub(crate) fn signal(&self, signal: i32) -> Result<bool, ProcessError> {
        let exit = lock(&self.exit);
        if exit.is_some() {
            return Ok(false);
        }
        // SAFETY: plain syscall; the pid is unreaped while we hold the lock.
        if unsafe { libc::kill(self.pid, signal) } == -1 {
            return Err(ProcessError::Signal {
                signal,
                target: format!("pid {}", self.pid),
                source: errno(),
            });
        }
        Ok(true)
    }

    /// Sends SIGKILL to the whole process group. `Ok(false)` if the leader
    /// already exited (its group was SIGKILLed then).
    pub(crate) fn kill_group(&self) -> Result<bool, ProcessError> {
        let exit = lock(&self.exit);
        if exit.is_some() {
            return Ok(false);
        }
        // SAFETY: plain syscall; an unreaped member pins the group id.
        if unsafe { libc::kill(-self.pgid, libc::SIGKILL) } == -1 {
            let source = errno();
            if source.raw_os_error() != Some(libc::ESRCH) {
                return Err(ProcessError::Signal {
                    signal: libc::SIGKILL,
                    target: format!("group {}", self.pgid),
                    source,
                });
            }
        }
        Ok(true)
    }

    /// Reaps the child if it has exited. A group leader first SIGKILLs the
    /// rest of its group (a container's processes end with its main process),
    /// while its zombie still pins the group id.
    pub(crate) fn try_reap(&self) -> Result<Option<ExitInfo>, ProcessError> {
        let mut exit = lock(&self.exit);
        if let Some(info) = *exit {
            return Ok(Some(info));
        }
        // SAFETY: zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: plain syscall on our child with a valid out-pointer.
        if unsafe { libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, flags) } == -1 {
            return Err(ProcessError::Wait {
                pid: self.pid,
                source: errno(),
            });
        }
        // SAFETY: waitid filled `info` (si_pid is 0 when nothing changed).
        if unsafe { info.si_pid() } == 0 {
            return Ok(None);
        }
        let at = Instant::now();
        if self.owns_group {
            // SAFETY: plain syscall; ESRCH (no other members) is fine.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
        let mut status = 0;
        loop {
            // SAFETY: plain syscall; the child is a zombie, so this returns at once.
            if unsafe { libc::waitpid(self.pid, &mut status, 0) } != -1 {
                break;
            }
            let source = errno();
            if source.kind() != io::ErrorKind::Interrupted {
                return Err(ProcessError::Wait {
                    pid: self.pid,
                    source,
                });
            }
        }
        if self.owns_group {
            ChildRegistry::global().unregister(self.pgid);
        }
        let info = ExitInfo::from_wait_status(status, at);
        *exit = Some(info);
        Ok(Some(info))
    }

    /// Waits for the child to exit and reaps it. Several tasks may wait at
    /// once; all get the same [`ExitInfo`].
    pub(crate) async fn wait(&self) -> Result<ExitInfo, ProcessError> {
        let async_fd = self
            .async_fd
            .get_or_init(|| async {
                let fd = lock(&self.pidfd).take()?;
                // SAFETY: an OwnedFd stays open and keeps its descriptor for
                // as long as the AsyncFd owns it.
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
            })
            .await;
        loop {
            if let Some(info) = self.try_reap()? {
                return Ok(info);
            }
            match async_fd {
                // A pidfd turns (and stays) readable once the process exits.
                // Readiness is kept, not cleared, so concurrent waiters all
                // see it; the short sleep only guards against a spurious wakeup.
                Some(fd) => {
                    let mut guard = fd.readable().await.map_err(|source| ProcessError::Wait {
                        pid: self.pid,
                        source,
                    })?;
                    guard.retain_ready();
                    if self.try_reap()?.is_none() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

impl Drop for ChildHandle {
    /// A child that was never reaped is SIGKILLed (its whole group if it owns
    /// one) and handed to the reaper thread, so nothing is left behind.
    fn drop(&mut self) {
        let exit = lock(&self.exit);
        if exit.is_some() {
            return;
        }
        let target = if self.owns_group {
            -self.pgid
        } else {
            self.pid
        };
        // SAFETY: plain syscall; the pid is unreaped, so not reused.
        unsafe { libc::kill(target, libc::SIGKILL) };
        if self.owns_group {
            ChildRegistry::global().unregister(self.pgid);
        }
        let _ = lock(reaper()).send(self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polling_fallback_without_a_pidfd() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 7"]);
        let child = spawn(cmd, Group::New, "test");
        let child = match child {
            Ok(c) => c,
            Err(e) => panic!("spawn: {e}"),
        };
        // Drop the pidfd so `wait` has to poll.
        drop(lock(&child.pidfd).take());
        let exit = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let exit = exit.map(|r| r.map(|e| e.code));
        assert!(matches!(exit, Ok(Ok(Some(7)))), "{exit:?}");
        assert!(
            !ChildRegistry::global()
                .live_groups()
                .contains(&child.pgid())
        );
    }
}
