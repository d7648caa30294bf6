//! The terminal summary: the verdict, counts, rates, latencies, causes with
//! their fix, the ingress's retries, problems and where the report is.

use std::path::Path;

use rolltest_core::{summary::Summary, verdict::Verdict};

use super::{Finished, Reporter};
use crate::{error::RunError, rundir};

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2} ms"))
}

/// Prints the summary to stdout.
pub(super) struct Terminal;

impl Reporter for Terminal {
    fn report(&self, run: &Finished<'_>) -> Result<(), RunError> {
        print_summary(run.summary, run.dir.path());
        Ok(())
    }
}

fn print_summary(s: &Summary, dir: &Path) {
    let verdict = match s.verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Inconclusive => "INCONCLUSIVE",
    };
    println!("{verdict}  {}  ({})", s.scenario, s.target);
    println!(
        "  requests: {} scheduled, {} sent, {} ok, {} failed, {} dropped",
        s.requests.scheduled, s.requests.sent, s.requests.ok, s.requests.failed, s.requests.dropped
    );
    println!(
        "  rate: {} req/s asked, {:.1} achieved ({:.2}%); schedule lag p50 {} p99 {}",
        s.rate,
        s.achieved_rate,
        s.achieved_ratio * 100.0,
        fmt_ms(s.schedule_lag_ms.p50),
        fmt_ms(s.schedule_lag_ms.p99)
    );
    println!(
        "  latency (ok, from schedule): p50 {} p99 {} p99.9 {} max {}",
        fmt_ms(s.latency_ms.p50),
        fmt_ms(s.latency_ms.p99),
        fmt_ms(s.latency_ms.p999),
        fmt_ms(s.latency_ms.max)
    );
    let errors: Vec<String> = s
        .errors_by_kind
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if !errors.is_empty() {
        println!("  errors: {}", errors.join(", "));
    }
    let causes: Vec<String> = s
        .errors_by_cause
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    if !causes.is_empty() {
        println!("  causes: {}", causes.join(", "));
    }
    const SHOWN: usize = 6;
    for g in s.causes.iter().take(SHOWN) {
        println!("  - {} x{}: {}", g.cause.as_str(), g.count, g.evidence);
        println!("    fix: {}", g.fix);
    }
    if s.causes.len() > SHOWN {
        println!(
            "  ... {} more cause groups in the report",
            s.causes.len() - SHOWN
        );
    }
    if let Some(p) = &s.propagation
        && let Some(max) = p.max_ms
    {
        println!(
            "  endpoint propagation (deletion -> proxy): median {:.0} ms, max {max:.0} ms over {} pod(s)",
            p.median_ms.unwrap_or(max),
            p.pods.len()
        );
    }
    if let Some(p) = &s.propagation
        && let (Some(ms), Some(source)) = (p.allowance_ms, p.allowance_source.as_deref())
    {
        println!("  node proxies allowed {ms:.0} ms after each EndpointSlice update ({source})");
    }
    if let Some(r) = &s.retries {
        println!("  ingress retries: {}", r.sentence());
    }
    let lint_errors = s
        .lint
        .iter()
        .filter(|f| f.severity == rolltest_core::model::Severity::Error)
        .count();
    if !s.lint.is_empty() {
        println!(
            "  lint: {} finding(s) on the manifests, {lint_errors} error(s) (`rolltest lint` for details)",
            s.lint.len()
        );
    }
    for c in s.checks.iter().filter(|c| !c.pass) {
        println!(
            "  check failed: {} (limit {}, actual {})",
            c.name,
            c.limit,
            c.actual.map_or_else(|| "n/a".into(), |a| a.to_string())
        );
    }
    for problem in s
        .problems
        .iter()
        .filter(|p| !s.inconclusive_reasons.contains(p))
    {
        println!("  problem: {problem}");
    }
    for reason in &s.inconclusive_reasons {
        println!("  inconclusive: {reason}");
    }
    println!("  report: {}", dir.join(rundir::REPORT).display());
}
