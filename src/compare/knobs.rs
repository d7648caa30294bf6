//! The manifests' differences in the five knobs (plus replicas and the
//! container's args/image): objects paired by kind/name, containers by name,
//! each relevant field compared with Kubernetes' defaults filled in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{
    Manifest,
    knobs::{Knob, PROBE_TIMING_DEFAULTS, PROBES, pre_stop_seconds, probe_int, workload_fields},
};

/// One changed field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobDiff {
    /// The object, `Kind/name`.
    pub object: String,
    /// The knob.
    pub knob: Knob,
    /// Field path in the object; containers by name (`containers[api]`).
    pub path: String,
    /// The field's value before (`null`: unset or absent).
    pub before: Value,
    /// The field's value after.
    pub after: Value,
    /// Before, in words (defaults spelled out).
    pub before_text: String,
    /// After, in words.
    pub after_text: String,
    /// False when only a default was spelled out (same behaviour).
    pub effective: bool,
}

/// A value in words: strings bare, string lists joined by spaces, others as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "unset".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

fn text_with_default(v: Option<&Value>, default: Option<&Value>) -> String {
    match (v, default) {
        (Some(v), _) => value_text(v),
        (None, Some(d)) => format!("unset (default {})", value_text(d)),
        (None, None) => "none".into(),
    }
}

/// A lifecycle handler or probe handler in words.
fn handler_text(h: &Value) -> String {
    if let Some(s) = pre_stop_seconds(h) {
        return if h.get("sleep").is_some() {
            format!("sleep action {} s", crate::html::fmt_num(s))
        } else {
            format!("exec sleep {} s", crate::html::fmt_num(s))
        };
    }
    if let Some(cmd) = h.pointer("/exec/command") {
        return format!("exec {}", value_text(cmd));
    }
    if let Some(g) = h.get("httpGet") {
        let path = g.get("path").map_or_else(|| "/".into(), value_text);
        let port = g.get("port").map_or_else(String::new, value_text);
        return format!("httpGet {path} :{port}");
    }
    if let Some(t) = h.get("tcpSocket") {
        return format!(
            "tcpSocket :{}",
            t.get("port").map_or_else(String::new, value_text)
        );
    }
    if let Some(g) = h.get("grpc") {
        return format!(
            "grpc :{}",
            g.get("port").map_or_else(String::new, value_text)
        );
    }
    if h.get("sleep").is_some() {
        return "sleep action".into();
    }
    "other handler".into()
}

fn probe_text(p: &Value) -> String {
    format!(
        "{} every {} s × {}",
        handler_text(p),
        probe_int(p, "periodSeconds"),
        probe_int(p, "failureThreshold")
    )
}

/// The handler part of a probe (without timing fields), for comparison.
fn probe_handler(p: &Value) -> Value {
    let mut h = serde_json::Map::new();
    for k in ["httpGet", "tcpSocket", "exec", "grpc"] {
        if let Some(v) = p.get(k) {
            h.insert(k.into(), v.clone());
        }
    }
    Value::Object(h)
}

struct Differ {
    out: Vec<KnobDiff>,
}

impl Differ {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        object: &str,
        knob: Knob,
        path: String,
        before: Option<&Value>,
        after: Option<&Value>,
        before_text: String,
        after_text: String,
        effective: bool,
    ) {
        self.out.push(KnobDiff {
            object: object.into(),
            knob,
            path,
            before: before.cloned().unwrap_or(Value::Null),
            after: after.cloned().unwrap_or(Value::Null),
            before_text,
            after_text,
            effective,
        });
    }

    /// Compares one field with a default; records it when the raw values differ.
    fn field(
        &mut self,
        object: &str,
        knob: Knob,
        path: String,
        before: Option<&Value>,
        after: Option<&Value>,
        default: Option<&Value>,
    ) {
        if before == after {
            return;
        }
        let effective = before.or(default) != after.or(default);
        self.push(
            object,
            knob,
            path,
            before,
            after,
            text_with_default(before, default),
            text_with_default(after, default),
            effective,
        );
    }

    fn workload(&mut self, b: &Manifest, a: &Manifest) {
        let object = a.object();
        for f in workload_fields() {
            self.field(
                &object,
                f.knob,
                f.path.into(),
                b.get(f.path),
                a.get(f.path),
                f.default.as_ref(),
            );
        }
        let bc = containers(b);
        let ac = containers(a);
        for (name, ac) in &ac {
            let base = format!("spec.template.spec.containers[{name}]");
            let Some(bc) = bc.get(name) else {
                self.push(
                    &object,
                    Knob::App,
                    base,
                    None,
                    Some(&Value::from(name.as_str())),
                    "absent".into(),
                    format!("container {name}"),
                    true,
                );
                continue;
            };
            self.container(&object, &base, bc, ac);
        }
        for name in bc.keys().filter(|n| !ac.contains_key(*n)) {
            self.push(
                &object,
                Knob::App,
                format!("spec.template.spec.containers[{name}]"),
                Some(&Value::from(name.as_str())),
                None,
                format!("container {name}"),
                "absent".into(),
                true,
            );
        }
    }

    fn container(&mut self, object: &str, base: &str, b: &Value, a: &Value) {
        for k in ["image", "command", "args"] {
            self.field(
                object,
                Knob::App,
                format!("{base}.{k}"),
                b.get(k),
                a.get(k),
                None,
            );
        }
        let (bp, ap) = (
            b.pointer("/lifecycle/preStop"),
            a.pointer("/lifecycle/preStop"),
        );
        if bp != ap {
            let t = |v: Option<&Value>| v.map_or_else(|| "none".into(), handler_text);
            self.push(
                object,
                Knob::PreStop,
                format!("{base}.lifecycle.preStop"),
                bp,
                ap,
                t(bp),
                t(ap),
                true,
            );
        }
        for probe in PROBES {
            let path = format!("{base}.{probe}");
            match (b.get(probe), a.get(probe)) {
                (None, None) => {}
                (Some(bv), Some(av)) => {
                    let (bh, ah) = (probe_handler(bv), probe_handler(av));
                    if bh != ah {
                        self.push(
                            object,
                            Knob::Probes,
                            format!("{path}.handler"),
                            Some(&bh),
                            Some(&ah),
                            handler_text(bv),
                            handler_text(av),
                            true,
                        );
                    }
                    for (k, d) in PROBE_TIMING_DEFAULTS {
                        self.field(
                            object,
                            Knob::Probes,
                            format!("{path}.{k}"),
                            bv.get(k),
                            av.get(k),
                            Some(&Value::from(d)),
                        );
                    }
                }
                (bv, av) => {
                    let t = |v: Option<&Value>| v.map_or_else(|| "none".into(), probe_text);
                    self.push(object, Knob::Probes, path, bv, av, t(bv), t(av), true);
                }
            }
        }
    }

    fn pdb(&mut self, b: Option<&Manifest>, a: Option<&Manifest>) {
        let summary = |m: &Manifest| {
            let parts: Vec<String> = ["minAvailable", "maxUnavailable"]
                .iter()
                .filter_map(|k| {
                    m.get(&format!("spec.{k}"))
                        .map(|v| format!("{k} {}", value_text(v)))
                })
                .collect();
            if parts.is_empty() {
                "present".to_string()
            } else {
                parts.join(", ")
            }
        };
        match (b, a) {
            (Some(b), Some(a)) => {
                for k in ["spec.minAvailable", "spec.maxUnavailable"] {
                    self.field(&a.object(), Knob::Pdb, k.into(), b.get(k), a.get(k), None);
                }
            }
            (b, a) => {
                let Some(m) = a.or(b) else { return };
                let t = |o: Option<&Manifest>| o.map_or_else(|| "absent".into(), summary);
                self.push(
                    &m.object(),
                    Knob::Pdb,
                    "(object)".into(),
                    b.map(|m| &m.value["spec"]),
                    a.map(|m| &m.value["spec"]),
                    t(b),
                    t(a),
                    true,
                );
            }
        }
    }
}

