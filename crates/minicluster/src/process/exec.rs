//! Running a command in a container's context (its env, working directory
//! and process group), as exec hooks and exec probes do.

use std::{
    net::IpAddr,
    os::fd::OwnedFd,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::io::AsyncReadExt;

use super::{
    ProcessError,
    exit::ExitInfo,
    spawn::{self, Group},
};

/// Most hook/probe output kept for messages.
const OUTPUT_LIMIT: usize = 4096;

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
