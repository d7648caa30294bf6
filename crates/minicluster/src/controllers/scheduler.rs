//! The scheduler: binds each unscheduled pod to the schedulable, Ready node
//! with the fewest pods (spreading replicas across `embedded-node-1…N`), and
//! never to a cordoned node.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Ctx, util};
use crate::{api::record_event, store::now_rfc3339};

/// One pass over pending pods.
pub fn sync(ctx: &Ctx) {
    let (pods, _) = ctx.store.list(ctx.kinds.pods, None);
    let (nodes, _) = ctx.store.list(ctx.kinds.nodes, None);
    let mut load: BTreeMap<String, usize> = nodes
        .iter()
        .filter(|n| {
            n["spec"]["unschedulable"] != json!(true)
                && n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .map(|n| (util::name(n).to_string(), 0))
        .collect();
    for p in &pods {
        if let Some(n) = p["spec"]["nodeName"].as_str()
            && !util::pod_terminal(p)
            && let Some(count) = load.get_mut(n)
        {
            *count += 1;
        }
    }
    let mut pending: Vec<_> = pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].as_str().is_none_or(str::is_empty) && util::pod_active(p))
        .collect();
    pending.sort_by_key(|p| util::created(p));
    for pod in pending {
        let ns = util::namespace(pod).to_string();
        let name = util::name(pod).to_string();
        let Some((node, _)) = load
            .iter()
            .min_by_key(|(n, c)| (**c, (*n).clone()))
            .map(|(n, c)| (n.clone(), *c))
        else {
            let already = pod["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            });
            if !already {
                let _ = ctx.store.update(ctx.kinds.pods, &ns, &name, |p| {
                    p["status"]["conditions"] = json!([{
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/N nodes are available: all nodes are unschedulable or not ready.",
                        "lastTransitionTime": now_rfc3339(),
                    }]);
                    Ok(())
                });
                record_event(
                    &ctx.store,
                    pod,
                    "Warning",
                    "FailedScheduling",
                    "0 nodes are available: all nodes are unschedulable or not ready.",
                    "default-scheduler",
                    None,
                );
            }
            continue;
        };
        let bound = ctx.store.update(ctx.kinds.pods, &ns, &name, |p| {
            if p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            {
                return Ok(());
            }
            p["spec"]["nodeName"] = json!(node);
            p["status"]["conditions"] = json!([{
                "type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339(),
            }]);
            Ok(())
        });
        if let Ok(bound) = bound {
            if let Some(count) = load.get_mut(&node) {
                *count += 1;
            }
            record_event(
                &ctx.store,
                &bound,
                "Normal",
                "Scheduled",
                &format!("Successfully assigned {ns}/{name} to {node}"),
                "default-scheduler",
                None,
            );
        }
    }
}
