//! What happened to the workload while the load ran: every pod, endpoint,
//! proxy and action transition, on the same run clock as the request records.
//!
//! Watchers (kube-rs, every cluster), the embedded cluster's proxies and the
//! action runner produce [`LifecycleEvent`]s; the correlator and the report
//! read them; `timeline.json` stores them as a [`Timeline`].

use serde::{Deserialize, Serialize};

/// One observed transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// When rolltest observed it: microseconds on the run clock.
    pub at_us: u64,
    /// The server's own timestamp for it (an Event's `eventTime`, a
    /// `deletionTimestamp`, a condition's `lastTransitionTime`, a container's
    /// `finishedAt`), converted to the run clock. Negative when it precedes the
    /// clock's origin. `None` when the object carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_us: Option<i64>,
    /// How coarse `server_us` is (µs): the server's timestamp was cut to
    /// this precision, so the moment lies in `[server_us, server_us +
    /// precision)`: 1 s for the RFC 3339 seconds of a legacy Event's
    /// `lastTimestamp` (what kubelets send). `None`: the field's default,
    /// microseconds for an Event's `eventTime` and 1 s for every other
    /// source's timestamps (`deletionTimestamp`, `finishedAt`, a condition's
    /// `lastTransitionTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_precision_us: Option<u64>,
    /// The pod it concerns, when it concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Where the observation came from.
    pub source: EventSource,
    /// What happened.
    #[serde(flatten)]
    pub kind: LifecycleKind,
}

impl LifecycleEvent {
    /// The best time for ordering and correlation: the server's timestamp when
    /// it is at least as precise as a microsecond (`eventTime`), else the local
    /// observation (for the embedded kubelet's exact record, the moment itself).
    pub fn when_us(&self) -> i64 {
        match (self.source, self.server_us) {
            (EventSource::Event, Some(s)) if self.precision_us() <= 1_000 => s,
            _ => self.observed_us(),
        }
    }

    /// When rolltest observed it, as `i64` µs.
    pub fn observed_us(&self) -> i64 {
        i64::try_from(self.at_us).unwrap_or(i64::MAX)
    }

    /// How coarse the server's timestamp is (µs; see `server_precision_us`).
    pub fn precision_us(&self) -> u64 {
        match (self.server_precision_us, self.source) {
            (Some(p), _) => p,
            (None, EventSource::Event) => 1,
            (None, _) => 1_000_000,
        }
    }

    /// Where the transition itself lies, `(earliest, latest)` in µs on the
    /// run clock: an instant for the embedded cluster's own records, the
    /// proxy's, the actions' and a precise `eventTime`; for a timestamp cut
    /// to seconds, that second, ending no later than the observation (a
    /// transition happens before it is seen); without a server timestamp,
    /// or one after the observation (the server's clock ahead of ours), the
    /// observation alone.
    pub fn window(&self) -> (i64, i64) {
        let seen = self.observed_us();
        match (self.source, self.server_us) {
            (EventSource::Kubelet | EventSource::Proxy | EventSource::Action, _) | (_, None) => {
                (seen, seen)
            }
            (_, Some(s)) if s > seen => (seen, seen),
            (_, Some(s)) => {
                let p = i64::try_from(self.precision_us()).unwrap_or(i64::MAX);
                if p <= 1_000 {
                    (s, s)
                } else {
                    (s, s.saturating_add(p).min(seen))
                }
            }
        }
    }
}

/// The observer that produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    /// A watch on Pods.
    Pod,
    /// A watch on EndpointSlices.
    EndpointSlice,
    /// A watch on Events (the kubelet's and controllers' reports).
    Event,
    /// A watch on ReplicaSets.
    ReplicaSet,
    /// A watch on the Deployment.
    Deployment,
    /// The embedded cluster's service proxy (embedded mode only).
    Proxy,
    /// The embedded kubelet's exact record (embedded mode only): the preStop
    /// hook's start and end, SIGTERM, SIGKILL and the exit, stamped `at_us`
    /// with the instant they happened. A real kubelet publishes none of them.
    Kubelet,
    /// rolltest's own action runner.
    Action,
}

