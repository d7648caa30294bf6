//! The app's lifecycle, one step at a time, each logged: starting → (startup
//! delay) → listening → ready / broken period over / crashing → SIGTERM →
//! draining (or exit at once, or ignore) → exit.
//!
//! This task owns the signal handlers and the timers; the accept loop and
//! the connections run in their own tasks and read the shared flags in
//! [`App`].

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::{
    net::TcpListener,
    signal::unix::{Signal, SignalKind, signal},
    time::sleep_until,
};

use super::{
    accept::accept_loop,
    app::App,
    config::{OnSigterm, ServeConfig},
    error::ServeError,
};

/// Exit code when `--crash-after` fires.
const CRASH_EXIT_CODE: u8 = 1;

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// The termination signals the app reacts to.
#[derive(Debug, Clone, Copy)]
enum Sig {
    Term,
    Int,
}

impl Sig {
    fn name(self) -> &'static str {
        match self {
            Sig::Term => "SIGTERM",
            Sig::Int => "SIGINT",
        }
    }

    /// The code a shell reports for a process killed by this signal's
    /// default action: 128 + signal number (143 for SIGTERM, 130 for SIGINT).
    fn exit_code(self) -> u8 {
        match self {
            Sig::Term => 128 + 15,
            Sig::Int => 128 + 2,
        }
    }
}

/// SIGTERM and SIGINT handlers (installing them replaces the default
/// action, which would kill the process).
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Self, ServeError> {
        let term = signal(SignalKind::terminate()).map_err(|source| ServeError::Signal {
            signal: "SIGTERM",
            source,
        })?;
        let int = signal(SignalKind::interrupt()).map_err(|source| ServeError::Signal {
            signal: "SIGINT",
            source,
        })?;
        Ok(Signals { term, int })
    }

    /// The next signal (cancel-safe).
    async fn recv(&mut self) -> Sig {
        tokio::select! {
            Some(()) = self.term.recv() => Sig::Term,
            Some(()) = self.int.recv() => Sig::Int,
            else => std::future::pending().await,
        }
    }
}

/// Scheduled lifecycle steps, counted from the moment listening started.
#[derive(Debug, Clone, Copy)]
enum Event {
    Ready,
    BrokenOver,
    Crash,
}

/// The pending [`Event`]s, earliest first.
struct Timers {
    due: Vec<(Instant, Event)>,
}

impl Timers {
    fn new(listening_at: Instant, cfg: &ServeConfig) -> Self {
        let mut due = Vec::new();
        if !cfg.ready_delay.is_zero() {
            due.push((listening_at + cfg.ready_delay, Event::Ready));
        }
        if !cfg.broken_for.is_zero() {
            due.push((listening_at + cfg.broken_for, Event::BrokenOver));
        }
        if let Some(after) = cfg.crash_after {
            due.push((listening_at + after, Event::Crash));
        }
        due.sort_by_key(|(at, _)| *at);
        Timers { due }
    }

    /// Waits for the next event (cancel-safe: an event is removed only when
    /// it is returned). Never returns when none is left.
    async fn next(&mut self) -> Event {
        match self.due.first() {
            None => std::future::pending().await,
            Some(&(at, _)) => {
                sleep_until(at.into()).await;
                self.due.remove(0).1
            }
        }
    }
}

/// What to do after a signal.
enum Reaction {
    Continue,
    Drain,
    Exit(u8),
}

/// The lifecycle task's own state.
struct Lifecycle<'a> {
    cfg: &'a ServeConfig,
    app: Arc<App>,
    /// A signal arrived with `--fail-readiness-on-sigterm`: never ready again.
    unready_for_good: bool,
}

