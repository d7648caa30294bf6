//! ReplicaSet and Deployment counts.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::ResourceExt;

use super::Tracker;
use rolltest_core::model::{EventSource, LifecycleEvent, LifecycleKind};

/// `(spec.replicas, status.readyReplicas)` per ReplicaSet.
#[derive(Debug, Default)]
pub(crate) struct ReplicaSetTracker {
    last: HashMap<String, (i32, i32)>,
}

impl Tracker<ReplicaSet> for ReplicaSetTracker {
    fn apply(&mut self, rs: &ReplicaSet, at_us: u64, out: &mut Vec<LifecycleEvent>) {
        let name = rs.name_any();
        let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = rs
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if self.last.get(&name) == Some(&(replicas, ready)) {
            return;
        }
        self.last.insert(name.clone(), (replicas, ready));
        out.push(LifecycleEvent {
            at_us,
            server_us: None,
            server_precision_us: None,
            pod: None,
            source: EventSource::ReplicaSet,
            kind: LifecycleKind::ReplicaSetScaled {
                name,
                replicas,
                ready,
            },
        });
    }

    fn delete(&mut self, rs: &ReplicaSet, _: u64, _: &mut Vec<LifecycleEvent>) {
        self.last.remove(&rs.name_any());
    }

    fn retain_listed(&mut self, listed: &HashSet<String>, _: u64, _: &mut Vec<LifecycleEvent>) {
        self.last.retain(|k, _| listed.contains(k));
    }
}

/// The Deployment's replica counts.
#[derive(Debug, Default)]
pub(crate) struct DeploymentTracker {
    last: Option<[i32; 5]>,
}

impl Tracker<Deployment> for DeploymentTracker {
    fn apply(&mut self, d: &Deployment, at_us: u64, out: &mut Vec<LifecycleEvent>) {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = d.status.as_ref();
        let n = |f: fn(&k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<i32>| {
            st.and_then(f).unwrap_or(0)
        };
        let now = [
            replicas,
            n(|s| s.updated_replicas),
            n(|s| s.ready_replicas),
            n(|s| s.available_replicas),
            n(|s| s.unavailable_replicas),
        ];
        if self.last == Some(now) {
            return;
        }
        self.last = Some(now);
        let [replicas, updated, ready, available, unavailable] = now;
        out.push(LifecycleEvent {
            at_us,
            server_us: None,
            server_precision_us: None,
            pod: None,
            source: EventSource::Deployment,
            kind: LifecycleKind::DeploymentStatus {
                replicas,
                updated,
                ready,
                available,
                unavailable,
            },
        });
    }

    fn delete(&mut self, _: &Deployment, _: u64, _: &mut Vec<LifecycleEvent>) {
        self.last = None;
    }

    fn retain_listed(&mut self, listed: &HashSet<String>, _: u64, _: &mut Vec<LifecycleEvent>) {
        if listed.is_empty() {
            self.last = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_are_reported_on_change_only() {
        let mut t = ReplicaSetTracker::default();
        let mut out = Vec::new();
        let rs = |replicas: i32, ready: i32| -> ReplicaSet {
            serde_json::from_value(json!({"metadata": {"name": "api-1"}, "spec": {"replicas": replicas, "selector": {}},
                "status": {"replicas": replicas, "readyReplicas": ready}}))
            .expect("rs")
        };
        t.apply(&rs(2, 2), 1, &mut out);
        t.apply(&rs(2, 2), 2, &mut out);
        t.apply(&rs(3, 2), 3, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[1].kind,
            LifecycleKind::ReplicaSetScaled {
                name: "api-1".into(),
                replicas: 3,
                ready: 2
            }
        );
        let mut d = DeploymentTracker::default();
        let mut out = Vec::new();
        let dep: Deployment = serde_json::from_value(json!({"metadata": {"name": "api"},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2, "unavailableReplicas": 1}}))
        .expect("deployment");
        d.apply(&dep, 1, &mut out);
        d.apply(&dep, 2, &mut out);
        assert_eq!(
            out,
            [LifecycleEvent {
                at_us: 1,
                server_us: None,
                server_precision_us: None,
                pod: None,
                source: EventSource::Deployment,
                kind: LifecycleKind::DeploymentStatus {
                    replicas: 3,
                    updated: 3,
                    ready: 2,
                    available: 2,
                    unavailable: 1
                }
            }]
        );
    }
}
