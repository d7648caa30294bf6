//! Lifecycle handlers (`preStop` / `postStart`): `exec` runs a command with
//! the container's env inside the container's process group (so the group's
//! SIGKILL also ends a hook that is still running), `sleep` is slept by the
//! kubelet itself, `httpGet` is a GET that succeeds on 2xx/3xx.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use super::{
    exec::{ExecContext, run_exec},
    probe,
};

/// A lifecycle handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// `exec: {command: [...]}`: run in the container's env and group.
    Exec {
        /// Program and arguments (no shell unless the command names one).
        command: Vec<String>,
    },
    /// `sleep: {seconds}`: the kubelet sleeps; negative means 0.
    Sleep {
        /// How long.
        seconds: i64,
    },
    /// `httpGet` (scheme HTTP only).
    HttpGet(HttpGetAction),
}

/// An `httpGet` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGetAction {
    /// Host to connect to; `None` means the pod IP.
    pub host: Option<IpAddr>,
    /// Port (a named port is resolved by the caller).
    pub port: u16,
    /// Request path (`/` if empty).
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
}

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exit code 0, HTTP 2xx/3xx, or the sleep ended.
    Ok,
    /// It failed; the message says how (the `FailedPreStopHook` detail).
    Failed {
        /// E.g. `command 'sh -c exit 3' exited with 3: …`.
        message: String,
    },
    /// Still running at the deadline. An exec hook is *not* killed: it keeps
    /// running until its process group dies, as with the kubelet.
    TimedOut,
}

/// A hook's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResult {
    /// When it started.
    pub started: Instant,
    /// How long it ran (up to the deadline when timed out).
    pub duration: Duration,
    /// How it ended.
    pub outcome: HookOutcome,
}

/// Runs `hook` for a container, waiting at most `timeout`.
pub async fn run_hook(hook: &Hook, ctx: &ExecContext, timeout: Duration) -> HookResult {
    let started = Instant::now();
    let outcome = match hook {
        Hook::Sleep { seconds } => {
            let want = Duration::from_secs(u64::try_from(*seconds).unwrap_or(0));
            if want > timeout {
                tokio::time::sleep(timeout).await;
                HookOutcome::TimedOut
            } else {
                tokio::time::sleep(want).await;
                HookOutcome::Ok
            }
        }
        Hook::HttpGet(action) => {
            let host = action
                .host
                .or(ctx.pod_ip)
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let addr = SocketAddr::new(host, action.port);
            match probe::http_get(addr, &action.path, &action.headers, timeout).await {
                Ok(status) if (200..400).contains(&status) => HookOutcome::Ok,
                Ok(status) => HookOutcome::Failed {
                    message: format!("HTTP lifecycle hook failed with statuscode: {status}"),
                },
                Err(probe::HttpError::Timeout(_)) => HookOutcome::TimedOut,
                Err(e) => HookOutcome::Failed {
                    message: e.to_string(),
                },
            }
        }
        Hook::Exec { command } => {
            // Detached so that a timed-out hook keeps running (and is reaped
            // when it ends) instead of being killed when this future drops.
            let (command, ctx) = (command.clone(), ctx.clone());
            let task = tokio::spawn(async move { run_exec(&command, &ctx, "exec hook").await });
            match tokio::time::timeout(timeout, task).await {
                Err(_) => HookOutcome::TimedOut,
                Ok(Err(join)) => HookOutcome::Failed {
                    message: format!("hook task failed: {join}"),
                },
                Ok(Ok(Err(e))) => HookOutcome::Failed {
                    message: e.to_string(),
                },
                Ok(Ok(Ok(run))) if run.exit.success() => HookOutcome::Ok,
                Ok(Ok(Ok(run))) => HookOutcome::Failed {
                    message: run.failure_message(),
                },
            }
        }
    };
    HookResult {
        started,
        duration: started.elapsed(),
        outcome,
    }
}
