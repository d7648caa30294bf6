//! `rolltest compare BEFORE AFTER`: two run directories side by side, on time
//! axes aligned at each run's first action, written as `compare.html` (one
//! self-contained page) and `compare.json`.
//!
//! What it compares: failures by cause (with the delta) and over time,
//! latency percentiles, requests and verdicts, the measured endpoint
//! propagation, each deleted pod's termination (deletion → preStop → SIGTERM
//! → exit), the manifests' knobs (objects paired by kind/name) and the lint
//! findings that disappeared or appeared; then one conclusion line naming
//! the causes that changed and the knobs that explain them.
//!
//! Layout: `load` reads a run directory, `timing` derives terminations and
//! failure bins from it, `knobs` diffs the manifests, `conclusion` writes the
//! line, `page` renders the HTML. [`compare`] is pure; [`run`] does the IO.

mod conclusion;
mod knobs;
mod load;
mod page;
mod timing;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use crate::manifest::knobs::Knob;
pub use conclusion::conclude;
pub use knobs::{KnobDiff, diff as diff_knobs};
pub use load::{Anchor, Failure, RunData, load_run};
pub use page::render;
pub use timing::{FailureBins, PodTermination, Spread, Termination};

use rolltest_core::{
    ExitStatus,
    model::{Cause, Finding},
    summary::{LatencyStats, PropagationStats, RequestCounts},
};

use crate::manifest::ManifestError;

/// `compare.json` format version.
pub const FORMAT_VERSION: u32 = 1;
/// The page's file name in the output directory.
pub const HTML_FILE: &str = "compare.html";
/// The JSON's file name in the output directory.
pub const JSON_FILE: &str = "compare.json";

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The directory is not a rolltest run directory (exit 2).
    #[error("{} is not a rolltest run directory: {why}", dir.display())]
    NotARun {
        /// The directory.
        dir: PathBuf,
        /// What is missing.
        why: String,
    },
    /// A file of a run directory could not be parsed (exit 2).
    #[error("{}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A manifest of a run directory could not be parsed (exit 2).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The runs differ in rate or duration, so their counts do not compare
    /// (exit 2; `--force` compares anyway).
    #[error(
        "the runs are not comparable: {}; pass --force to compare anyway",
        .0.join("; ")
    )]
    Mismatch(Vec<String>),
    /// The output could not be written (exit 3).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl CompareError {
    /// The exit status: 2 for bad input, 3 when the output cannot be written.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            CompareError::Write { .. } => ExitStatus::RunError,
            _ => ExitStatus::BadInput,
        }
    }
}

/// One run's side of `compare.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    /// The run directory as given.
    pub dir: String,
    /// Scenario name.
    pub scenario: String,
    /// pass, fail or inconclusive.
    pub verdict: String,
    /// Wall-clock start.
    pub started_at: String,
    /// Asked rate, req/s.
    pub rate: f64,
    /// Asked duration, s.
    pub asked_duration_s: f64,
    /// Load duration, s (a rollout run extends it until the rollout settled).
    pub duration_s: f64,
    /// Achieved rate, req/s.
    pub achieved_rate: f64,
    /// Request counts.
    pub requests: RequestCounts,
    /// Latency percentiles (successful requests), ms.
    pub latency_ms: LatencyStats,
    /// Failures by cause (`unattributed` for failures without one).
    pub errors_by_cause: BTreeMap<String, u64>,
    /// Failures by error kind (non-zero only).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Why an inconclusive run proves nothing.
    pub inconclusive_reasons: Vec<String>,
    /// What the time axis is aligned at.
    pub aligned_at: String,
    /// Run-clock µs of the alignment point.
    pub aligned_at_us: u64,
    /// Load start, s from the alignment point.
    pub load_start_s: f64,
    /// Run end, s from the alignment point.
    pub end_s: f64,
    /// Measured endpoint propagation (rollout runs).
    pub propagation: Option<PropagationStats>,
    /// Terminations of the deleted pods.
    pub termination: Termination,
    /// Failures over the aligned time axis.
    pub failures_over_time: FailureBins,
}

/// One cause's failures before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CauseDelta {
    /// Cause name (`unattributed` for failures without one).
    pub cause: String,
    /// Before.
    pub before: u64,
    /// After.
    pub after: u64,
    /// `after - before`.
    pub delta: i64,
}

/// A before/after figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureDelta {
    /// Before.
    pub before: Option<f64>,
    /// After.
    pub after: Option<f64>,
    /// `after - before`, when both are known.
    pub delta: Option<f64>,
}

impl FigureDelta {
    fn new(before: Option<f64>, after: Option<f64>) -> Self {
        let delta = before
            .zip(after)
            .map(|(b, a)| ((a - b) * 1000.0).round() / 1000.0);
        FigureDelta {
            before,
            after,
            delta,
        }
    }
}

