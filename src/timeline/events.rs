//! core/v1 Events about the workload's pods → probe failures, the
//! termination steps a kubelet's `Killing` and `FailedPreStopHook` imply, and
//! the rest. (A kubelet, real or embedded, publishes no Event for SIGTERM,
//! SIGKILL or the exit; the embedded one's exact record has them,
//! `kubelet.rs`.)

use std::{
    collections::{HashMap, HashSet},
    time::SystemTime,
};

use k8s_openapi::api::core::v1::Event;

use super::{KnownPods, Tracker, to_run_us, unix_us};
use rolltest_core::model::{EventSource, LifecycleEvent, LifecycleKind, RunClock};

/// Maps Events to lifecycle events; skips history (Events from before the
/// watch started) and repeats (a re-list, an unchanged `count`).
pub(crate) struct EventTracker {
    clock: RunClock,
    known: KnownPods,
    prefix: String,
    /// The watch's start, µs since the epoch.
    started_unix_us: i64,
    infer_steps: bool,
    /// Occurrences already handled, per Event name.
    seen: HashMap<String, i32>,
}

impl EventTracker {
    pub(crate) fn new(
        clock: RunClock,
        known: KnownPods,
        prefix: String,
        started: SystemTime,
        infer_steps: bool,
    ) -> EventTracker {
        let started_unix_us = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        EventTracker {
            clock,
            known,
            prefix,
            started_unix_us,
            infer_steps,
            seen: HashMap::new(),
        }
    }
}

/// `(µs since the epoch, precise to the microsecond)` of the latest
/// occurrence: `series.lastObservedTime` for a repeated new-style Event,
/// `eventTime` for a single occurrence, else `lastTimestamp` (seconds).
fn event_time(e: &Event) -> Option<(i64, bool)> {
    if let Some(t) = e
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
    {
        return Some((unix_us(&t.0), true));
    }
    if e.count.unwrap_or(1) <= 1
        && let Some(t) = e.event_time.as_ref()
    {
        return Some((unix_us(&t.0), true));
    }
    e.last_timestamp
        .as_ref()
        .or(e.first_timestamp.as_ref())
        .map(|t| (unix_us(&t.0), false))
        .or_else(|| e.event_time.as_ref().map(|t| (unix_us(&t.0), true)))
}

/// `readiness` from "Readiness probe failed: …".
fn probe_kind(message: &str) -> &'static str {
    let lower = message.trim_start().to_ascii_lowercase();
    if lower.starts_with("readiness") {
        "readiness"
    } else if lower.starts_with("liveness") {
        "liveness"
    } else if lower.starts_with("startup") {
        "startup"
    } else {
        "unknown"
    }
}

/// The lifecycle kinds one Event stands for (most: one).
fn kinds(
    reason: &str,
    message: &str,
    pre_stop: Option<bool>,
    infer_steps: bool,
) -> Vec<LifecycleKind> {
    let other = || LifecycleKind::Other {
        reason: reason.to_string(),
        message: message.to_string(),
    };
    match reason {
        "Unhealthy" => vec![LifecycleKind::ProbeFailed {
            probe: probe_kind(message).to_string(),
            message: message.to_string(),
        }],
        // A real kubelet's "Stopping container": it starts the preStop hook,
        // or (without one) sends SIGTERM, right then.
        "Killing" if infer_steps && message.starts_with("Stopping container") => {
            let step = if pre_stop.unwrap_or(false) {
                LifecycleKind::PreStopStarted
            } else {
                LifecycleKind::SigtermSent
            };
            vec![other(), step]
        }
        // A failed hook ends the hook (shutdown goes on with SIGTERM).
        "FailedPreStopHook" if infer_steps => vec![other(), LifecycleKind::PreStopFinished],
        _ => vec![other()],
    }
}

impl Tracker<Event> for EventTracker {
    fn apply(&mut self, e: &Event, at_us: u64, out: &mut Vec<LifecycleEvent>) {
        let Some(pod) = e.involved_object.name.as_deref() else {
            return;
        };
        if e.involved_object.kind.as_deref() != Some("Pod") {
            return;
        }
        let pre_stop = self.known.get(pod);
        if pre_stop.is_none() && !pod.starts_with(&self.prefix) {
            return;
        }
        let id = e.metadata.name.clone().unwrap_or_default();
        let count = e
            .series
            .as_ref()
            .map_or_else(|| e.count.unwrap_or(1), |s| s.count.unwrap_or(1).max(1));
        if self.seen.get(&id).is_some_and(|c| *c >= count) {
            return;
        }
        self.seen.insert(id, count);
        let time = event_time(e);
        // History: a list returns Events from before the watch.
        let old = match time {
            Some((t, true)) => t < self.started_unix_us,
            Some((t, false)) => t.saturating_add(1_000_000) <= self.started_unix_us,
            None => false,
        };
        if old {
            return;
        }
        // Only a microsecond stamp: `LifecycleEvent::when_us` trusts an
        // Event's `server_us` over the observation, and a `lastTimestamp`
        // truncated to the second would be up to 1 s early.
        // A precise eventTime is the moment; a legacy Event's seconds
        // (lastTimestamp, what kubelets send) bound it to that second.
        let server_us = time.map(|(t, _)| to_run_us(&self.clock, t));
        let server_precision_us = match time {
            Some((_, false)) => Some(1_000_000),
            _ => None,
        };
        let reason = e.reason.as_deref().unwrap_or("");
        let message = e.message.as_deref().unwrap_or("");
        for kind in kinds(reason, message, pre_stop, self.infer_steps) {
            out.push(LifecycleEvent {
                at_us,
                server_us,
                server_precision_us,
                pod: Some(pod.to_string()),
                source: EventSource::Event,
                kind,
            });
        }
    }

