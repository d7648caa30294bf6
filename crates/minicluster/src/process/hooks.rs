//! Lifecycle handlers (`preStop` / `postStart`): `exec` runs a command with
//! the container's env inside the container's process group (so the group's
//! SIGKILL also ends a hook that is still running), `sleep` is slept by the
//! kubelet itself, `httpGet` is a GET that succeeds on 2xx/3xx.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::OwnedFd,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::io::AsyncReadExt;

use super::{
    ProcessError,
    pod::ExitInfo,
    probe,
    spawn::{self, Group},
};

/// Most hook/probe output kept for messages.
const OUTPUT_LIMIT: usize = 4096;

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

/// Where exec hooks and exec probes run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecContext {
    /// The complete environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory; `None` keeps rolltest's.
    pub working_dir: Option<PathBuf>,
    /// Process group to join (the container's); `None` gives the command a
    /// registered group of its own.
    pub process_group: Option<i32>,
    /// The pod IP, default host of `httpGet` hooks.
    pub pod_ip: Option<IpAddr>,
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

/// A finished exec: its exit and (the start of) its combined output.
#[derive(Debug)]
pub(crate) struct ExecRun {
    pub(crate) command: String,
    pub(crate) exit: ExitInfo,
    pub(crate) output: String,
}

impl ExecRun {
    /// `command 'X' exited with N: OUTPUT`, like the kubelet's exec errors.
    pub(crate) fn failure_message(&self) -> String {
        let code = self
            .exit
            .code
            .map_or_else(|| "?".to_string(), |c| c.to_string());
        format!(
            "command '{}' exited with {code}: {}",
            self.command,
            self.output.trim_end()
        )
    }
}

/// Runs `command` in `ctx` to completion, capturing up to 4 KiB of its
/// stdout+stderr. Dropping the future SIGKILLs the command (its group when
/// it has its own, else just the process).
pub(crate) async fn run_exec(
    command: &[String],
    ctx: &ExecContext,
    what: &str,
) -> Result<ExecRun, ProcessError> {
    let joined = command.join(" ");
    let Some((program, args)) = command.split_first() else {
        return Err(ProcessError::Spawn {
            program: String::new(),
            what: what.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    let spawn_error = |source| ProcessError::Spawn {
        program: program.clone(),
        what: what.to_string(),
        source,
    };
    let (reader, writer) = std::io::pipe().map_err(spawn_error)?;
    let writer2 = writer.try_clone().map_err(spawn_error)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2));
    if let Some(dir) = &ctx.working_dir {
        cmd.current_dir(dir);
    }
    let group = ctx.process_group.map_or(Group::New, Group::Join);
    let child = spawn::spawn(cmd, group, what)?;
    let output = Arc::new(Mutex::new(Vec::new()));
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader)).map_err(
        |source| ProcessError::Wait {
            pid: child.pid(),
            source,
        },
    )?;
    let mut collector = tokio::spawn(collect(reader, output.clone()));
    let exit = child.wait().await;
    // A background grandchild may hold the pipe open: don't wait for EOF long.
    if tokio::time::timeout(Duration::from_millis(100), &mut collector)
        .await
        .is_err()
    {
        collector.abort();
    }
    let exit = exit?;
    let bytes = output.lock().map(|b| b.clone()).unwrap_or_default();
    Ok(ExecRun {
        command: joined,
        exit,
        output: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

async fn collect(mut reader: tokio::net::unix::pipe::Receiver, into: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Ok(mut out) = into.lock() {
            let room = OUTPUT_LIMIT.saturating_sub(out.len()).min(n);
            out.extend_from_slice(&buf[..room]);
        }
    }
}
