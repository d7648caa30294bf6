//! Reading one run directory for a comparison: `summary.json`, `run.json`,
//! the failed records of `records.csv`, `timeline.json` (rollout runs) and
//! the applied manifests under `manifests/`.

use std::path::{Path, PathBuf};

use rolltest_core::{
    model::{Cause, LifecycleKind, Outcome, Timeline},
    summary::{RunFacts, Summary},
};

use crate::{
    manifest::{self, Manifest},
    rundir::{self, RunDir},
};

use super::CompareError;

/// One failed request, as the comparison needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Send time (the intended time when never sent), µs on the run clock.
    pub at_us: u64,
    /// Its attributed cause (`None`: unattributed).
    pub cause: Option<Cause>,
}

/// What the time axes are aligned at in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Anchor {
    /// µs on the run clock.
    pub at_us: u64,
    /// In words: `action rollout-restart deployment api`, or `load start`.
    pub label: String,
}

/// A run directory, read.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The directory as given.
    pub dir: PathBuf,
    /// Its last path component (for default output names).
    pub name: String,
    /// `summary.json`.
    pub summary: Summary,
    /// `run.json`.
    pub facts: RunFacts,
    /// Every failed request.
    pub failures: Vec<Failure>,
    /// `timeline.json` (empty for a plain load run).
    pub timeline: Timeline,
    /// The objects of `manifests/` (empty when there is none).
    pub manifests: Vec<Manifest>,
}

impl RunData {
    /// The asked load duration, s: `run.json` `cluster.asked_duration_s` for
    /// a rollout run (the load went on until the rollout settled), else
    /// `duration_s`.
    pub fn asked_duration_s(&self) -> f64 {
        self.facts
            .cluster
            .as_ref()
            .map_or(self.facts.duration_s, |c| c.asked_duration_s)
    }

    /// Where the time axis is aligned: the first `action_started` event, or
    /// the load's start when the run has no action.
    pub fn anchor(&self) -> Anchor {
        self.timeline
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                LifecycleKind::ActionStarted { action, target, .. } => {
                    Some((e.at_us, format!("{action} {target}")))
                }
                _ => None,
            })
            .min_by_key(|(at, _)| *at)
            .map_or_else(
                || Anchor {
                    at_us: self.facts.load_started_us,
                    label: "load start (no action)".into(),
                },
                |(at_us, what)| Anchor {
                    at_us,
                    label: format!("first action: {what}"),
                },
            )
    }
}

fn not_a_run(dir: &Path, why: impl Into<String>) -> CompareError {
    CompareError::NotARun {
        dir: dir.to_path_buf(),
        why: why.into(),
    }
}

fn malformed(path: PathBuf, message: impl Into<String>) -> CompareError {
    CompareError::Malformed {
        path,
        message: message.into(),
    }
}

/// Reads a run directory written by `rolltest run` (or `rolltest load`).
pub fn load_run(dir: &Path) -> Result<RunData, CompareError> {
    if !dir.is_dir() {
        return Err(not_a_run(dir, "no such directory"));
    }
    for name in [rundir::SUMMARY, rundir::FACTS, rundir::RECORDS] {
        if !dir.join(name).is_file() {
            return Err(not_a_run(dir, format!("no {name}")));
        }
    }
    let rd = RunDir::open(dir).map_err(|e| not_a_run(dir, e.to_string()))?;
    let summary_text = rd
        .read(rundir::SUMMARY)
        .map_err(|e| not_a_run(dir, e.to_string()))?;
    let summary: Summary = serde_json::from_str(&summary_text).map_err(|e| {
        malformed(
            rd.file(rundir::SUMMARY),
            format!("not a rolltest summary: {e}"),
        )
    })?;
    let facts = rd.read_facts().map_err(|e| match e {
        crate::rundir::RunDirError::Malformed { path, message, .. } => {
            malformed(path, format!("not a rolltest run.json: {message}"))
        }
        other => not_a_run(dir, other.to_string()),
    })?;
    let mut failures = Vec::new();
    rd.read_records(|r| {
        if let Outcome::Failed(_) = r.outcome {
            failures.push(Failure {
                at_us: r.sent_us.unwrap_or(r.intended_us),
                cause: r.cause,
            });
        }
    })
    .map_err(|e| malformed(rd.file(rundir::RECORDS), e.to_string()))?;
    let timeline = if rd.file(rundir::TIMELINE).is_file() {
        let text = rd
            .read(rundir::TIMELINE)
            .map_err(|e| malformed(rd.file(rundir::TIMELINE), e.to_string()))?;
        let mut t: Timeline = serde_json::from_str(&text).map_err(|e| {
            malformed(
                rd.file(rundir::TIMELINE),
                format!("not a rolltest timeline: {e}"),
            )
        })?;
        t.sort();
        t
    } else {
        Timeline::default()
    };
    let manifests = read_manifests(&dir.join("manifests"))?;
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "run".into());
    Ok(RunData {
        dir: dir.to_path_buf(),
        name,
        summary,
        facts,
        failures,
        timeline,
        manifests,
    })
}

/// Every object of the YAML/JSON files directly in `dir`, files in name order.
fn read_manifests(dir: &Path) -> Result<Vec<Manifest>, CompareError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| malformed(dir.to_path_buf(), e.to_string()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(manifest::load_file(&f)?);
    }
    Ok(out)
}
