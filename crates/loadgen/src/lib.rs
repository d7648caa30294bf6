//! The constant-rate load generator (open model).
//!
//! One thread of its own, so nothing else in rolltest (cluster watchers, the
//! progress bar, the record writer) can delay a send. It runs a
//! single-threaded tokio runtime holding
//! - the **dispatcher**: it waits for each request's due time on a Linux
//!   `timerfd` (precise to microseconds; tokio's timer rounds to whole
//!   milliseconds) registered with the runtime's epoll, so pacing costs no
//!   extra thread and no cross-thread wake-up per request. A
//!   request due while `max_in_flight` are outstanding is recorded as
//!   `dropped`: the rate is never lowered silently;
//! - the **pool** of HTTP/1.1 connections (LIFO keep-alive, grown on demand
//!   up to `max_in_flight`, no retries, no redirects): each request's bytes,
//!   serialized once, are written straight to a pooled socket, and responses
//!   are parsed with `httparse` from a shared read buffer, timed by the
//!   kernel's receive timestamp. When the dispatcher ticks at least every
//!   millisecond it reads responses at its ticks, so the thread wakes once
//!   per group of requests instead of once more per response (hyper's
//!   client, a task and a timer per request, cost about 1.5x the CPU per
//!   request; reqwest about 1.8x hyper's).
//!
//! Latency is measured from the *scheduled* time, so a late generator shows
//! as latency and schedule lag, never hidden (no coordinated omission).
//! Finished records leave in batches over a channel to the record writer.
//!
//! It needs only the core's vocabulary (`rolltest-core`: records, the run
//! clock): what to send is a [`Target`] and a [`LoadSpec`], which a
//! scenario's `[target]` and `[load]` validate into.

mod classify;
mod client;
mod http1;
pub mod os;
pub mod pacer;
mod pool;
mod sock;
mod spec;
mod timer;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize},
        mpsc,
    },
    thread,
    time::Instant,
};

use rolltest_core::model::{ConnRecord, RequestRecord, RunClock};

pub use spec::{
    AUTO_QUANTUM_MAX_RATE, COARSE_SEND_QUANTUM, LoadSpec, PRECISE_SEND_QUANTUM, Target,
};

/// Why the load could not run at all. Each is a run error (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target host did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// Host and port.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The target host resolved to no address.
    #[error("{host} resolved to no address")]
    NoAddress {
        /// Host and port.
        host: String,
    },
    /// The generator could not be started (thread, runtime or timer).
    #[error("cannot start the load generator: {0}")]
    Start(#[source] std::io::Error),
    /// The generator thread panicked.
    #[error("the load generator's {0} thread panicked")]
    Panicked(&'static str),
}

/// Counters shared with the progress bar; updated as requests finish.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Requests handed to the client.
    pub sent: AtomicU64,
    /// Finished with a successful response.
    pub ok: AtomicU64,
    /// Finished with a failure.
    pub failed: AtomicU64,
    /// Never sent.
    pub dropped: AtomicU64,
    /// Outstanding now (handed to the client, not yet finished).
    pub in_flight: AtomicUsize,
    /// TCP connections opened.
    pub connections: AtomicU64,
}

/// Batches of finished records go here.
pub type RecordSender = mpsc::Sender<Vec<RequestRecord>>;

/// How the caller ends a load before its schedule does.
#[derive(Debug, Default)]
pub struct Stop {
    /// Stop scheduling now; the run is interrupted (Ctrl-C) and proves nothing.
    pub interrupt: AtomicBool,
    /// Stop scheduling now; the run is complete (a rollout scenario's load
    /// runs until the disruption has settled, not for a fixed time).
    pub finish: AtomicBool,
}

/// What the generator did, once it has finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOutcome {
    /// Run-clock offset of the schedule's origin (request 0's due time), µs.
    pub started_us: u64,
    /// Requests the pacer reached (sent or dropped).
    pub scheduled: u64,
    /// The pacer was stopped before the end of the schedule.
    pub interrupted: bool,
    /// Run-clock offset when the last request finished, µs.
    pub ended_us: u64,
    /// Every connection the generator opened.
    pub conns: Vec<ConnRecord>,
}

/// A load run in progress; [`LoadRun::wait`] blocks until it has finished.
pub struct LoadRun {
    thread: thread::JoinHandle<client::Finished>,
    clock: RunClock,
    started_us: u64,
    /// The end of the schedule's window (origin + duration): a schedule that
    /// ran to its end lasts at least this long, even when its last request
    /// (due one interval before the end) answered quickly.
    window_end: Instant,
}

pub use client::probe;

/// Resolves the target's address (before any thread starts, so a bad host is
/// an immediate, clear error).
pub async fn resolve(target: &Target) -> Result<SocketAddr, LoadError> {
    let host = target.url.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = target.url.port_u16().unwrap_or(80);
    let name = format!("{host}:{port}");
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| LoadError::Resolve {
            host: name.clone(),
            source,
        })?;
    addrs.next().ok_or(LoadError::NoAddress { host: name })
}

/// Starts the load: schedules `spec.rate` requests per second for
/// `spec.duration` to `addr`, request 0 due at `origin` (pick it a few
/// milliseconds ahead so the thread is up by then). Setting `stop` ends
/// scheduling early (`interrupt` for Ctrl-C, `finish` for a run that is
/// complete); requests already in flight still finish (each within the
/// timeout).
#[allow(clippy::too_many_arguments)]
pub fn start(
    target: &Target,
    addr: SocketAddr,
    spec: &LoadSpec,
    clock: RunClock,
    origin: Instant,
    records: RecordSender,
    stop: Arc<Stop>,
    live: Arc<LiveCounters>,
) -> Result<LoadRun, LoadError> {
    let params = client::Params {
        addr,
        template: client::RequestTemplate::new(target, spec.keepalive),
        spec: spec.clone(),
        clock,
        origin,
    };
    let window_end = origin + spec.duration;
    let thread = thread::Builder::new()
        .name("rolltest-load".into())
        .spawn(move || client::run(params, records, &stop, live))
        .map_err(LoadError::Start)?;
    Ok(LoadRun {
        thread,
        clock,
        started_us: clock.micros(origin),
        window_end,
    })
}

impl LoadRun {
    /// Blocks until every scheduled request has finished and every record was handed over.
    pub fn wait(self) -> Result<LoadOutcome, LoadError> {
        let finished = self
            .thread
            .join()
            .map_err(|_| LoadError::Panicked("load"))?;
        if let Some(e) = finished.error {
            return Err(LoadError::Start(e));
        }
        if finished.completed {
            let left = self.window_end.saturating_duration_since(Instant::now());
            thread::sleep(left);
        }
        Ok(LoadOutcome {
            started_us: self.started_us,
            scheduled: finished.scheduled,
            interrupted: finished.interrupted,
            ended_us: self.clock.now_micros(),
            conns: finished.conns,
        })
    }

    /// Whether the generator has finished (for polling loops).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}
