//! JUnit XML for CI (`rolltest run … --junit FILE`, `rolltest load … --junit FILE`).
//!
//! One `<testsuite name="rolltest: SCENARIO">` inside a `<testsuites>` root,
//! built from the summary alone (so it says exactly what summary.json says):
//!
//! - one test case per verdict check (`classname="rolltest.check"`, named by
//!   the check: `max_failed`, `max_p99_ms`, ..., `max_dropped`,
//!   `max_schedule_lag_p99_ms`, `min_achieved_ratio`). A failed *target*
//!   check is a `<failure>`; a failed *generator* check is an `<error>`.
//! - one test case `rolltest.run` / `conclusive`: an `<error>` listing every
//!   reason when the run is inconclusive (interrupted, generator behind, the
//!   disruption itself failed).
//! - rollout runs only (a `[cluster]` scenario; plain `load` attributes no
//!   cause): one test case per cause of [`Cause::ALL`]
//!   (`classname="rolltest.cause"`). A cause with failed requests is a
//!   `<failure>` whose message is the evidence of its groups and the fix;
//!   a cause with none passes.
//!
//! Why `<error>` and not `<skipped>` for an inconclusive run: JUnit's `error`
//! means "the test could not run properly", which is what an inconclusive run
//! is, and every CI test view (GitHub's test-report actions, GitLab, Jenkins)
//! counts errors as not passing and shows them in red, apart from failures.
//! `<skipped>` is shown as neutral and most publishers let a suite with only
//! skips pass, which would contradict exit code 4 ("never passes").
//!
//! The checks are judged after the load, so their test cases have
//! `time="0.000"`; the suite's `time` is the whole run (cluster setup, load,
//! settling). `timestamp` is the run's UTC start without zone or fraction, as
//! the JUnit schema writes it; `started_at` in the properties has the rest.
//!
//! The XML is written by hand: a few elements, and [`escape_text`] /
//! [`escape_attr`] cover XML 1.0 (characters XML cannot carry at all become
//! U+FFFD).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use rolltest_core::{
    model::Cause,
    summary::{RunFacts, Summary},
    verdict::{Check, CheckKind, Verdict},
};

use crate::rundir;

/// Why the JUnit file could not be written (exit code 3: the run itself went fine).
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    /// Creating the file's directory, writing or renaming it failed.
    #[error("cannot write the JUnit file {}: {source}", path.display())]
    Write {
        /// The file asked for.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Checks a `--junit` path before the run starts, so a bad one costs no run:
/// it must name a file, not an existing directory.
pub fn check_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("needs a file name".into());
    }
    if path.is_dir() {
        return Err(format!("{} is a directory, not a file", path.display()));
    }
    Ok(())
}

/// Writes the JUnit XML of a finished run to `path` (parent directories are
/// created; the file is written beside and renamed into place, so a reader
/// never sees half of it). `run_dir` is the run directory (for the report path).
pub fn write(
    path: &Path,
    summary: &Summary,
    facts: &RunFacts,
    run_dir: &Path,
) -> Result<(), JunitError> {
    let err = |source| JunitError::Write {
        path: path.to_path_buf(),
        source,
    };
    let xml = render(summary, facts, run_dir);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, xml).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// One `<testcase>`.
struct Case {
    classname: &'static str,
    name: String,
    outcome: CaseOutcome,
}

enum CaseOutcome {
    Pass,
    /// `<failure>` (the target broke a limit).
    Failure {
        kind: String,
        message: String,
        body: String,
    },
    /// `<error>` (the run proves nothing).
    Error {
        kind: String,
        message: String,
        body: String,
    },
}

/// Renders the JUnit XML of a run.
pub fn render(summary: &Summary, facts: &RunFacts, run_dir: &Path) -> String {
    let mut cases: Vec<Case> = summary
        .checks
        .iter()
        .map(|c| check_case(c, summary))
        .collect();
    cases.push(conclusive_case(summary));
    if facts.cluster.is_some() {
        cases.extend(Cause::ALL.into_iter().map(|c| cause_case(c, summary)));
    }
    let tests = cases.len();
    let failures = cases
        .iter()
        .filter(|c| matches!(c.outcome, CaseOutcome::Failure { .. }))
        .count();
    let errors = cases
        .iter()
        .filter(|c| matches!(c.outcome, CaseOutcome::Error { .. }))
        .count();
    let time = format!("{:.3}", facts.ended_us as f64 / 1e6);
    let suite = format!("rolltest: {}", summary.scenario);

    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"rolltest\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{time}\">"
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{time}\" timestamp=\"{}\">",
        escape_attr(&suite),
        escape_attr(&junit_timestamp(&summary.started_at)),
    );
    x.push_str("    <properties>\n");
    for (name, value) in properties(summary, facts, run_dir) {
        let _ = writeln!(
            x,
            "      <property name=\"{}\" value=\"{}\"/>",
            escape_attr(name),
            escape_attr(&value)
        );
    }
    x.push_str("    </properties>\n");
    for case in &cases {
        let open = format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"0.000\"",
            case.classname,
            escape_attr(&case.name)
        );
        let (tag, kind, message, body) = match &case.outcome {
            CaseOutcome::Pass => {
                let _ = writeln!(x, "{open}/>");
                continue;
            }
            CaseOutcome::Failure {
                kind,
                message,
                body,
            } => ("failure", kind, message, body),
            CaseOutcome::Error {
                kind,
                message,
                body,
            } => ("error", kind, message, body),
        };
        let _ = writeln!(x, "{open}>");
        let _ = writeln!(
            x,
            "      <{tag} type=\"{}\" message=\"{}\">{}</{tag}>",
            escape_attr(kind),
            escape_attr(message),
            escape_text(body)
        );
        x.push_str("    </testcase>\n");
    }
    let _ = writeln!(
        x,
        "    <system-out>{}</system-out>",
        escape_text(&system_out(summary, run_dir))
    );
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// `2026-11-25T03:12:01` from `2026-11-25T03:12:01.123Z` (the schema's
/// pattern: no zone, no fraction; rolltest's times are UTC).
fn junit_timestamp(started_at: &str) -> String {
    started_at.chars().take(19).collect()
}

