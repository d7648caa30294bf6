//! `rolltest lint`: the five knobs that decide whether a rollout drops
//! requests, checked together and statically on Deployment, StatefulSet,
//! PodDisruptionBudget and Service objects across all given files (a PDB in one
//! file selects the Deployment in another).
//!
//! A workload is *serving* when a container declares a port or a Service
//! selects its pods; only serving workloads are checked (RT021 says which were
//! skipped). The checks use the expected endpoint propagation (`--propagation`,
//! default 5 s, or the `propagation.max_ms` a run measured, `--from-run`) and
//! the time the app needs to drain after SIGTERM (`--drain`, default 5 s).
//! Replica counts come from `spec.replicas`, else from the `minReplicas` of a
//! HorizontalPodAutoscaler in the given files, else 1. Objects match across
//! files when their namespaces are equal or either is unset.
//!
//! | ID | knob | severity | finding |
//! | --- | --- | --- | --- |
//! | RT001 | preStop | error | no preStop hook on a serving container |
//! | RT002 | preStop | warning (error when propagation is given or measured) | preStop waits less than the endpoint propagation |
//! | RT003 | preStop | info | preStop duration cannot be read (httpGet, other command) |
//! | RT004 | preStop | error | preStop `sleep` action seconds not in 1..=terminationGracePeriodSeconds (the API server rejects it) |
//! | RT005 | grace period | error | terminationGracePeriodSeconds < preStop + drain |
//! | RT006 | grace period | info | terminationGracePeriodSeconds not set (30 s default) |
//! | RT007 | PDB | warning | no PodDisruptionBudget selects the pods |
//! | RT008 | PDB | error | the PDB allows no disruption (minAvailable ≥ replicas, maxUnavailable 0): drains block forever |
//! | RT009 | PDB | error | more than one PDB selects the pods (evictions fail with 500) |
//! | RT010 | PDB | warning | the PDB selects no workload in the given files |
//! | RT011 | strategy | warning | rollingUpdate.maxUnavailable is not 0 (default 25%) and no `rolltest.dev/max-unavailable-reason` annotation says why |
//! | RT012 | strategy | warning | rollingUpdate.maxSurge resolves to 0: the rollout removes pods before adding any |
//! | RT013 | strategy | error | maxSurge and maxUnavailable both 0 (the API server rejects it) |
//! | RT014 | strategy | error | Recreate strategy on a serving Deployment |
//! | RT015 | strategy | warning | minReadySeconds is 0 |
//! | RT016 | probes | error | no readinessProbe on a serving container |
//! | RT017 | probes | warning | readiness/liveness initialDelaySeconds ≥ 10 s without a startupProbe |
//! | RT018 | probes | warning | livenessProbe checks the same thing as the readinessProbe |
//! | RT019 | probes | info | how long the probes take to notice a failure (periodSeconds × failureThreshold) |
//! | RT020 | Service | warning | the Service selects no workload's pods in the given files |
//! | RT021 | — | info | workload not serving (no port, no Service): skipped |

mod catalog;
pub(crate) mod k8s;
pub mod output;
mod rules;

use std::{path::Path, time::Duration};

use rolltest_core::model::{Finding, Severity};

use crate::manifest::Manifest;

/// Where the expected propagation delay came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PropagationSource {
    /// The default assumption (5 s).
    #[default]
    Default,
    /// `--propagation`.
    Flag,
    /// `--from-run DIR`: the maximum a run measured.
    Run(String),
}

/// What the checks assume about the cluster and the app.
#[derive(Debug, Clone, PartialEq)]
pub struct LintOptions {
    /// How long an endpoint removal takes to reach every proxy; preStop must wait this long.
    pub propagation: Duration,
    /// Where `propagation` came from (a shorter preStop is an error when given or measured).
    pub propagation_source: PropagationSource,
    /// How long the app needs after SIGTERM to finish its in-flight requests.
    pub drain: Duration,
}

/// The default expected propagation.
pub const DEFAULT_PROPAGATION: Duration = Duration::from_secs(5);
/// The default drain time.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
/// The annotation that accepts a non-zero maxUnavailable (its value says why).
pub const MAX_UNAVAILABLE_REASON: &str = "rolltest.dev/max-unavailable-reason";

