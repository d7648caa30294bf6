//! Reads: list, get (with the `status` subresource) and pod logs.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::resources::ResourceKind;

use super::{
    ApiError, ApiResult, ApiState, Request, delete::pods_kind, json_ok, json_response, table,
};

/// `GET pods/NAME/log` (`kubectl logs`): the container's output as the
/// kubelet wrote it; `tailLines` honoured.
pub(super) fn logs(state: &ApiState, req: &Request) -> ApiResult {
    let pods = pods_kind()?;
    state
        .store
        .require(pods, req.ns(), req.name())
        .map_err(|e| ApiError::from_store(pods, e))?;
    let path = state
        .logs
        .get()
        .and_then(|lookup| lookup(req.ns(), req.name()))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "container in pod \"{}\" has not started",
                req.name()
            ))
        })?;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let text = match req
        .query
        .get("tailLines")
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let mut tail = lines[lines.len().saturating_sub(n)..].join("\n");
            tail.push('\n');
            tail
        }
        None => text,
    };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response())
}

pub(super) fn respond_object(req: &Request, code: StatusCode, object: &Value) -> Response {
    if table::wants_table(req.accept()) {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let include = table::include_object(req.query.get("includeObject"));
        return json_response(code, &table::table(req.r, &[object], rv, true, include));
    }
    json_response(code, object)
}

pub(super) fn list(state: &ApiState, req: &Request) -> ApiResult {
    let (labels, fields) = req.selectors()?;
    let (items, rv) = state
        .store
        .list(req.r, req.namespace.as_deref().filter(|_| req.r.namespaced));
    let items: Vec<&Value> = items
        .iter()
        .map(|a| a.as_ref())
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect();
    if table::wants_table(req.accept()) {
        let include = table::include_object(req.query.get("includeObject"));
        return Ok(json_ok(&table::table(req.r, &items, rv, true, include)));
    }
    Ok(json_ok(&json!({
        "kind": req.r.list_kind(),
        "apiVersion": req.r.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })))
}

pub(super) fn get_one(state: &ApiState, req: &Request) -> ApiResult {
    let obj = state
        .store
        .require(req.r, req.ns(), req.name())
        .map_err(|e| ApiError::from_store(req.r, e))?;
    Ok(respond_object(req, StatusCode::OK, &obj))
}

pub(super) fn require_namespace(state: &ApiState, req: &Request) -> Result<(), ApiError> {
    if req.r.namespaced {
        let ns_kind = ResourceKind::find("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("no namespaces resource"))?;
        state
            .store
            .require(ns_kind, "", req.ns())
            .map_err(|e| ApiError::from_store(ns_kind, e))?;
    }
    Ok(())
}
