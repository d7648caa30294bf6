//! The Deployment controller: ReplicaSets per pod template (named by a hash
//! of the template, labelled `pod-template-hash`), rolled with the real
//! arithmetic (kubernetes/kubernetes pkg/controller/deployment/rolling.go and
//! util/deployment_util.go): maxSurge rounds up, maxUnavailable rounds
//! down (both 0 → unavailable 1), at most one scaling step per pass — scale
//! the new ReplicaSet up within `replicas + maxSurge` (summing ReplicaSet
//! *spec* replicas), else scale old ones down while
//! `availableReplicas ≥ replicas − maxUnavailable`; `Recreate` scales old to
//! 0 and waits for their pods to be gone. Status and conditions are what
//! `kubectl rollout status` reads.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::{Ctx, util};
use crate::{api::record_event, store::now_rfc3339};

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";

/// FNV-32a of the template, encoded like `rand.SafeEncodeString`: stable for
/// equal templates, different whenever the template changes (including the
/// restartedAt annotation).
pub fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
    }
    let text = t.to_string();
    let mut h: u32 = 0x811c_9dc5;
    for b in text.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// The template as `EqualIgnoreHash` compares it: without the hash label,
/// and with what Go's semantic equality cannot tell from absent left out:
/// `null` (a nil pointer or slice, the zero `metav1.Time` kubectl ≤ 1.33
/// writes as `creationTimestamp: null`) and empty arrays. A template read
/// back from a ReplicaSet by `kubectl rollout undo` then still finds its
/// ReplicaSet, however each side was written.
fn without_hash(template: &Value) -> Value {
    let mut t = semantic(template);
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
    }
    t
}

fn semantic(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
                .map(|(k, v)| (k.clone(), semantic(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(semantic).collect()),
        other => other.clone(),
    }
}

fn replicas(o: &Value) -> i64 {
    o["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn status_i(o: &Value, f: &str) -> i64 {
    o["status"][f].as_i64().unwrap_or(0)
}

/// `ResolveFenceposts`: (maxSurge, maxUnavailable) for `desired` replicas.
pub fn fenceposts(d: &Value, desired: i64) -> (i64, i64) {
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let surge_v = if ru["maxSurge"].is_null() {
        json!("25%")
    } else {
        ru["maxSurge"].clone()
    };
    let unav_v = if ru["maxUnavailable"].is_null() {
        json!("25%")
    } else {
        ru["maxUnavailable"].clone()
    };
    let surge = util::int_or_percent(&surge_v, desired, true);
    let mut unavailable = util::int_or_percent(&unav_v, desired, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(desired.max(0)))
}

struct Plan<'a> {
    ctx: &'a Ctx,
    d: &'a Value,
    ns: String,
}

impl Plan<'_> {
    fn scale(&self, rs: &Value, to: i64) -> bool {
        let from = replicas(rs);
        if from == to {
            return false;
        }
        let d_replicas = replicas(self.d);
        let (surge, _) = fenceposts(self.d, d_replicas);
        let result =
            self.ctx
                .store
                .update(self.ctx.kinds.replicasets, &self.ns, util::name(rs), |o| {
                    o["spec"]["replicas"] = json!(to);
                    if let Some(a) = o["metadata"]["annotations"].as_object_mut() {
                        a.insert(
                            "deployment.kubernetes.io/desired-replicas".into(),
                            json!(d_replicas.to_string()),
                        );
                        a.insert(
                            "deployment.kubernetes.io/max-replicas".into(),
                            json!((d_replicas + surge).to_string()),
                        );
                    }
                    Ok(())
                });
        if result.is_ok() {
            let dir = if to > from { "up" } else { "down" };
            record_event(
                &self.ctx.store,
                self.d,
                "Normal",
                "ScalingReplicaSet",
                &format!(
                    "Scaled {dir} replica set {} from {from} to {to}",
                    util::name(rs)
                ),
                "deployment-controller",
                None,
            );
        }
        result.is_ok()
    }
}

