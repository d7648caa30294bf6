//! `rolltest serve` flags (the app itself is `crate::serve`).
//!
//! Duration flags take humantime values ("500ms", "2s", "1m"); a bad value is
//! a clap error naming the flag (exit 2).

use std::{net::SocketAddr, time::Duration};

use rolltest_core::ExitStatus;

use crate::serve::{
    self, DependencyUrl, OnSigterm, ServeConfig, WorkTime, parse_dependency_url, parse_duration,
    parse_work_time,
};

/// Shown after the flags in `rolltest serve --help`.
const AFTER_HELP: &str = "\
Endpoints: / (the work), /healthz (readiness, and the --dependency), /livez
(liveness: the process only); every response carries an x-rolltest-pod header. Lifecycle steps are logged on stderr.

Exit codes: 0 drained (or drain timeout passed), 1 --crash-after fired,
143 (130 for SIGINT) with --on-sigterm exit, 2 bad flags or environment,
3 cannot listen.";

/// Flags of `rolltest serve`, the bundled demo app: the pod of every
/// scenario, with selectable startup, readiness and shutdown behaviour.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ServeArgs {
    /// Address to listen on, IP:PORT (port 0 picks a free port; the bound
    /// address is logged as "listening on ADDR").
    ///
    /// Default: $POD_IP:$PORT when set, 127.0.0.1:$PORT with PORT alone,
    /// else 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Pod name for the x-rolltest-pod header and the logs; $POD_NAME wins
    /// over it, the host name is the fallback.
    #[arg(long, value_name = "NAME")]
    pub pod_name: Option<String>,

    /// What SIGTERM (and SIGINT) does: drain (close the listener, finish
    /// in-flight requests, close keep-alive connections politely, exit 0),
    /// exit (at once, code 143, cutting in-flight requests) or ignore (keep
    /// serving until SIGKILL).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = OnSigtermArg::Drain)]
    pub on_sigterm: OnSigtermArg,

    /// While draining, close a keep-alive connection only after it stayed
    /// idle this long (closing at once races with a client sending on it).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "1s")]
    pub idle_grace: Duration,

    /// Close a keep-alive connection once it has been idle this long (no
    /// request in flight, none since), as a server's keep-alive timeout
    /// does (nginx keepalive_timeout, Go's IdleTimeout). A client that sends
    /// its next request on the connection just as the app closes it loses
    /// that request: the keep-alive race. A request in flight is never cut.
    /// Default: idle connections stay open until the drain.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Emulate the network between the app and its clients when it closes
    /// an idle keep-alive connection (--idle-timeout, or the drain's idle
    /// grace): the app stops serving the connection at once, but its FIN
    /// leaves only D later, as it would reach a client D later across a
    /// network. A request that arrives within D meets a closed socket and
    /// gets a reset (RST), no response byte: what a client on a real
    /// network sees when it writes on a connection whose FIN is still in
    /// flight. On loopback that window is microseconds, so the race almost
    /// never shows without it. A path whose one-way delay is d gives a
    /// window of about 2d (the request must also reach the server after
    /// the close): set D to the round-trip time to model it.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "0s")]
    pub close_delay: Duration,

    /// Hard cap on draining: when it passes, exit 0 and cut what is left.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,

    /// Make /healthz answer 503 once SIGTERM has arrived (by default
    /// readiness stays 200 while draining, as in most real apps).
    #[arg(long)]
    pub fail_readiness_on_sigterm: bool,

    /// Do not listen at all until this long after process start (a slow
    /// start: connections are refused meanwhile).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "0s")]
    pub startup_delay: Duration,

    /// Listen, but answer 503 on /healthz until this long after listening
    /// started.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "0s")]
    pub ready_delay: Duration,

    /// "Ready too early": /healthz answers 200 at once but / answers 503
    /// until this long after listening started.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "0s")]
    pub broken_for: Duration,

    /// "Ready, then crashloop": exit with code 1 this long after listening
    /// started.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub crash_after: Option<Duration>,

    /// Time each request to / takes: a duration (50ms) or a range MIN..MAX
    /// (10ms..200ms), drawn uniformly per request.
    #[arg(long, value_name = "D|MIN..MAX", value_parser = parse_work_time, default_value = "0s")]
    pub work: WorkTime,

    /// A dependency the app cannot serve without, e.g.
    /// http://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)/livez in a manifest's
    /// args. Checked with GET every 200ms (300ms timeout); while the last
    /// check failed (refused, timed out, non-2xx) /healthz and / answer
    /// 503. /livez stays 200: a liveness probe on /livez does not restart
    /// the pod for its dependency's outage, one on /healthz does.
    #[arg(long, value_name = "URL", value_parser = parse_dependency_url)]
    pub dependency: Option<DependencyUrl>,
}

/// `--on-sigterm` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnSigtermArg {
    /// Stop accepting, finish in-flight requests, close connections politely, exit 0.
    Drain,
    /// Exit at once with code 143; in-flight requests are cut.
    Exit,
    /// Log the signal and keep serving; only SIGKILL stops the app.
    Ignore,
}

impl From<OnSigtermArg> for OnSigterm {
    fn from(arg: OnSigtermArg) -> Self {
        match arg {
            OnSigtermArg::Drain => OnSigterm::Drain,
            OnSigtermArg::Exit => OnSigterm::Exit,
            OnSigtermArg::Ignore => OnSigterm::Ignore,
        }
    }
}

impl From<ServeArgs> for ServeConfig {
    fn from(args: ServeArgs) -> Self {
        ServeConfig {
            listen: args.listen,
            pod_name: args.pod_name,
            on_sigterm: args.on_sigterm.into(),
            idle_grace: args.idle_grace,
            idle_timeout: args.idle_timeout,
            close_delay: args.close_delay,
            drain_timeout: args.drain_timeout,
            fail_readiness_on_sigterm: args.fail_readiness_on_sigterm,
            startup_delay: args.startup_delay,
            ready_delay: args.ready_delay,
            broken_for: args.broken_for,
            crash_after: args.crash_after,
            work: args.work,
            dependency: args.dependency,
        }
    }
}

/// Runs the demo app and returns its exit code. A bad listen address or pod
/// name from the environment is bad input (exit 2); other failures (cannot
/// bind, ...) are run errors.
pub fn run(args: ServeArgs) -> anyhow::Result<u8> {
    match serve::run(args.into()) {
        Ok(code) => Ok(code),
        Err(err) if err.is_bad_input() => {
            eprintln!("error: {err}");
            Ok(ExitStatus::BadInput.code())
        }
        Err(err) => Err(anyhow::Error::new(err).context("rolltest serve")),
    }
}
