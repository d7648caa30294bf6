//! The `scale` subresource of Deployments and ReplicaSets.

use axum::http::{Method, header};
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, ApiState, PatchKind, Request, json_ok, patch,
    write::{WriteError, check_version},
};

pub(super) fn scale_object(o: &Value) -> Value {
    let selector = o["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": o["metadata"]["name"],
            "namespace": o["metadata"]["namespace"],
            "uid": o["metadata"]["uid"],
            "resourceVersion": o["metadata"]["resourceVersion"],
            "creationTimestamp": o["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": o["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": o["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

pub(super) fn scale(state: &ApiState, req: &Request, method: Method) -> ApiResult {
    let r = req.r;
    match method {
        Method::GET => {
            let o = state
                .store
                .require(r, req.ns(), req.name())
                .map_err(|e| ApiError::from_store(r, e))?;
            Ok(json_ok(&scale_object(&o)))
        }
        Method::PUT | Method::PATCH => {
            let (kind, body) = if method == Method::PUT {
                (None, req.object_body()?)
            } else {
                let ct = req
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let kind = PatchKind::from_content_type(ct)
                    .ok_or_else(|| ApiError::unsupported_media_type(ct, patch::MEDIA_TYPES))?;
                (Some(kind), req.json_body()?)
            };
            let result = state.store.try_update(r, req.ns(), req.name(), |current| {
                let mut s = scale_object(current);
                match kind {
                    None => {
                        check_version(
                            r,
                            req.name(),
                            current,
                            body["metadata"]["resourceVersion"].as_str(),
                        )?;
                        s = body.clone();
                    }
                    Some(k) => patch::apply(k, &mut s, &body).map_err(ApiError::bad_request)?,
                }
                let replicas = s["spec"]["replicas"].as_i64().unwrap_or(0);
                if replicas < 0 {
                    return Err(WriteError::Api(ApiError::invalid(
                        r,
                        req.name(),
                        vec![(
                            "spec.replicas".into(),
                            format!(
                                "Invalid value: {replicas}: must be greater than or equal to 0"
                            ),
                        )],
                    )));
                }
                current["spec"]["replicas"] = json!(replicas);
                Ok(())
            });
            let o = result.map_err(|e| e.into_api(r))?;
            Ok(json_ok(&scale_object(&o)))
        }
        _ => Err(ApiError::method_not_allowed(
            "only get, update and patch on scale",
        )),
    }
}
