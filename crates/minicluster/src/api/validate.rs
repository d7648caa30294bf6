//! Defaulting and validation of written objects, as kube-apiserver does it
//! for the fields rollouts depend on: a manifest the server cannot honour is
//! refused with 422 Invalid and the field path, never half-applied.

use serde_json::{Value, json};

use super::status::ApiError;
use crate::resources::ResourceKind;

/// The object read through its k8s-openapi type and written back (`None`
/// for kinds without a typed model): a type error is a 400 BadRequest.
fn round_trip(r: &ResourceKind, object: &Value) -> Result<Option<Value>, ApiError> {
    use k8s_openapi::api::{
        apps::v1 as apps, core::v1 as core, discovery::v1 as disc, policy::v1 as policy,
    };
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(
        kind: &str,
        v: &Value,
    ) -> Result<Option<Value>, ApiError> {
        let typed: T = serde_json::from_value(v.clone()).map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version \"v1\" cannot be handled as a {kind}: {e}"
            ))
        })?;
        Ok(serde_json::to_value(typed).ok())
    }
    match r.kind {
        "Deployment" => through::<apps::Deployment>(r.kind, object),
        "ReplicaSet" => through::<apps::ReplicaSet>(r.kind, object),
        "Pod" => through::<core::Pod>(r.kind, object),
        "Service" => through::<core::Service>(r.kind, object),
        "Node" => through::<core::Node>(r.kind, object),
        "Namespace" => through::<core::Namespace>(r.kind, object),
        "Event" => through::<core::Event>(r.kind, object),
        "EndpointSlice" => through::<disc::EndpointSlice>(r.kind, object),
        "PodDisruptionBudget" => through::<policy::PodDisruptionBudget>(r.kind, object),
        _ => Ok(None),
    }
}

/// Checks the object's shape against the k8s-openapi type (400 on a type error).
pub fn check_types(r: &ResourceKind, object: &Value) -> Result<(), ApiError> {
    round_trip(r, object).map(|_| ())
}

/// `?fieldValidation=Strict`: fields the type does not know are an error
/// (found by reading the object through its type and writing it back).
pub fn check_unknown_fields(r: &ResourceKind, object: &Value) -> Result<(), ApiError> {
    let Some(back) = round_trip(r, object)? else {
        return Ok(());
    };
    let mut unknown = Vec::new();
    missing_paths(object, &back, "", &mut unknown);
    unknown.retain(|p| p != "apiVersion" && p != "kind");
    match unknown.first() {
        None => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
            unknown
                .iter()
                .map(|p| format!("unknown field \"{p}\""))
                .collect::<Vec<_>>()
                .join(", "),
            kind = r.kind,
            v = r.version,
        ))),
    }
}

