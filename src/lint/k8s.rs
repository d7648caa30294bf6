//! The bits of Kubernetes semantics the lint needs: int-or-percent rounding,
//! label selectors, preStop durations, probe handlers and their defaults.

use std::collections::BTreeMap;

use serde_json::Value;

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

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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

/// What a preStop hook does, as far as its duration goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PreStop {
    /// No hook.
    Missing,
    /// Waits this many seconds: `sleep N` (exec) or the `sleep` action.
    Sleep {
        /// Seconds.
        seconds: f64,
        /// The `sleep` action (bounded by the grace period by the API server).
        action: bool,
        /// The field path of the duration, relative to the hook.
        field: &'static str,
    },
    /// A hook whose duration cannot be read (httpGet, another command).
    Unknown(String),
}

/// Reads `lifecycle.preStop`.
pub(crate) fn pre_stop(hook: Option<&Value>) -> PreStop {
    let Some(hook) = hook.filter(|h| !h.is_null()) else {
        return PreStop::Missing;
    };
    if let Some(sleep) = hook.get("sleep") {
        return match sleep.get("seconds").and_then(Value::as_f64) {
            Some(seconds) => PreStop::Sleep {
                seconds,
                action: true,
                field: "sleep.seconds",
            },
            None => PreStop::Unknown("a sleep action without seconds".into()),
        };
    }
    if let Some(exec) = hook.get("exec") {
        let command: Vec<String> = exec
            .get("command")
            .and_then(Value::as_array)
            .map(|c| c.iter().map(scalar_string).collect())
            .unwrap_or_default();
        return match exec_sleep_seconds(&command) {
            Some(seconds) => PreStop::Sleep {
                seconds,
                action: false,
                field: "exec.command",
            },
            None => PreStop::Unknown(format!("exec {command:?}")),
        };
    }
    if let Some(http) = hook.get("httpGet") {
        let path = http.get("path").and_then(Value::as_str).unwrap_or("/");
        return PreStop::Unknown(format!("httpGet {path}"));
    }
    PreStop::Unknown("a handler rolltest does not know".into())
}

/// `["sleep", "15"]`, `["/bin/sleep", "15s"]`, `["/bin/sh", "-c", "sleep 5 && …"]`.
/// A shell script counts from its first `sleep` (the hook lasts at least that).
pub(crate) fn exec_sleep_seconds(command: &[String]) -> Option<f64> {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    let program = base(command.first()?);
    if program == "sleep" {
        return command.get(1).and_then(|a| sleep_arg(a));
    }
    if matches!(
        program.as_str(),
        "sh" | "bash" | "ash" | "dash" | "zsh" | "busybox"
    ) {
        let script_at = command.iter().position(|a| a == "-c")? + 1;
        let script = command.get(script_at)?;
        let words: Vec<&str> = script
            .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')'))
            .filter(|w| !w.is_empty())
            .collect();
        let at = words.iter().position(|w| base(w) == "sleep")?;
        return words.get(at + 1).and_then(|a| sleep_arg(a));
    }
    None
}

/// GNU sleep's argument: a number with an optional `s`/`m`/`h`/`d` suffix.
fn sleep_arg(arg: &str) -> Option<f64> {
    let (num, mult) = match arg.char_indices().last()? {
        (i, 's') => (&arg[..i], 1.0),
        (i, 'm') => (&arg[..i], 60.0),
        (i, 'h') => (&arg[..i], 3600.0),
        (i, 'd') => (&arg[..i], 86400.0),
        _ => (arg, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * mult)
}

/// A probe's timing with Kubernetes defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeTiming {
    pub initial_delay: i64,
    pub period: i64,
    pub failure_threshold: i64,
}

impl ProbeTiming {
    /// `SetDefaults_Probe`: period 10 s, failureThreshold 3, initialDelay 0.
    pub(crate) fn of(probe: &Value) -> Self {
        let int = |k: &str, d: i64| probe.get(k).and_then(Value::as_i64).unwrap_or(d);
        ProbeTiming {
            initial_delay: int("initialDelaySeconds", 0),
            period: int("periodSeconds", 10),
            failure_threshold: int("failureThreshold", 3),
        }
    }

    /// Worst-case time to notice a failure: period × failureThreshold.
    pub(crate) fn detection_seconds(self) -> i64 {
        self.period * self.failure_threshold
    }
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
    use serde_json::json;

    #[test]
    fn rounding_follows_resolve_fenceposts() {
        let p = IntOrPercent::Percent(25.0);
        // surge rounds up, unavailable down (k8s-semantics §2 examples).
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
    fn pre_stop_forms() {
        let s =
            |c: &[&str]| exec_sleep_seconds(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["sleep", "15"]), Some(15.0));
        assert_eq!(s(&["/bin/sleep", "2m"]), Some(120.0));
        assert_eq!(s(&["/bin/sh", "-c", "sleep 5"]), Some(5.0));
        assert_eq!(s(&["sh", "-c", "sleep 3 && nginx -s quit"]), Some(3.0));
        assert_eq!(s(&["nginx", "-s", "quit"]), None);
        assert_eq!(
            pre_stop(Some(&json!({"sleep": {"seconds": 7}}))),
            PreStop::Sleep {
                seconds: 7.0,
                action: true,
                field: "sleep.seconds"
            }
        );
        assert!(matches!(
            pre_stop(Some(&json!({"httpGet": {"path": "/drain"}}))),
            PreStop::Unknown(_)
        ));
        assert_eq!(pre_stop(None), PreStop::Missing);
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