/// A lint finding, as compared (keyed by id, object and path: the files and
/// lines differ between runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LintChange {
    /// Rule id.
    pub id: String,
    /// `info`, `warning`, `error`.
    pub severity: String,
    /// `Kind/name`.
    pub object: String,
    /// Field path.
    pub path: String,
    /// The message.
    pub message: String,
}

/// Lint findings that changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LintDiff {
    /// In the before run only.
    pub disappeared: Vec<LintChange>,
    /// In the after run only.
    pub appeared: Vec<LintChange>,
    /// In both.
    pub unchanged: usize,
}

/// The whole comparison (`compare.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The conclusion line.
    pub conclusion: String,
    /// The before run.
    pub before: Side,
    /// The after run.
    pub after: Side,
    /// Rate or duration differed and `--force` compared anyway: what differed.
    pub mismatches: Vec<String>,
    /// Per cause (every cause, plus `unattributed` when either run has some).
    pub failures_by_cause: Vec<CauseDelta>,
    /// p50, p90, p99, p999, max (ms).
    pub latency_ms: BTreeMap<String, FigureDelta>,
    /// Propagation median / max (ms).
    pub propagation_ms: BTreeMap<String, FigureDelta>,
    /// Termination medians (ms): to_sigterm, pre_stop, sigterm_to_exit, total.
    pub termination_median_ms: BTreeMap<String, FigureDelta>,
    /// Changed manifest fields.
    pub knobs: Vec<KnobDiff>,
    /// Lint findings that disappeared or appeared.
    pub lint: LintDiff,
}

/// What differs in rate or duration between two runs (empty: comparable).
pub fn mismatches(before: &RunData, after: &RunData) -> Vec<String> {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let mut out = Vec::new();
    if !close(before.summary.rate, after.summary.rate) {
        out.push(format!(
            "rate {} req/s before, {} req/s after",
            before.summary.rate, after.summary.rate
        ));
    }
    let (bd, ad) = (before.asked_duration_s(), after.asked_duration_s());
    if !close(bd, ad) {
        out.push(format!("duration {bd} s before, {ad} s after"));
    }
    out
}

fn errors_by_cause(d: &RunData) -> BTreeMap<String, u64> {
    let mut m: BTreeMap<String, u64> = d
        .summary
        .errors_by_cause
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    let attributed: u64 = m.values().sum();
    let rest = d.summary.requests.failed.saturating_sub(attributed);
    if rest > 0 {
        m.insert(Cause::UNATTRIBUTED.into(), rest);
    }
    m
}

fn side(d: &RunData, bin_ms: u64) -> Side {
    let anchor = d.anchor();
    let rel = |us: u64| (us as f64 - anchor.at_us as f64) / 1e6;
    Side {
        dir: d.dir.display().to_string(),
        scenario: d.summary.scenario.clone(),
        verdict: d.summary.verdict.as_str().to_string(),
        started_at: d.summary.started_at.clone(),
        rate: d.summary.rate,
        asked_duration_s: d.asked_duration_s(),
        duration_s: d.summary.duration_s,
        achieved_rate: d.summary.achieved_rate,
        requests: d.summary.requests.clone(),
        latency_ms: d.summary.latency_ms.clone(),
        errors_by_cause: errors_by_cause(d),
        errors_by_kind: d
            .summary
            .errors_by_kind
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect(),
        inconclusive_reasons: d.summary.inconclusive_reasons.clone(),
        aligned_at: anchor.label.clone(),
        aligned_at_us: anchor.at_us,
        load_start_s: rel(d.facts.load_started_us),
        end_s: rel(d.facts.ended_us.max(d.facts.load_started_us)),
        propagation: d.summary.propagation.clone(),
        termination: timing::terminations(&d.timeline),
        failures_over_time: timing::bin_failures(&d.failures, anchor.at_us, bin_ms),
    }
}

fn lint_key(f: &Finding) -> (String, String, String) {
    (f.id.clone(), f.object.clone(), f.path.clone())
}

fn lint_change(f: &Finding) -> LintChange {
    LintChange {
        id: f.id.clone(),
        severity: serde_json::to_value(f.severity)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        object: f.object.clone(),
        path: f.path.clone(),
        message: f.message.clone(),
    }
}

fn lint_diff(before: &[Finding], after: &[Finding]) -> LintDiff {
    let bk: BTreeSet<_> = before.iter().map(lint_key).collect();
    let ak: BTreeSet<_> = after.iter().map(lint_key).collect();
    LintDiff {
        disappeared: before
            .iter()
            .filter(|f| !ak.contains(&lint_key(f)))
            .map(lint_change)
            .collect(),
        appeared: after
            .iter()
            .filter(|f| !bk.contains(&lint_key(f)))
            .map(lint_change)
            .collect(),
        unchanged: bk.intersection(&ak).count(),
    }
}

