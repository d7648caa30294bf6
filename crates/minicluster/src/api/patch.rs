//! PATCH bodies: JSON merge patch (RFC 7386, kube-rs `Patch::Merge` and
//! `restart`), JSON patch (RFC 6902), and Kubernetes' strategic merge patch
//! (kubectl's `rollout restart`, `cordon`, `set image`, client-side `apply`),
//! which is a merge patch that merges known lists by key instead of replacing
//! them, plus the `$patch`, `$retainKeys`, `$setElementOrder/` and
//! `$deleteFromPrimitiveList/` directives.

use serde_json::{Map, Value};

/// Which patch a request carries, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

/// The patch media types, as 415 errors list them.
pub(crate) const MEDIA_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
    "application/strategic-merge-patch+json",
];

impl PatchKind {
    /// From a Content-Type header value.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchKind::Apply)
            }
            _ => None,
        }
    }
}

/// Applies a patch to `target` in place.
pub fn apply(kind: PatchKind, target: &mut Value, patch: &Value) -> Result<(), String> {
    match kind {
        PatchKind::Merge => {
            json_patch::merge(target, patch);
            Ok(())
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| format!("invalid JSON patch: {e}"))?;
            json_patch::patch(target, &ops).map_err(|e| format!("JSON patch failed: {e}"))
        }
        PatchKind::Strategic | PatchKind::Apply => {
            strategic_merge(target, patch, "");
            Ok(())
        }
    }
}

/// The key a list field's elements merge by (Kubernetes' `patchMergeKey`),
/// judged by field name and, for `ports`, by the elements themselves.
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "ownerReferences" => Some("uid"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ports" => {
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Strategic merge of `patch` into `target` (`field` names the value being merged).
pub fn strategic_merge(target: &mut Value, patch: &Value, field: &str) {
    match patch {
        Value::Object(p) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut replaced = p.clone();
                replaced.remove("$patch");
                *target = Value::Object(replaced);
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Some(t) = target.as_object_mut() else {
                return;
            };
            if let Some(Value::Array(retain)) = p.get("$retainKeys") {
                let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
                t.retain(|k, _| keep.contains(&k.as_str()));
            }
            // Apply deletions from primitive lists first, and remember orders.
            let mut orders: Vec<(String, &Vec<Value>)> = Vec::new();
            for (k, v) in p {
                if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(current)), Value::Array(remove)) =
                        (t.get_mut(list), v)
                    {
                        current.retain(|x| !remove.contains(x));
                    }
                } else if let Some(list) = k.strip_prefix("$setElementOrder/")
                    && let Value::Array(order) = v
                {
                    orders.push((list.to_string(), order));
                }
            }
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                if let Value::Object(inner) = v
                    && inner.get("$patch").and_then(Value::as_str) == Some("delete")
                {
                    t.remove(k);
                    continue;
                }
                match (t.get_mut(k), v) {
                    (Some(existing), Value::Array(_)) => merge_list(existing, v, k),
                    (Some(existing), Value::Object(_)) => strategic_merge(existing, v, k),
                    _ => {
                        let mut fresh = Value::Null;
                        strategic_merge(&mut fresh, v, k);
                        t.insert(k.clone(), fresh);
                    }
                }
            }
            for (list, order) in orders {
                if let Some(Value::Array(items)) = t.get_mut(&list) {
                    reorder(items, order, &list);
                }
            }
        }
        Value::Array(_) => merge_list(target, patch, field),
        other => *target = strip_directives(other),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn merge_list(target: &mut Value, patch: &Value, field: &str) {
    let Value::Array(items) = patch else {
        *target = patch.clone();
        return;
    };
    // `[{"$patch": "replace"}, ...]` replaces the whole list.
    let replace = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let key = merge_key(
        field,
        items
            .first()
            .or_else(|| target.as_array().and_then(|a| a.first())),
    );
    let (Some(key), false, Value::Array(current)) = (key, replace, &mut *target) else {
        *target = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
        return;
    };
    for item in items {
        let Some(id) = item.get(key) else {
            current.push(strip_directives(item));
            continue;
        };
        let pos = current.iter().position(|c| c.get(key) == Some(id));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(pos) = pos {
                current.remove(pos);
            }
            continue;
        }
        match pos {
            Some(pos) => strategic_merge(&mut current[pos], item, field),
            None => current.push(strip_directives(item)),
        }
    }
}

