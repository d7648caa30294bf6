//! The ReplicaSet controller: keeps `spec.replicas` active pods (terminating
//! pods no longer count, as in `IsPodActive`) and writes the status the
//! Deployment controller reads (`replicas`, `readyReplicas`,
//! `availableReplicas` after `minReadySeconds`).

use std::{cmp::Ordering, collections::HashMap, sync::Arc, time::SystemTime};

use serde_json::{Value, json};

use super::{Ctx, util};
use crate::api::{graceful_delete_pod, record_event};

/// The annotation that orders pods for scale-down (`PodDeletionCost`).
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// One pod as `ActivePodsWithRanks` sees it.
struct Ranked<'a> {
    pod: &'a Value,
    /// Active pods of the same owner (all ReplicaSets of its Deployment) on
    /// the pod's node, itself included.
    on_node: usize,
}

/// `podPhaseToOrdinal`: Pending < Unknown < Running.
fn phase_ordinal(pod: &Value) -> u8 {
    match pod["status"]["phase"].as_str() {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

/// `GetDeletionCostFromPodAnnotations`: an int32, 0 when absent or invalid.
fn deletion_cost(pod: &Value) -> i32 {
    pod["metadata"]["annotations"][DELETION_COST]
        .as_str()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn time_of(v: &Value) -> Option<SystemTime> {
    v.as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
}

/// `podReadyTime`: the Ready condition's lastTransitionTime while Ready.
fn ready_time(pod: &Value) -> Option<SystemTime> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| time_of(&c["lastTransitionTime"]))
}

/// `maxContainerRestarts`.
fn max_restarts(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["restartCount"].as_i64())
        .max()
        .unwrap_or(0)
}

/// `logarithmicRankDiff`'s rank: floor(log2(nanoseconds since `t`)), -1
/// for a time not in the past.
fn log2_rank(t: SystemTime, now: SystemTime) -> i64 {
    match now.duration_since(t) {
        Ok(d) if !d.is_zero() => (d.as_nanos() as f64).log2() as i64,
        _ => -1,
    }
}

/// Newer first, in log2 buckets of age with the UID as tie-break
/// (`LogarithmicScaleDown`); a missing time counts as the newest
/// (`afterOrZero`).
fn newer_first(
    a: Option<SystemTime>,
    b: Option<SystemTime>,
    uids: (&str, &str),
    now: SystemTime,
) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) if a == b => Ordering::Equal,
        (Some(a), Some(b)) => log2_rank(a, now)
            .cmp(&log2_rank(b, now))
            .then_with(|| uids.0.cmp(uids.1)),
    }
}