/// Compares two runs (no IO). `mismatches`: what `--force` let through.
pub fn compare(before: &RunData, after: &RunData) -> Comparison {
    let span = |d: &RunData| {
        let a = d.anchor().at_us;
        let lo = d.facts.load_started_us.min(a);
        let hi = d.facts.ended_us.max(a);
        (hi - lo) / 1000
    };
    let bin_ms = timing::bin_width_ms(span(before).max(span(after)));
    let (b, a) = (side(before, bin_ms), side(after, bin_ms));
    let mut failures_by_cause = Vec::new();
    let names = Cause::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(std::iter::once(Cause::UNATTRIBUTED));
    for name in names {
        let (nb, na) = (
            b.errors_by_cause.get(name).copied().unwrap_or(0),
            a.errors_by_cause.get(name).copied().unwrap_or(0),
        );
        if name == Cause::UNATTRIBUTED && nb == 0 && na == 0 {
            continue;
        }
        failures_by_cause.push(CauseDelta {
            cause: name.into(),
            before: nb,
            after: na,
            delta: i64::try_from(na).unwrap_or(i64::MAX) - i64::try_from(nb).unwrap_or(i64::MAX),
        });
    }
    let lat = |s: &Side| {
        let l = &s.latency_ms;
        [
            ("p50", l.p50),
            ("p90", l.p90),
            ("p99", l.p99),
            ("p999", l.p999),
            ("max", l.max),
        ]
    };
    let latency_ms = lat(&b)
        .into_iter()
        .zip(lat(&a))
        .map(|((k, x), (_, y))| (k.to_string(), FigureDelta::new(x, y)))
        .collect();
    let prop = |s: &Side| {
        s.propagation
            .as_ref()
            .map_or((None, None), |p| (p.median_ms, p.max_ms))
    };
    let (pb, pa) = (prop(&b), prop(&a));
    let propagation_ms = [
        ("median".to_string(), FigureDelta::new(pb.0, pa.0)),
        ("max".to_string(), FigureDelta::new(pb.1, pa.1)),
    ]
    .into_iter()
    .collect();
    let med = |t: &Termination| {
        [
            ("to_sigterm", t.to_sigterm_ms.median),
            ("pre_stop", t.pre_stop_ms.median),
            ("sigterm_to_exit", t.sigterm_to_exit_ms.median),
            ("total", t.total_ms.median),
        ]
    };
    let termination_median_ms = med(&b.termination)
        .into_iter()
        .zip(med(&a.termination))
        .map(|((k, x), (_, y))| (k.to_string(), FigureDelta::new(x, y)))
        .collect();
    let mut c = Comparison {
        format_version: FORMAT_VERSION,
        conclusion: String::new(),
        mismatches: mismatches(before, after),
        failures_by_cause,
        latency_ms,
        propagation_ms,
        termination_median_ms,
        knobs: knobs::diff(&before.manifests, &after.manifests),
        lint: lint_diff(&before.summary.lint, &after.summary.lint),
        before: b,
        after: a,
    };
    c.conclusion = conclude(&c);
    c
}

/// `rolltest compare` options.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The run before the change.
    pub before: PathBuf,
    /// The run after it.
    pub after: PathBuf,
    /// Output directory (default `reports/compare-<before>-vs-<after>/`).
    pub out: Option<PathBuf>,
    /// Compare runs of different rates or durations.
    pub force: bool,
}

/// What [`run`] wrote.
#[derive(Debug, Clone)]
pub struct CompareOutcome {
    /// The output directory.
    pub out_dir: PathBuf,
    /// The comparison written.
    pub comparison: Comparison,
}

/// The default output directory for two run directories.
pub fn default_out(before: &RunData, after: &RunData) -> PathBuf {
    Path::new("reports").join(format!("compare-{}-vs-{}", before.name, after.name))
}

/// Reads both runs, refuses incomparable ones (unless `force`), writes
/// `compare.html` and `compare.json` into the output directory.
pub fn run(opts: &CompareOptions) -> Result<CompareOutcome, CompareError> {
    let before = load_run(&opts.before)?;
    let after = load_run(&opts.after)?;
    let comparison = compare(&before, &after);
    if !comparison.mismatches.is_empty() && !opts.force {
        return Err(CompareError::Mismatch(comparison.mismatches));
    }
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| default_out(&before, &after));
    let werr = |path: PathBuf| move |source| CompareError::Write { path, source };
    std::fs::create_dir_all(&out_dir).map_err(werr(out_dir.clone()))?;
    let mut json = serde_json::to_string_pretty(&comparison).map_err(|e| CompareError::Write {
        path: out_dir.join(JSON_FILE),
        source: std::io::Error::other(e),
    })?;
    json.push('\n');
    let json_path = out_dir.join(JSON_FILE);
    std::fs::write(&json_path, json).map_err(werr(json_path.clone()))?;
    let html_path = out_dir.join(HTML_FILE);
    std::fs::write(&html_path, render(&comparison)).map_err(werr(html_path.clone()))?;
    Ok(CompareOutcome {
        out_dir,
        comparison,
    })
}