/// One pass over every Deployment.
pub fn sync(ctx: &Ctx) {
    let (deployments, _) = ctx.store.list(ctx.kinds.deployments, None);
    for d in deployments {
        if d["spec"]["paused"] == json!(true) {
            continue;
        }
        sync_one(ctx, &d);
    }
}

fn sync_one(ctx: &Ctx, d: &Value) {
    let ns = util::namespace(d).to_string();
    let (all, _) = ctx.store.list(ctx.kinds.replicasets, Some(&ns));
    let mut owned: Vec<Value> = all
        .iter()
        .filter(|rs| util::controller_uid(rs) == Some(util::uid(d)))
        .map(|rs| (**rs).clone())
        .collect();
    owned.sort_by_key(util::created);
    let template = without_hash(&d["spec"]["template"]);
    let new_rs = owned
        .iter()
        .find(|rs| without_hash(&rs["spec"]["template"]) == template)
        .cloned();
    let old: Vec<Value> = owned
        .iter()
        .filter(|rs| {
            new_rs
                .as_ref()
                .is_none_or(|n| util::uid(n) != util::uid(rs))
        })
        .cloned()
        .collect();
    let plan = Plan {
        ctx,
        d,
        ns: ns.clone(),
    };
    let desired = replicas(d);
    let recreate = d["spec"]["strategy"]["type"] == "Recreate";

    let new_rs = match new_rs {
        Some(rs) => bump_revision(ctx, d, rs, &old),
        None => {
            let start = if recreate {
                let old_pods_running = old
                    .iter()
                    .any(|rs| replicas(rs) > 0 || status_i(rs, "replicas") > 0)
                    || old_pods_exist(ctx, &ns, &old);
                if old_pods_running {
                    for rs in &old {
                        plan.scale(rs, 0);
                    }
                    write_status(ctx, d, None, &old);
                    return;
                }
                desired
            } else {
                let (surge, _) = fenceposts(d, desired);
                let current: i64 = old.iter().map(replicas).sum();
                (desired + surge - current).clamp(0, desired)
            };
            match create_rs(ctx, d, &old, start) {
                Some(rs) => rs,
                None => return,
            }
        }
    };

    if recreate {
        if old.iter().any(|rs| replicas(rs) > 0) || old_pods_exist(ctx, &ns, &old) {
            for rs in &old {
                plan.scale(rs, 0);
            }
        } else {
            plan.scale(&new_rs, desired);
        }
    } else {
        rolling(&plan, &new_rs, &old, desired);
    }
    let (all, _) = ctx.store.list(ctx.kinds.replicasets, Some(&ns));
    let fresh = |rs: &Value| {
        all.iter()
            .find(|x| util::uid(x) == util::uid(rs))
            .map(|x| (**x).clone())
            .unwrap_or_else(|| rs.clone())
    };
    let new_now = fresh(&new_rs);
    let old_now: Vec<Value> = old.iter().map(fresh).collect();
    cleanup_history(ctx, d, &new_now, &old_now);
    write_status(ctx, d, Some(&new_now), &old_now);
}

fn old_pods_exist(ctx: &Ctx, ns: &str, old: &[Value]) -> bool {
    let (pods, _) = ctx.store.list(ctx.kinds.pods, Some(ns));
    pods.iter().any(|p| {
        !util::pod_terminal(p)
            && old
                .iter()
                .any(|rs| util::controller_uid(p) == Some(util::uid(rs)))
    })
}

