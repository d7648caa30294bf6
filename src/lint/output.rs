//! Findings rendered for people (grouped per file), for scripts (JSON: the
//! findings and a summary) and for code scanning (SARIF 2.1.0).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use super::{LintOptions, PropagationSource, RULES};
use rolltest_core::model::{Finding, Severity};

/// Counts over a lint run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Objects read.
    pub objects: usize,
    /// Error findings.
    pub errors: usize,
    /// Warning findings.
    pub warnings: usize,
    /// Info findings.
    pub infos: usize,
    /// The propagation the checks assumed, ms.
    pub propagation_ms: f64,
    /// Where it came from: `default`, `flag` or the run directory.
    pub propagation_source: String,
    /// The drain time assumed, ms.
    pub drain_ms: f64,
}

impl Summary {
    /// Counts the findings.
    pub fn new(findings: &[Finding], files: usize, objects: usize, opts: &LintOptions) -> Self {
        let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
        Summary {
            files,
            objects,
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            infos: count(Severity::Info),
            propagation_ms: opts.propagation.as_secs_f64() * 1e3,
            propagation_source: match &opts.propagation_source {
                PropagationSource::Default => "default".into(),
                PropagationSource::Flag => "flag".into(),
                PropagationSource::Run(dir) => format!("run:{dir}"),
            },
            drain_ms: opts.drain.as_secs_f64() * 1e3,
        }
    }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Human text: findings grouped per file (in the order given), then a summary line.
pub fn human(findings: &[Finding], summary: &Summary) -> String {
    let mut out = String::new();
    let mut file: Option<&str> = None;
    for f in findings {
        if file != Some(f.file.as_str()) {
            if file.is_some() {
                out.push('\n');
            }
            out.push_str(&f.file);
            out.push('\n');
            file = Some(&f.file);
        }
        out.push_str(&format!(
            "  {:>4}  {:<7}  {}  {}: {}\n",
            f.line,
            severity_word(f.severity),
            f.id,
            f.object,
            f.message
        ));
        if f.severity != Severity::Info {
            out.push_str(&format!("{:23}at {}\n", "", f.path));
            out.push_str(&format!("{:23}why: {}\n", "", f.why));
            out.push_str(&format!("{:23}fix: {}\n", "", f.fix));
        }
    }
    if !findings.is_empty() {
        out.push('\n');
    }
    let source = match summary.propagation_source.as_str() {
        "default" => "assumed".to_owned(),
        "flag" => "given".to_owned(),
        run => format!("measured, {}", run.trim_start_matches("run:")),
    };
    out.push_str(&format!(
        "{}, {}, {} in {} ({}); propagation {} ms ({source}), drain {} ms\n",
        plural(summary.errors, "error"),
        plural(summary.warnings, "warning"),
        plural(summary.infos, "info"),
        plural(summary.files, "file"),
        plural(summary.objects, "object"),
        summary.propagation_ms.round(),
        summary.drain_ms.round(),
    ));
    out
}

/// `{"findings": [...], "summary": {...}}`.
pub fn json(findings: &[Finding], summary: &Summary) -> Value {
    json!({ "findings": findings, "summary": summary })
}

/// A SARIF 2.1.0 log with one run: every rule, and one result per finding with
/// its file and `region.startLine` (what GitHub code scanning needs).
pub fn sarif(findings: &[Finding]) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "shortDescription": { "text": r.title },
                "fullDescription": { "text": r.why },
                "help": {
                    "text": format!("{} Fix: {}", r.why, r.fix),
                    "markdown": format!("{}\n\n**Fix:** {}", r.why, r.fix),
                },
                "defaultConfiguration": { "level": level(r.severity) },
                "properties": { "tags": ["kubernetes", "rollout", r.knob] },
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let rule_index = RULES.iter().position(|r| r.id == f.id);
            let mut result = json!({
                "ruleId": f.id,
                "level": level(f.severity),
                "message": { "text": format!("{}: {}. Fix: {}", f.object, f.message, f.fix) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.file) },
                        "region": { "startLine": f.line.max(1) },
                    },
                    "logicalLocations": [{ "name": f.path, "fullyQualifiedName": format!("{}.{}", f.object, f.path), "kind": "member" }],
                }],
                "partialFingerprints": { "rolltestFinding/v1": format!("{}:{}:{}", f.id, f.object, f.path) },
                "properties": { "object": f.object, "path": f.path, "why": f.why },
            });
            if let (Some(i), Some(obj)) = (rule_index, result.as_object_mut()) {
                obj.insert("ruleIndex".into(), json!(i));
            }
            result
        })
        .collect();
    let artifacts: BTreeSet<String> = findings.iter().map(|f| uri(&f.file)).collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "rolltest",
                "version": env!("CARGO_PKG_VERSION"),
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "artifacts": artifacts.iter().map(|a| json!({"location": {"uri": a}})).collect::<Vec<_>>(),
            "results": results,
        }],
    })
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Info => "note",
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}

/// A relative URI for a file as given (`./k8s/a.yaml` → `k8s/a.yaml`).
fn uri(file: &str) -> String {
    let f = file.trim_start_matches("./");
    let f = if f == "<stdin>" { "stdin" } else { f };
    let prefix = if f.starts_with('/') { "file://" } else { "" };
    let encoded: String = f
        .replace('\\', "/")
        .chars()
        .map(|c| match c {
            ' ' => "%20".to_owned(),
            c => c.to_string(),
        })
        .collect();
    format!("{prefix}{encoded}")
}
