//! Per-pod state diffing: a few flags and numbers per pod, compared against
//! each new version of the object.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use kube::ResourceExt;

use super::{KnownPods, Tracker, to_run_us, unix_us};
use rolltest_core::model::{EventSource, LifecycleEvent, LifecycleKind, RunClock};

/// What the last seen version of a pod said.
#[derive(Debug, Default)]
struct PodState {
    scheduled: bool,
    ip: Option<String>,
    /// The Ready condition (`None`: not reported yet).
    ready: Option<bool>,
    deleting: bool,
    containers: Vec<ContainerTrack>,
}

#[derive(Debug)]
struct ContainerTrack {
    name: String,
    restart_count: i32,
    /// `running.startedAt` (µs since the epoch, `i64::MIN` when absent) of
    /// the run already reported.
    running: Option<i64>,
    /// `finishedAt` of the exit already reported.
    exited: Option<i64>,
}

/// Turns pod versions into `Pod*`, `Container*` and `DeletionRequested` events.
pub(crate) struct PodTracker {
    clock: RunClock,
    known: KnownPods,
    pods: HashMap<String, PodState>,
}

impl PodTracker {
    pub(crate) fn new(clock: RunClock, known: KnownPods) -> PodTracker {
        PodTracker {
            clock,
            known,
            pods: HashMap::new(),
        }
    }
}

struct Emit<'a> {
    clock: &'a RunClock,
    pod: &'a str,
    at_us: u64,
    out: &'a mut Vec<LifecycleEvent>,
}

impl Emit<'_> {
    fn push(&mut self, server_unix_us: Option<i64>, kind: LifecycleKind) {
        self.out.push(LifecycleEvent {
            at_us: self.at_us,
            server_us: server_unix_us.map(|t| to_run_us(self.clock, t)),
            server_precision_us: None,
            pod: Some(self.pod.to_string()),
            source: EventSource::Pod,
            kind,
        });
    }
}

fn condition_time(pod: &Pod, type_: &str) -> Option<(bool, Option<i64>)> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((
        c.status == "True",
        c.last_transition_time.as_ref().map(|t| unix_us(&t.0)),
    ))
}

fn exited(term: &ContainerStateTerminated) -> LifecycleKind {
    LifecycleKind::ContainerExited {
        exit_code: Some(term.exit_code),
        signal: term.signal,
        reason: term.reason.clone(),
    }
}

fn finished_key(term: &ContainerStateTerminated) -> i64 {
    term.finished_at
        .as_ref()
        .map_or(i64::MIN, |t| unix_us(&t.0))
}

fn diff_container(track: &mut ContainerTrack, cs: &ContainerStatus, emit: &mut Emit<'_>) {
    let state = cs.state.as_ref();
    // An exit we never saw as `state.terminated` (the restart came first):
    // it is in `lastState`.
    if cs.restart_count > track.restart_count
        && let Some(term) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref())
    {
        let key = finished_key(term);
        if track.exited != Some(key) {
            track.exited = Some(key);
            emit.push(
                term.finished_at.as_ref().map(|t| unix_us(&t.0)),
                exited(term),
            );
        }
    }
    track.restart_count = cs.restart_count;
    if let Some(term) = state.and_then(|s| s.terminated.as_ref()) {
        let key = finished_key(term);
        if track.exited != Some(key) {
            track.exited = Some(key);
            emit.push(
                term.finished_at.as_ref().map(|t| unix_us(&t.0)),
                exited(term),
            );
        }
    }
    if let Some(running) = state.and_then(|s| s.running.as_ref()) {
        let started = running.started_at.as_ref().map(|t| unix_us(&t.0));
        let key = started.unwrap_or(i64::MIN);
        if track.running != Some(key) {
            track.running = Some(key);
            emit.push(
                started,
                LifecycleKind::ContainerStarted {
                    restart_count: u32::try_from(cs.restart_count).unwrap_or(0),
                },
            );
        }
    }
}

