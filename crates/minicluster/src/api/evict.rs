//! The eviction subresource (`POST pods/NAME/eviction`), as
//! `pkg/registry/core/pod/storage/eviction.go` admits it: a pod covered by a
//! PodDisruptionBudget is deleted only while the budget allows a disruption;
//! otherwise 429 TooManyRequests with the budget's Status cause, which
//! `kubectl drain` retries every 5 s.

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, ApiState, LabelSelector, Request, delete_pod, pods_kind};
use crate::{resources::ResourceKind, store::now_rfc3339};

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub(super) fn evict(state: &ApiState, req: &Request) -> ApiResult {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    // kube-rs sends no apiVersion/kind and a snake_case key; be lenient.
    if let Some(n) = body["metadata"]["name"].as_str()
        && n != req.name()
    {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let options = if body["deleteOptions"].is_null() {
        &body["delete_options"]
    } else {
        &body["deleteOptions"]
    };
    let grace = options["gracePeriodSeconds"].as_i64();
    let pods = pods_kind()?;
    let pod = state
        .store
        .require(pods, req.ns(), req.name())
        .map_err(|e| ApiError::from_store(pods, e))?;
    let success = || {
        (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
                .to_string(),
        )
            .into_response()
    };
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed" | "Pending")
        || !pod["metadata"]["deletionTimestamp"].is_null()
    {
        delete_pod(state, req.ns(), req.name(), grace, None)?;
        return Ok(success());
    }
    let pdb_kind = ResourceKind::find("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("no poddisruptionbudgets resource"))?;
    let (pdbs, _) = state.store.list(pdb_kind, Some(req.ns()));
    let matching: Vec<_> = pdbs
        .iter()
        .filter(|pdb| {
            let sel = &pdb["spec"]["selector"]["matchLabels"];
            // An empty selector matches nothing (policy/v1 semantics for eviction).
            sel.as_object().is_some_and(|m| !m.is_empty())
                && sel
                    .as_object()
                    .is_some_and(|m| LabelSelector::from_match_labels(m).matches(&pod))
        })
        .collect();
    let pdb = match matching.as_slice() {
        [] => {
            delete_pod(state, req.ns(), req.name(), grace, None)?;
            return Ok(success());
        }
        [one] => (*one).clone(),
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
    };
    let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
    let status = &pdb["status"];
    let current_healthy = status["currentHealthy"].as_i64().unwrap_or(0);
    let desired_healthy = status["desiredHealthy"].as_i64().unwrap_or(0);
    if !is_ready(&pod) && current_healthy >= desired_healthy && desired_healthy > 0 {
        delete_pod(state, req.ns(), req.name(), grace, None)?;
        return Ok(success());
    }
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
    if observed < generation {
        let mut e = ApiError::too_many_requests(
            "Cannot evict pod as it would violate the pod's disruption budget.",
            vec![
                json!({"reason": "DisruptionBudget", "message": format!("The disruption budget {pdb_name} is still being processed by the server.")}),
            ],
        );
        if let Some(d) = e.details.as_mut() {
            d["retryAfterSeconds"] = json!(10);
        }
        return Err(e);
    }
    // Check and decrement under the store's lock, so two evictions cannot
    // both spend the last allowed disruption.
    let pod_name = req.name().to_string();
    let refused = || {
        ApiError::too_many_requests(
            "Cannot evict pod as it would violate the pod's disruption budget.",
            vec![json!({
                "reason": "DisruptionBudget",
                "message": format!("The disruption budget {pdb_name} needs {desired_healthy} healthy pods and has {current_healthy} currently"),
            })],
        )
    };
    let decremented = state
        .store
        .try_update(pdb_kind, req.ns(), &pdb_name, |pdb| {
            let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
            if allowed <= 0 {
                return Err(super::WriteError::Api(refused()));
            }
            pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
            if !pdb["status"]["disruptedPods"].is_object() {
                pdb["status"]["disruptedPods"] = json!({});
            }
            pdb["status"]["disruptedPods"][&pod_name] = json!(now_rfc3339());
            Ok(())
        });
    decremented.map_err(|e| e.into_api(pdb_kind))?;
    delete_pod(state, req.ns(), req.name(), grace, None)?;
    Ok(success())
}
