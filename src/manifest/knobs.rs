//! The knobs as manifests spell them: the one module that reads them
//! (`rolltest lint` checks them, `rolltest compare` diffs them), with
//! Kubernetes' defaults. Which knob fixes which cause, and the fix texts the
//! correlator advises, are the core's ([`rolltest_core::knobs`]).

use serde_json::Value;

use super::scalar_string;

pub use rolltest_core::knobs::Knob;

/// `terminationGracePeriodSeconds` when unset.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// A probe's timing fields and their defaults (`SetDefaults_Probe`).
pub const PROBE_TIMING_DEFAULTS: [(&str, i64); 4] = [
    ("periodSeconds", 10),
    ("failureThreshold", 3),
    ("initialDelaySeconds", 0),
    ("timeoutSeconds", 1),
];

/// A probe's timing field, its default filled in.
pub fn probe_int(probe: &Value, field: &str) -> i64 {
    probe.get(field).and_then(Value::as_i64).unwrap_or_else(|| {
        PROBE_TIMING_DEFAULTS
            .iter()
            .find(|(k, _)| *k == field)
            .map_or(0, |(_, d)| *d)
    })
}

pub struct Field {
    /// The knob it belongs to.
    pub knob: Knob,
    /// Its path in the workload.
    pub path: &'static str,
    /// Kubernetes' default when unset.
    pub default: Option<Value>,
}

fn field(knob: Knob, path: &'static str, default: Option<Value>) -> Field {
    Field {
        knob,
        path,
        default,
    }
}

/// A workload's own knob fields (its containers' are read per container)
/// with Kubernetes' defaults.
pub fn workload_fields() -> Vec<Field> {
    vec![
        field(Knob::Replicas, "spec.replicas", Some(Value::from(1))),
        field(
            Knob::Strategy,
            "spec.strategy.type",
            Some(Value::from("RollingUpdate")),
        ),
        field(
            Knob::Strategy,
            "spec.strategy.rollingUpdate.maxSurge",
            Some(Value::from("25%")),
        ),
        field(
            Knob::Strategy,
            "spec.strategy.rollingUpdate.maxUnavailable",
            Some(Value::from("25%")),
        ),
        field(
            Knob::MinReadySeconds,
            "spec.minReadySeconds",
            Some(Value::from(0)),
        ),
        field(
            Knob::GracePeriod,
            "spec.template.spec.terminationGracePeriodSeconds",
            Some(Value::from(DEFAULT_GRACE_SECONDS)),
        ),
    ]
}

/// The probes, in the order they act.
pub const PROBES: [&str; 3] = ["startupProbe", "readinessProbe", "livenessProbe"];

/// What a preStop hook does, as far as its duration goes.
#[derive(Debug, Clone, PartialEq)]
pub enum PreStop {
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
pub fn pre_stop(hook: Option<&Value>) -> PreStop {
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
pub fn exec_sleep_seconds(command: &[String]) -> Option<f64> {
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
pub struct ProbeTiming {
    pub initial_delay: i64,
    pub period: i64,
    pub failure_threshold: i64,
}

impl ProbeTiming {
    /// `SetDefaults_Probe`: period 10 s, failureThreshold 3, initialDelay 0.
    pub fn of(probe: &Value) -> Self {
        ProbeTiming {
            initial_delay: probe_int(probe, "initialDelaySeconds"),
            period: probe_int(probe, "periodSeconds"),
            failure_threshold: probe_int(probe, "failureThreshold"),
        }
    }

    /// Worst-case time to notice a failure: period × failureThreshold.
    pub fn detection_seconds(self) -> i64 {
        self.period * self.failure_threshold
    }
}

/// The seconds a preStop hook sleeps, when it is a sleep: the `sleep`
/// action, or an exec whose command runs `sleep N` — read exactly as
/// `rolltest lint` reads it.
pub fn pre_stop_seconds(hook: &Value) -> Option<f64> {
    match pre_stop(Some(hook)) {
        PreStop::Sleep { seconds, .. } => Some(seconds),
        _ => None,
    }
}

/// The value of `--on-sigterm` in an args list (`--on-sigterm X` or `--on-sigterm=X`).
pub fn on_sigterm(args: &Value) -> Option<String> {
    let words: Vec<&str> = args.as_array()?.iter().filter_map(Value::as_str).collect();
    words.iter().enumerate().find_map(|(i, w)| {
        if let Some(v) = w.strip_prefix("--on-sigterm=") {
            Some(v.to_string())
        } else if *w == "--on-sigterm" {
            words.get(i + 1).map(|v| (*v).to_string())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn on_sigterm_in_both_spellings() {
        assert_eq!(
            on_sigterm(&serde_json::json!([
                "--work",
                "5ms",
                "--on-sigterm",
                "drain"
            ])),
            Some("drain".into())
        );
        assert_eq!(
            on_sigterm(&serde_json::json!(["--on-sigterm=exit"])),
            Some("exit".into())
        );
        assert_eq!(on_sigterm(&serde_json::json!(["--work", "5ms"])), None);
    }
}
