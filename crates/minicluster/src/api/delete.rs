//! Deletes: one object or a collection; pods gracefully, as the API server
//! does (a grace period, `deletionTimestamp`, then the kubelet's removal).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::{resources::ResourceKind, store::Store};

use super::{ApiError, ApiResult, ApiState, Request, json_ok, status};

/// Seconds of grace for a pod delete (the API server's rules: kubernetes/kubernetes
/// pkg/registry/core/pod/strategy.go `CheckGracefulDelete`).
pub(super) fn pod_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let unscheduled = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let terminal = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || terminal {
        return 0;
    }
    let grace = requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    if grace < 0 { 1 } else { grace }
}

/// Deletes a pod the way the API server does: gracefully (deletionTimestamp
/// = now + grace, the kubelet finishes it) unless the grace is 0.
pub(crate) fn delete_pod(
    state: &ApiState,
    namespace: &str,
    name: &str,
    requested_grace: Option<i64>,
    uid: Option<&str>,
) -> Result<Arc<Value>, ApiError> {
    let pods = pods_kind()?;
    graceful_delete_pod(&state.store, namespace, name, requested_grace, uid)
        .map_err(|e| ApiError::from_store(pods, e))
}

/// The store-level graceful pod delete, shared by the API and the controllers.
pub fn graceful_delete_pod(
    store: &Store,
    namespace: &str,
    name: &str,
    requested_grace: Option<i64>,
    uid: Option<&str>,
) -> Result<Arc<Value>, crate::store::StoreError> {
    let pods = ResourceKind::find("", "v1", "pods")
        .ok_or_else(|| crate::store::StoreError::Invalid("no pods resource".into()))?;
    let current = store.require(pods, namespace, name)?;
    if let Some(uid) = uid
        && current["metadata"]["uid"].as_str() != Some(uid)
    {
        return Err(crate::store::StoreError::Conflict {
            resource: "pods".into(),
            name: name.into(),
        });
    }
    let grace = pod_grace(&current, requested_grace);
    if grace == 0 {
        return store.delete(pods, namespace, name, uid);
    }
    store.update(pods, namespace, name, |pod| {
        let now = std::time::SystemTime::now();
        let secs = |s: i64| std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0));
        let meta = &pod["metadata"];
        let since = match meta["deletionGracePeriodSeconds"].as_i64() {
            // A later delete may only shorten the grace.
            Some(existing) if existing <= grace => return Ok(()),
            // A shorter one counts from the first delete: the API server
            // moves deletionTimestamp back by the old grace and on by the
            // new (apiserver registry/rest/delete.go BeforeDelete).
            Some(existing) => meta["deletionTimestamp"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .and_then(|t| t.checked_sub(secs(existing)))
                .unwrap_or(now),
            None => now,
        };
        let deadline = humantime::format_rfc3339_seconds(since + secs(grace)).to_string();
        pod["metadata"]["deletionTimestamp"] = json!(deadline);
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        Ok(())
    })
}

pub(super) fn pods_kind() -> Result<&'static ResourceKind, ApiError> {
    ResourceKind::find("", "v1", "pods").ok_or_else(|| ApiError::internal("no pods resource"))
}

/// The grace period and uid precondition of a delete: the query, else the
/// DeleteOptions body (JSON or protobuf; none is fine).
pub(super) fn delete_options(req: &Request) -> Result<(Option<i64>, Option<String>), ApiError> {
    let body = req.optional_object_body()?;
    let grace = req
        .query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| body["gracePeriodSeconds"].as_i64());
    let uid = body["preconditions"]["uid"].as_str().map(str::to_string);
    Ok((grace, uid))
}

pub(super) fn delete(state: &ApiState, req: &Request) -> ApiResult {
    let (grace, uid) = delete_options(req)?;
    if req.r.kind == "Pod" {
        let pod = delete_pod(state, req.ns(), req.name(), grace, uid.as_deref())?;
        return Ok(json_ok(&pod));
    }
    let gone = state
        .store
        .delete(req.r, req.ns(), req.name(), uid.as_deref())
        .map_err(|e| ApiError::from_store(req.r, e))?;
    Ok(json_ok(&status::success_status(
        req.r,
        req.name(),
        &gone["metadata"]["uid"],
    )))
}

pub(super) fn delete_collection(state: &ApiState, req: &Request) -> ApiResult {
    let (labels, fields) = req.selectors()?;
    let (items, _) = state.store.list(req.r, req.namespace.as_deref());
    let (grace, _) = delete_options(req)?;
    for o in items
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
    {
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        let name = o["metadata"]["name"].as_str().unwrap_or("");
        let result = if req.r.kind == "Pod" {
            delete_pod(state, ns, name, grace, None).map(|_| ())
        } else {
            state
                .store
                .delete(req.r, ns, name, None)
                .map(|_| ())
                .map_err(|e| ApiError::from_store(req.r, e))
        };
        match result {
            Ok(()) | Err(ApiError { code: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_ok(
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    ))
}
