//! The live progress bar: elapsed/total, live achieved rate, ok/failed/dropped.
//! A pure reader of the generator's [`LiveCounters`]; hidden with `--quiet` or
//! when stderr is not a terminal.

use std::{
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use rolltest_loadgen::LiveCounters;

/// A running progress display.
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    bar: ProgressBar,
}

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(200);

impl Progress {
    /// Starts the display for a load of `total` length (hidden when `quiet` or stderr is no TTY).
    pub fn start(total: Duration, live: Arc<LiveCounters>, quiet: bool) -> Self {
        let visible = !quiet && std::io::stderr().is_terminal();
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let total_ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX);
        let bar = ProgressBar::with_draw_target(Some(total_ms), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let done = Arc::new(AtomicBool::new(false));
        let thread = visible.then(|| {
            let bar = bar.clone();
            let done = done.clone();
            thread::spawn(move || tick(&bar, &live, &done))
        });
        Progress { done, thread, bar }
    }

    /// A note above the bar (e.g. "interrupted").
    pub fn note(&self, text: &str) {
        if self.thread.is_some() {
            self.bar.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    /// A `'static` function that writes notes like [`Progress::note`] (for
    /// tasks that outlive a borrow), silent when `quiet`.
    pub fn notifier(&self, quiet: bool) -> impl Fn(&str) + Send + Sync + 'static {
        let bar = self.bar.clone();
        let visible = self.thread.is_some();
        move |text: &str| {
            if quiet {
            } else if visible {
                bar.println(text);
            } else {
                eprintln!("{text}");
            }
        }
    }

    /// Stops and clears the bar.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

fn tick(bar: &ProgressBar, live: &LiveCounters, done: &AtomicBool) {
    let start = Instant::now();
    // A 1-second window of (time, sent) samples for the live rate.
    let mut window: std::collections::VecDeque<(Instant, u64)> = Default::default();
    while !done.load(Ordering::Relaxed) {
        let now = Instant::now();
        let sent = live.sent.load(Ordering::Relaxed);
        window.push_back((now, sent));
        while window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
        {
            window.pop_front();
        }
        let rate = match window.front() {
            Some((t, s)) if now > *t => (sent - s) as f64 / now.duration_since(*t).as_secs_f64(),
            _ => 0.0,
        };
        bar.set_position(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
        bar.set_message(format!(
            "{rate:>8.0} req/s  ok {}  failed {}  dropped {}  in flight {}",
            live.ok.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed),
            live.dropped.load(Ordering::Relaxed),
            live.in_flight.load(Ordering::Relaxed),
        ));
        thread::sleep(TICK);
    }
}
