//! The bundled demo app (`rolltest serve`): the process every scenario runs
//! as its pods, with flags that reproduce each failure of the pod
//! termination race.
//!
//! - Endpoints: `/` (the work), `/healthz` (readiness), `/livez` (liveness);
//!   every response names its pod in the [`POD_HEADER`] header.
//! - On SIGTERM or SIGINT ([`OnSigterm`]): *drain* (close the listener, send
//!   `Connection: close` on every further response, close idle keep-alive
//!   connections only after they stayed idle for a grace, finish in-flight
//!   requests, exit 0), *exit* at once (code 143, in-flight requests cut), or
//!   *ignore* it.
//! - `--idle-timeout`: close keep-alive connections that stayed idle that
//!   long (never by default), so the client-side keep-alive race can happen;
//!   `--close-delay` makes that close reach the client late, as across a
//!   network, so the race shows on loopback too (see `conn.rs`).
//! - Misbehaviour on demand: a startup delay before listening, readiness
//!   that comes late or fails on SIGTERM, a "ready too early" period where
//!   `/` fails, a crash after a while, and per-request work time.
//! - Every lifecycle step is logged on stderr as
//!   `<RFC3339 millis> <pod> <message>`, e.g.
//!   `2026-11-24T23:50:01.123Z api-1 listening on 127.0.0.1:40123`; requests
//!   are never logged.
//!
//! The server is hyper's HTTP/1 connection driven by its own accept loop
//! (not `axum::serve`) because the drain needs control that hyper's
//! `graceful_shutdown()` does not give: see `conn.rs`.
//!
//! Module map: `config` (flags as plain data, duration parsers, environment
//! defaults), `error` ([`ServeError`]), `app` (shared state, routing),
//! `accept` (accept loop), `conn` (one connection, its drain), `drain`
//! (drain bookkeeping), `lifecycle` (signals, timers, exit code), `log`.

mod accept;
mod app;
mod config;
mod conn;
mod dependency;
mod dependency_url;
mod drain;
mod error;
mod lifecycle;
mod log;

use std::{sync::Arc, time::Instant};

pub use app::POD_HEADER;
pub use config::{
    DEFAULT_PORT, DurationArgError, OnSigterm, ServeConfig, WorkTime, parse_duration,
    parse_work_time, resolve_listen_addr, resolve_pod_name,
};
pub use dependency::{CHECK_EVERY, CHECK_TIMEOUT};
pub use dependency_url::{DependencyUrl, DependencyUrlError, parse_dependency_url};
pub use error::ServeError;

/// Runs the demo app until it ends and returns the process exit code:
///
/// - 0: drained (or the drain timeout passed, or a drain-mode signal came
///   before listening);
/// - 1: `--crash-after` fired;
/// - 143 (SIGTERM) or 130 (SIGINT): `--on-sigterm exit`, as a shell reports a
///   process killed by that signal.
///
/// The listen address and pod name not given in `config` come from the
/// environment (`POD_IP`, `PORT`, `POD_NAME`; see [`resolve_listen_addr`] and
/// [`resolve_pod_name`]). Builds its own single-threaded tokio runtime, so
/// call it from a thread that is not inside one.
pub fn run(config: ServeConfig) -> Result<u8, ServeError> {
    let process_start = Instant::now();
    let env = |name: &str| std::env::var(name).ok();
    let pod = resolve_pod_name(env("POD_NAME").as_deref(), config.pod_name.as_deref());
    let addr = resolve_listen_addr(
        config.listen,
        env("POD_IP").as_deref(),
        env("PORT").as_deref(),
    )?;
    let logger = log::Logger::new(&pod);
    let app = Arc::new(app::App::new(
        &pod,
        logger.clone(),
        config.work,
        config.idle_grace,
        config.idle_timeout,
        config.close_delay,
    )?);
    if config.dependency.is_some() {
        // Down until the first check answers.
        app.dependency_up
            .store(false, std::sync::atomic::Ordering::Release);
    }
    logger.log(format_args!(
        "starting (pid {}, listen {addr}, on-sigterm {}, work {}, idle grace {}, drain timeout {}{}{}{}{}{}{}{}{})",
        std::process::id(),
        config.on_sigterm,
        config.work,
        humantime::format_duration(config.idle_grace),
        humantime::format_duration(config.drain_timeout),
        optional(", idle timeout ", config.idle_timeout.unwrap_or_default()),
        optional(", close delay ", config.close_delay),
        optional(", startup delay ", config.startup_delay),
        optional(", ready delay ", config.ready_delay),
        optional(", broken for ", config.broken_for),
        optional(", crash after ", config.crash_after.unwrap_or_default()),
        if config.fail_readiness_on_sigterm {
            ", fail readiness on SIGTERM"
        } else {
            ""
        },
        config
            .dependency
            .as_ref()
            .map(|d| format!(", dependency {d}"))
            .unwrap_or_default(),
    ));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let result = runtime.block_on(async {
        let checker = config
            .dependency
            .clone()
            .map(|url| tokio::spawn(dependency::watch(app.clone(), url)));
        let result = lifecycle::serve(&config, app, addr, process_start).await;
        if let Some(checker) = checker {
            checker.abort();
        }
        result
    });
    // Dropping the runtime drops every connection still open (the cut).
    drop(runtime);
    if let Ok(code) = &result {
        logger.log(format_args!("exit {code}"));
    }
    result
}

/// `label` + the duration, or nothing for a zero duration.
fn optional(label: &str, d: std::time::Duration) -> String {
    if d.is_zero() {
        String::new()
    } else {
        format!("{label}{}", humantime::format_duration(d))
    }
}
