//! Small shared readings of objects (ownership, readiness, int-or-percent).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::api::LabelSelector;

/// The uid of an object's controller owner.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == Value::Bool(true))
        .and_then(|o| o["uid"].as_str())
}

/// The object's uid.
pub fn uid(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

/// The object's name.
pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// The object's namespace.
pub fn namespace(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}

/// Whether a pod counts (ReplicaSet `IsPodActive`): not terminal, not being deleted.
pub fn pod_active(pod: &Value) -> bool {
    !matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Whether a pod is terminal.
pub fn pod_terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Value) -> bool {
    ready_condition(pod).is_some_and(|c| c["status"] == "True")
}

/// Ready for at least `min_ready` (`IsPodAvailable`).
pub fn pod_available(pod: &Value, min_ready: i64, now: SystemTime) -> bool {
    let Some(c) = ready_condition(pod).filter(|c| c["status"] == "True") else {
        return false;
    };
    if min_ready <= 0 {
        return true;
    }
    let since = c["lastTransitionTime"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
    since.is_some_and(|t| t + Duration::from_secs(min_ready as u64) <= now)
}

/// When a ready pod becomes available, if it is not yet.
pub fn available_at(pod: &Value, min_ready: i64) -> Option<SystemTime> {
    let c = ready_condition(pod).filter(|c| c["status"] == "True")?;
    let since = c["lastTransitionTime"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())?;
    Some(since + Duration::from_secs(min_ready.max(0) as u64))
}

/// `GetValueFromIntOrPercent`: an int as is, a percent of `total` rounded up or down.
pub fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(pct) => {
                let scaled = pct * total;
                if round_up {
                    (scaled + 99) / 100
                } else {
                    scaled / 100
                }
            }
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// The selector of a Deployment/ReplicaSet/PDB (`spec.selector.matchLabels`),
/// or of a Service (`spec.selector`).
pub fn selector(obj: &Value) -> Option<LabelSelector> {
    let labels = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .or_else(|| {
            obj["spec"]["selector"]
                .as_object()
                .filter(|m| !m.contains_key("matchLabels") && !m.contains_key("matchExpressions"))
        })?;
    if labels.is_empty() {
        return None;
    }
    Some(LabelSelector::from_match_labels(labels))
}

/// Creation time for ordering (oldest first).
pub fn created(obj: &Value) -> (String, String) {
    (
        obj["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        name(obj).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rounding_like_resolve_fenceposts() {
        // (value, replicas, round_up, expected), as kubernetes/kubernetes
        // pkg/controller/deployment/util/deployment_util.go ResolveFenceposts.
        let table = [
            (json!("25%"), 1, true, 1),
            (json!("25%"), 1, false, 0),
            (json!("25%"), 3, true, 1),
            (json!("25%"), 3, false, 0),
            (json!("25%"), 4, true, 1),
            (json!("25%"), 4, false, 1),
            (json!("25%"), 10, true, 3),
            (json!("25%"), 10, false, 2),
            (json!(2), 10, true, 2),
            (json!("0%"), 6, true, 0),
        ];
        for (v, total, up, expected) in table {
            assert_eq!(
                int_or_percent(&v, total, up),
                expected,
                "{v} of {total} up={up}"
            );
        }
    }
}
