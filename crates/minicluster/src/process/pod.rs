//! A container's main process: spawned in its own process group with a
//! cleared environment, stdout and stderr appended to its log file.

use std::{
    fs::OpenOptions,
    net::IpAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use super::{
    ProcessError,
    exec::ExecContext,
    exit::ExitInfo,
    spawn::{self, ChildHandle, Group},
};

/// What to run for one container of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// Pod name (for messages).
    pub pod: String,
    /// Container name (for messages).
    pub container: String,
    /// The pod's IP; the default host of `httpGet` hooks.
    pub pod_ip: IpAddr,
    /// Program to execute (resolved through the inherited `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables set on top of the inherited ones.
    pub env: Vec<(String, String)>,
    /// Variables copied from rolltest's own environment when set there;
    /// [`PodSpec::new`] makes it `PATH` and `HOME`. Nothing else leaks in.
    pub inherit_env: Vec<String>,
    /// Working directory.
    pub working_dir: PathBuf,
    /// File that stdout and stderr are appended to (what `kubectl logs`
    /// reads). Parent directories are created.
    pub log_file: PathBuf,
}

impl PodSpec {
    /// A spec with no arguments or extra env, inheriting `PATH` and `HOME`.
    pub fn new(
        pod: impl Into<String>,
        container: impl Into<String>,
        pod_ip: IpAddr,
        program: impl Into<String>,
        working_dir: impl Into<PathBuf>,
        log_file: impl Into<PathBuf>,
    ) -> Self {
        PodSpec {
            pod: pod.into(),
            container: container.into(),
            pod_ip,
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            inherit_env: vec!["PATH".into(), "HOME".into()],
            working_dir: working_dir.into(),
            log_file: log_file.into(),
        }
    }

    /// The full environment the container sees: inherited variables, then
    /// `env` (later entries win).
    pub fn resolved_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .inherit_env
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
            .collect();
        for (k, v) in &self.env {
            env.retain(|(existing, _)| existing != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

/// A running container process. Methods take `&self`, so the kubelet can
/// share it (`Arc`) between the task that waits for a crash and the one that
/// terminates it. Dropping it without a reaped exit SIGKILLs its group.
#[derive(Debug)]
pub struct PodProcess {
    spec: PodSpec,
    env: Vec<(String, String)>,
    started_at: Instant,
    child: ChildHandle,
}

impl PodProcess {
    /// Starts the container process in a new process group (registered with
    /// the [`ChildRegistry`](super::ChildRegistry)).
    pub fn spawn(spec: PodSpec) -> Result<Self, ProcessError> {
        let log_error = |source| ProcessError::LogFile {
            path: spec.log_file.clone(),
            source,
        };
        if let Some(dir) = spec.log_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(log_error)?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .map_err(log_error)?;
        let log2 = log.try_clone().map_err(log_error)?;
        let env = spec.resolved_env();
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let what = format!("{}/{}", spec.pod, spec.container);
        let started_at = Instant::now();
        let child = spawn::spawn(cmd, Group::New, &what)?;
        Ok(PodProcess {
            spec,
            env,
            started_at,
            child,
        })
    }

    /// The spec it was started from.
    pub fn spec(&self) -> &PodSpec {
        &self.spec
    }

    /// When it was started (`running.startedAt`).
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// The main process id ("PID 1" of the container).
    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// Its process group (equal to [`pid`](Self::pid)).
    pub fn pgid(&self) -> i32 {
        self.child.pgid()
    }

    /// Sends `signal` to the main process only, as a container runtime does
    /// to PID 1. `Ok(false)` if it already exited.
    pub fn signal(&self, signal: i32) -> Result<bool, ProcessError> {
        self.child.signal(signal)
    }

    /// SIGKILLs the whole process group (the container and everything it or
    /// its hooks started). `Ok(false)` if the main process already exited,
    /// in which case the group was SIGKILLed at that moment.
    pub fn kill_group(&self) -> Result<bool, ProcessError> {
        self.child.kill_group()
    }

    /// Waits for the main process to exit. When it does, the rest of the
    /// group is SIGKILLed (a container ends with its main process). Several
    /// tasks may wait; all get the same result.
    pub async fn wait(&self) -> Result<ExitInfo, ProcessError> {
        self.child.wait().await
    }

    /// The exit, if already observed (non-blocking; reaps if it happened).
    pub fn try_wait(&self) -> Result<Option<ExitInfo>, ProcessError> {
        self.child.try_reap()
    }

    /// What exec hooks and exec probes of this container run with: its env
    /// and working directory, inside its process group.
    pub fn exec_context(&self) -> ExecContext {
        ExecContext {
            env: self.env.clone(),
            working_dir: Some(self.spec.working_dir.clone()),
            process_group: Some(self.pgid()),
            pod_ip: Some(self.spec.pod_ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_inherits_only_what_is_listed_and_overrides() {
        let ip = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let mut spec = PodSpec::new("p", "c", ip, "true", "/", "/tmp/x.log");
        spec.inherit_env = vec!["PATH".into(), "ROLLTEST_SURELY_UNSET_VAR".into()];
        spec.env = vec![("PATH".into(), "/custom".into()), ("A".into(), "1".into())];
        let env = spec.resolved_env();
        assert_eq!(
            env,
            vec![
                ("PATH".to_string(), "/custom".to_string()),
                ("A".into(), "1".into())
            ]
        );
    }
}