fn diff(state: &mut PodState, pod: &Pod, emit: &mut Emit<'_>) {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    if !state.scheduled
        && let Some(node) = spec.and_then(|s| s.node_name.as_deref())
        && !node.is_empty()
    {
        state.scheduled = true;
        let at = condition_time(pod, "PodScheduled").and_then(|(_, t)| t);
        emit.push(
            at,
            LifecycleKind::PodScheduled {
                node: node.to_string(),
            },
        );
    }
    if let Some(ip) = status.and_then(|s| s.pod_ip.as_deref())
        && !ip.is_empty()
        && state.ip.as_deref() != Some(ip)
    {
        state.ip = Some(ip.to_string());
        emit.push(None, LifecycleKind::PodIp { ip: ip.to_string() });
    }
    if !state.deleting
        && let Some(ts) = pod.metadata.deletion_timestamp.as_ref()
    {
        state.deleting = true;
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
        // deletionTimestamp = request time + grace: the request is that minus grace.
        let requested = unix_us(&ts.0).saturating_sub(grace.saturating_mul(1_000_000));
        emit.push(
            Some(requested),
            LifecycleKind::DeletionRequested {
                grace_seconds: grace,
            },
        );
    }
    for cs in status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
    {
        let i = match state.containers.iter().position(|c| c.name == cs.name) {
            Some(i) => i,
            None => {
                state.containers.push(ContainerTrack {
                    name: cs.name.clone(),
                    restart_count: cs.restart_count,
                    running: None,
                    exited: None,
                });
                state.containers.len() - 1
            }
        };
        diff_container(&mut state.containers[i], cs, emit);
    }
    if let Some((ready, at)) = condition_time(pod, "Ready") {
        match (state.ready, ready) {
            (Some(true), false) => emit.push(at, LifecycleKind::PodNotReady),
            (None | Some(false), true) => emit.push(at, LifecycleKind::PodReady),
            _ => {}
        }
        state.ready = Some(ready);
    }
}

fn has_pre_stop(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .any(|c| c.lifecycle.as_ref().is_some_and(|l| l.pre_stop.is_some()))
    })
}