fn properties(summary: &Summary, facts: &RunFacts, run_dir: &Path) -> Vec<(&'static str, String)> {
    let r = &summary.requests;
    let mut p = vec![
        ("scenario", summary.scenario.clone()),
        ("target", summary.target.clone()),
        ("verdict", summary.verdict.as_str().to_string()),
        ("report", run_dir.join(rundir::REPORT).display().to_string()),
        ("run_dir", run_dir.display().to_string()),
        ("started_at", summary.started_at.clone()),
        ("rate", summary.rate.to_string()),
        ("achieved_rate", summary.achieved_rate.to_string()),
        ("requests.scheduled", r.scheduled.to_string()),
        ("requests.sent", r.sent.to_string()),
        ("requests.ok", r.ok.to_string()),
        ("requests.failed", r.failed.to_string()),
        ("requests.dropped", r.dropped.to_string()),
        ("rolltest_version", summary.rolltest_version.clone()),
    ];
    if let Some(c) = &facts.cluster {
        p.push(("cluster.mode", c.mode.clone()));
        p.push(("cluster.namespace", c.namespace.clone()));
        if let Some(context) = &c.context {
            p.push(("cluster.context", context.clone()));
        }
        p.push(("cluster.deployment", c.deployment.clone()));
    }
    p
}

