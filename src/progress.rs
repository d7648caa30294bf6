//! The live display: the progress bar (elapsed/total, live rate,
//! ok/failed/dropped, in flight) and the terminal lines above it. A consumer
//! of the run's event stream ([`crate::events`]): `run::dispatch` hands it
//! every event and calls [`Progress::tick`] to redraw. The bar shows from
//! the `Loading` phase to the `Draining` one, only when stderr is a terminal
//! and not `--quiet`; the lines go to stderr unless `--quiet`.

use std::{
    collections::VecDeque,
    io::IsTerminal,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use rolltest_loadgen::LiveCounters;

use crate::events::{Phase, RunEvent, Tally};

/// How often the bar is redrawn.
pub const TICK: Duration = Duration::from_millis(200);

/// The live display of a run.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    total: Duration,
    /// Requests in flight: the generator's one gauge (the rest is counted
    /// from the stream).
    live: Arc<LiveCounters>,
    started: Option<Instant>,
    done: Tally,
    /// A 1-second window of (time, finished) samples for the live rate.
    window: VecDeque<(Instant, u64)>,
}

impl Progress {
    /// A display for a load of `total` length (the asked duration).
    pub fn new(total: Duration, live: Arc<LiveCounters>, quiet: bool) -> Self {
        Progress {
            bar: None,
            quiet,
            total,
            live,
            started: None,
            done: Tally::default(),
            window: VecDeque::new(),
        }
    }

    /// Takes one event of the run.
    pub fn on_event(&mut self, event: &RunEvent) {
        match event {
            RunEvent::Phase(Phase::Loading) => self.show_bar(),
            RunEvent::Phase(Phase::Draining | Phase::Finishing) => self.finish(),
            RunEvent::Note(text) | RunEvent::Action { line: text } => self.line(text),
            RunEvent::Requests(t) => {
                self.done.ok += t.ok;
                self.done.failed += t.failed;
                self.done.dropped += t.dropped;
            }
            RunEvent::Phase(_)
            | RunEvent::Lifecycle(_)
            | RunEvent::Proxy(_)
            | RunEvent::Problem(_) => {}
        }
    }

    fn show_bar(&mut self) {
        self.started = Some(Instant::now());
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let total_ms = u64::try_from(self.total.as_millis()).unwrap_or(u64::MAX);
        let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.bar = Some(bar);
    }

    /// A line above the bar (or on stderr without one); nothing when quiet.
    fn line(&self, text: &str) {
        if self.quiet {
        } else if let Some(bar) = &self.bar {
            bar.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    /// Redraws the bar (a no-op without one).
    pub fn tick(&mut self) {
        let (Some(bar), Some(started)) = (&self.bar, self.started) else {
            return;
        };
        let now = Instant::now();
        let finished = self.done.total();
        self.window.push_back((now, finished));
        while self
            .window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.window.pop_front();
        }
        let rate = match self.window.front() {
            Some((t, n)) if now > *t => {
                (finished - n) as f64 / now.duration_since(*t).as_secs_f64()
            }
            _ => 0.0,
        };
        bar.set_position(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        bar.set_message(format!(
            "{rate:>8.0} req/s  ok {}  failed {}  dropped {}  in flight {}",
            self.done.ok,
            self.done.failed,
            self.done.dropped,
            self.live.in_flight.load(Ordering::Relaxed),
        ));
    }

    /// Clears the bar (the lines after it go to stderr).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_from_the_stream() {
        let mut p = Progress::new(Duration::from_secs(1), Arc::default(), true);
        p.on_event(&RunEvent::Phase(Phase::Loading));
        for t in [
            Tally {
                ok: 3,
                failed: 1,
                dropped: 0,
            },
            Tally {
                ok: 2,
                failed: 0,
                dropped: 4,
            },
        ] {
            p.on_event(&RunEvent::Requests(t));
        }
        assert_eq!(
            p.done,
            Tally {
                ok: 5,
                failed: 1,
                dropped: 4
            }
        );
        assert!(p.started.is_some());
        assert!(p.bar.is_none(), "quiet: no bar");
    }
}