fn missing_paths(input: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (input, back) {
        (Value::Object(i), Value::Object(b)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                match b.get(k) {
                    Some(bv) => missing_paths(v, bv, &join(k), out),
                    None => out.push(join(k)),
                }
            }
        }
        (Value::Array(i), Value::Array(b)) => {
            for (n, (iv, bv)) in i.iter().zip(b.iter()).enumerate() {
                missing_paths(iv, bv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut()
        && map.get(key).is_none_or(Value::is_null)
    {
        map.insert(key.to_string(), value);
    }
}

fn default_probe(probe: &mut Value) {
    if probe.is_object() {
        set_default(probe, "timeoutSeconds", json!(1));
        set_default(probe, "periodSeconds", json!(10));
        set_default(probe, "successThreshold", json!(1));
        set_default(probe, "failureThreshold", json!(3));
    }
}

/// Pod spec defaults (`pkg/apis/core/v1/defaults.go`).
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    if let Some(containers) = spec["containers"].as_array_mut() {
        for c in containers {
            let latest = c["image"]
                .as_str()
                .is_some_and(|i| i.ends_with(":latest") || !i.contains(':'));
            set_default(
                c,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            set_default(c, "resources", json!({}));
            if let Some(ports) = c["ports"].as_array_mut() {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                if let Some(p) = c.get_mut(probe) {
                    default_probe(p);
                }
            }
        }
    }
}

/// Applies defaults to a new or replaced object.
pub fn apply_defaults(r: &ResourceKind, object: &mut Value) {
    match r.kind {
        "Deployment" => {
            let spec = &mut object["spec"];
            if !spec.is_object() {
                return;
            }
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(spec, "strategy", json!({"type": "RollingUpdate"}));
            if spec["strategy"]["type"].is_null() {
                spec["strategy"]["type"] = json!("RollingUpdate");
            }
            if spec["strategy"]["type"] == "RollingUpdate" {
                set_default(&mut spec["strategy"], "rollingUpdate", json!({}));
                set_default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
                set_default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
            }
            default_pod_spec(&mut spec["template"]["spec"]);
        }
        "ReplicaSet" => {
            set_default(&mut object["spec"], "replicas", json!(1));
            default_pod_spec(&mut object["spec"]["template"]["spec"]);
        }
        "Pod" => default_pod_spec(&mut object["spec"]),
        "Service" => {
            let spec = &mut object["spec"];
            if !spec.is_object() {
                return;
            }
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if let Some(ports) = spec["ports"].as_array_mut() {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p["port"].clone();
                    set_default(p, "targetPort", port);
                }
            }
        }
        _ => {}
    }
}

/// An int-or-percent value: `Ok(Some(n))` for an int, `Ok(None)` for a
/// percent, `Err` for anything else.
fn int_or_percent(v: &Value) -> Result<(), String> {
    match v {
        Value::Number(n) if n.as_i64().is_some_and(|n| n >= 0) => Ok(()),
        Value::Number(_) => Err("must be greater than or equal to 0".into()),
        Value::String(s) => match s.strip_suffix('%').map(str::parse::<u32>) {
            Some(Ok(_)) => Ok(()),
            _ => Err("a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')".into()),
        },
        _ => Err("must be an integer or a percentage".into()),
    }
}

fn is_zero(v: &Value) -> bool {
    v.as_i64() == Some(0) || v.as_str() == Some("0%")
}

fn check_pod_spec(spec: &Value, path: &str, causes: &mut Vec<(String, String)>) {
    match spec["containers"].as_array() {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                if c["name"].as_str().is_none_or(str::is_empty) {
                    causes.push((
                        format!("{path}.containers[{i}].name"),
                        "Required value".into(),
                    ));
                }
                if c["image"].as_str().is_none_or(str::is_empty) {
                    causes.push((
                        format!("{path}.containers[{i}].image"),
                        "Required value".into(),
                    ));
                }
            }
        }
        _ => causes.push((format!("{path}.containers"), "Required value".into())),
    }
    if let Some(g) = spec["terminationGracePeriodSeconds"].as_i64()
        && g < 0
    {
        causes.push((
            format!("{path}.terminationGracePeriodSeconds"),
            format!("Invalid value: {g}: must be greater than or equal to 0"),
        ));
    }
}

fn check_selector_template(spec: &Value, causes: &mut Vec<(String, String)>) {
    let selector = &spec["selector"];
    let labels = spec["template"]["metadata"]["labels"].as_object();
    if selector.is_null()
        || (selector["matchLabels"].is_null() && selector["matchExpressions"].is_null())
    {
        causes.push(("spec.selector".into(), "Required value".into()));
        return;
    }
    if let Some(ml) = selector["matchLabels"].as_object() {
        let ok = ml
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !ok {
            causes.push((
                "spec.template.metadata.labels".into(),
                format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    spec["template"]["metadata"]["labels"]
                ),
            ));
        }
    }
}