fn number(v: f64) -> String {
    // Whole numbers without ".0" (limits and counts read better), others as they are.
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

fn check_case(c: &Check, summary: &Summary) -> Case {
    let outcome = if c.pass {
        CaseOutcome::Pass
    } else {
        let lower_bound = c.name.starts_with("min_");
        let message = match c.actual {
            Some(a) if lower_bound => format!(
                "{}: {} is below the limit {}",
                c.name,
                number(a),
                number(c.limit)
            ),
            Some(a) => format!(
                "{}: {} is above the limit {}",
                c.name,
                number(a),
                number(c.limit)
            ),
            None => format!(
                "{}: nothing was measured (no successful request), limit {}",
                c.name,
                number(c.limit)
            ),
        };
        let mut body = format!("{message}\n");
        let r = &summary.requests;
        let _ = writeln!(
            body,
            "requests: {} scheduled, {} sent, {} ok, {} failed, {} dropped",
            r.scheduled, r.sent, r.ok, r.failed, r.dropped
        );
        let nonzero = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let kinds = nonzero(&summary.errors_by_kind);
        if !kinds.is_empty() {
            let _ = writeln!(body, "errors by kind: {kinds}");
        }
        let causes = nonzero(&summary.errors_by_cause);
        if !causes.is_empty() {
            let _ = writeln!(body, "errors by cause: {causes}");
        }
        match c.kind {
            CheckKind::Target => CaseOutcome::Failure {
                kind: c.name.clone(),
                message,
                body,
            },
            CheckKind::Generator => {
                body.push_str(
                    "the load generator did not deliver the asked load: the run is inconclusive\n",
                );
                CaseOutcome::Error {
                    kind: c.name.clone(),
                    message,
                    body,
                }
            }
        }
    };
    Case {
        classname: "rolltest.check",
        name: c.name.clone(),
        outcome,
    }
}

fn conclusive_case(summary: &Summary) -> Case {
    let outcome = if summary.verdict == Verdict::Inconclusive {
        let reasons = if summary.inconclusive_reasons.is_empty() {
            vec!["the run is inconclusive".to_string()]
        } else {
            summary.inconclusive_reasons.clone()
        };
        let mut body = String::from("the run proves nothing (exit code 4):\n");
        for r in &reasons {
            let _ = writeln!(body, "- {r}");
        }
        CaseOutcome::Error {
            kind: "inconclusive".into(),
            message: reasons.join("; "),
            body,
        }
    } else {
        CaseOutcome::Pass
    };
    Case {
        classname: "rolltest.run",
        name: "conclusive".into(),
        outcome,
    }
}

/// Groups of a cause shown in the message; the body has them all.
const MESSAGE_GROUPS: usize = 3;

fn cause_case(cause: Cause, summary: &Summary) -> Case {
    let groups: Vec<_> = summary.causes.iter().filter(|g| g.cause == cause).collect();
    let count = summary
        .errors_by_cause
        .get(cause.as_str())
        .copied()
        .unwrap_or_else(|| groups.iter().map(|g| g.count).sum());
    let outcome = if count == 0 {
        CaseOutcome::Pass
    } else {
        let mut fixes: Vec<&str> = Vec::new();
        for g in &groups {
            if !fixes.contains(&g.fix.as_str()) {
                fixes.push(&g.fix);
            }
        }
        let mut message = format!("{count} failed request(s) caused by {}", cause.as_str());
        if !groups.is_empty() {
            let shown: Vec<&str> = groups
                .iter()
                .take(MESSAGE_GROUPS)
                .map(|g| g.evidence.as_str())
                .collect();
            let _ = write!(message, ": {}", shown.join("; "));
            if groups.len() > MESSAGE_GROUPS {
                let _ = write!(
                    message,
                    "; and {} more group(s) in the report",
                    groups.len() - MESSAGE_GROUPS
                );
            }
            let _ = write!(message, ". Fix: {}", fixes.join("; "));
        }
        let mut body = String::new();
        for g in &groups {
            let kinds: Vec<String> = g
                .kinds
                .iter()
                .map(|(k, n)| format!("{} {n}", k.as_str()))
                .collect();
            let _ = writeln!(
                body,
                "{} on {}: {} failed request(s) ({})",
                cause.as_str(),
                g.pod.as_deref().unwrap_or("no single pod"),
                g.count,
                kinds.join(", ")
            );
            let _ = writeln!(body, "  evidence: {}", g.evidence);
            let _ = writeln!(body, "  fix: {}", g.fix);
        }
        if groups.is_empty() {
            body.push_str("no evidence recorded for these failures (see the report)\n");
        }
        CaseOutcome::Failure {
            kind: cause.as_str().into(),
            message,
            body,
        }
    };
    Case {
        classname: "rolltest.cause",
        name: cause.as_str().into(),
        outcome,
    }
}

fn system_out(summary: &Summary, run_dir: &Path) -> String {
    let r = &summary.requests;
    let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2} ms"));
    format!(
        "{} {} ({})\nrequests: {} scheduled, {} sent, {} ok, {} failed, {} dropped\n\
         rate: {} req/s asked, {} achieved\nlatency: p50 {} p99 {} max {}\nreport: {}\n",
        summary.verdict.as_str().to_uppercase(),
        summary.scenario,
        summary.target,
        r.scheduled,
        r.sent,
        r.ok,
        r.failed,
        r.dropped,
        summary.rate,
        summary.achieved_rate,
        ms(summary.latency_ms.p50),
        ms(summary.latency_ms.p99),
        ms(summary.latency_ms.max),
        run_dir.join(rundir::REPORT).display()
    )
}

/// A character XML 1.0 can carry at all (escaped or not).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text content: `&`, `<`, `>` (so `]]>` never appears), a carriage
/// return as `&#13;` (kept through line-end normalisation); characters XML
/// 1.0 cannot carry become U+FFFD.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c if xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

/// Escapes an attribute value (double-quoted): as [`escape_text`] plus both
/// quotes, and tab and line feed as character references, which survive
/// attribute-value normalisation (a literal newline would read back as a space).
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c => out.push_str(&escape_text(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_controls() {
        assert_eq!(
            escape_text("a<b & c>d ]]> \"q\""),
            "a&lt;b &amp; c&gt;d ]]&gt; \"q\""
        );
        assert_eq!(
            escape_attr("x=\"1\" & y='2'\n\tz<"),
            "x=&quot;1&quot; &amp; y=&apos;2&apos;&#10;&#9;z&lt;"
        );
        assert_eq!(
            escape_text("bell\u{7}nul\u{0}\r"),
            "bell\u{FFFD}nul\u{FFFD}&#13;"
        );
        assert_eq!(escape_text("ünïcødé → ok 🚀"), "ünïcødé → ok 🚀");
        assert_eq!(escape_attr("\u{FFFE}"), "\u{FFFD}");
    }

    #[test]
    fn timestamp_drops_zone_and_fraction() {
        assert_eq!(
            junit_timestamp("2026-11-25T03:12:01.123Z"),
            "2026-11-25T03:12:01"
        );
    }

    #[test]
    fn numbers_read_plainly() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(500.0), "500");
        assert_eq!(number(0.999), "0.999");
    }

    #[test]
    fn check_path_refuses_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_path(dir.path()).is_err());
        assert!(check_path(&dir.path().join("junit.xml")).is_ok());
        assert!(check_path(Path::new("")).is_err());
    }
}
