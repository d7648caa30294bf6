//! The ReplicaSet controller: keeps `spec.replicas` active pods (terminating
//! pods no longer count, as in `IsPodActive`) and writes the status the
//! Deployment controller reads (`replicas`, `readyReplicas`,
//! `availableReplicas` after `minReadySeconds`).

use std::time::SystemTime;

use serde_json::{Value, json};

use super::{Ctx, util};
use crate::api::{graceful_delete_pod, record_event};

/// Rank for deletion when scaling down (lower goes first), after
/// `ActivePodsWithRanks`: unscheduled, pending, not ready, then the most
/// recently ready and the newest first.
fn deletion_rank(
    pod: &Value,
) -> (
    bool,
    u8,
    bool,
    std::cmp::Reverse<String>,
    std::cmp::Reverse<String>,
) {
    let scheduled = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let phase = match pod["status"]["phase"].as_str() {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready_since = pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or("")
        .to_string();
    (
        scheduled,
        phase,
        util::pod_ready(pod),
        std::cmp::Reverse(ready_since),
        std::cmp::Reverse(util::created(pod).0),
    )
}

/// One pass over every ReplicaSet.
pub fn sync(ctx: &Ctx) {
    let now = SystemTime::now();
    let (rss, _) = ctx.store.list(ctx.kinds.replicasets, None);
    let (pods, _) = ctx.store.list(ctx.kinds.pods, None);
    for rs in rss {
        let ns = util::namespace(&rs).to_string();
        let owned: Vec<&Value> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| util::namespace(p) == ns && util::controller_uid(p) == Some(util::uid(&rs)))
            .collect();
        let mut active: Vec<&Value> = owned
            .iter()
            .copied()
            .filter(|p| util::pod_active(p))
            .collect();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        if active.len() < want {
            for _ in active.len()..want {
                create_pod(ctx, &rs);
            }
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            for pod in active.iter().take(active.len() - want) {
                let pod_name = util::name(pod);
                if graceful_delete_pod(&ctx.store, &ns, pod_name, None, Some(util::uid(pod)))
                    .is_ok()
                {
                    record_event(
                        &ctx.store,
                        &rs,
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
            .filter(|p| util::controller_uid(p) == Some(util::uid(&rs)) && util::pod_active(p))
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
        ctx.set_status(ctx.kinds.replicasets, &rs, status);
    }
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