impl Tracker<Pod> for PodTracker {
    fn apply(&mut self, pod: &Pod, at_us: u64, out: &mut Vec<LifecycleEvent>) {
        let name = pod.name_any();
        let mut emit = Emit {
            clock: &self.clock,
            pod: &name,
            at_us,
            out,
        };
        let state = match self.pods.get_mut(&name) {
            Some(s) => s,
            None => {
                self.known.insert(&name, has_pre_stop(pod));
                let replicaset = pod
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.kind == "ReplicaSet")
                    .map(|o| o.name.clone());
                let template_hash = pod.labels().get("pod-template-hash").cloned();
                emit.push(
                    pod.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| unix_us(&t.0)),
                    LifecycleKind::PodCreated {
                        replicaset,
                        template_hash,
                    },
                );
                self.pods.entry(name.clone()).or_default()
            }
        };
        diff(state, pod, &mut emit);
    }

    fn delete(&mut self, pod: &Pod, at_us: u64, out: &mut Vec<LifecycleEvent>) {
        // The final state may carry what no earlier version showed (the exit).
        self.apply(pod, at_us, out);
        let name = pod.name_any();
        self.pods.remove(&name);
        out.push(LifecycleEvent {
            at_us,
            server_us: None,
            server_precision_us: None,
            pod: Some(name),
            source: EventSource::Pod,
            kind: LifecycleKind::PodDeleted,
        });
    }

    fn retain_listed(
        &mut self,
        listed: &HashSet<String>,
        at_us: u64,
        out: &mut Vec<LifecycleEvent>,
    ) {
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        for name in gone {
            self.pods.remove(&name);
            out.push(LifecycleEvent {
                at_us,
                server_us: None,
                server_precision_us: None,
                pod: Some(name),
                source: EventSource::Pod,
                kind: LifecycleKind::PodDeleted,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    fn kinds(out: &[LifecycleEvent]) -> Vec<&'static str> {
        out.iter().map(|e| e.kind.name()).collect()
    }

    #[test]
    fn a_pod_life_becomes_events_once_each() {
        let mut t = PodTracker::new(RunClock::start(), KnownPods::default());
        let mut out = Vec::new();
        let meta = json!({"name": "api-abc-1", "labels": {"app": "api", "pod-template-hash": "abc"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-abc", "uid": "u"}],
            "creationTimestamp": "2026-01-01T00:00:00Z"});
        let spec = json!({"containers": [{"name": "app", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}]});
        t.apply(&pod(json!({"metadata": meta, "spec": spec})), 1, &mut out);
        assert_eq!(kinds(&out), ["pod_created"]);
        assert_eq!(
            out[0].kind,
            LifecycleKind::PodCreated {
                replicaset: Some("api-abc".into()),
                template_hash: Some("abc".into())
            }
        );
        assert_eq!(t.known.get("api-abc-1"), Some(true));
        out.clear();
        let mut spec2 = spec.clone();
        spec2["nodeName"] = json!("n1");
        let running = json!({"podIP": "127.0.1.2",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:02Z"}],
            "containerStatuses": [{"name": "app", "restartCount": 0, "ready": true, "image": "i", "imageID": "",
                "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]});
        let p = pod(json!({"metadata": meta, "spec": spec2, "status": running}));
        t.apply(&p, 2, &mut out);
        assert_eq!(
            kinds(&out),
            ["pod_scheduled", "pod_ip", "container_started", "pod_ready"]
        );
        out.clear();
        // The same version again: nothing.
        t.apply(&p, 3, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // Deletion, then not ready, then the exit in the final state.
        let mut meta2 = meta.clone();
        meta2["deletionTimestamp"] = json!("2026-01-01T00:00:40Z");
        meta2["deletionGracePeriodSeconds"] = json!(30);
        t.apply(
            &pod(json!({"metadata": meta2, "spec": spec2, "status": running})),
            4,
            &mut out,
        );
        assert_eq!(kinds(&out), ["deletion_requested"]);
        let req = out[0].server_us.unwrap();
        assert_eq!(
            out[0].kind,
            LifecycleKind::DeletionRequested { grace_seconds: 30 }
        );
        out.clear();
        let done = json!({"podIP": "127.0.1.2",
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:12Z"}],
            "containerStatuses": [{"name": "app", "restartCount": 0, "ready": false, "image": "i", "imageID": "",
                "state": {"terminated": {"exitCode": 143, "signal": 15, "reason": "Error",
                    "finishedAt": "2026-01-01T00:00:12Z"}}}]});
        t.delete(
            &pod(json!({"metadata": meta2, "spec": spec2, "status": done})),
            5,
            &mut out,
        );
        assert_eq!(
            kinds(&out),
            ["container_exited", "pod_not_ready", "pod_deleted"]
        );
        assert_eq!(
            out[0].kind,
            LifecycleKind::ContainerExited {
                exit_code: Some(143),
                signal: Some(15),
                reason: Some("Error".into())
            }
        );
        // Server times: the deletion request (40 s − 30 s grace) precedes the exit at 12 s by 2 s.
        assert_eq!(out[0].server_us.unwrap() - req, 2_000_000);
    }

    #[test]
    fn a_restart_reports_the_missed_exit_then_the_new_run() {
        let mut t = PodTracker::new(RunClock::start(), KnownPods::default());
        let mut out = Vec::new();
        let status = |restarts: i32, started: &str, last: serde_json::Value| {
            json!({"containerStatuses": [{"name": "app", "restartCount": restarts, "ready": false, "image": "i", "imageID": "",
                "state": {"running": {"startedAt": started}}, "lastState": last}]})
        };
        let meta = json!({"name": "p"});
        t.apply(
            &pod(json!({"metadata": meta, "status": status(0, "2026-01-01T00:00:01Z", json!({}))})),
            1,
            &mut out,
        );
        out.clear();
        t.apply(
            &pod(
                json!({"metadata": meta, "status": status(1, "2026-01-01T00:00:09Z",
                json!({"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:00:08Z"}}))}),
            ),
            2,
            &mut out,
        );
        assert_eq!(kinds(&out), ["container_exited", "container_started"]);
        assert_eq!(
            out[1].kind,
            LifecycleKind::ContainerStarted { restart_count: 1 }
        );
    }

    #[test]
    fn a_relist_deletes_pods_no_longer_listed() {
        let mut t = PodTracker::new(RunClock::start(), KnownPods::default());
        let mut out = Vec::new();
        t.apply(&pod(json!({"metadata": {"name": "a"}})), 1, &mut out);
        t.apply(&pod(json!({"metadata": {"name": "b"}})), 1, &mut out);
        out.clear();
        let listed: HashSet<String> = ["b".to_string()].into();
        t.retain_listed(&listed, 2, &mut out);
        assert_eq!(kinds(&out), ["pod_deleted"]);
        assert_eq!(out[0].pod.as_deref(), Some("a"));
    }
}