impl Lifecycle<'_> {
    fn log(&self, message: std::fmt::Arguments<'_>) {
        self.app.log.log(message);
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.app.open_connections.load(Ordering::Acquire),
            self.app.in_flight.load(Ordering::Acquire),
        )
    }

    fn become_ready(&self) {
        if self.unready_for_good {
            self.log(format_args!(
                "ready delay over, but staying unready (signal received)"
            ));
        } else {
            self.app.ready.store(true, Ordering::Release);
            self.log(format_args!("ready (/healthz answers 200)"));
        }
    }

    /// Reacts to SIGTERM/SIGINT; `listening` is false during the startup
    /// delay, when there is nothing to drain.
    fn on_signal(&mut self, sig: Sig, listening: bool) -> Reaction {
        let name = sig.name();
        if self.cfg.fail_readiness_on_sigterm && !self.unready_for_good {
            self.unready_for_good = true;
            self.app.ready.store(false, Ordering::Release);
            self.log(format_args!(
                "{name} received: readiness now fails (/healthz answers 503)"
            ));
        }
        match self.cfg.on_sigterm {
            OnSigterm::Ignore => {
                self.log(format_args!(
                    "{name} received: ignoring it (--on-sigterm ignore); only SIGKILL stops this"
                ));
                Reaction::Continue
            }
            OnSigterm::Exit => {
                let (open, in_flight) = self.counts();
                self.log(format_args!(
                    "{name} received: exiting at once (--on-sigterm exit), cutting {open} \
                     connections and {in_flight} requests in flight"
                ));
                Reaction::Exit(sig.exit_code())
            }
            OnSigterm::Drain if !listening => {
                self.log(format_args!(
                    "{name} received before listening: nothing to drain"
                ));
                Reaction::Exit(0)
            }
            OnSigterm::Drain => {
                self.log(format_args!("{name} received: starting the drain"));
                Reaction::Drain
            }
        }
    }

    /// Handles a timer; returns an exit code when the app must stop.
    fn on_timer(&self, event: Event) -> Option<u8> {
        match event {
            Event::Ready => self.become_ready(),
            Event::BrokenOver => {
                self.app.broken.store(false, Ordering::Release);
                self.log(format_args!("broken period over (/ answers 200)"));
            }
            Event::Crash => {
                let (open, in_flight) = self.counts();
                self.log(format_args!(
                    "crashing (--crash-after {}): exit {CRASH_EXIT_CODE}, cutting {open} \
                     connections and {in_flight} requests in flight",
                    human(self.cfg.crash_after.unwrap_or_default())
                ));
                return Some(CRASH_EXIT_CODE);
            }
        }
        None
    }
}

/// Runs the whole lifecycle; returns the process exit code.
pub(crate) async fn serve(
    cfg: &ServeConfig,
    app: Arc<App>,
    addr: SocketAddr,
    process_start: Instant,
) -> Result<u8, ServeError> {
    let mut signals = Signals::install()?;
    let mut life = Lifecycle {
        cfg,
        app: app.clone(),
        unready_for_good: false,
    };

    if !cfg.startup_delay.is_zero() {
        life.log(format_args!(
            "startup delay: not listening until {} after start",
            human(cfg.startup_delay)
        ));
        let until = process_start + cfg.startup_delay;
        loop {
            tokio::select! {
                () = sleep_until(until.into()) => break,
                sig = signals.recv() => match life.on_signal(sig, false) {
                    Reaction::Exit(code) => return Ok(code),
                    Reaction::Continue | Reaction::Drain => {}
                },
            }
        }
    }

    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(ServeError::LocalAddr)?;
    let listening_at = Instant::now();
    if !cfg.broken_for.is_zero() {
        app.broken.store(true, Ordering::Release);
    }
    life.log(format_args!("listening on {local}"));
    if cfg.ready_delay.is_zero() {
        life.become_ready();
    } else {
        life.log(format_args!(
            "not ready for {} (/healthz answers 503)",
            human(cfg.ready_delay)
        ));
    }
    if !cfg.broken_for.is_zero() {
        life.log(format_args!(
            "broken for {}: / answers 503 while /healthz may say ready",
            human(cfg.broken_for)
        ));
    }
    let mut timers = Timers::new(listening_at, cfg);
    let accept = tokio::spawn(accept_loop(app.clone(), listener));

    loop {
        tokio::select! {
            sig = signals.recv() => match life.on_signal(sig, true) {
                Reaction::Continue => {}
                Reaction::Exit(code) => return Ok(code),
                Reaction::Drain => break,
            },
            event = timers.next() => {
                if let Some(code) = life.on_timer(event) {
                    return Ok(code);
                }
            }
        }
    }

    app.begin_drain();
    let from_backlog = accept.await.unwrap_or(0);
    let (open, in_flight) = life.counts();
    life.log(format_args!(
        "draining: listener closed ({from_backlog} waiting connections accepted first); \
         {open} open connections, {in_flight} requests in flight; idle grace {}, drain timeout {}",
        human(cfg.idle_grace),
        human(cfg.drain_timeout)
    ));
    let deadline = Instant::now() + cfg.drain_timeout;
    loop {
        if app.open_connections.load(Ordering::Acquire) == 0 {
            life.log(format_args!("drained: no connection left"));
            return Ok(0);
        }
        tokio::select! {
            () = app.all_closed.notified() => {}
            () = sleep_until(deadline.into()) => {
                let (open, in_flight) = life.counts();
                life.log(format_args!(
                    "drain timeout ({}) passed: cutting {open} connections and \
                     {in_flight} requests in flight",
                    human(cfg.drain_timeout)
                ));
                return Ok(0);
            }
            sig = signals.recv() => life.log(format_args!(
                "{} received again: still draining", sig.name()
            )),
            event = timers.next() => {
                if let Some(code) = life.on_timer(event) {
                    return Ok(code);
                }
            }
        }
    }
}