/// Validates an object before it is stored.
pub fn validate(r: &ResourceKind, object: &Value) -> Result<(), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    let mut causes: Vec<(String, String)> = Vec::new();
    let spec = &object["spec"];
    match r.kind {
        "Deployment" | "ReplicaSet" => {
            if let Some(n) = spec["replicas"].as_i64()
                && n < 0
            {
                causes.push((
                    "spec.replicas".into(),
                    format!("Invalid value: {n}: must be greater than or equal to 0"),
                ));
            }
            if let Some(n) = spec["minReadySeconds"].as_i64()
                && n < 0
            {
                causes.push((
                    "spec.minReadySeconds".into(),
                    format!("Invalid value: {n}: must be greater than or equal to 0"),
                ));
            }
            check_selector_template(spec, &mut causes);
            check_pod_spec(&spec["template"]["spec"], "spec.template.spec", &mut causes);
            if r.kind == "Deployment" {
                let strategy = &spec["strategy"];
                match strategy["type"].as_str() {
                    Some("Recreate") if !strategy["rollingUpdate"].is_null() => causes.push((
                        "spec.strategy.rollingUpdate".into(),
                        "Forbidden: may not be specified when strategy `type` is 'Recreate'".into(),
                    )),
                    Some("Recreate") | None => {}
                    Some("RollingUpdate") => {
                        let ru = &strategy["rollingUpdate"];
                        for field in ["maxSurge", "maxUnavailable"] {
                            if !ru[field].is_null()
                                && let Err(m) = int_or_percent(&ru[field])
                            {
                                causes.push((format!("spec.strategy.rollingUpdate.{field}"), format!("Invalid value: {}: {m}", ru[field])));
                            }
                        }
                        if is_zero(&ru["maxSurge"]) && is_zero(&ru["maxUnavailable"]) {
                            causes.push((
                                "spec.strategy.rollingUpdate.maxUnavailable".into(),
                                "Invalid value: 0: may not be 0 when `maxSurge` is 0".into(),
                            ));
                        }
                    }
                    Some(other) => causes.push((
                        "spec.strategy.type".into(),
                        format!("Unsupported value: \"{other}\": supported values: \"Recreate\", \"RollingUpdate\""),
                    )),
                }
            }
        }
        "Pod" => check_pod_spec(spec, "spec", &mut causes),
        "Service" => {
            let ty = spec["type"].as_str().unwrap_or("ClusterIP");
            let ports = spec["ports"].as_array();
            if ty != "ExternalName" && ports.is_none_or(Vec::is_empty) {
                causes.push(("spec.ports".into(), "Required value".into()));
            }
            for (i, p) in ports.into_iter().flatten().enumerate() {
                match p["port"].as_i64() {
                    Some(1..=65535) => {}
                    _ => causes.push((
                        format!("spec.ports[{i}].port"),
                        format!(
                            "Invalid value: {}: must be between 1 and 65535, inclusive",
                            p["port"]
                        ),
                    )),
                }
                if let Some(np) = p["nodePort"].as_i64()
                    && !(30000..=32767).contains(&np)
                {
                    causes.push((format!("spec.ports[{i}].nodePort"), format!("Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767")));
                }
            }
        }
        "PodDisruptionBudget" => {
            if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
                causes.push((
                    "spec".into(),
                    "Invalid value: minAvailable and maxUnavailable cannot be both set".into(),
                ));
            }
            for field in ["minAvailable", "maxUnavailable"] {
                if !spec[field].is_null()
                    && let Err(m) = int_or_percent(&spec[field])
                {
                    causes.push((
                        format!("spec.{field}"),
                        format!("Invalid value: {}: {m}", spec[field]),
                    ));
                }
            }
            check_selector_expressions(&spec["selector"], &mut causes);
            // `supportedUnhealthyPodEvictionPolicies` (pkg/apis/policy/validation).
            if let Some(policy) = spec["unhealthyPodEvictionPolicy"].as_str()
                && !matches!(policy, "IfHealthyBudget" | "AlwaysAllow")
            {
                causes.push((
                    "spec.unhealthyPodEvictionPolicy".into(),
                    format!(
                        "Unsupported value: \"{policy}\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\""
                    ),
                ));
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r, name, causes))
    }
}

