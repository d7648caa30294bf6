//! Writes: create, replace and patch (with the `status` subresource), each
//! admitted (kind, validation, allocations, resourceVersion) inside the
//! store's lock.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use serde_json::{Value, json};

use crate::resources::ResourceKind;

use super::{
    ApiError, ApiResult, ApiState, PatchKind, Request, patch,
    read::{require_namespace, respond_object},
    validate,
};

/// Server-side fields of a new object: Service addresses and node ports.
pub(super) fn allocate(state: &ApiState, r: &ResourceKind, obj: &mut Value) {
    if r.kind != "Service" {
        return;
    }
    if obj["spec"]["clusterIP"].as_str().is_none_or(str::is_empty) {
        let ports: Vec<u16> = obj["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
            .collect();
        let ip = state.allocate_cluster_ip(&ports);
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
    }
    if matches!(
        obj["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    ) && let Some(ports) = obj["spec"]["ports"].as_array_mut()
    {
        for p in ports {
            if p["nodePort"].is_null() {
                p["nodePort"] = json!(state.allocate_node_port());
            }
        }
    }
}

/// A new namespace is `Active`, finalized by `kubernetes` and labelled with
/// its name (kubernetes/kubernetes pkg/registry/core/namespace/strategy.go
/// `PrepareForCreate`, `Canonicalize`).
fn prepare_namespace(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    o.insert("status".into(), json!({"phase": "Active"}));
    if let Some(spec) = o.entry("spec").or_insert_with(|| json!({})).as_object_mut() {
        spec.insert("finalizers".into(), json!(["kubernetes"]));
    }
    let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(name) = meta.get("name").filter(|n| n.is_string()).cloned()
        && let Some(labels) = meta
            .entry("labels")
            .or_insert_with(|| json!({}))
            .as_object_mut()
    {
        labels.insert("kubernetes.io/metadata.name".into(), name);
    }
}

pub(super) fn create(state: &ApiState, req: &Request) -> ApiResult {
    let mut obj = req.object_body()?;
    check_kind(req.r, &obj)?;
    if let (Some(body_ns), true) = (obj["metadata"]["namespace"].as_str(), req.r.namespaced)
        && !body_ns.is_empty()
        && body_ns != req.ns()
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object does not match the namespace sent on the request ({body_ns} vs {})",
            req.ns()
        )));
    }
    require_namespace(state, req)?;
    validate::check_types(req.r, &obj)?;
    if req.strict() {
        validate::check_unknown_fields(req.r, &obj)?;
    }
    validate::apply_defaults(req.r, &mut obj);
    validate::validate(req.r, &obj)?;
    allocate(state, req.r, &mut obj);
    if req.r.kind == "Namespace" {
        prepare_namespace(&mut obj);
    }
    if req.dry_run() {
        return Ok(respond_object(req, StatusCode::CREATED, &obj));
    }
    let created = state
        .store
        .create(req.r, req.ns(), obj)
        .map_err(|e| ApiError::from_store(req.r, e))?;
    Ok(respond_object(req, StatusCode::CREATED, &created))
}

pub(super) fn check_kind(r: &ResourceKind, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if let Some(kind) = obj["kind"].as_str()
        && kind != r.kind
    {
        return Err(ApiError::bad_request(format!(
            "the body kind {kind:?} does not match the resource {:?}",
            r.kind
        )));
    }
    Ok(())
}

