//! The EndpointSlice controller: one slice per Service with a selector,
//! holding every matching pod that has an IP and is not terminal, with the
//! conditions Kubernetes sets (kubernetes/kubernetes
//! staging/src/k8s.io/endpointslice/utils.go `podToEndpoint`): `serving` = pod Ready,
//! `terminating` = deletionTimestamp set, `ready` = serving && !terminating.
//! So `ready` flips to false at the DELETE, in parallel with preStop.

use serde_json::{Value, json};

use super::{Ctx, util};
use crate::store::now_rfc3339;

const SERVICE_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// One pass over every Service.
pub fn sync(ctx: &Ctx) {
    let (services, _) = ctx.store.list(ctx.kinds.services, None);
    let (slices, _) = ctx.store.list(ctx.kinds.endpointslices, None);
    let (pods, _) = ctx.store.list(ctx.kinds.pods, None);
    for svc in &services {
        let ns = util::namespace(svc);
        let svc_name = util::name(svc);
        let Some(selector) = util::selector(svc) else {
            continue;
        };
        let mut matching: Vec<&Value> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| {
                util::namespace(p) == ns
                    && selector.matches(p)
                    && !util::pod_terminal(p)
                    && p["status"]["podIP"]
                        .as_str()
                        .is_some_and(|ip| !ip.is_empty())
            })
            .collect();
        matching.sort_by_key(|p| util::name(p).to_string());
        let endpoints: Vec<Value> = matching
            .iter()
            .map(|p| {
                let serving = util::pod_ready(p);
                let terminating = !p["metadata"]["deletionTimestamp"].is_null();
                json!({
                    "addresses": [p["status"]["podIP"]],
                    "conditions": {"ready": serving && !terminating, "serving": serving, "terminating": terminating},
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": util::name(p), "uid": util::uid(p)},
                    "nodeName": p["spec"]["nodeName"],
                })
            })
            .collect();
        let ports: Vec<Value> = svc["spec"]["ports"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|sp| {
                        let port = resolve_target_port(sp, matching.first().copied());
                        let mut p = json!({"port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
                        p["name"] = sp.get("name").cloned().unwrap_or(json!(""));
                        p
                    })
                    .collect()
            })
            .unwrap_or_default();
        let existing = slices.iter().find(|s| {
            util::namespace(s) == ns && s["metadata"]["labels"][SERVICE_LABEL] == svc_name
        });
        match existing {
            Some(slice) => {
                if slice["endpoints"] == json!(endpoints) && slice["ports"] == json!(ports) {
                    continue;
                }
                let _ = ctx.store.update(ctx.kinds.endpointslices, ns, util::name(slice), |s| {
                    s["endpoints"] = json!(endpoints);
                    s["ports"] = json!(ports);
                    s["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] = json!(now_rfc3339());
                    Ok(())
                });
            }
            None => {
                let slice = json!({
                    "metadata": {
                        "generateName": format!("{svc_name}-"),
                        "labels": {SERVICE_LABEL: svc_name, MANAGED_BY: "endpointslice-controller.k8s.io"},
                        "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": now_rfc3339()},
                        "ownerReferences": [{
                            "apiVersion": "v1", "kind": "Service", "name": svc_name, "uid": util::uid(svc),
                            "controller": true, "blockOwnerDeletion": true,
                        }],
                    },
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                    "ports": ports,
                });
                let _ = ctx.store.create(ctx.kinds.endpointslices, ns, slice);
            }
        }
    }
}

/// The Service port's `targetPort` as a number: an int as is, a name looked
/// up in the pod's container ports, the `port` when unset.
fn resolve_target_port(service_port: &Value, pod: Option<&Value>) -> i64 {
    match &service_port["targetPort"] {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(name) => pod
            .and_then(|p| p["spec"]["containers"].as_array())
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|cp| cp["name"] == name.as_str())
            .and_then(|cp| cp["containerPort"].as_i64())
            .unwrap_or(0),
        _ => service_port["port"].as_i64().unwrap_or(0),
    }
}
