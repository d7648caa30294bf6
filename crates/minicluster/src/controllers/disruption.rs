//! The disruption controller: PodDisruptionBudget status (kubernetes/kubernetes
//! pkg/controller/disruption/disruption.go, `trySync`), which the eviction
//! subresource admits against:
//! - the budget's pods are those of its namespace its selector selects
//!   (`LabelSelectorAsSelector`: `{}` every pod, `null` none,
//!   `matchLabels` and `matchExpressions`), terminal ones included;
//! - `expectedPods` and `desiredHealthy` (`getExpectedPodCount`): an integer
//!   `minAvailable` against the number of those pods; a percentage
//!   `minAvailable`, or `maxUnavailable`, against the sum of the owning
//!   controllers' scale (a Deployment through its ReplicaSet, or a bare
//!   ReplicaSet), rounded up; neither set: nothing expected;
//! - `currentHealthy` counts Ready pods that are not being deleted and not
//!   evicted within the last `DeletionTimeout` (`disruptedPods`);
//! - `disruptionsAllowed = currentHealthy − desiredHealthy`, or 0 when that is
//!   negative or no pod is expected;
//! - the `DisruptionAllowed` condition (`SufficientPods` / `InsufficientPods`);
//! - a budget that cannot be computed (an invalid selector, a pod whose
//!   controller is gone) fails safe (`failSafe`): `disruptionsAllowed: 0` and
//!   the condition False with reason `SyncFailed` and the error.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{Ctx, util};
use crate::{api::LabelSelector, store::now_rfc3339};

/// How long an eviction stays in `disruptedPods` if the pod does not go away.
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// What one pass reads.
struct World<'a> {
    pods: &'a [std::sync::Arc<Value>],
    replicasets: &'a [std::sync::Arc<Value>],
    deployments: &'a [std::sync::Arc<Value>],
    now: SystemTime,
}

/// One pass over every PodDisruptionBudget.
pub fn sync(ctx: &Ctx) {
    let (pdbs, _) = ctx.store.list(ctx.kinds.pdbs, None);
    let (pods, _) = ctx.store.list(ctx.kinds.pods, None);
    let (replicasets, _) = ctx.store.list(ctx.kinds.replicasets, None);
    let (deployments, _) = ctx.store.list(ctx.kinds.deployments, None);
    let world = World {
        pods: &pods,
        replicasets: &replicasets,
        deployments: &deployments,
        now: SystemTime::now(),
    };
    for pdb in &pdbs {
        let status = match status_of(pdb, &world) {
            Ok(status) => status,
            Err(e) => fail_safe(pdb, &e),
        };
        ctx.set_status(ctx.kinds.pdbs, pdb, status);
    }
}

/// The budget's pods (`getPodsForPdb`).
fn pods_of<'a>(pdb: &Value, world: &World<'a>) -> Result<Vec<&'a Value>, String> {
    let ns = util::namespace(pdb);
    let Some(selector) = LabelSelector::from_label_selector(&pdb["spec"]["selector"])? else {
        return Ok(Vec::new());
    };
    Ok(world
        .pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| util::namespace(p) == ns && selector.matches(p))
        .collect())
}

/// `getExpectedScale`: the sum of the scale of the pods' controllers. Pods
/// without a controller are left out (upstream's unmanaged pods); a pod
/// whose controller is not found is an error.
fn expected_scale(pods: &[&Value], world: &World) -> Result<i64, String> {
    let mut counted: Vec<&str> = Vec::new();
    let mut scale = 0;
    for p in pods {
        let Some(rs_uid) = util::controller_uid(p) else {
            continue;
        };
        let rs = world.replicasets.iter().find(|r| util::uid(r) == rs_uid);
        let controller = rs.and_then(|rs| match util::controller_uid(rs) {
            // A ReplicaSet a Deployment owns counts as the Deployment.
            Some(d) => world
                .deployments
                .iter()
                .find(|x| util::uid(x) == d)
                .map(|d| d.as_ref()),
            None => Some(rs.as_ref()),
        });
        let Some(controller) = controller else {
            return Err(format!("found no controllers for pod {:?}", util::name(p)));
        };
        let uid = util::uid(controller);
        if !counted.contains(&uid) {
            counted.push(uid);
            scale += controller["spec"]["replicas"].as_i64().unwrap_or(1);
        }
    }
    Ok(scale)
}

/// `trySync` and `updatePdbStatus`: the status the budget should have.
fn status_of(pdb: &Value, world: &World) -> Result<Value, String> {
    let pods = pods_of(pdb, world)?;
    let spec = &pdb["spec"];
    let (expected, desired) = if !spec["maxUnavailable"].is_null() {
        let scale = expected_scale(&pods, world)?;
        let unavailable = util::int_or_percent(&spec["maxUnavailable"], scale, true);
        (scale, (scale - unavailable).max(0))
    } else {
        match &spec["minAvailable"] {
            Value::Null => (0, 0),
            Value::Number(n) => (pods.len() as i64, n.as_i64().unwrap_or(0)),
            v => {
                let scale = expected_scale(&pods, world)?;
                (scale, util::int_or_percent(v, scale, true))
            }
        }
    };
    // Evictions still in flight: pods evicted but not yet being deleted.
    let mut disrupted = serde_json::Map::new();
    if let Some(map) = pdb["status"]["disruptedPods"].as_object() {
        for (pod_name, at) in map {
            let still_there = pods
                .iter()
                .any(|p| util::name(p) == pod_name && p["metadata"]["deletionTimestamp"].is_null());
            let fresh = at
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .is_some_and(|t| t + DELETION_TIMEOUT > world.now);
            if still_there && fresh {
                disrupted.insert(pod_name.clone(), at.clone());
            }
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| {
            util::pod_ready(p)
                && p["metadata"]["deletionTimestamp"].is_null()
                && !disrupted.contains_key(util::name(p))
        })
        .count() as i64;
    // Nothing expected (no pods yet) allows nothing: safe when the first
    // pods appear before this controller has seen them.
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let generation = pdb["metadata"]["generation"].clone();
    let (cstatus, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    Ok(json!({
        "observedGeneration": generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptedPods": disrupted,
        "conditions": with_condition(pdb, cstatus, reason, "", &generation),
    }))
}

/// `failSafe`: the last status with no disruption allowed and the
/// `SyncFailed` condition carrying the error; `observedGeneration` stays
/// what it was, so a changed budget keeps answering "still being processed".
fn fail_safe(pdb: &Value, error: &str) -> Value {
    let mut status = match &pdb["status"] {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    let generation = status["observedGeneration"].clone();
    status["disruptionsAllowed"] = json!(0);
    status["conditions"] = with_condition(pdb, "False", "SyncFailed", error, &generation);
    status
}

/// The budget's conditions with `DisruptionAllowed` set as
/// `apimeta.SetStatusCondition` sets it: the transition time changes only
/// when the status does.
fn with_condition(
    pdb: &Value,
    status: &str,
    reason: &str,
    message: &str,
    generation: &Value,
) -> Value {
    let mut conditions = pdb["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut condition = json!({
        "type": "DisruptionAllowed", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now_rfc3339(), "observedGeneration": generation,
    });
    match conditions
        .iter_mut()
        .find(|c| c["type"] == "DisruptionAllowed")
    {
        Some(old) => {
            if old["status"] == status {
                condition["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = condition;
        }
        None => conditions.push(condition),
    }
    Value::Array(conditions)
}