/// Copies the parts of `current` a write to the main resource may not change
/// (status, deletion markers), or for a status write, everything but status.
pub(super) fn merge_write(r: &ResourceKind, current: &Value, next: &mut Value, status_only: bool) {
    let has_status = r.subresource("status").is_some();
    if status_only {
        let status = next.get("status").cloned();
        *next = current.clone();
        if let Some(status) = status {
            next["status"] = status;
        }
        return;
    }
    if has_status {
        match current.get("status") {
            Some(s) => next["status"] = s.clone(),
            None => {
                if let Some(o) = next.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
        match current["metadata"].get(field) {
            Some(v) => next["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
}

pub(super) fn replace(state: &ApiState, req: &Request, status_only: bool) -> ApiResult {
    let mut body = req.object_body()?;
    check_kind(req.r, &body)?;
    if let Some(n) = body["metadata"]["name"].as_str()
        && n != req.name()
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({})",
            req.name()
        )));
    }
    if req.strict() && !status_only {
        validate::check_unknown_fields(req.r, &body)?;
    }
    let want_rv = body["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string);
    let r = req.r;
    let result = state.store.try_update(r, req.ns(), req.name(), |current| {
        check_version(r, req.name(), current, want_rv.as_deref())?;
        merge_write(r, current, &mut body, status_only);
        admit(r, &mut body, status_only)?;
        *current = std::mem::take(&mut body);
        Ok(())
    });
    finish_write(req, result)
}

/// Why a write inside the store's lock was refused: a store error (mapped to
/// a Status for the resource at the end) or a Status decided by the API.
pub(super) enum WriteError {
    Store(crate::store::StoreError),
    Api(ApiError),
}

impl From<crate::store::StoreError> for WriteError {
    fn from(e: crate::store::StoreError) -> Self {
        WriteError::Store(e)
    }
}

impl From<ApiError> for WriteError {
    fn from(e: ApiError) -> Self {
        WriteError::Api(e)
    }
}

impl WriteError {
    pub(super) fn into_api(self, r: &ResourceKind) -> ApiError {
        match self {
            WriteError::Store(e) => ApiError::from_store(r, e),
            WriteError::Api(e) => e,
        }
    }
}

/// The conflict a stale `metadata.resourceVersion` precondition produces.
pub(super) fn check_version(
    r: &ResourceKind,
    name: &str,
    current: &Value,
    want: Option<&str>,
) -> Result<(), WriteError> {
    match want {
        Some(want) if current["metadata"]["resourceVersion"].as_str() != Some(want) => {
            Err(WriteError::Store(crate::store::StoreError::Conflict {
                resource: r.qualified(),
                name: name.to_string(),
            }))
        }
        _ => Ok(()),
    }
}

/// The response for a write's result.
pub(super) fn finish_write(req: &Request, result: Result<Arc<Value>, WriteError>) -> ApiResult {
    let obj = result.map_err(|e| e.into_api(req.r))?;
    Ok(respond_object(req, StatusCode::OK, &obj))
}

/// Runs the admission checks inside a store update: an error aborts the write.
pub(super) fn admit(r: &ResourceKind, obj: &mut Value, status_only: bool) -> Result<(), ApiError> {
    if status_only {
        return Ok(());
    }
    validate::check_types(r, obj)?;
    validate::apply_defaults(r, obj);
    validate::validate(r, obj)
}

pub(super) fn patch(state: &ApiState, req: &Request, status_only: bool) -> ApiResult {
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = PatchKind::from_content_type(ct)
        .ok_or_else(|| ApiError::unsupported_media_type(ct, patch::MEDIA_TYPES))?;
    let patch_body = req.json_body()?;
    let r = req.r;
    let name = req.name().to_string();
    let strict = req.strict();
    if kind == PatchKind::Apply && state.store.get(r, req.ns(), req.name()).is_none() {
        // Server-side apply of a missing object creates it.
        let mut obj = patch_body;
        obj["metadata"]["name"] = json!(name);
        require_namespace(state, req)?;
        validate::check_types(r, &obj)?;
        validate::apply_defaults(r, &mut obj);
        validate::validate(r, &obj)?;
        allocate(state, r, &mut obj);
        let created = state
            .store
            .create(r, req.ns(), obj)
            .map_err(|e| ApiError::from_store(r, e))?;
        return Ok(respond_object(req, StatusCode::CREATED, &created));
    }
    let result = state.store.try_update(r, req.ns(), req.name(), |current| {
        check_version(
            r,
            &name,
            current,
            patch_body["metadata"]["resourceVersion"].as_str(),
        )?;
        let mut next = current.clone();
        patch::apply(kind, &mut next, &patch_body).map_err(ApiError::bad_request)?;
        merge_write(r, current, &mut next, status_only);
        if strict && !status_only {
            validate::check_unknown_fields(r, &next)?;
        }
        admit(r, &mut next, status_only)?;
        *current = next;
        Ok(())
    });
    finish_write(req, result)
}