/// `ValidateLabelSelector`'s checks of `matchExpressions`
/// (apimachinery `pkg/apis/meta/v1/validation`): a known operator, values
/// for `In`/`NotIn` and none for `Exists`/`DoesNotExist`.
fn check_selector_expressions(selector: &Value, causes: &mut Vec<(String, String)>) {
    let Some(expressions) = selector["matchExpressions"].as_array() else {
        return;
    };
    for (i, e) in expressions.iter().enumerate() {
        let path = format!("spec.selector.matchExpressions[{i}]");
        let has_values = e["values"].as_array().is_some_and(|v| !v.is_empty());
        match e["operator"].as_str().unwrap_or_default() {
            "In" | "NotIn" if !has_values => causes.push((
                format!("{path}.values"),
                "Required value: must be specified when `operator` is 'In' or 'NotIn'".into(),
            )),
            "Exists" | "DoesNotExist" if has_values => causes.push((
                format!("{path}.values"),
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    .into(),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push((
                format!("{path}.operator"),
                format!("Invalid value: \"{other}\": not a valid selector operator"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(spec: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": spec})
    }

    fn good_spec() -> Value {
        json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "rolltest-demo"}]}}
        })
    }

    fn causes(r: &ResourceKind, o: &Value) -> Vec<String> {
        match validate(r, o) {
            Ok(()) => vec![],
            Err(e) => e.details.unwrap()["causes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["field"].as_str().unwrap().to_string())
                .collect(),
        }
    }

    #[test]
    fn deployments_are_validated_with_field_paths() {
        let d = ResourceKind::find("apps", "v1", "deployments").unwrap();
        let mut o = deploy(good_spec());
        apply_defaults(d, &mut o);
        assert!(causes(d, &o).is_empty());
        assert_eq!(o["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            o["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
            30
        );

        let mut s = good_spec();
        s.as_object_mut().unwrap().remove("selector");
        assert_eq!(causes(d, &deploy(s)), vec!["spec.selector"]);

        let mut s = good_spec();
        s["selector"]["matchLabels"]["app"] = json!("api");
        assert_eq!(causes(d, &deploy(s)), vec!["spec.template.metadata.labels"]);

        let mut s = good_spec();
        s["replicas"] = json!(-1);
        assert_eq!(causes(d, &deploy(s)), vec!["spec.replicas"]);

        let mut s = good_spec();
        s["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        assert_eq!(
            causes(d, &deploy(s)),
            vec!["spec.strategy.rollingUpdate.maxUnavailable"]
        );

        let mut s = good_spec();
        s["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
        assert_eq!(causes(d, &deploy(s)), vec!["spec.strategy.rollingUpdate"]);

        let err = validate(d, &deploy(json!({"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}}}))).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.starts_with(
                "Deployment.apps \"web\" is invalid: spec.template.spec.containers: Required value"
            ),
            "{}",
            err.message
        );
    }

    #[test]
    fn type_errors_are_bad_requests() {
        let d = ResourceKind::find("apps", "v1", "deployments").unwrap();
        let err = check_types(d, &deploy(json!({"replicas": "three"}))).unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn strict_validation_names_unknown_fields() {
        let s = ResourceKind::find("", "v1", "services").unwrap();
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"bogus": 1, "ports": [{"port": 80, "nope": true}]}});
        let err = check_unknown_fields(s, &svc).unwrap_err();
        assert!(
            err.message.contains("unknown field \"spec.bogus\""),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("unknown field \"spec.ports[0].nope\""),
            "{}",
            err.message
        );
        let ok = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "a"}}});
        assert!(check_unknown_fields(s, &ok).is_ok());
    }

    #[test]
    fn services_need_ports_in_range() {
        let s = ResourceKind::find("", "v1", "services").unwrap();
        let svc = json!({"metadata": {"name": "api"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        assert_eq!(causes(s, &svc), vec!["spec.ports[0].nodePort"]);
        let svc = json!({"metadata": {"name": "api"}, "spec": {}});
        assert_eq!(causes(s, &svc), vec!["spec.ports"]);
    }
}
