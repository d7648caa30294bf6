//! The one place that reads the run's event stream ([`crate::events`]) and
//! fans it out: every event goes to the live display ([`Progress`]: the
//! terminal lines and the bar) and to the collectors whose results the run
//! directory records (the lifecycle events for timeline.json, the proxy's
//! records for the correlator, the problems for run.json and the verdict);
//! the embedded proxy's count of ready endpoints is published for the start
//! of the load.

use tokio::sync::{mpsc, oneshot, watch};

use rolltest_core::model::{LifecycleEvent, LifecycleKind, ProxyRecord};

use crate::{events::RunEvent, progress::Progress};

/// What the collectors gathered over the run.
#[derive(Debug, Default)]
pub(super) struct Collected {
    /// Lifecycle events, in the order received.
    pub events: Vec<LifecycleEvent>,
    /// The embedded proxy's records.
    pub proxy: Vec<ProxyRecord>,
    /// Problems with the disruption.
    pub problems: Vec<String>,
}

impl Collected {
    fn take(&mut self, event: &RunEvent, ready_view: &watch::Sender<u32>) {
        match event {
            RunEvent::Lifecycle(e) => {
                if let LifecycleKind::ProxyView { ready, .. } = e.kind {
                    let _ = ready_view.send(ready);
                }
                self.events.push(e.clone());
            }
            RunEvent::Proxy(r) => self.proxy.push(r.clone()),
            RunEvent::Problem(p) => self.problems.push(p.clone()),
            RunEvent::Phase(_)
            | RunEvent::Note(_)
            | RunEvent::Requests(_)
            | RunEvent::Action { .. } => {}
        }
    }
}

/// The running dispatcher; [`Dispatcher::stop`] hands back what was collected.
pub(super) struct Dispatcher {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Collected>,
}

impl Dispatcher {
    /// Starts reading `rx` on the current runtime.
    pub fn start(
        mut rx: mpsc::UnboundedReceiver<RunEvent>,
        mut progress: Progress,
        ready_view: watch::Sender<u32>,
    ) -> Dispatcher {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut collected = Collected::default();
            let mut tick = tokio::time::interval(crate::progress::TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut take = |event: RunEvent, progress: &mut Progress| {
                progress.on_event(&event);
                collected.take(&event, &ready_view);
            };
            loop {
                tokio::select! {
                    biased;
                    event = rx.recv() => match event {
                        Some(event) => take(event, &mut progress),
                        None => break,
                    },
                    _ = &mut stopped => {
                        // What was sent before the stop still counts.
                        while let Ok(event) = rx.try_recv() {
                            take(event, &mut progress);
                        }
                        break;
                    }
                    _ = tick.tick() => progress.tick(),
                }
            }
            progress.finish();
            collected
        });
        Dispatcher { stop, task }
    }

    /// Stops after the events already sent; returns what was collected.
    pub async fn stop(self) -> Collected {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Events, Tally};
    use rolltest_core::model::{EventSource, LifecycleEvent};

    #[tokio::test]
    async fn every_event_reaches_its_collector_in_order() {
        let (events, rx) = Events::channel();
        let (view_tx, view_rx) = watch::channel(0);
        let progress = Progress::new(std::time::Duration::from_secs(1), Default::default(), true);
        let dispatcher = Dispatcher::start(rx, progress, view_tx);
        let view = |ready| LifecycleEvent {
            at_us: u64::from(ready),
            server_us: None,
            server_precision_us: None,
            pod: None,
            source: EventSource::Proxy,
            kind: LifecycleKind::ProxyView {
                ready,
                serving_terminating: 0,
            },
        };
        events.send(RunEvent::Lifecycle(view(1)));
        events.send(RunEvent::Requests(Tally::default()));
        events.problem("action 0 failed");
        events.send(RunEvent::Lifecycle(view(2)));
        let collected = dispatcher.stop().await;
        assert_eq!(collected.events, vec![view(1), view(2)]);
        assert_eq!(collected.problems, vec!["action 0 failed".to_string()]);
        assert_eq!(*view_rx.borrow(), 2);
    }
}
