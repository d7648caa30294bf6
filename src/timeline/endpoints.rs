//! Per-endpoint diffing across all EndpointSlices of one Service.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use super::Tracker;
use rolltest_core::model::{EventSource, LifecycleEvent, LifecycleKind};

/// An endpoint's three conditions, nil semantics resolved: a nil `ready`
/// means ready, a nil `serving` follows `ready`, a nil `terminating` is false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Conditions {
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// One endpoint: keyed by its pod (`targetRef.name`), or its first address
/// when it names no pod.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pod: Option<String>,
    conditions: Conditions,
}

/// Endpoints per slice, and the merged view of the Service.
#[derive(Debug, Default)]
pub(crate) struct SliceTracker {
    slices: HashMap<String, Vec<(String, Entry)>>,
    merged: BTreeMap<String, Entry>,
    count: Option<(u32, u32)>,
}

fn parse(slice: &EndpointSlice) -> Vec<(String, Entry)> {
    slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
                .and_then(|r| r.name.clone());
            let key = pod.clone().or_else(|| e.addresses.first().cloned())?;
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let conditions = Conditions {
                ready,
                serving: c.and_then(|c| c.serving).unwrap_or(ready),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
            };
            Some((key, Entry { pod, conditions }))
        })
        .collect()
}

impl SliceTracker {
    fn recompute(&mut self, at_us: u64, out: &mut Vec<LifecycleEvent>) {
        let mut merged = BTreeMap::new();
        for entries in self.slices.values() {
            for (key, entry) in entries {
                merged.insert(key.clone(), entry.clone());
            }
        }
        let event = |pod: Option<String>, kind| LifecycleEvent {
            at_us,
            server_us: None,
            server_precision_us: None,
            pod,
            source: EventSource::EndpointSlice,
            kind,
        };
        for (key, entry) in &merged {
            if self.merged.get(key) != Some(entry) {
                let c = entry.conditions;
                out.push(event(
                    entry.pod.clone(),
                    LifecycleKind::EndpointChanged {
                        ready: c.ready,
                        serving: c.serving,
                        terminating: c.terminating,
                    },
                ));
            }
        }
        for (key, entry) in &self.merged {
            if !merged.contains_key(key) {
                out.push(event(entry.pod.clone(), LifecycleKind::EndpointRemoved));
            }
        }
        let ready = merged.values().filter(|e| e.conditions.ready).count();
        let count = (
            u32::try_from(ready).unwrap_or(u32::MAX),
            u32::try_from(merged.len()).unwrap_or(u32::MAX),
        );
        if self.count != Some(count) {
            self.count = Some(count);
            out.push(event(
                None,
                LifecycleKind::EndpointsCount {
                    ready: count.0,
                    total: count.1,
                },
            ));
        }
        self.merged = merged;
    }
}

impl Tracker<EndpointSlice> for SliceTracker {
    fn apply(&mut self, slice: &EndpointSlice, at_us: u64, out: &mut Vec<LifecycleEvent>) {
        let entries = parse(slice);
        let name = slice.name_any();
        if self.slices.get(&name) == Some(&entries) {
            return;
        }
        self.slices.insert(name, entries);
        self.recompute(at_us, out);
    }

    fn delete(&mut self, slice: &EndpointSlice, at_us: u64, out: &mut Vec<LifecycleEvent>) {
        if self.slices.remove(&slice.name_any()).is_some() {
            self.recompute(at_us, out);
        }
    }

    fn retain_listed(
        &mut self,
        listed: &HashSet<String>,
        at_us: u64,
        out: &mut Vec<LifecycleEvent>,
    ) {
        let before = self.slices.len();
        self.slices.retain(|k, _| listed.contains(k));
        if self.slices.len() != before {
            self.recompute(at_us, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(name: &str, eps: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "addressType": "IPv4", "endpoints": eps}),
        )
        .expect("slice")
    }

    fn ep(pod: &str, ready: bool, serving: bool, terminating: bool) -> serde_json::Value {
        json!({"addresses": ["127.0.1.9"], "targetRef": {"kind": "Pod", "name": pod},
            "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    #[test]
    fn endpoints_diff_across_slices() {
        let mut t = SliceTracker::default();
        let mut out = Vec::new();
        t.apply(
            &slice(
                "s1",
                json!([ep("a", true, true, false), ep("b", false, false, false)]),
            ),
            1,
            &mut out,
        );
        let names: Vec<_> = out.iter().map(|e| e.kind.name()).collect();
        assert_eq!(
            names,
            ["endpoint_changed", "endpoint_changed", "endpoints_count"]
        );
        assert_eq!(
            out[2].kind,
            LifecycleKind::EndpointsCount { ready: 1, total: 2 }
        );
        out.clear();
        // b moves to another slice unchanged: nothing about b.
        t.apply(
            &slice("s2", json!([ep("b", false, false, false)])),
            2,
            &mut out,
        );
        t.apply(
            &slice("s1", json!([ep("a", false, true, true)])),
            3,
            &mut out,
        );
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].pod.as_deref(), Some("a"));
        assert_eq!(
            out[0].kind,
            LifecycleKind::EndpointChanged {
                ready: false,
                serving: true,
                terminating: true
            }
        );
        assert_eq!(
            out[1].kind,
            LifecycleKind::EndpointsCount { ready: 0, total: 2 }
        );
        out.clear();
        t.delete(&slice("s1", json!([])), 4, &mut out);
        assert_eq!(out[0].kind, LifecycleKind::EndpointRemoved);
        assert_eq!(out[0].pod.as_deref(), Some("a"));
        assert_eq!(
            out[1].kind,
            LifecycleKind::EndpointsCount { ready: 0, total: 1 }
        );
    }

    #[test]
    fn nil_conditions_mean_ready() {
        let mut t = SliceTracker::default();
        let mut out = Vec::new();
        t.apply(
            &slice(
                "s",
                json!([{"addresses": ["127.0.1.3"], "targetRef": {"kind": "Pod", "name": "p"}}]),
            ),
            1,
            &mut out,
        );
        assert_eq!(
            out[0].kind,
            LifecycleKind::EndpointChanged {
                ready: true,
                serving: true,
                terminating: false
            }
        );
    }
}