/// `rolloutRolling`: at most one scaling step per pass.
fn rolling(plan: &Plan, new_rs: &Value, old: &[Value], desired: i64) {
    let d = plan.d;
    let (surge, max_unavailable) = fenceposts(d, desired);
    // Scale up the new ReplicaSet (`NewRSNewReplicas`).
    let new_spec = replicas(new_rs);
    if new_spec > desired {
        plan.scale(new_rs, desired);
        return;
    }
    if new_spec < desired {
        let current: i64 = old.iter().map(replicas).sum::<i64>() + new_spec;
        let max_total = desired + surge;
        if current < max_total {
            let up = (max_total - current).min(desired - new_spec);
            if up > 0 && plan.scale(new_rs, new_spec + up) {
                return;
            }
        }
    }
    // Scale down old ReplicaSets.
    let all_spec: i64 = old.iter().map(replicas).sum::<i64>() + new_spec;
    let min_available = desired - max_unavailable;
    let new_unavailable = new_spec - status_i(new_rs, "availableReplicas");
    let max_scaled_down = all_spec - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return;
    }
    // (a) Unhealthy old replicas first, oldest ReplicaSet first.
    let mut budget = max_scaled_down;
    let mut cleaned = 0;
    let mut after: Vec<Value> = Vec::new();
    for rs in old {
        let spec = replicas(rs);
        let unhealthy = spec - status_i(rs, "availableReplicas");
        let remove = unhealthy.min(budget).max(0);
        if remove > 0 && plan.scale(rs, spec - remove) {
            budget -= remove;
            cleaned += remove;
            let mut r = rs.clone();
            r["spec"]["replicas"] = json!(spec - remove);
            after.push(r);
        } else {
            after.push(rs.clone());
        }
    }
    if cleaned > 0 {
        return;
    }
    // (b) Healthy old replicas while availability allows.
    let available: i64 = after
        .iter()
        .map(|rs| status_i(rs, "availableReplicas"))
        .sum::<i64>()
        + status_i(new_rs, "availableReplicas");
    if available <= min_available {
        return;
    }
    let total = available - min_available;
    let mut done = 0;
    for rs in &after {
        if done >= total {
            break;
        }
        let spec = replicas(rs);
        if spec == 0 {
            continue;
        }
        let down = spec.min(total - done);
        if plan.scale(rs, spec - down) {
            done += down;
        }
    }
}

/// The highest `deployment.kubernetes.io/revision` of some ReplicaSets (0 for none).
fn max_revision(sets: &[Value]) -> i64 {
    sets.iter()
        .filter_map(|rs| rs["metadata"]["annotations"][REVISION].as_str())
        .filter_map(|r| r.parse::<i64>().ok())
        .max()
        .unwrap_or(0)
}

/// An existing ReplicaSet that matches the template again (`kubectl rollout
/// undo`, or a change reverted) becomes the newest revision, its former
/// revision kept in `revision-history`, and the Deployment follows
/// (kubernetes/kubernetes pkg/controller/deployment/util
/// `SetNewReplicaSetAnnotations`, `getNewReplicaSet`).
fn bump_revision(ctx: &Ctx, d: &Value, rs: Value, old: &[Value]) -> Value {
    let revision = max_revision(old) + 1;
    let current = rs["metadata"]["annotations"][REVISION].as_str();
    if current.and_then(|r| r.parse::<i64>().ok()).unwrap_or(0) >= revision {
        return rs;
    }
    let previous = current.map(str::to_string);
    let updated = ctx.store.update(
        ctx.kinds.replicasets,
        util::namespace(&rs),
        util::name(&rs),
        |o| {
            let annotations = &mut o["metadata"]["annotations"];
            annotations[REVISION] = json!(revision.to_string());
            if let Some(previous) = &previous {
                let history = match annotations[REVISION_HISTORY].as_str() {
                    Some(h) if !h.is_empty() => format!("{h},{previous}"),
                    _ => previous.clone(),
                };
                annotations[REVISION_HISTORY] = json!(history);
            }
            Ok(())
        },
    );
    let _ = ctx.store.update(
        ctx.kinds.deployments,
        util::namespace(d),
        util::name(d),
        |o| {
            o["metadata"]["annotations"][REVISION] = json!(revision.to_string());
            Ok(())
        },
    );
    updated.map_or(rs, |u| (*u).clone())
}