fn reorder(items: &mut [Value], order: &[Value], field: &str) {
    let Some(key) = merge_key(field, order.first()) else {
        return;
    };
    let rank = |v: &Value| {
        order
            .iter()
            .position(|o| o.get(key).is_some() && o.get(key) == v.get(key))
            .unwrap_or(usize::MAX)
    };
    items.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(target: Value, patch: Value) -> Value {
        let mut t = target;
        apply(PatchKind::Strategic, &mut t, &patch).unwrap();
        t
    }

    #[test]
    fn restart_annotation_patch() {
        let d = json!({"spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "a", "ports": [{"containerPort": 8080}]}]}}}});
        let out = smp(
            d,
            json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-11-25T00:00:11+01:00"}}}}}),
        );
        assert_eq!(out["spec"]["template"]["metadata"]["labels"]["app"], "web");
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "2026-11-25T00:00:11+01:00"
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
    }

    #[test]
    fn set_image_merges_containers_by_name() {
        let d = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "command": ["x"], "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "s:1"}
        ]}});
        let out = smp(
            d,
            json!({"spec": {"$setElementOrder/containers": [{"name": "app"}, {"name": "side"}], "containers": [{"name": "app", "image": "a:2"}]}}),
        );
        let c = &out["spec"]["containers"];
        assert_eq!(c[0]["image"], "a:2");
        assert_eq!(c[0]["command"], json!(["x"]), "other fields survive");
        assert_eq!(c[1]["name"], "side");
        // A plain merge patch would have replaced the list.
        let mut plain =
            json!({"spec": {"containers": [{"name": "app", "image": "a:1", "command": ["x"]}]}});
        apply(
            PatchKind::Merge,
            &mut plain,
            &json!({"spec": {"containers": [{"name": "app", "image": "a:2"}]}}),
        )
        .unwrap();
        assert!(plain["spec"]["containers"][0].get("command").is_none());
    }

    #[test]
    fn directives() {
        let base = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "tags": ["x", "y", "z"], "m": {"k": 1, "j": 2}}});
        let out = smp(
            base.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
        let out = smp(
            base.clone(),
            json!({"spec": {"$deleteFromPrimitiveList/tags": ["y"]}}),
        );
        assert_eq!(out["spec"]["tags"], json!(["x", "z"]));
        let out = smp(
            base.clone(),
            json!({"spec": {"m": {"$patch": "replace", "q": 3}}}),
        );
        assert_eq!(out["spec"]["m"], json!({"q": 3}));
        let out = smp(base.clone(), json!({"spec": {"m": {"k": null}}}));
        assert_eq!(out["spec"]["m"], json!({"j": 2}));
        let out = smp(base, json!({"spec": {"$retainKeys": ["m"], "m": {"k": 5}}}));
        assert_eq!(out["spec"], json!({"m": {"k": 5, "j": 2}}));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let out = smp(
            svc,
            json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}),
        );
        assert_eq!(
            out["spec"]["ports"][0],
            json!({"port": 80, "targetPort": 8080, "nodePort": 30080})
        );
        assert_eq!(out["spec"]["ports"][1], json!({"port": 443}));
    }

    #[test]
    fn json_patch_and_content_types() {
        let mut v = json!({"spec": {"replicas": 1}});
        apply(
            PatchKind::Json,
            &mut v,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        )
        .unwrap();
        assert_eq!(v["spec"]["replicas"], 3);
        assert!(
            apply(
                PatchKind::Json,
                &mut v,
                &json!([{"op": "test", "path": "/spec/replicas", "value": 9}])
            )
            .is_err()
        );
        assert_eq!(
            PatchKind::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchKind::Strategic)
        );
        assert_eq!(PatchKind::from_content_type("text/plain"), None);
    }
}