impl Default for LintOptions {
    fn default() -> Self {
        LintOptions {
            propagation: DEFAULT_PROPAGATION,
            propagation_source: PropagationSource::Default,
            drain: DEFAULT_DRAIN,
        }
    }
}

/// Why lint options could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    /// `DIR/summary.json` could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `DIR/summary.json` is not JSON or has no usable `propagation.max_ms`.
    #[error("{path}: {message}")]
    Summary {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads `propagation.max_ms` (a number, ms) from a run directory's summary.json.
pub fn propagation_from_run(dir: &Path) -> Result<Duration, LintError> {
    let path = dir.join("summary.json");
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| LintError::Read {
        path: shown.clone(),
        source,
    })?;
    let summary: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| LintError::Summary {
            path: shown.clone(),
            message: format!("not valid JSON: {e}"),
        })?;
    match summary.pointer("/propagation/max_ms") {
        Some(v) => match v.as_f64() {
            Some(ms) if ms.is_finite() && ms >= 0.0 => Ok(Duration::from_secs_f64(ms / 1e3)),
            _ => Err(LintError::Summary {
                path: shown,
                message: format!("propagation.max_ms is {v}, not a number of milliseconds"),
            }),
        },
        None => Err(LintError::Summary {
            path: shown,
            message: "no propagation.max_ms: the run measured no endpoint propagation \
                      (no pod was removed, or an older rolltest wrote it); \
                      pass --propagation instead"
                .into(),
        }),
    }
}

/// A lint rule: what the ID means, for the docs and SARIF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `RT001`...
    pub id: &'static str,
    /// kebab-case name.
    pub name: &'static str,
    /// The knob it checks.
    pub knob: &'static str,
    /// Its usual severity.
    pub severity: Severity,
    /// What it finds, one line.
    pub title: &'static str,
    /// Why it matters, one sentence.
    pub why: &'static str,
    /// The usual fix.
    pub fix: &'static str,
}

/// Every rule, in ID order.
pub const RULES: &[Rule] = catalog::RULES;

/// Looks a rule up by ID.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// The rules as a Markdown table (README-able).
pub fn rules_markdown() -> String {
    let mut out =
        String::from("| ID | knob | severity | finding | fix |\n| --- | --- | --- | --- | --- |\n");
    for r in RULES {
        let sev = match r.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.id, r.knob, sev, r.title, r.fix
        ));
    }
    out
}

/// Checks the manifests together. Findings are sorted by file, line and ID.
pub fn lint(manifests: &[Manifest], opts: &LintOptions) -> Vec<Finding> {
    let mut findings = rules::check(manifests, opts);
    findings
        .sort_by(|a, b| (&a.file, a.line, &a.id, &a.path).cmp(&(&b.file, b.line, &b.id, &b.path)));
    findings.dedup();
    findings
}

/// Whether any finding is an error (`rolltest lint` exits 1).
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_in_the_module_docs_in_order() {
        let docs = include_str!("mod.rs");
        let mut ids = Vec::new();
        for line in docs.lines().filter(|l| l.starts_with("//! | RT")) {
            ids.push(line[6..11].to_owned());
        }
        let rules: Vec<_> = RULES.iter().map(|r| r.id.to_owned()).collect();
        assert_eq!(ids, rules);
        for (i, r) in RULES.iter().enumerate() {
            assert_eq!(r.id, format!("RT{:03}", i + 1));
            assert!(rules_markdown().contains(r.id));
        }
    }

    #[test]
    fn propagation_from_a_run_summary() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("summary.json"),
            r#"{"propagation": {"max_ms": 2500.0}}"#,
        )
        .unwrap();
        assert_eq!(
            propagation_from_run(dir.path()).unwrap(),
            Duration::from_millis(2500)
        );
        std::fs::write(dir.path().join("summary.json"), r#"{"verdict": "pass"}"#).unwrap();
        let e = propagation_from_run(dir.path()).unwrap_err();
        assert!(e.to_string().contains("no propagation.max_ms"), "{e}");
        let e = propagation_from_run(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(e, LintError::Read { .. }));
    }
}