fn create_rs(ctx: &Ctx, d: &Value, old: &[Value], start: i64) -> Option<Value> {
    let template = &d["spec"]["template"];
    let hash = template_hash(&without_hash(template));
    let d_name = util::name(d);
    let mut rs_template = template.clone();
    rs_template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d["spec"]["selector"].clone();
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let revision = max_revision(old) + 1;
    let desired = replicas(d);
    let (surge, _) = fenceposts(d, desired);
    let mut annotations = serde_json::Map::new();
    if let Some(a) = d["metadata"]["annotations"].as_object() {
        for (k, v) in a {
            if k != "kubectl.kubernetes.io/last-applied-configuration" && k != REVISION {
                annotations.insert(k.clone(), v.clone());
            }
        }
    }
    annotations.insert(REVISION.into(), json!(revision.to_string()));
    annotations.insert(
        "deployment.kubernetes.io/desired-replicas".into(),
        json!(desired.to_string()),
    );
    annotations.insert(
        "deployment.kubernetes.io/max-replicas".into(),
        json!((desired + surge).to_string()),
    );
    let mut labels = template["metadata"]["labels"].clone();
    labels[HASH_LABEL] = json!(hash);
    let rs = json!({
        "metadata": {
            "name": format!("{d_name}-{hash}"),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": d_name,
                "uid": util::uid(d), "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "replicas": start,
            "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
            "selector": selector,
            "template": rs_template,
        },
    });
    let created = ctx
        .store
        .create(ctx.kinds.replicasets, util::namespace(d), rs)
        .ok()?;
    let name = util::name(&created).to_string();
    let _ = ctx
        .store
        .update(ctx.kinds.deployments, util::namespace(d), d_name, |o| {
            o["metadata"]["annotations"][REVISION] = json!(revision.to_string());
            Ok(())
        });
    record_event(
        &ctx.store,
        d,
        "Normal",
        "ScalingReplicaSet",
        &format!("Scaled up replica set {name} from 0 to {start}"),
        "deployment-controller",
        None,
    );
    Some((*created).clone())
}

fn cleanup_history(ctx: &Ctx, d: &Value, new_rs: &Value, old: &[Value]) {
    let limit = d["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let complete =
        replicas(new_rs) == replicas(d) && status_i(new_rs, "availableReplicas") == replicas(d);
    if !complete {
        return;
    }
    let idle: Vec<&Value> = old
        .iter()
        .filter(|rs| replicas(rs) == 0 && status_i(rs, "replicas") == 0)
        .collect();
    if idle.len() > limit {
        for rs in idle.iter().take(idle.len() - limit) {
            let _ = ctx.store.delete(
                ctx.kinds.replicasets,
                util::namespace(d),
                util::name(rs),
                Some(util::uid(rs)),
            );
        }
    }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    previous: Option<&Value>,
    changed: bool,
) -> Value {
    let now = now_rfc3339();
    let same_status = previous.is_some_and(|p| p["status"] == status);
    let same_reason = previous.is_some_and(|p| p["reason"] == reason && p["message"] == message);
    let transition = if same_status {
        previous.map_or(json!(now), |p| p["lastTransitionTime"].clone())
    } else {
        json!(now)
    };
    let update = if same_status && same_reason && !changed {
        previous.map_or(json!(now), |p| p["lastUpdateTime"].clone())
    } else {
        json!(now)
    };
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": transition, "lastUpdateTime": update,
    })
}

