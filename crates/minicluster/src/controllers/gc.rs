//! The garbage collector, background propagation: an object whose controller
//! owner is gone is deleted (ReplicaSets of a deleted Deployment, their pods
//! gracefully, EndpointSlices of a deleted Service).

use std::collections::HashSet;

use super::{Ctx, util};
use crate::api::graceful_delete_pod;

/// One pass.
pub fn sync(ctx: &Ctx) {
    let owners: HashSet<String> = [
        ctx.kinds.deployments,
        ctx.kinds.replicasets,
        ctx.kinds.services,
    ]
    .into_iter()
    .flat_map(|k| ctx.store.list(k, None).0)
    .map(|o| util::uid(&o).to_string())
    .collect();
    for kind in [ctx.kinds.replicasets, ctx.kinds.endpointslices] {
        for o in ctx.store.list(kind, None).0 {
            if let Some(owner) = util::controller_uid(&o)
                && !owners.contains(owner)
            {
                let _ = ctx.store.delete(
                    kind,
                    util::namespace(&o),
                    util::name(&o),
                    Some(util::uid(&o)),
                );
            }
        }
    }
    for pod in ctx.store.list(ctx.kinds.pods, None).0 {
        if let Some(owner) = util::controller_uid(&pod)
            && !owners.contains(owner)
            && pod["metadata"]["deletionTimestamp"].is_null()
        {
            let _ = graceful_delete_pod(
                &ctx.store,
                util::namespace(&pod),
                util::name(&pod),
                None,
                Some(util::uid(&pod)),
            );
        }
    }
}