/// The scale-down order of `ActivePodsWithRanks.Less`
/// (kubernetes `pkg/controller/controller_utils.go`), first to delete
/// first: unscheduled; Pending < Unknown < Running; not ready; lower
/// `controller.kubernetes.io/pod-deletion-cost`; more pods of the same
/// owner on its node; ready more recently (log2 buckets of the time since
/// Ready, UID tie-break); more container restarts; created more recently
/// (log2 buckets, UID tie-break).
fn deletion_order(a: &Ranked, b: &Ranked, now: SystemTime) -> Ordering {
    let (pa, pb) = (a.pod, b.pod);
    let scheduled = |p: &Value| {
        p["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    };
    let uids = (util::uid(pa), util::uid(pb));
    scheduled(pa)
        .cmp(&scheduled(pb))
        .then_with(|| phase_ordinal(pa).cmp(&phase_ordinal(pb)))
        .then_with(|| util::pod_ready(pa).cmp(&util::pod_ready(pb)))
        .then_with(|| deletion_cost(pa).cmp(&deletion_cost(pb)))
        .then_with(|| b.on_node.cmp(&a.on_node))
        .then_with(|| {
            if util::pod_ready(pa) && util::pod_ready(pb) {
                newer_first(ready_time(pa), ready_time(pb), uids, now)
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| max_restarts(pb).cmp(&max_restarts(pa)))
        .then_with(|| {
            let created = |p: &Value| time_of(&p["metadata"]["creationTimestamp"]);
            newer_first(created(pa), created(pb), uids, now)
        })
}

/// The pods to delete to bring `active` down by `excess`
/// (`getPodsToDelete`): ranked with the active pods of every ReplicaSet of
/// the same Deployment (`getIndirectlyRelatedPods`) counted per node.
fn pods_to_delete<'a>(
    active: &[&'a Value],
    related: &[&Value],
    excess: usize,
    now: SystemTime,
) -> Vec<&'a Value> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| util::pod_active(p)) {
        *per_node
            .entry(p["spec"]["nodeName"].as_str().unwrap_or(""))
            .or_default() += 1;
    }
    let mut ranked: Vec<Ranked> = active
        .iter()
        .map(|&pod| Ranked {
            pod,
            on_node: per_node
                .get(pod["spec"]["nodeName"].as_str().unwrap_or(""))
                .copied()
                .unwrap_or(0),
        })
        .collect();
    ranked.sort_by(|a, b| deletion_order(a, b, now));
    ranked.into_iter().take(excess).map(|r| r.pod).collect()
}

/// One pass over every ReplicaSet.
pub fn sync(ctx: &Ctx) {
    let now = SystemTime::now();
    let (rss, _) = ctx.store.list(ctx.kinds.replicasets, None);
    let (pods, _) = ctx.store.list(ctx.kinds.pods, None);
    for rs in &rss {
        let ns = util::namespace(rs).to_string();
        let owned: Vec<&Value> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| util::namespace(p) == ns && util::controller_uid(p) == Some(util::uid(rs)))
            .collect();
        let active: Vec<&Value> = owned
            .iter()
            .copied()
            .filter(|p| util::pod_active(p))
            .collect();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        if active.len() < want {
            for _ in active.len()..want {
                create_pod(ctx, rs);
            }
        } else if active.len() > want {
            let related = related_pods(&rss, rs, &pods);
            for pod in pods_to_delete(&active, &related, active.len() - want, now) {
                let pod_name = util::name(pod);
                if graceful_delete_pod(&ctx.store, &ns, pod_name, None, Some(util::uid(pod)))
                    .is_ok()
                {
                    record_event(
                        &ctx.store,
                        rs,
                        "Normal",
                        "SuccessfulDelete",
                        &format!("Deleted pod: {pod_name}"),
                        "replicaset-controller",
                        None,
                    );
                }
            }
        }
        // Status from the pods as they are now.
        let (pods_now, _) = ctx.store.list(ctx.kinds.pods, Some(&ns));
        let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
        let mine: Vec<&Value> = pods_now
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| util::controller_uid(p) == Some(util::uid(rs)) && util::pod_active(p))
            .collect();
        let ready = mine.iter().filter(|p| util::pod_ready(p)).count();
        let available = mine
            .iter()
            .filter(|p| util::pod_available(p, min_ready, now))
            .count();
        for p in &mine {
            if util::pod_ready(p)
                && !util::pod_available(p, min_ready, now)
                && let Some(at) = util::available_at(p, min_ready)
            {
                ctx.wake_at(at);
            }
        }
        let generation = rs["metadata"]["generation"].clone();
        let status = json!({
            "replicas": mine.len(),
            "fullyLabeledReplicas": mine.len(),
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": generation,
        });
        ctx.set_status(ctx.kinds.replicasets, rs, status);
    }
}

/// The pods of every ReplicaSet with the same controller as `rs` (its
/// Deployment), or of `rs` alone when it has none.
fn related_pods<'a>(rss: &[Arc<Value>], rs: &Value, pods: &'a [Arc<Value>]) -> Vec<&'a Value> {
    let ns = util::namespace(rs);
    let siblings: Vec<&str> = match util::controller_uid(rs) {
        Some(owner) => rss
            .iter()
            .filter(|r| util::namespace(r) == ns && util::controller_uid(r) == Some(owner))
            .map(|r| util::uid(r))
            .collect(),
        None => vec![util::uid(rs)],
    };
    pods.iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            util::namespace(p) == ns
                && util::controller_uid(p).is_some_and(|o| siblings.contains(&o))
        })
        .collect()
}

