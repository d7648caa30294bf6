//! The embedded kubelet's exact record ([`KubeletSignal`]) in the shared
//! model: each moment becomes a [`LifecycleEvent`] with
//! [`EventSource::Kubelet`], stamped `at_us` with the instant it happened
//! (not when rolltest saw it). They go into timeline.json with the rest, so
//! `rolltest report` reads them back; the correlator prefers them to what it
//! infers from a real kubelet's Events and statuses (`Killing`, the
//! terminated state after the relist), which the embedded kubelet publishes
//! too.

use rolltest_minicluster::kubelet::{KubeletSignal, SignalKind};
use tokio::sync::mpsc::UnboundedReceiver;

use rolltest_core::model::{EventSource, LifecycleEvent, LifecycleKind, RunClock};

use crate::events::LifecycleSink;

/// Converts the exact record of the pods whose name starts with `prefix`.
#[derive(Debug, Clone)]
pub struct KubeletRecord {
    clock: RunClock,
    prefix: String,
}

impl KubeletRecord {
    /// A converter for the pods named `<prefix>…` (e.g. `"<deployment>-"`).
    pub fn new(clock: RunClock, prefix: impl Into<String>) -> KubeletRecord {
        KubeletRecord {
            clock,
            prefix: prefix.into(),
        }
    }

    /// One moment as a lifecycle event (`None`: another workload's pod).
    pub fn convert(&self, s: &KubeletSignal) -> Option<LifecycleEvent> {
        if !s.pod.starts_with(&self.prefix) {
            return None;
        }
        let kind = match s.kind {
            SignalKind::PreStopStarted => LifecycleKind::PreStopStarted,
            SignalKind::PreStopFinished => LifecycleKind::PreStopFinished,
            SignalKind::Sigterm => LifecycleKind::SigtermSent,
            SignalKind::Sigkill => LifecycleKind::SigkillSent,
            SignalKind::Exited { code, signal } => LifecycleKind::ContainerExited {
                exit_code: code,
                signal,
                reason: None,
            },
        };
        Some(LifecycleEvent {
            at_us: self.clock.micros(s.at),
            server_us: None,
            server_precision_us: None,
            pod: Some(s.pod.clone()),
            source: EventSource::Kubelet,
            kind,
        })
    }

    /// Converts every moment from `rx` onto `tx` until either side closes.
    pub async fn run<S: LifecycleSink>(self, mut rx: UnboundedReceiver<KubeletSignal>, tx: S) {
        while let Some(s) = rx.recv().await {
            if let Some(e) = self.convert(&s)
                && !tx.send_lifecycle(e)
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn moments_keep_their_instant_and_pod() {
        let clock = RunClock::start();
        let r = KubeletRecord::new(clock, "api-");
        let at = clock.origin() + Duration::from_millis(1500);
        let signal = |pod: &str, kind| KubeletSignal {
            at,
            namespace: "default".into(),
            pod: pod.into(),
            uid: "u".into(),
            container: "app".into(),
            kind,
        };
        let e = r
            .convert(&signal(
                "api-1",
                SignalKind::Exited {
                    code: Some(143),
                    signal: Some(15),
                },
            ))
            .expect("the workload's pod");
        assert_eq!(e.at_us, 1_500_000);
        assert_eq!(e.when_us(), 1_500_000);
        assert_eq!(e.source, EventSource::Kubelet);
        assert_eq!(
            e.kind,
            LifecycleKind::ContainerExited {
                exit_code: Some(143),
                signal: Some(15),
                reason: None
            }
        );
        assert!(r.convert(&signal("db-1", SignalKind::Sigterm)).is_none());
    }
}
