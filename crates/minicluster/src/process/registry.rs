//! The process-wide registry of live pod process groups, and every way they
//! are SIGKILLed when rolltest goes away:
//! - [`OrphanGuard`] dropped (the cluster handle's normal end);
//! - a panic (a chained panic hook);
//! - SIGINT/SIGTERM (a chained, async-signal-safe handler);
//! - SIGKILL of rolltest: nothing in-process can run, so direct children
//!   die by `PR_SET_PDEATHSIG`, and a watchdog `sh` (its stdin is a pipe
//!   whose write end only rolltest holds) kills every registered group when
//!   that pipe reaches end-of-file, which catches grandchildren too.
//!
//! Groups live in a fixed array of atomics so the signal handler can read
//! them without locks or allocation.
//!
//! Limits: the watchdog is started by the first [`ChildRegistry::guard`];
//! a group is unregistered only after its leader is reaped and the group
//! SIGKILLed, so the watchdog could only hit a reused group id if rolltest
//! were SIGKILLed in the instant between those steps and the kernel handed
//! that id to a new group leader at once.

use std::{
    io::Write,
    process::{Command, Stdio},
    sync::{
        Mutex, Once, OnceLock,
        atomic::{AtomicI32, AtomicUsize, Ordering},
    },
};

use super::ProcessError;

/// How many process groups can be live at once.
const CAPACITY: usize = 4096;

/// Environment variable that disables the watchdog (tests use it to show
/// what PDEATHSIG alone does).
pub const NO_WATCHDOG_ENV: &str = "ROLLTEST_NO_WATCHDOG";

static SLOTS: [AtomicI32; CAPACITY] = [const { AtomicI32::new(0) }; CAPACITY];

/// Watchdog script: collects `+PGID` / `-PGID` lines; at end-of-file
/// SIGKILLs the groups still listed.
const WATCHDOG: &str = r#"trap '' INT TERM HUP
g=' '
while IFS= read -r l; do
  case $l in
    +*) g="$g${l#+} " ;;
    -*) n=${l#-}; case $g in *" $n "*) g="${g%% $n *} ${g#* $n }" ;; esac ;;
  esac
done
for p in $g; do kill -9 -$p 2>/dev/null; done"#;

/// All live process groups of pods and hooks in this process.
#[derive(Debug)]
pub struct ChildRegistry {
    watchdog: Mutex<Option<std::io::PipeWriter>>,
    watchdog_started: Once,
}

impl ChildRegistry {
    /// The one registry of this process.
    pub fn global() -> &'static ChildRegistry {
        static REGISTRY: OnceLock<ChildRegistry> = OnceLock::new();
        REGISTRY.get_or_init(|| ChildRegistry {
            watchdog: Mutex::new(None),
            watchdog_started: Once::new(),
        })
    }

    /// Records a live group (done by the spawner for every new group).
    pub(crate) fn register(&self, pgid: i32) -> Result<(), ProcessError> {
        let free = SLOTS.iter().find(|slot| {
            slot.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if free.is_none() {
            return Err(ProcessError::RegistryFull(CAPACITY));
        }
        self.tell_watchdog('+', pgid);
        Ok(())
    }

    /// Forgets a group whose leader was reaped and whose members were killed.
    pub(crate) fn unregister(&self, pgid: i32) {
        if let Some(slot) = SLOTS
            .iter()
            .find(|slot| slot.load(Ordering::SeqCst) == pgid)
        {
            let _ = slot.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
            self.tell_watchdog('-', pgid);
        }
    }

    /// The groups currently registered.
    pub fn live_groups(&self) -> Vec<i32> {
        SLOTS
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|&p| p != 0)
            .collect()
    }

    /// SIGKILLs every registered group; returns how many were signalled.
    /// The groups stay registered until their leaders are reaped.
    pub fn kill_all(&self) -> usize {
        kill_registered()
    }

    /// Installs the panic hook and the SIGINT/SIGTERM handlers (once per
    /// process) and returns a guard that kills every registered group when
    /// dropped. The cluster handle holds it.
    ///
    /// The registry is process-wide: the guard kills *all* registered groups,
    /// so hold one guard per process. The signal handler first kills the
    /// groups, then chains: to the previous handler if there was one (tokio's
    /// `ctrl_c()`, for a graceful stop), else to the default action (the
    /// process dies by that signal, as it would have without us). A handler
    /// installed later (tokio's) calls ours first.
    pub fn guard(&'static self) -> OrphanGuard {
        static HOOKS: Once = Once::new();
        HOOKS.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                kill_registered();
                previous(info);
            }));
            for sig in [libc::SIGINT, libc::SIGTERM] {
                install_handler(sig);
            }
        });
        self.ensure_watchdog();
        OrphanGuard { _private: () }
    }

    fn ensure_watchdog(&self) {
        self.watchdog_started.call_once(|| {
            if std::env::var_os(NO_WATCHDOG_ENV).is_some() {
                return;
            }
            let Ok((reader, mut writer)) = std::io::pipe() else {
                return;
            };
            // The watchdog must outlive us, so no PDEATHSIG, and it sits in
            // its own group, away from the terminal's Ctrl-C.
            let started = {
                use std::os::unix::process::CommandExt;
                Command::new("/bin/sh")
                    .args(["-c", WATCHDOG])
                    .env_clear()
                    .stdin(Stdio::from(reader))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .spawn()
            };
            if started.is_err() {
                return;
            }
            let mut guard = self.watchdog.lock().unwrap_or_else(|p| p.into_inner());
            // Groups registered before the watchdog started.
            for pgid in self.live_groups() {
                let _ = writeln!(writer, "+{pgid}");
            }
            *guard = Some(writer);
        });
    }

    fn tell_watchdog(&self, op: char, pgid: i32) {
        let mut guard = self.watchdog.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(writer) = guard.as_mut() {
            // One short line: a single atomic pipe write. A dead watchdog
            // (EPIPE) is ignored.
            let _ = writer.write_all(format!("{op}{pgid}\n").as_bytes());
        }
    }
}