fn containers(m: &Manifest) -> BTreeMap<String, Value> {
    m.get("spec.template.spec.containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .enumerate()
                .map(|(i, c)| {
                    let name = c
                        .get("name")
                        .and_then(Value::as_str)
                        .map_or_else(|| i.to_string(), str::to_owned);
                    (name, c.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_workload(kind: &str) -> bool {
    matches!(kind, "Deployment" | "StatefulSet")
}

fn by_key(ms: &[Manifest], pred: fn(&str) -> bool) -> BTreeMap<String, &Manifest> {
    ms.iter()
        .filter(|m| pred(&m.kind))
        .map(|m| (m.object(), m))
        .collect()
}

/// The knob differences between two sets of manifests, objects paired by
/// kind/name (workloads: Deployment, StatefulSet; PodDisruptionBudgets).
/// A workload present on one side only is listed as one `(object)` row.
pub fn diff(before: &[Manifest], after: &[Manifest]) -> Vec<KnobDiff> {
    let mut d = Differ { out: Vec::new() };
    let (bw, aw) = (by_key(before, is_workload), by_key(after, is_workload));
    for (key, a) in &aw {
        match bw.get(key) {
            Some(b) => d.workload(b, a),
            None => d.push(
                key,
                Knob::Replicas,
                "(object)".into(),
                None,
                Some(&Value::from(key.as_str())),
                "absent".into(),
                "present".into(),
                true,
            ),
        }
    }
    for key in bw.keys().filter(|k| !aw.contains_key(*k)) {
        d.push(
            key,
            Knob::Replicas,
            "(object)".into(),
            Some(&Value::from(key.as_str())),
            None,
            "present".into(),
            "absent".into(),
            true,
        );
    }
    let is_pdb = |k: &str| k == "PodDisruptionBudget";
    let (bp, ap) = (by_key(before, is_pdb), by_key(after, is_pdb));
    let mut keys: Vec<&String> = bp.keys().chain(ap.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        d.pdb(bp.get(k).copied(), ap.get(k).copied());
    }
    d.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_stop_seconds_reads_exec_and_sleep_action() {
        let exec: Value = serde_json::json!({"exec": {"command": ["sleep", "3"]}});
        assert_eq!(pre_stop_seconds(&exec), Some(3.0));
        let sh: Value =
            serde_json::json!({"exec": {"command": ["/bin/sh", "-c", "sleep 5; echo"]}});
        assert_eq!(pre_stop_seconds(&sh), Some(5.0));
        let act: Value = serde_json::json!({"sleep": {"seconds": 4}});
        assert_eq!(pre_stop_seconds(&act), Some(4.0));
        // A unit on the sleep reads as `rolltest lint` reads it.
        let unit: Value = serde_json::json!({"exec": {"command": ["sleep", "15s"]}});
        assert_eq!(pre_stop_seconds(&unit), Some(15.0));
        let http: Value = serde_json::json!({"httpGet": {"path": "/quit", "port": 8080}});
        assert_eq!(pre_stop_seconds(&http), None);
        assert_eq!(handler_text(&http), "httpGet /quit :8080");
    }
}
