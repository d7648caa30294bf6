//! The run's one event stream: everything that happens during a run, on one
//! channel, in one type. Producers hold an [`Events`] (a cheap clone);
//! `run::dispatch` is the one place that reads the stream and fans it out to
//! its consumers: the terminal lines, the progress display and the
//! collectors whose results the run directory records (timeline.json, the
//! proxy's records, the problems in run.json).
//!
//! | event | produced by | consumed by |
//! | --- | --- | --- |
//! | [`RunEvent::Phase`] | the cluster stage and `run::phase` | progress (shows the bar from `Loading` to `Draining`) |
//! | [`RunEvent::Note`] | setup steps, waits, the phases | progress (a line above the bar, or on stderr) |
//! | [`RunEvent::Requests`] | the recorder, per batch written to records.csv | progress |
//! | [`RunEvent::Lifecycle`] | watchers, actions, the embedded proxy | timeline collector, the proxy's ready view |
//! | [`RunEvent::Proxy`] | the embedded proxy | proxy-record collector |
//! | [`RunEvent::Action`] | `run::phase`, as each action ends | progress (a line) |
//! | [`RunEvent::Problem`] | `run::phase` (failed actions, no settle), the cluster stage (broken watches) | problem collector (run.json, the verdict) |
//!
//! The watchers (`timeline::start`) send to the stream directly (a
//! [`LifecycleSink`]); the actions (`k8s::run_action`) keep their
//! `LifecycleEvent` channel, which the cluster stage forwards.
//!
//! Request records themselves do not travel here: the generator hands them
//! in batches to the recorder (records.csv, on its own thread, so the hot
//! path costs one channel send per batch), which then puts the batch's
//! tally on the stream.

use tokio::sync::mpsc;

use rolltest_core::model::{LifecycleEvent, Outcome, ProxyRecord, RequestRecord};

/// The phases of a run, in order; a plain load skips the cluster's
/// (starting, applying, waiting ready, warming up, settling, tail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The embedded cluster is starting.
    StartingCluster,
    /// The manifests are being applied.
    Applying,
    /// Waiting for the Deployment (and Service) to be ready.
    WaitingReady,
    /// Single requests until the target answers.
    WarmingUp,
    /// The load runs for the asked duration; actions start at their offsets.
    Loading,
    /// The asked duration is over; actions still running are awaited.
    Acting,
    /// Every action is done; waiting for the rollout to settle.
    Settling,
    /// The rollout settled; the load goes on for the tail.
    Tail,
    /// No new requests; the ones in flight finish.
    Draining,
    /// The run is over: correlate, summarise, report.
    Finishing,
}

impl Phase {
    /// The phase's name (`loading`, `settling`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::StartingCluster => "starting-cluster",
            Phase::Applying => "applying",
            Phase::WaitingReady => "waiting-ready",
            Phase::WarmingUp => "warming-up",
            Phase::Loading => "loading",
            Phase::Acting => "acting",
            Phase::Settling => "settling",
            Phase::Tail => "tail",
            Phase::Draining => "draining",
            Phase::Finishing => "finishing",
        }
    }
}

/// What the requests of one recorded batch ended as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Answered successfully.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Never sent.
    pub dropped: u64,
}

impl Tally {
    /// Counts a batch of records.
    pub fn of(batch: &[RequestRecord]) -> Tally {
        let mut t = Tally::default();
        for r in batch {
            match r.outcome {
                Outcome::Ok => t.ok += 1,
                Outcome::Failed(_) => t.failed += 1,
                Outcome::Dropped => t.dropped += 1,
            }
        }
        t
    }

    /// Requests that finished (ok, failed or dropped).
    pub fn total(&self) -> u64 {
        self.ok + self.failed + self.dropped
    }
}

/// One event of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The run entered a phase.
    Phase(Phase),
    /// A line for the terminal.
    Note(String),
    /// A batch of requests was recorded.
    Requests(Tally),
    /// A lifecycle event (watchers, actions, the embedded proxy).
    Lifecycle(LifecycleEvent),
    /// What the embedded proxy saw of a connection or request.
    Proxy(ProxyRecord),
    /// An action ended (`line` says how); a failed one is also a
    /// [`RunEvent::Problem`].
    Action {
        /// What happened, for the terminal.
        line: String,
    },
    /// The disruption did not go as asked.
    Problem(String),
}

/// Where lifecycle events go: the run's stream ([`Events`]), or a channel
/// of their own (the watchers' tests).
pub trait LifecycleSink: Clone + Send + Sync + 'static {
    /// Sends one event; `false` once nobody listens.
    fn send_lifecycle(&self, event: LifecycleEvent) -> bool;
}

impl LifecycleSink for mpsc::UnboundedSender<LifecycleEvent> {
    fn send_lifecycle(&self, event: LifecycleEvent) -> bool {
        self.send(event).is_ok()
    }
}

impl LifecycleSink for Events {
    fn send_lifecycle(&self, event: LifecycleEvent) -> bool {
        self.tx.send(RunEvent::Lifecycle(event)).is_ok()
    }
}

/// The producers' end of the stream (clone it freely). Sending never
/// blocks; after the dispatcher has stopped, events are dropped.
#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<RunEvent>,
}

impl Events {
    /// A new stream: the producers' end and the dispatcher's.
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<RunEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Events { tx }, rx)
    }

    /// Sends an event.
    pub fn send(&self, event: RunEvent) {
        let _ = self.tx.send(event);
    }

    /// Sends a terminal line.
    pub fn note(&self, text: impl Into<String>) {
        self.send(RunEvent::Note(text.into()));
    }

    /// Sends a phase change.
    pub fn phase(&self, phase: Phase) {
        self.send(RunEvent::Phase(phase));
    }

    /// Sends a problem.
    pub fn problem(&self, text: impl Into<String>) {
        self.send(RunEvent::Problem(text.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rolltest_core::model::ErrorKind;

    fn record(seq: u64, outcome: Outcome) -> RequestRecord {
        RequestRecord {
            seq,
            intended_us: seq * 1000,
            sent_us: None,
            latency_us: None,
            status: None,
            outcome,
            detail: None,
            pod: None,
            conn: None,
            cause: None,
            failed_tries: Vec::new(),
        }
    }

    #[test]
    fn a_batch_tallies_each_outcome() {
        let batch = [
            record(0, Outcome::Ok),
            record(1, Outcome::Failed(ErrorKind::Http5xx)),
            record(2, Outcome::Ok),
            record(3, Outcome::Dropped),
        ];
        let t = Tally::of(&batch);
        assert_eq!(
            t,
            Tally {
                ok: 2,
                failed: 1,
                dropped: 1
            }
        );
        assert_eq!(t.total(), 4);
    }
}
