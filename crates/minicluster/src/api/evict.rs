//! The eviction subresource (`POST pods/NAME/eviction`), as
//! `pkg/registry/core/pod/storage/eviction.go` (`EvictionREST.Create`)
//! admits it:
//! - a terminal, Pending or already deleting pod is deleted at once
//!   (`canIgnorePDB`);
//! - the PodDisruptionBudgets of the namespace whose selector
//!   (`LabelSelectorAsSelector`: `{}` every pod, `null` none,
//!   `matchExpressions` too) matches the pod are found; more than one is a
//!   500;
//! - a pod that is not Ready is deleted without spending the budget when the
//!   budget's `unhealthyPodEvictionPolicy` is `AlwaysAllow`, or (the default
//!   `IfHealthyBudget`) when `currentHealthy >= desiredHealthy > 0`; the
//!   delete then carries the pod's resourceVersion, and a pod that changed
//!   meanwhile answers 429 so the client retries;
//! - otherwise `checkAndDecrement`: 429 while the controller has not seen
//!   the budget's generation (`Retry-After: 10`), 403 for a negative budget
//!   or too many unconfirmed evictions, 429 when no disruption is allowed
//!   (no `Retry-After`: `retryAfterSeconds` is 0, which `kubectl drain`
//!   retries every 5 s), else one disruption is spent and the pod recorded in
//!   `disruptedPods`;
//! - the evicted pod gets the `DisruptionTarget` condition
//!   (`EvictionByEvictionAPI`, `addConditionAndDeletePod`) and is deleted
//!   gracefully with the request's DeleteOptions.
//!
//! `dryRun` (the query or `deleteOptions.dryRun`) checks everything and
//! writes nothing, as upstream's dry-run eviction does.

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, ApiState, LabelSelector, Request, WriteError, delete_pod, pods_kind,
};
use crate::{resources::ResourceKind, store::now_rfc3339};

/// `MaxDisruptedPodSize`: more unconfirmed evictions than this and the budget refuses (403).
const MAX_DISRUPTED_POD_SIZE: usize = 2000;

/// The refusal every budget-blocked eviction carries.
const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// How many times an eviction re-reads a pod that changed under it
/// (`EvictionsRetry` has 20 steps).
const CONFLICT_RETRIES: usize = 20;

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// `canIgnorePDB`: terminal, Pending or already being deleted.
fn can_ignore_pdb(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str().unwrap_or("Pending"),
        "Succeeded" | "Failed" | "Pending"
    ) || !pod["metadata"]["deletionTimestamp"].is_null()
}

/// `shouldEnforceResourceVersion`: every pod but a terminal or deleting one.
fn should_enforce_resource_version(pod: &Value) -> bool {
    !matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) && pod["metadata"]["deletionTimestamp"].is_null()
}

/// `createTooManyRequestsError`: the budget is being processed, retry in 10 s.
fn still_processing(pdb_name: &str) -> ApiError {
    let mut e = ApiError::too_many_requests(
        REFUSED,
        vec![json!({
            "reason": "DisruptionBudget",
            "message": format!("The disruption budget {pdb_name} is still being processed by the server."),
        })],
    );
    if let Some(d) = e.details.as_mut() {
        d["retryAfterSeconds"] = json!(10);
    }
    e
}

/// `errors.NewForbidden(policy.Resource("poddisruptionbudget"), name, err)`.
fn forbidden(pdb_name: &str, why: &str) -> ApiError {
    let mut e = ApiError::forbidden(format!(
        "poddisruptionbudget.policy \"{pdb_name}\" is forbidden: {why}"
    ));
    e.details = Some(json!({"name": pdb_name, "group": "policy", "kind": "poddisruptionbudget"}));
    e
}