/// What happened. Serialized with an `"event"` tag, snake_case names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LifecycleKind {
    /// An action started (`rollout-restart`, `drain-node`, ...).
    ActionStarted {
        /// Index in the scenario's `[[actions]]`.
        index: usize,
        /// The action's `do`.
        action: String,
        /// What it acts on, in words ("deployment api", "node embedded-node-1").
        target: String,
    },
    /// An action finished its API calls (the disruption goes on after it).
    ActionFinished {
        /// Index in the scenario's `[[actions]]`.
        index: usize,
        /// The action's `do`.
        action: String,
        /// What it did, or why it failed, in words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A pod object appeared.
    PodCreated {
        /// Its owning ReplicaSet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replicaset: Option<String>,
        /// Its `pod-template-hash` label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template_hash: Option<String>,
    },
    /// The pod was bound to a node.
    PodScheduled {
        /// The node.
        node: String,
    },
    /// The pod got its IP.
    PodIp {
        /// The IP.
        ip: String,
    },
    /// A container (re)started running.
    ContainerStarted {
        /// `restartCount` at that moment.
        restart_count: u32,
    },
    /// The pod's Ready condition became True.
    PodReady,
    /// The pod's Ready condition became False (after having been True).
    PodNotReady,
    /// A probe failed (an `Unhealthy` event).
    ProbeFailed {
        /// `readiness`, `liveness` or `startup`.
        probe: String,
        /// The event's message.
        message: String,
    },
    /// `deletionTimestamp` was set: the pod is terminating.
    DeletionRequested {
        /// `deletionGracePeriodSeconds`.
        grace_seconds: i64,
    },
    /// The kubelet started the preStop hook.
    PreStopStarted,
    /// The preStop hook finished.
    PreStopFinished,
    /// The kubelet sent SIGTERM to the main process.
    SigtermSent,
    /// The grace period ran out: SIGKILL to the process group.
    SigkillSent,
    /// A container's process ended.
    ContainerExited {
        /// Exit code, when it exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Signal, when a signal ended it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// The kubelet's reason (`Completed`, `Error`, `OOMKilled`...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The pod object is gone from the API.
    PodDeleted,
    /// The pod's endpoint in the Service's EndpointSlices appeared or changed
    /// conditions.
    EndpointChanged {
        /// `conditions.ready`.
        ready: bool,
        /// `conditions.serving`.
        serving: bool,
        /// `conditions.terminating`.
        terminating: bool,
    },
    /// The pod's endpoint left the Service's EndpointSlices.
    EndpointRemoved,
    /// The embedded proxy applied a change of this pod's endpoint: from this
    /// moment new traffic sees it as given (`present = false`: gone from the
    /// proxy's view).
    ProxyApplied {
        /// The endpoint is in the proxy's view.
        present: bool,
        /// Its `ready` condition there.
        ready: bool,
        /// Its `serving` condition there.
        serving: bool,
        /// Its `terminating` condition there.
        terminating: bool,
    },
    /// The embedded proxy applied a whole endpoint set; one per change, with
    /// counts (the per-pod `ProxyApplied` events carry the detail).
    ProxyView {
        /// Endpoints usable for new traffic (ready).
        ready: u32,
        /// Terminating endpoints still serving.
        serving_terminating: u32,
    },
    /// The Service's ready endpoint count changed (from the slices).
    EndpointsCount {
        /// Ready endpoints.
        ready: u32,
        /// All endpoints listed.
        total: u32,
    },
    /// A ReplicaSet's desired or ready replicas changed.
    ReplicaSetScaled {
        /// The ReplicaSet.
        name: String,
        /// `spec.replicas`.
        replicas: i32,
        /// `status.readyReplicas`.
        ready: i32,
    },
    /// The Deployment's spec or status changed.
    DeploymentStatus {
        /// `spec.replicas`.
        replicas: i32,
        /// `status.updatedReplicas`.
        updated: i32,
        /// `status.readyReplicas`.
        ready: i32,
        /// `status.availableReplicas`.
        available: i32,
        /// `status.unavailableReplicas`.
        unavailable: i32,
    },
    /// Any other Event the cluster reported about the workload (kept for the
    /// report; the correlator ignores it).
    Other {
        /// The Event's reason.
        reason: String,
        /// Its message.
        message: String,
    },
}

impl LifecycleKind {
    /// The `"event"` tag.
    pub fn name(&self) -> &'static str {
        match self {
            LifecycleKind::ActionStarted { .. } => "action_started",
            LifecycleKind::ActionFinished { .. } => "action_finished",
            LifecycleKind::PodCreated { .. } => "pod_created",
            LifecycleKind::PodScheduled { .. } => "pod_scheduled",
            LifecycleKind::PodIp { .. } => "pod_ip",
            LifecycleKind::ContainerStarted { .. } => "container_started",
            LifecycleKind::PodReady => "pod_ready",
            LifecycleKind::PodNotReady => "pod_not_ready",
            LifecycleKind::ProbeFailed { .. } => "probe_failed",
            LifecycleKind::DeletionRequested { .. } => "deletion_requested",
            LifecycleKind::PreStopStarted => "pre_stop_started",
            LifecycleKind::PreStopFinished => "pre_stop_finished",
            LifecycleKind::SigtermSent => "sigterm_sent",
            LifecycleKind::SigkillSent => "sigkill_sent",
            LifecycleKind::ContainerExited { .. } => "container_exited",
            LifecycleKind::PodDeleted => "pod_deleted",
            LifecycleKind::EndpointChanged { .. } => "endpoint_changed",
            LifecycleKind::EndpointRemoved => "endpoint_removed",
            LifecycleKind::ProxyApplied { .. } => "proxy_applied",
            LifecycleKind::ProxyView { .. } => "proxy_view",
            LifecycleKind::EndpointsCount { .. } => "endpoints_count",
            LifecycleKind::ReplicaSetScaled { .. } => "replica_set_scaled",
            LifecycleKind::DeploymentStatus { .. } => "deployment_status",
            LifecycleKind::Other { .. } => "other",
        }
    }
}