/// Kills every registered group. Async-signal-safe.
fn kill_registered() -> usize {
    let mut n = 0;
    for slot in &SLOTS {
        let pgid = slot.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill(2) is async-signal-safe.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            n += 1;
        }
    }
    n
}

/// Previous handlers, indexed by signal number (SIGINT=2, SIGTERM=15).
static PREV_HANDLER: [AtomicUsize; 32] = [const { AtomicUsize::new(libc::SIG_DFL) }; 32];
static PREV_FLAGS: [AtomicI32; 32] = [const { AtomicI32::new(0) }; 32];

fn install_handler(sig: i32) {
    // SAFETY: zeroed sigaction is a valid value to fill in.
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = on_signal as *const () as usize;
    new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: valid pointers; the handler only does async-signal-safe work.
    unsafe {
        libc::sigemptyset(&mut new.sa_mask);
        if libc::sigaction(sig, &new, &mut old) == 0 {
            PREV_HANDLER[sig as usize].store(old.sa_sigaction, Ordering::SeqCst);
            PREV_FLAGS[sig as usize].store(old.sa_flags, Ordering::SeqCst);
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    kill_registered();
    let Some(index) = usize::try_from(sig).ok().filter(|&i| i < 32) else {
        return;
    };
    // Are we still the installed handler? If not, a later handler (e.g.
    // tokio's) called us while chaining and owns what happens next.
    // SAFETY: sigaction(2) is async-signal-safe; valid out-pointer.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    if unsafe { libc::sigaction(sig, std::ptr::null(), &mut current) } != 0
        || current.sa_sigaction != on_signal as *const () as usize
    {
        return;
    }
    let prev = PREV_HANDLER[index].load(Ordering::SeqCst);
    let flags = PREV_FLAGS[index].load(Ordering::SeqCst);
    if prev == libc::SIG_IGN {
        return;
    }
    if prev == libc::SIG_DFL {
        // Restore the default action and re-raise: it is delivered when this
        // handler returns, so the process dies by the signal as before.
        // SAFETY: signal(2) and raise(3) are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    // SAFETY: `prev` was installed as a handler of this kind for `sig`.
    unsafe {
        if flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(prev);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev);
            f(sig);
        }
    }
}

/// Held by the cluster handle: dropping it SIGKILLs every registered group.
/// Created by [`ChildRegistry::guard`].
#[derive(Debug)]
#[must_use = "the groups are killed when the guard drops"]
pub struct OrphanGuard {
    _private: (),
}

impl Drop for OrphanGuard {
    fn drop(&mut self) {
        kill_registered();
    }
}
