//! Table output (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), so
//! `kubectl get` shows the usual columns (NAME READY STATUS RESTARTS AGE for
//! pods) instead of only NAME and AGE. Column sets follow kube-apiserver's
//! printers.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::resources::ResourceKind;

/// Whether an Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("as=Table") && p.contains("g=meta.k8s.io")
    })
}

/// Whether the full object should go into each row (`includeObject=Object`).
pub fn include_object(query: Option<&str>) -> bool {
    query == Some("Object")
}

type Col = (&'static str, &'static str, u8);

fn columns(r: &ResourceKind) -> &'static [Col] {
    match r.kind {
        "Pod" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "Deployment" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "Service" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "EndpointSlice" => &[
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        "Node" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
        ],
        "Event" => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        "PodDisruptionBudget" => &[
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ],
        "Namespace" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    }
}

/// Builds a Table of `items`; `with_columns` false for watch events after the first.
pub fn table(
    r: &ResourceKind,
    items: &[&Value],
    rv: u64,
    with_columns: bool,
    full_object: bool,
) -> Value {
    let defs: Vec<Value> = if with_columns {
        columns(r)
            .iter()
            .map(|(name, ty, priority)| {
                json!({
                    "name": name,
                    "type": ty,
                    "format": if *name == "Name" { "name" } else { "" },
                    "description": name,
                    "priority": priority,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = if full_object {
                (*o).clone()
            } else {
                json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                })
            };
            json!({"cells": cells(r, o), "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn cells(r: &ResourceKind, o: &Value) -> Vec<Value> {
    let name = json!(s(&o["metadata"]["name"]));
    let created = json!(age(&o["metadata"]["creationTimestamp"]));
    let containers = |spec: &Value| {
        let list = spec["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (
            list.iter()
                .map(|c| s(&c["name"]))
                .collect::<Vec<_>>()
                .join(","),
            list.iter()
                .map(|c| s(&c["image"]))
                .collect::<Vec<_>>()
                .join(","),
        )
    };
    let selector = |sel: &Value| {
        sel.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", s(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    match r.kind {
        "Pod" => {
            let statuses = o["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses
                .iter()
                .filter(|c| c["ready"] == json!(true))
                .count();
            let restarts: i64 = statuses.iter().map(|c| int(&c["restartCount"])).sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                created.clone(),
                json!(or_none(s(&o["status"]["podIP"]))),
                json!(or_none(s(&o["spec"]["nodeName"]))),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        "Deployment" => {
            let (c, i) = containers(&o["spec"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&o["status"]["readyReplicas"]),
                    int(&o["spec"]["replicas"])
                )),
                json!(int(&o["status"]["updatedReplicas"])),
                json!(int(&o["status"]["availableReplicas"])),
                created.clone(),
                json!(c),
                json!(i),
                json!(selector(&o["spec"]["selector"]["matchLabels"])),
            ]
        }
        "ReplicaSet" => {
            let (c, i) = containers(&o["spec"]);
            vec![
                name,
                json!(int(&o["spec"]["replicas"])),
                json!(int(&o["status"]["replicas"])),
                json!(int(&o["status"]["readyReplicas"])),
                created.clone(),
                json!(c),
                json!(i),
                json!(selector(&o["spec"]["selector"]["matchLabels"])),
            ]
        }
        "Service" => {
            let ports = o["spec"]["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = p["protocol"].as_str().unwrap_or("TCP");
                            match p.get("nodePort") {
                                Some(np) if !np.is_null() => {
                                    format!("{}:{}/{proto}", s(&p["port"]), s(np))
                                }
                                _ => format!("{}/{proto}", s(&p["port"])),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP")),
                json!(or_none(s(&o["spec"]["clusterIP"]))),
                json!("<none>"),
                json!(or_none(ports)),
                created.clone(),
                json!(or_none(selector(&o["spec"]["selector"]))),
            ]
        }
        "EndpointSlice" => {
            let ports = o["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| s(&p["port"]))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let addrs: Vec<String> = o["endpoints"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                        .map(|a| s(&a))
                        .collect()
                })
                .unwrap_or_default();
            let shown = if addrs.len() > 3 {
                format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
            } else {
                addrs.join(",")
            };
            vec![
                name,
                json!(s(&o["addressType"])),
                json!(or_none(ports)),
                json!(if shown.is_empty() {
                    "<unset>".to_string()
                } else {
                    shown
                }),
                created.clone(),
            ]
        }
        "Node" => {
            let ready = o["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True");
            let mut status = if ready {
                "Ready".to_string()
            } else {
                "NotReady".to_string()
            };
            if o["spec"]["unschedulable"] == json!(true) {
                status.push_str(",SchedulingDisabled");
            }
            let ip = o["status"]["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                .map(|x| s(&x["address"]))
                .unwrap_or_default();
            vec![
                name,
                json!(status),
                json!("<none>"),
                created.clone(),
                json!(s(&o["status"]["nodeInfo"]["kubeletVersion"])),
                json!(or_none(ip)),
            ]
        }
        "Event" => {
            let last = if o["lastTimestamp"].is_null() {
                &o["eventTime"]
            } else {
                &o["lastTimestamp"]
            };
            vec![
                json!(age(last)),
                json!(s(&o["type"])),
                json!(s(&o["reason"])),
                json!(format!(
                    "{}/{}",
                    s(&o["involvedObject"]["kind"]).to_lowercase(),
                    s(&o["involvedObject"]["name"])
                )),
                json!(s(&o["message"])),
            ]
        }
        "PodDisruptionBudget" => vec![
            name,
            json!(if o["spec"]["minAvailable"].is_null() {
                "N/A".to_string()
            } else {
                s(&o["spec"]["minAvailable"])
            }),
            json!(if o["spec"]["maxUnavailable"].is_null() {
                "N/A".to_string()
            } else {
                s(&o["spec"]["maxUnavailable"])
            }),
            json!(int(&o["status"]["disruptionsAllowed"])),
            created.clone(),
        ],
        "Namespace" => vec![
            name,
            json!(o["status"]["phase"].as_str().unwrap_or("Active")),
            created,
        ],
        _ => vec![name, created],
    }
}

/// The STATUS column of a pod, as kubectl prints it.
pub fn pod_status(o: &Value) -> String {
    if !o["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating".into();
    }
    let statuses = o["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in &statuses {
        if let Some(reason) = c["state"]["waiting"]["reason"].as_str()
            && (reason != "ContainerCreating" || statuses.len() == 1)
        {
            return reason.to_string();
        }
        if let Some(reason) = c["state"]["terminated"]["reason"].as_str() {
            return reason.to_string();
        }
    }
    o["status"]["phase"]
        .as_str()
        .unwrap_or("Pending")
        .to_string()
}

/// kubectl's human age: `45s`, `3m12s`, `25m`, `5h3m`, `2d4h`, `12d`.
pub fn age(ts: &Value) -> String {
    let Some(t) = ts
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
    else {
        return "<unknown>".into();
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs());
    human_duration(secs)
}

fn human_duration(secs: u64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs.is_multiple_of(60) {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m.is_multiple_of(60) {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        if h.is_multiple_of(24) {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else {
        format!("{d}d")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        for (secs, text) in [
            (5, "5s"),
            (119, "119s"),
            (192, "3m12s"),
            (1500, "25m"),
            (18_180, "5h3m"),
            (187_200, "2d4h"),
            (1_036_800, "12d"),
        ] {
            assert_eq!(human_duration(secs), text);
        }
    }

    #[test]
    fn accept_header_detection() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }

    #[test]
    fn pod_row() {
        let pods = ResourceKind::find("", "v1", "pods").unwrap();
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "app"}], "nodeName": "embedded-node-1"},
            "status": {"phase": "Running", "podIP": "127.0.1.5", "containerStatuses": [{"ready": true, "restartCount": 2}]},
        });
        let t = table(pods, &[&pod], 7, true, false);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web-1");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "2");
        assert_eq!(cells[5], "127.0.1.5");
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 9);
        let mut terminating = pod.clone();
        terminating["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
        assert_eq!(pod_status(&terminating), "Terminating");
    }
}