/// What `timeline.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Every event, sorted by `at_us` (ties keep observation order).
    pub events: Vec<LifecycleEvent>,
}

impl Timeline {
    /// Sorts the events by observation time, stably.
    pub fn sort(&mut self) {
        self.events.sort_by_key(|e| e.at_us);
    }

    /// The events about one pod, in order.
    pub fn for_pod<'a>(&'a self, pod: &'a str) -> impl Iterator<Item = &'a LifecycleEvent> + 'a {
        self.events
            .iter()
            .filter(move |e| e.pod.as_deref() == Some(pod))
    }

    /// The pods named by any event, in order of first appearance.
    pub fn pods(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for e in &self.events {
            if let Some(p) = &e.pod
                && seen.insert(p.as_str())
            {
                out.push(p.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_flat_tag() {
        let e = LifecycleEvent {
            at_us: 1_500_000,
            server_us: Some(1_499_000),
            server_precision_us: None,
            pod: Some("api-1".into()),
            source: EventSource::Event,
            kind: LifecycleKind::ContainerExited {
                exit_code: Some(0),
                signal: None,
                reason: Some("Completed".into()),
            },
        };
        let v = serde_json::to_value(&e).expect("serializes");
        assert_eq!(v["event"], "container_exited");
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["source"], "event");
        assert!(v.get("signal").is_none());
        let back: LifecycleEvent = serde_json::from_value(v).expect("parses");
        assert_eq!(back, e);
        assert_eq!(back.when_us(), 1_499_000);
        assert_eq!(back.kind.name(), "container_exited");
    }

    #[test]
    fn unit_kinds_round_trip() {
        let e = LifecycleEvent {
            at_us: 7,
            server_us: None,
            server_precision_us: None,
            pod: None,
            source: EventSource::Pod,
            kind: LifecycleKind::PodReady,
        };
        let text = serde_json::to_string(&e).expect("serializes");
        assert_eq!(text, r#"{"at_us":7,"source":"pod","event":"pod_ready"}"#);
        assert_eq!(
            serde_json::from_str::<LifecycleEvent>(&text).expect("parses"),
            e
        );
    }

    #[test]
    fn a_window_is_the_timestamp_precision_ended_by_the_observation() {
        let ev = |source, server_us, server_precision_us| LifecycleEvent {
            at_us: 5_600_000,
            server_us,
            server_precision_us,
            pod: None,
            source,
            kind: LifecycleKind::PodReady,
        };
        // A pod status's seconds: that second, cut at the observation.
        assert_eq!(
            ev(EventSource::Pod, Some(5_000_000), None).window(),
            (5_000_000, 5_600_000)
        );
        assert_eq!(
            ev(EventSource::Pod, Some(4_000_000), None).window(),
            (4_000_000, 5_000_000)
        );
        // A legacy Event's lastTimestamp: the same, and when_us keeps the
        // observation; a precise eventTime is the instant.
        let legacy = ev(EventSource::Event, Some(5_000_000), Some(1_000_000));
        assert_eq!(legacy.window(), (5_000_000, 5_600_000));
        assert_eq!(legacy.when_us(), 5_600_000);
        let precise = ev(EventSource::Event, Some(5_412_345), None);
        assert_eq!(precise.window(), (5_412_345, 5_412_345));
        assert_eq!(precise.when_us(), 5_412_345);
        // The embedded kubelet's record, no server time, or a server clock
        // ahead of ours: the observation.
        assert_eq!(
            ev(EventSource::Kubelet, Some(1), None).window(),
            (5_600_000, 5_600_000)
        );
        assert_eq!(
            ev(EventSource::Pod, None, None).window(),
            (5_600_000, 5_600_000)
        );
        assert_eq!(
            ev(EventSource::Pod, Some(6_000_000), None).window(),
            (5_600_000, 5_600_000)
        );
    }
}
