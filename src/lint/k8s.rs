//! The bits of Kubernetes semantics the lint needs besides the knobs
//! (`manifest::knobs`): int-or-percent rounding, label selectors, probe
//! handlers.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::manifest::scalar_string;

/// An `IntOrString` field: a count or a percentage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum IntOrPercent {
    /// An absolute count.
    Int(i64),
    /// A percentage (`25%` → 25.0).
    Percent(f64),
}

impl IntOrPercent {
    /// Reads an int or a `"N%"` string (`None`: absent or malformed).
    pub(crate) fn from_value(v: Option<&Value>) -> Option<Self> {
        match v? {
            Value::Number(n) => n.as_i64().map(IntOrPercent::Int),
            Value::String(s) => {
                let s = s.trim();
                match s.strip_suffix('%') {
                    Some(p) => p.trim().parse().ok().map(IntOrPercent::Percent),
                    None => s.parse().ok().map(IntOrPercent::Int),
                }
            }
            _ => None,
        }
    }

    /// `GetValueFromIntOrPercent(v, total, roundUp)`.
    pub(crate) fn resolve(self, total: i64, round_up: bool) -> i64 {
        match self {
            IntOrPercent::Int(i) => i,
            IntOrPercent::Percent(p) => {
                let exact = p * total as f64 / 100.0;
                if round_up {
                    exact.ceil() as i64
                } else {
                    exact.floor() as i64
                }
            }
        }
    }

    /// Whether the spec value is zero whatever the replica count.
    pub(crate) fn is_zero(self) -> bool {
        match self {
            IntOrPercent::Int(i) => i == 0,
            IntOrPercent::Percent(p) => p == 0.0,
        }
    }
}

impl std::fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrPercent::Int(i) => write!(f, "{i}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Labels as strings (YAML may have made `version: 1` a number).
pub(crate) fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), scalar_string(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// A Service selector (a plain map) matches when every pair is in the labels.
pub(crate) fn map_selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A `metav1.LabelSelector` (`matchLabels` + `matchExpressions`). An empty
/// selector matches every pod (policy/v1 PodDisruptionBudget semantics).
pub(crate) fn label_selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = self::labels(selector.get("matchLabels"));
    if !map_selector_matches(&match_labels, labels) {
        return false;
    }
    let exprs = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    exprs.iter().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<String> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|vs| vs.iter().map(scalar_string).collect())
            .unwrap_or_default();
        let have = labels.get(key);
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    })
}

/// What a probe checks, for comparing two probes: handler kind, path, port
/// (named ports resolved against the container's ports), scheme, host, command.
pub(crate) fn probe_handler(probe: &Value, container: &Value) -> Option<String> {
    let port = |v: Option<&Value>| -> String {
        match v {
            Some(Value::String(name)) => container
                .get("ports")
                .and_then(Value::as_array)
                .and_then(|ps| {
                    ps.iter()
                        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                })
                .and_then(|p| p.get("containerPort"))
                .map_or_else(|| name.clone(), Value::to_string),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    };
    if let Some(h) = probe.get("httpGet") {
        let s = |k: &str, d: &str| h.get(k).and_then(Value::as_str).unwrap_or(d).to_owned();
        return Some(format!(
            "httpGet {}://{}:{}{}",
            s("scheme", "HTTP").to_ascii_lowercase(),
            s("host", ""),
            port(h.get("port")),
            s("path", "/")
        ));
    }
    if let Some(t) = probe.get("tcpSocket") {
        return Some(format!("tcpSocket {}", port(t.get("port"))));
    }
    if let Some(g) = probe.get("grpc") {
        return Some(format!(
            "grpc {} {}",
            port(g.get("port")),
            g.get("service").and_then(Value::as_str).unwrap_or("")
        ));
    }
    if let Some(e) = probe.get("exec") {
        return Some(format!("exec {}", e.get("command").unwrap_or(&Value::Null)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::knobs::ProbeTiming;
    use serde_json::json;

    #[test]
    fn rounding_follows_resolve_fenceposts() {
        let p = IntOrPercent::Percent(25.0);
        // surge rounds up, unavailable down, as the deployment controller
        // resolves them (25 % of 10: surge 3, unavailable 2).
        assert_eq!((p.resolve(1, true), p.resolve(1, false)), (1, 0));
        assert_eq!((p.resolve(4, true), p.resolve(4, false)), (1, 1));
        assert_eq!((p.resolve(10, true), p.resolve(10, false)), (3, 2));
        assert_eq!(IntOrPercent::from_value(Some(&json!("25%"))), Some(p));
        assert_eq!(
            IntOrPercent::from_value(Some(&json!(2))),
            Some(IntOrPercent::Int(2))
        );
        assert_eq!(IntOrPercent::from_value(Some(&json!("x"))), None);
    }

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> =
            [("app".into(), "api".into()), ("tier".into(), "web".into())].into();
        assert!(label_selector_matches(
            &json!({"matchLabels": {"app": "api"}}),
            &labels
        ));
        assert!(!label_selector_matches(
            &json!({"matchLabels": {"app": "db"}}),
            &labels
        ));
        assert!(label_selector_matches(
            &json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "x"]}]}),
            &labels
        ));
        assert!(!label_selector_matches(
            &json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
            &labels
        ));
        assert!(label_selector_matches(&json!({}), &labels));
    }

    #[test]
    fn probe_handlers_resolve_named_ports() {
        let c = json!({"ports": [{"name": "http", "containerPort": 8080}]});
        let a = probe_handler(
            &json!({"httpGet": {"path": "/healthz", "port": "http"}}),
            &c,
        );
        let b = probe_handler(&json!({"httpGet": {"path": "/healthz", "port": 8080}}), &c);
        assert_eq!(a, b);
        let l = probe_handler(&json!({"httpGet": {"path": "/livez", "port": 8080}}), &c);
        assert_ne!(a, l);
        assert_eq!(ProbeTiming::of(&json!({})).detection_seconds(), 30);
    }
}