fn write_status(ctx: &Ctx, d: &Value, new_rs: Option<&Value>, old: &[Value]) {
    let desired = replicas(d);
    let all: Vec<&Value> = new_rs.into_iter().chain(old.iter()).collect();
    let total_status: i64 = all.iter().map(|rs| status_i(rs, "replicas")).sum();
    let total_spec: i64 = all.iter().map(|rs| replicas(rs)).sum();
    let updated = new_rs.map_or(0, |rs| status_i(rs, "replicas"));
    let ready: i64 = all.iter().map(|rs| status_i(rs, "readyReplicas")).sum();
    let available: i64 = all.iter().map(|rs| status_i(rs, "availableReplicas")).sum();
    let (_, max_unavailable) = fenceposts(d, desired);
    let recreate = d["spec"]["strategy"]["type"] == "Recreate";
    let min_available = if recreate {
        desired
    } else {
        desired - max_unavailable
    };
    let previous = d["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let prev = |t: &str| previous.iter().find(|c| c["type"] == t);
    let available_cond = if available >= min_available {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            prev("Available"),
            false,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            prev("Available"),
            false,
        )
    };
    let progressed = d["status"]["updatedReplicas"].as_i64() != Some(updated)
        || d["status"]["availableReplicas"].as_i64() != Some(available)
        || d["status"]["readyReplicas"].as_i64() != Some(ready);
    let rs_name = new_rs.map_or("", |rs| util::name(rs));
    let complete =
        new_rs.is_some() && updated == desired && total_status == desired && available == desired;
    let progressing = if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            prev("Progressing"),
            false,
        )
    } else if new_rs.is_some() {
        let deadline = d["spec"]["progressDeadlineSeconds"].as_i64().unwrap_or(600);
        let last = prev("Progressing")
            .and_then(|p| p["lastUpdateTime"].as_str())
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        let stuck = !progressed
            && last.is_some_and(|t| {
                t + std::time::Duration::from_secs(deadline.max(0) as u64) < SystemTime::now()
            });
        if stuck {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                prev("Progressing"),
                false,
            )
        } else {
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
                prev("Progressing"),
                progressed,
            )
        }
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            "Waiting for old replicas to terminate.".into(),
            prev("Progressing"),
            progressed,
        )
    };
    let status = json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": total_status,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (total_spec - available).max(0),
        "conditions": [available_cond, progressing],
    });
    let mut status = status;
    // Zero counts are left out, as the API's omitempty does.
    if let Some(m) = status.as_object_mut() {
        m.retain(|k, v| {
            k == "observedGeneration"
                || k == "conditions"
                || k == "replicas"
                || v.as_i64() != Some(0)
        });
    }
    ctx.set_status(ctx.kinds.deployments, d, status);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencepost_table() {
        // (replicas, maxSurge, maxUnavailable, surge, unavailable)
        let table = [
            (1, json!("25%"), json!("25%"), 1, 0),
            (3, json!("25%"), json!("25%"), 1, 0),
            (4, json!("25%"), json!("25%"), 1, 1),
            (10, json!("25%"), json!("25%"), 3, 2),
            (6, json!("25%"), json!(0), 2, 0),
            (6, json!(0), json!(0), 0, 1),
            (3, json!(0), json!("0%"), 0, 1),
            (2, json!(1), json!(5), 1, 2),
        ];
        for (n, s, u, es, eu) in table {
            let d = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": s, "maxUnavailable": u}}}});
            assert_eq!(
                fenceposts(&d, n),
                (es, eu),
                "replicas {n} surge {s} unavailable {u}"
            );
        }
    }

    #[test]
    fn templates_compare_as_go_does_after_a_rollout_undo() {
        // kubectl 1.33 writes the zero creationTimestamp as null; a
        // protobuf body decoded here leaves it out; both are one template.
        let decoded = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x", "args": []}]}});
        let undone = json!({"metadata": {"creationTimestamp": null, "labels": {"app": "web", "pod-template-hash": "abc"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        assert_eq!(without_hash(&decoded), without_hash(&undone));
        assert_eq!(
            template_hash(&without_hash(&decoded)),
            template_hash(&without_hash(&undone))
        );
        // An empty struct is not absent (`emptyDir: {}` is a volume source).
        let with_empty = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
        assert_ne!(
            without_hash(&with_empty),
            without_hash(&json!({"spec": {"volumes": [{"name": "v"}]}}))
        );
    }

    #[test]
    fn template_hash_is_stable_and_sensitive() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let mut b = a.clone();
        b["metadata"]["labels"]["pod-template-hash"] = json!("zzz");
        assert_eq!(template_hash(&a), template_hash(&b));
        let mut c = a.clone();
        c["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/restartedAt": "now"});
        assert_ne!(template_hash(&a), template_hash(&c));
        assert!(
            template_hash(&a)
                .chars()
                .all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch))
        );
    }
}
