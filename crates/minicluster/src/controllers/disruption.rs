//! The disruption controller: PodDisruptionBudget status (kubernetes/kubernetes
//! pkg/controller/disruption/disruption.go),
//! which the eviction subresource admits against: `currentHealthy` counts
//! Ready pods that are not being deleted and not recently evicted,
//! `desiredHealthy` comes from minAvailable / maxUnavailable (percentages of
//! the owning controllers' scale, rounded up), and
//! `disruptionsAllowed = max(0, currentHealthy − desiredHealthy)`.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{Ctx, util};
use crate::store::now_rfc3339;

/// How long an eviction stays in `disruptedPods` if the pod does not go away.
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// One pass over every PodDisruptionBudget.
pub fn sync(ctx: &Ctx) {
    let (pdbs, _) = ctx.store.list(ctx.kinds.pdbs, None);
    let (pods, _) = ctx.store.list(ctx.kinds.pods, None);
    let (rss, _) = ctx.store.list(ctx.kinds.replicasets, None);
    let (deployments, _) = ctx.store.list(ctx.kinds.deployments, None);
    let now = SystemTime::now();
    for pdb in &pdbs {
        let ns = util::namespace(pdb);
        let Some(selector) = util::selector(pdb) else {
            continue;
        };
        let matching: Vec<&Value> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| util::namespace(p) == ns && selector.matches(p) && !util::pod_terminal(p))
            .collect();
        // Owners' scale: a pod's ReplicaSet, and that ReplicaSet's Deployment when it has one.
        let mut scale = 0;
        let mut counted: Vec<String> = Vec::new();
        for p in &matching {
            let Some(rs_uid) = util::controller_uid(p) else {
                continue;
            };
            let Some(rs) = rss.iter().find(|r| util::uid(r) == rs_uid) else {
                continue;
            };
            let (owner_uid, replicas) = match util::controller_uid(rs)
                .and_then(|d| deployments.iter().find(|x| util::uid(x) == d))
            {
                Some(d) => (
                    util::uid(d).to_string(),
                    d["spec"]["replicas"].as_i64().unwrap_or(0),
                ),
                None => (
                    rs_uid.to_string(),
                    rs["spec"]["replicas"].as_i64().unwrap_or(0),
                ),
            };
            if !counted.contains(&owner_uid) {
                counted.push(owner_uid);
                scale += replicas;
            }
        }
        let spec = &pdb["spec"];
        let (expected, desired) = if !spec["minAvailable"].is_null() {
            match &spec["minAvailable"] {
                Value::Number(n) => (matching.len() as i64, n.as_i64().unwrap_or(0)),
                v => (scale, util::int_or_percent(v, scale, true)),
            }
        } else if !spec["maxUnavailable"].is_null() {
            let unavailable = util::int_or_percent(&spec["maxUnavailable"], scale, true);
            (scale, (scale - unavailable).max(0))
        } else {
            (matching.len() as i64, 0)
        };
        // Evictions still in flight: pods evicted but not yet being deleted.
        let mut disrupted = serde_json::Map::new();
        if let Some(map) = pdb["status"]["disruptedPods"].as_object() {
            for (pod_name, at) in map {
                let still_there = matching.iter().any(|p| {
                    util::name(p) == pod_name && p["metadata"]["deletionTimestamp"].is_null()
                });
                let fresh = at
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .is_some_and(|t| t + DELETION_TIMEOUT > now);
                if still_there && fresh {
                    disrupted.insert(pod_name.clone(), at.clone());
                }
            }
        }
        let healthy = matching
            .iter()
            .filter(|p| {
                util::pod_ready(p)
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && !disrupted.contains_key(util::name(p))
            })
            .count() as i64;
        let allowed = (healthy - desired).max(0);
        let previous = pdb["status"]["conditions"]
            .as_array()
            .and_then(|c| c.first())
            .cloned();
        let (cstatus, reason) = if allowed > 0 {
            ("True", "SufficientPods")
        } else {
            ("False", "InsufficientPods")
        };
        let transition = match &previous {
            Some(p) if p["status"] == cstatus => p["lastTransitionTime"].clone(),
            _ => json!(now_rfc3339()),
        };
        let status = json!({
            "observedGeneration": pdb["metadata"]["generation"],
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "disruptedPods": disrupted,
            "conditions": [{
                "type": "DisruptionAllowed", "status": cstatus, "reason": reason, "message": "",
                "lastTransitionTime": transition, "observedGeneration": pdb["metadata"]["generation"],
            }],
        });
        ctx.set_status(ctx.kinds.pdbs, pdb, status);
    }
}