fn create_pod(ctx: &Ctx, rs: &Value) {
    let template = &rs["spec"]["template"];
    let rs_name = util::name(rs);
    let mut metadata = json!({
        "generateName": format!("{rs_name}-"),
        "labels": template["metadata"]["labels"].clone(),
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
            "uid": util::uid(rs), "controller": true, "blockOwnerDeletion": true,
        }],
    });
    if template["metadata"]["annotations"].is_object() {
        metadata["annotations"] = template["metadata"]["annotations"].clone();
    }
    let pod = json!({
        "metadata": metadata,
        "spec": template["spec"].clone(),
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    });
    if let Ok(created) = ctx.store.create(ctx.kinds.pods, util::namespace(rs), pod) {
        record_event(
            &ctx.store,
            rs,
            "Normal",
            "SuccessfulCreate",
            &format!("Created pod: {}", util::name(&created)),
            "replicaset-controller",
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A running pod on `node`, ready `ready_ago` seconds before `now`
    /// (not ready for `None`).
    fn pod(uid: &str, node: &str, ready_ago: Option<u64>, now: SystemTime) -> Value {
        let ready = ready_ago.map(|ago| {
            let at = humantime::format_rfc3339_seconds(now - Duration::from_secs(ago));
            json!({"type": "Ready", "status": "True", "lastTransitionTime": at.to_string()})
        });
        json!({
            "metadata": {"name": uid, "uid": uid, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": node},
            "status": {"phase": "Running", "conditions": ready.into_iter().collect::<Vec<_>>(),
                       "containerStatuses": [{"restartCount": 0}]},
        })
    }

    fn first(pods: &[Value], now: SystemTime) -> String {
        let refs: Vec<&Value> = pods.iter().collect();
        let picked = pods_to_delete(&refs, &refs, 1, now);
        util::uid(picked[0]).to_string()
    }

    #[test]
    fn deletion_cost_comes_before_ready_time() {
        let now = SystemTime::now();
        let mut old = pod("a", "n1", Some(1000), now);
        old["metadata"]["annotations"] =
            json!({"controller.kubernetes.io/pod-deletion-cost": "-1"});
        let new = pod("b", "n1", Some(10), now);
        assert_eq!(first(&[new.clone(), old], now), "a");
        // An invalid cost counts as 0.
        let mut bad = pod("c", "n1", Some(1000), now);
        bad["metadata"]["annotations"] = json!({"controller.kubernetes.io/pod-deletion-cost": "x"});
        assert_eq!(first(&[bad, new], now), "b");
    }

    #[test]
    fn not_ready_then_doubled_up_nodes_go_first() {
        let now = SystemTime::now();
        let pods = [
            pod("a", "n1", Some(10), now),
            pod("b", "n2", Some(2000), now),
            pod("c", "n2", Some(2000), now),
        ];
        // b and c share n2: one of them goes before the newer a.
        assert_ne!(first(&pods, now), "a");
        let mut with_unready = pods.to_vec();
        with_unready.push(pod("d", "n3", None, now));
        assert_eq!(first(&with_unready, now), "d");
    }

    #[test]
    fn ready_times_in_one_log2_bucket_tie_break_on_uid_then_restarts() {
        let now = SystemTime::now();
        // 100 s and 110 s ago share floor(log2(ns)) = 36: the UID decides,
        // not which became ready last.
        let pods = [
            pod("b", "n1", Some(100), now),
            pod("a", "n2", Some(110), now),
        ];
        assert_eq!(first(&pods, now), "a");
        // Different buckets: the more recently ready goes first.
        let pods = [
            pod("b", "n1", Some(10), now),
            pod("a", "n2", Some(110), now),
        ];
        assert_eq!(first(&pods, now), "b");
        // Same ready time: more restarts go first.
        let mut restarted = pod("z", "n1", Some(100), now);
        restarted["status"]["containerStatuses"][0]["restartCount"] = json!(3);
        let pods = [pod("a", "n2", Some(100), now), restarted];
        assert_eq!(first(&pods, now), "z");
    }
}