    fn delete(&mut self, _: &Event, _: u64, _: &mut Vec<LifecycleEvent>) {}

    fn retain_listed(&mut self, listed: &HashSet<String>, _: u64, _: &mut Vec<LifecycleEvent>) {
        // Forget Events that expired; the rest stay known, so the re-list's
        // repeats of them are skipped.
        self.seen.retain(|name, _| listed.contains(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tracker(infer: bool) -> EventTracker {
        EventTracker::new(
            RunClock::start(),
            KnownPods::default(),
            "api-".into(),
            SystemTime::now() - std::time::Duration::from_secs(1),
            infer,
        )
    }

    fn event(uid: &str, pod: &str, reason: &str, message: &str, time: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{pod}.{uid}"), "uid": uid},
            "involvedObject": {"kind": "Pod", "name": pod},
            "reason": reason, "message": message,
            "eventTime": time, "count": 1,
        }))
        .expect("event")
    }

    fn now_micro() -> String {
        let t = k8s_openapi::jiff::Timestamp::try_from(SystemTime::now()).expect("now");
        format!("{t:.6}")
    }

    #[test]
    fn kubelet_events_map_to_kinds() {
        let mut t = tracker(false);
        let mut out = Vec::new();
        let now = now_micro();
        for (i, (reason, msg)) in [
            ("Killing", "Stopping container app"),
            (
                "Unhealthy",
                "Readiness probe failed: HTTP probe failed with statuscode: 503",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            t.apply(
                &event(&i.to_string(), "api-x-1", reason, msg, &now),
                5,
                &mut out,
            );
        }
        let names: Vec<_> = out.iter().map(|e| e.kind.name()).collect();
        assert_eq!(names, ["other", "probe_failed"]);
        assert_eq!(
            out[1].kind,
            LifecycleKind::ProbeFailed {
                probe: "readiness".into(),
                message: "Readiness probe failed: HTTP probe failed with statuscode: 503".into()
            }
        );
        assert!(
            out.iter()
                .all(|e| e.source == EventSource::Event && e.server_us.is_some())
        );
    }

    #[test]
    fn a_legacy_event_has_no_server_time() {
        let mut t = tracker(true);
        t.known.insert("api-x-1", false);
        let now = SystemTime::now();
        let seconds = k8s_openapi::jiff::Timestamp::try_from(now).expect("now");
        let e: Event = serde_json::from_value(json!({
            "metadata": {"name": "api-x-1.1"},
            "involvedObject": {"kind": "Pod", "name": "api-x-1"},
            "reason": "Killing", "message": "Stopping container app",
            "firstTimestamp": format!("{seconds:.0}"),
            "lastTimestamp": format!("{seconds:.0}"),
            "eventTime": null, "count": 1,
            "source": {"component": "kubelet", "host": "embedded-node-1"},
        }))
        .expect("event");
        let mut out = Vec::new();
        t.apply(&e, 9, &mut out);
        let names: Vec<_> = out.iter().map(|e| e.kind.name()).collect();
        assert_eq!(names, ["other", "sigterm_sent"]);
        // Its seconds are kept, as a 1 s window; its time is the observation.
        assert!(
            out.iter()
                .all(|e| e.server_precision_us == Some(1_000_000) && e.when_us() == 9)
        );
    }

    #[test]
    fn history_repeats_and_other_pods_are_skipped() {
        let mut t = tracker(false);
        let mut out = Vec::new();
        t.apply(
            &event(
                "1",
                "api-x-1",
                "Unhealthy",
                "",
                "2020-01-01T00:00:00.000000Z",
            ),
            1,
            &mut out,
        );
        t.apply(
            &event("2", "other-1", "Unhealthy", "", &now_micro()),
            1,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        let mut e = event(
            "3",
            "api-x-1",
            "Unhealthy",
            "Liveness probe failed: x",
            &now_micro(),
        );
        t.apply(&e, 1, &mut out);
        t.apply(&e, 2, &mut out);
        assert_eq!(out.len(), 1);
        // An aggregated repeat (count 2, lastTimestamp in seconds) is a new occurrence.
        e.count = Some(2);
        e.last_timestamp = e
            .event_time
            .as_ref()
            .map(|t| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.0));
        t.apply(&e, 3, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].at_us, 3);
        // Its only stamp has second precision: kept as a 1 s window, and its
        // time is the observation.
        assert_eq!(
            (out[0].server_precision_us, out[1].server_precision_us),
            (None, Some(1_000_000))
        );
        assert_eq!(out[1].when_us(), 3);
        // A re-list that no longer holds it forgets it.
        t.retain_listed(&HashSet::new(), 4, &mut out);
        assert!(t.seen.is_empty());
    }

    #[test]
    fn a_real_kubelets_killing_starts_the_sequence() {
        let mut t = tracker(true);
        t.known.insert("web-1", true);
        t.known.insert("web-2", false);
        let mut out = Vec::new();
        let now = now_micro();
        t.apply(
            &event("1", "web-1", "Killing", "Stopping container app", &now),
            1,
            &mut out,
        );
        t.apply(
            &event("2", "web-2", "Killing", "Stopping container app", &now),
            1,
            &mut out,
        );
        let names: Vec<_> = out.iter().map(|e| e.kind.name()).collect();
        assert_eq!(
            names,
            ["other", "pre_stop_started", "other", "sigterm_sent"]
        );
    }
}
