//! The one finish path of `run`, `load` and `report`: the run's evidence →
//! summary (correlated causes and propagation for a cluster run) → every
//! output (`run::output`'s reporters). A report rebuild reads the evidence back from the run directory
//! and takes the same path, so it writes the same bytes.

use std::{collections::HashMap, path::Path};

use rolltest_core::{
    correlate,
    model::{Attribution, FailedTry, Outcome, RequestRecord, Timeline},
    summary::{Aggregate, PropagationStats, RetryStats, RunFacts, Summary},
};

use super::output::{self, Finished};
use crate::{error::RunError, report, rundir::RunDir, scenario::Scenario};

/// What a run left to judge.
pub(super) enum Evidence<'a> {
    /// A plain load: its records, aggregated as they were written.
    Load(&'a Aggregate),
    /// A cluster run: every record (pods and causes filled in) and the
    /// lifecycle timeline.
    Cluster {
        /// The records.
        records: &'a [RequestRecord],
        /// The timeline.
        timeline: &'a Timeline,
        /// How the embedded proxy (or none) forwards.
        proxy_mode: correlate::ProxyMode,
        /// What the run's attribution already read of the timeline (`None`
        /// when `rolltest report` rebuilds from the run directory).
        read: Option<correlate::TimelineFacts>,
    },
}

/// Summarises and judges the evidence, then hands the finished run to every
/// reporter (summary.json, report.html, the terminal, JUnit with `junit`).
pub(super) fn finish(
    dir: &RunDir,
    facts: &RunFacts,
    scenario: &Scenario,
    evidence: Evidence<'_>,
    junit: Option<&Path>,
) -> Result<Summary, RunError> {
    let reporters = output::reporters(junit);
    let report = |run: &Finished<'_>| -> Result<(), RunError> {
        for r in &reporters {
            r.report(run)?;
        }
        Ok(())
    };
    match evidence {
        Evidence::Load(aggregate) => {
            let summary = Summary::build(facts, aggregate, &scenario.limits);
            report(&Finished {
                dir,
                facts,
                summary: &summary,
                aggregate,
                rollout: None,
            })?;
            Ok(summary)
        }
        Evidence::Cluster {
            records,
            timeline,
            proxy_mode,
            read,
        } => {
            let duration_us = (facts.duration_s * 1e6).round() as u64;
            let mut aggregate = Aggregate::new(facts.load_started_us, duration_us);
            for r in records {
                aggregate.add(r);
            }
            let input = correlate::Input {
                records,
                timeline,
                conns: &[],
                proxy: &[],
                proxy_mode,
                load_started_us: facts.load_started_us,
                propagation_allowance_us: scenario
                    .cluster
                    .as_ref()
                    .and_then(|c| c.propagation_allowance_us()),
            };
            // The run's one reading of the timeline, for the groups and the
            // propagation too (a rebuild reads it here).
            let correlation = match read {
                Some(read) => correlate::Correlation::with_facts(input, read),
                None => correlate::Correlation::new(input),
            };
            let mut summary = Summary::build(facts, &aggregate, &scenario.limits);
            summary.causes = correlation.groups(&[]);
            let mut propagation = PropagationStats::new(correlation.propagation());
            if proxy_mode == rolltest_core::model::ProxyMode::External {
                propagation = propagation.with_allowance(correlation.allowance());
            }
            summary.propagation = Some(propagation);
            summary.retries = RetryStats::for_run(proxy_mode, records);
            let failures = failure_points(records);
            let retried: Vec<report::RetriedPoint> = records
                .iter()
                .filter_map(report::RetriedPoint::from_record)
                .collect();
            let propagation = summary
                .propagation
                .as_ref()
                .map(|p| p.pods.clone())
                .unwrap_or_default();
            let rollout = report::Rollout {
                timeline,
                causes: &summary.causes,
                failures: &failures,
                retried: &retried,
                propagation: &propagation,
                findings: &summary.lint,
                load_started_us: facts.load_started_us,
                ended_us: facts.ended_us,
            };
            report(&Finished {
                dir,
                facts,
                summary: &summary,
                aggregate: &aggregate,
                rollout: Some(&rollout),
            })?;
            Ok(summary)
        }
    }
}

fn failure_points(records: &[RequestRecord]) -> Vec<report::FailurePoint> {
    records
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Failed(kind) => Some(report::FailurePoint {
                sent_us: r.sent_us.unwrap_or(r.intended_us),
                pod: r.pod.clone(),
                cause: r.cause,
                kind,
            }),
            _ => None,
        })
        .collect()
}

/// Gives each record the ingress retried its failed tries (by `seq`).
pub(super) fn apply_failed_tries(
    records: &mut [RequestRecord],
    retried: Vec<(u64, Vec<FailedTry>)>,
) {
    let index: HashMap<u64, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.seq, i))
        .collect();
    for (seq, tries) in retried {
        if let Some(&i) = index.get(&seq) {
            records[i].failed_tries = tries;
        }
    }
}

/// Fills each failed record's cause and, where the record had none, its pod.
pub(super) fn apply_attributions(records: &mut [RequestRecord], attributions: &[Attribution]) {
    let index: HashMap<u64, usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.outcome, Outcome::Failed(_)))
        .map(|(i, r)| (r.seq, i))
        .collect();
    for a in attributions {
        if let Some(&i) = index.get(&a.seq) {
            let r = &mut records[i];
            r.cause = Some(a.cause);
            if r.pod.is_none() {
                r.pod.clone_from(&a.pod);
            }
        }
    }
}
