//! How a process ended: a `waitpid` status decoded the way the kubelet
//! reports it.

use std::time::Instant;

/// How a process ended, reported the way the kubelet does: a signal death
/// has `code` 128+signal (143 for SIGTERM, 137 for SIGKILL) and `signal` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code (`exitCode`); 128+signal when killed by a signal.
    pub code: Option<i32>,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// When the exit was observed.
    pub at: Instant,
}

impl ExitInfo {
    /// Decodes a `waitpid` status.
    pub fn from_wait_status(status: i32, at: Instant) -> Self {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            ExitInfo {
                code: Some(128 + sig),
                signal: Some(sig),
                at,
            }
        } else if libc::WIFEXITED(status) {
            ExitInfo {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
                at,
            }
        } else {
            ExitInfo {
                code: None,
                signal: None,
                at,
            }
        }
    }

    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_is_reported_like_kube() {
        let now = Instant::now();
        // exit(3): code in bits 8..16; killed by signal N: N in the low bits.
        let exited = ExitInfo::from_wait_status(3 << 8, now);
        assert_eq!((exited.code, exited.signal), (Some(3), None));
        let termed = ExitInfo::from_wait_status(libc::SIGTERM, now);
        assert_eq!((termed.code, termed.signal), (Some(143), Some(15)));
        let killed = ExitInfo::from_wait_status(libc::SIGKILL, now);
        assert_eq!((killed.code, killed.signal), (Some(137), Some(9)));
        assert!(ExitInfo::from_wait_status(0, now).success());
        assert!(!killed.success());
    }
}