/// What the request asks of the delete.
struct Options {
    grace: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

impl Options {
    fn read(req: &Request, body: &Value) -> Options {
        // kube-rs sends a snake_case key; kubectl the API's camelCase.
        let options = if body["deleteOptions"].is_null() {
            &body["delete_options"]
        } else {
            &body["deleteOptions"]
        };
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        Options {
            grace: options["gracePeriodSeconds"].as_i64(),
            uid: text(&options["preconditions"]["uid"]),
            resource_version: text(&options["preconditions"]["resourceVersion"]),
            dry_run: req.dry_run() || options["dryRun"].as_array().is_some_and(|a| !a.is_empty()),
        }
    }
}

fn conflict(name: &str, why: String) -> ApiError {
    let mut e = ApiError::conflict(format!(
        "Operation cannot be fulfilled on Pod \"{name}\": {why}"
    ));
    e.details = Some(json!({"name": name, "kind": "Pod"}));
    e
}

/// `addConditionAndDeletePod`: the `DisruptionTarget` condition on the
/// latest pod (checking the preconditions against it), then the graceful
/// delete. A dry run checks the preconditions and writes nothing.
fn add_condition_and_delete(
    state: &ApiState,
    req: &Request,
    options: &Options,
    resource_version: Option<&str>,
) -> Result<(), ApiError> {
    let pods = pods_kind()?;
    let name = req.name();
    let check = |pod: &Value| -> Result<(), ApiError> {
        if let Some(uid) = options.uid.as_deref()
            && pod["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(conflict(
                name,
                format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                    pod["metadata"]["uid"].as_str().unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = resource_version
            && pod["metadata"]["resourceVersion"].as_str() != Some(rv)
        {
            return Err(conflict(
                name,
                format!(
                    "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                    pod["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(())
    };
    if options.dry_run {
        let pod = state
            .store
            .require(pods, req.ns(), name)
            .map_err(|e| ApiError::from_store(pods, e))?;
        return check(&pod);
    }
    let updated = state
        .store
        .try_update(pods, req.ns(), name, |pod| {
            check(pod).map_err(WriteError::Api)?;
            set_disruption_target(pod);
            Ok::<(), WriteError>(())
        })
        .map_err(|e| e.into_api(pods))?;
    // The delete reads the pod again: it is the one just written (same uid).
    delete_pod(
        state,
        req.ns(),
        name,
        options.grace,
        updated["metadata"]["uid"].as_str(),
    )?;
    Ok(())
}

/// `UpdatePodCondition` with `DisruptionTarget=True`, reason
/// `EvictionByEvictionAPI`, message `Eviction API: evicting`: the transition
/// time stays when the condition already had that status.
fn set_disruption_target(pod: &mut Value) {
    let now = now_rfc3339();
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = pod["status"]["conditions"].as_array_mut() else {
        return;
    };
    let mut condition = json!({
        "type": "DisruptionTarget",
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": now,
        "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting",
    });
    match conditions
        .iter_mut()
        .find(|c| c["type"] == "DisruptionTarget")
    {
        Some(old) => {
            if old["status"] == "True" {
                condition["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = condition;
        }
        None => conditions.push(condition),
    }
}

fn success() -> axum::response::Response {
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
            .to_string(),
    )
        .into_response()
}

/// The budgets of the pod's namespace whose selector matches it
/// (`getPodDisruptionBudgets`; an invalid selector matches nothing).
fn budgets_for(state: &ApiState, pdb_kind: &'static ResourceKind, pod: &Value) -> Vec<Value> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let (pdbs, _) = state.store.list(pdb_kind, Some(ns));
    pdbs.iter()
        .filter(|pdb| {
            matches!(
                LabelSelector::from_label_selector(&pdb["spec"]["selector"]),
                Ok(Some(s)) if s.matches(pod)
            )
        })
        .map(|pdb| (**pdb).clone())
        .collect()
}

pub(super) fn evict(state: &ApiState, req: &Request) -> ApiResult {
    let body = req.optional_object_body()?;
    // kube-rs sends no apiVersion/kind; be lenient.
    if let Some(n) = body["metadata"]["name"].as_str()
        && n != req.name()
    {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let options = Options::read(req, &body);
    let pods = pods_kind()?;
    // A pod the budget does not guard is deleted at once; one that changes
    // under the delete (a conflict) is read again, as upstream retries.
    let mut attempts = 0;
    let pod = loop {
        let pod = state
            .store
            .require(pods, req.ns(), req.name())
            .map_err(|e| ApiError::from_store(pods, e))?;
        if !can_ignore_pdb(&pod) {
            break pod;
        }
        let rv = match &options.resource_version {
            Some(rv) => Some(rv.clone()),
            None if should_enforce_resource_version(&pod) => pod["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string),
            None => None,
        };
        match add_condition_and_delete(state, req, &options, rv.as_deref()) {
            Ok(()) => return Ok(success()),
            Err(e)
                if e.code == 409
                    && options.resource_version.is_none()
                    && attempts < CONFLICT_RETRIES =>
            {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let pdb_kind = ResourceKind::find("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("no poddisruptionbudgets resource"))?;
    let pdb = match budgets_for(state, pdb_kind, &pod).as_slice() {
        [] => {
            add_condition_and_delete(state, req, &options, options.resource_version.as_deref())?;
            return Ok(success());
        }
        [one] => one.clone(),
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
    // An unhealthy (not Ready) pod does not count towards currentHealthy: it
    // goes without spending the budget under `AlwaysAllow`, or under the
    // default `IfHealthyBudget` while the guarded application has its
    // healthy pods. The delete is pinned to the pod as read, so a pod that
    // became Ready meanwhile is not taken without the budget's say.
    if !is_ready(&pod) {
        let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
        if always || (current_healthy >= desired_healthy && desired_healthy > 0) {
            let rv = options.resource_version.clone().or_else(|| {
                pod["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string)
            });
            return match add_condition_and_delete(state, req, &options, rv.as_deref()) {
                Ok(()) => Ok(success()),
                Err(e) if e.code == 409 && options.resource_version.is_none() => {
                    Err(still_processing(&pdb_name))
                }
                Err(e) => Err(e),
            };
        }
        // Otherwise checkAndDecrement decides, as for a healthy pod.
    }
    check_and_decrement(state, pdb_kind, req, &pdb_name, options.dry_run)?;
    add_condition_and_delete(state, req, &options, options.resource_version.as_deref())?;
    Ok(success())
}

/// `checkAndDecrement`, under the store's lock so two evictions cannot both
/// spend the last allowed disruption. Spending the last one turns the
/// budget's `DisruptionAllowed` condition False (`InsufficientPods`), as
/// `UpdateDisruptionAllowedCondition` does.
fn check_and_decrement(
    state: &ApiState,
    pdb_kind: &'static ResourceKind,
    req: &Request,
    pdb_name: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let pod_name = req.name().to_string();
    let decide = |pdb: &mut Value| -> Result<(), ApiError> {
        let status = &pdb["status"];
        let observed = status["observedGeneration"].as_i64().unwrap_or(0);
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
        if observed < generation {
            return Err(still_processing(pdb_name));
        }
        let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed < 0 {
            return Err(forbidden(pdb_name, "pdb disruptions allowed is negative"));
        }
        if status["disruptedPods"]
            .as_object()
            .is_some_and(|m| m.len() > MAX_DISRUPTED_POD_SIZE)
        {
            return Err(forbidden(
                pdb_name,
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ));
        }
        if allowed == 0 {
            return Err(ApiError::too_many_requests(
                REFUSED,
                vec![json!({
                    "reason": "DisruptionBudget",
                    "message": format!(
                        "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                        status["desiredHealthy"].as_i64().unwrap_or(0),
                        status["currentHealthy"].as_i64().unwrap_or(0),
                    ),
                })],
            ));
        }
        pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if allowed - 1 == 0 {
            set_insufficient(pdb);
        }
        if !pdb["status"]["disruptedPods"].is_object() {
            pdb["status"]["disruptedPods"] = json!({});
        }
        pdb["status"]["disruptedPods"][&pod_name] = json!(now_rfc3339());
        Ok(())
    };
    if dry_run {
        let mut pdb = (*state
            .store
            .require(pdb_kind, req.ns(), pdb_name)
            .map_err(|e| ApiError::from_store(pdb_kind, e))?)
        .clone();
        return decide(&mut pdb);
    }
    state
        .store
        .try_update(pdb_kind, req.ns(), pdb_name, |pdb| {
            decide(pdb).map_err(WriteError::Api)
        })
        .map_err(|e| e.into_api(pdb_kind))?;
    Ok(())
}

/// `UpdateDisruptionAllowedCondition` with no disruption left:
/// `DisruptionAllowed=False`, reason `InsufficientPods` (`SetStatusCondition`
/// keeps the transition time when the status does not change).
fn set_insufficient(pdb: &mut Value) {
    let generation = pdb["status"]["observedGeneration"].clone();
    if !pdb["status"]["conditions"].is_array() {
        pdb["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = pdb["status"]["conditions"].as_array_mut() else {
        return;
    };
    let mut condition = json!({
        "type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
        "message": "", "lastTransitionTime": now_rfc3339(), "observedGeneration": generation,
    });
    match conditions
        .iter_mut()
        .find(|c| c["type"] == "DisruptionAllowed")
    {
        Some(old) => {
            if old["status"] == "False" {
                condition["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = condition;
        }
        None => conditions.push(condition),
    }
}
