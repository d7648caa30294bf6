//! Timings taken from a run's timeline: each deleted pod's termination
//! (deletion → preStop → SIGTERM → exit) and the failures binned over the
//! aligned time axis.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use rolltest_core::model::{Cause, LifecycleKind, Timeline};

use super::load::Failure;

/// How far (µs) an event about a pod may be observed before its deletion and
/// still count as part of the termination (watches of different kinds are
/// not ordered with each other).
const CROSS_WATCH_SLACK_US: u64 = 500_000;

/// One deleted pod's termination, ms from its deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodTermination {
    /// The pod.
    pub pod: String,
    /// Deletion, µs on the run clock: the earlier of the deletion's
    /// observation and the first termination step reported.
    pub deletion_us: u64,
    /// Deletion → preStop started.
    pub to_pre_stop_ms: Option<f64>,
    /// preStop started → finished.
    pub pre_stop_ms: Option<f64>,
    /// Deletion → SIGTERM.
    pub to_sigterm_ms: Option<f64>,
    /// SIGTERM → the container exited.
    pub sigterm_to_exit_ms: Option<f64>,
    /// Deletion → the container exited.
    pub total_ms: Option<f64>,
    /// The grace period ran out (SIGKILL).
    pub sigkilled: bool,
}

/// Min, median and max of one figure over pods, ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Pods with the figure.
    pub n: usize,
    /// Smallest.
    pub min: Option<f64>,
    /// Median ([`rolltest_core::stats::median`]).
    pub median: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Spread {
    /// The spread of some values.
    pub fn of(values: impl Iterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        Spread {
            n: v.len(),
            min: v.first().copied(),
            median: rolltest_core::stats::median(&v),
            max: v.last().copied(),
        }
    }
}

/// The terminations of one run, per pod and summarized.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Termination {
    /// Pods deleted during the run.
    pub pods: Vec<PodTermination>,
    /// Deletion → SIGTERM.
    pub to_sigterm_ms: Spread,
    /// preStop duration.
    pub pre_stop_ms: Spread,
    /// SIGTERM → exit.
    pub sigterm_to_exit_ms: Spread,
    /// Deletion → exit.
    pub total_ms: Spread,
    /// Pods that got SIGKILL.
    pub sigkilled: usize,
}

fn ms(from: u64, to: Option<u64>) -> Option<f64> {
    to.map(|t| t.saturating_sub(from) as f64 / 1e3)
}

/// Every deleted pod's termination, from the timeline.
pub fn terminations(t: &Timeline) -> Termination {
    let mut deleted: BTreeMap<String, u64> = BTreeMap::new();
    for e in &t.events {
        if let (LifecycleKind::DeletionRequested { .. }, Some(p)) = (&e.kind, &e.pod) {
            deleted.entry(p.clone()).or_insert(e.at_us);
        }
    }
    let mut pods = Vec::new();
    for (pod, observed) in &deleted {
        let when = |pred: fn(&LifecycleKind) -> bool| {
            t.for_pod(pod)
                .filter(|e| pred(&e.kind) && e.at_us + CROSS_WATCH_SLACK_US >= *observed)
                .map(|e| u64::try_from(e.when_us()).unwrap_or(0))
                .min()
        };
        let pre_start = when(|k| matches!(k, LifecycleKind::PreStopStarted));
        let pre_end = when(|k| matches!(k, LifecycleKind::PreStopFinished));
        let sigterm = when(|k| matches!(k, LifecycleKind::SigtermSent));
        let exit = when(|k| matches!(k, LifecycleKind::ContainerExited { .. }));
        let sigkilled = when(|k| matches!(k, LifecycleKind::SigkillSent)).is_some();
        let deletion_us = [Some(*observed), pre_start, sigterm, exit]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(*observed);
        pods.push(PodTermination {
            pod: pod.clone(),
            deletion_us,
            to_pre_stop_ms: ms(deletion_us, pre_start),
            pre_stop_ms: pre_start.and_then(|s| ms(s, pre_end)),
            to_sigterm_ms: ms(deletion_us, sigterm),
            sigterm_to_exit_ms: sigterm.and_then(|s| ms(s, exit)),
            total_ms: ms(deletion_us, exit),
            sigkilled,
        });
    }
    pods.sort_by_key(|p| p.deletion_us);
    Termination {
        to_sigterm_ms: Spread::of(pods.iter().filter_map(|p| p.to_sigterm_ms)),
        pre_stop_ms: Spread::of(pods.iter().filter_map(|p| p.pre_stop_ms)),
        sigterm_to_exit_ms: Spread::of(pods.iter().filter_map(|p| p.sigterm_to_exit_ms)),
        total_ms: Spread::of(pods.iter().filter_map(|p| p.total_ms)),
        sigkilled: pods.iter().filter(|p| p.sigkilled).count(),
        pods,
    }
}

/// Failures per time bin and cause, on the aligned axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureBins {
    /// Bin width, ms.
    pub bin_ms: u64,
    /// Non-empty bins, in time order.
    pub bins: Vec<FailureBin>,
}

/// One non-empty bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureBin {
    /// Start of the bin, s from the anchor.
    pub t_s: f64,
    /// Failures by cause (`unattributed` for none).
    pub by_cause: BTreeMap<String, u64>,
}

/// The bin width for an axis span: 250 ms up to a minute, else about 240 bins
/// rounded to 100 ms.
pub fn bin_width_ms(span_ms: u64) -> u64 {
    if span_ms <= 60_000 {
        250
    } else {
        span_ms.div_ceil(240).div_ceil(100) * 100
    }
}

/// Bins failures by their time relative to `anchor_us`.
pub fn bin_failures(failures: &[Failure], anchor_us: u64, bin_ms: u64) -> FailureBins {
    let width = i64::try_from(bin_ms.max(1) * 1000).unwrap_or(i64::MAX);
    let mut bins: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    for f in failures {
        let rel =
            i64::try_from(f.at_us).unwrap_or(i64::MAX) - i64::try_from(anchor_us).unwrap_or(0);
        let idx = rel.div_euclid(width);
        *bins
            .entry(idx)
            .or_default()
            .entry(Cause::name_of(f.cause).to_string())
            .or_default() += 1;
    }
    FailureBins {
        bin_ms,
        bins: bins
            .into_iter()
            .map(|(i, by_cause)| FailureBin {
                t_s: (i * width) as f64 / 1e6,
                by_cause,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rolltest_core::model::{EventSource, LifecycleEvent};

    fn ev(
        at_us: u64,
        server_us: Option<i64>,
        source: EventSource,
        kind: LifecycleKind,
    ) -> LifecycleEvent {
        LifecycleEvent {
            at_us,
            server_us,
            server_precision_us: None,
            pod: Some("p".into()),
            source,
            kind,
        }
    }

    #[test]
    fn termination_steps_use_the_kubelet_event_times() {
        let t = Timeline {
            events: vec![
                ev(
                    1_010_000,
                    None,
                    EventSource::Pod,
                    LifecycleKind::DeletionRequested { grace_seconds: 12 },
                ),
                ev(
                    1_020_000,
                    Some(1_005_000),
                    EventSource::Event,
                    LifecycleKind::PreStopStarted,
                ),
                ev(
                    4_020_000,
                    Some(4_005_000),
                    EventSource::Event,
                    LifecycleKind::PreStopFinished,
                ),
                ev(
                    4_021_000,
                    Some(4_006_000),
                    EventSource::Event,
                    LifecycleKind::SigtermSent,
                ),
                ev(
                    4_900_000,
                    Some(4_806_000),
                    EventSource::Event,
                    LifecycleKind::ContainerExited {
                        exit_code: Some(0),
                        signal: None,
                        reason: None,
                    },
                ),
            ],
        };
        let term = terminations(&t);
        assert_eq!(term.pods.len(), 1);
        let p = &term.pods[0];
        // The preStop was reported before the deletion was observed: the
        // deletion is taken at the earlier time, so no duration is negative.
        assert_eq!(p.deletion_us, 1_005_000);
        assert_eq!(p.pre_stop_ms, Some(3000.0));
        assert_eq!(p.to_sigterm_ms, Some(3001.0));
        assert_eq!(p.sigterm_to_exit_ms, Some(800.0));
        assert_eq!(p.total_ms, Some(3801.0));
        assert_eq!(term.total_ms.median, Some(3801.0));
        assert!(!p.sigkilled);
    }

    #[test]
    fn failures_bin_on_both_sides_of_the_anchor() {
        let f = |at_us, cause| Failure { at_us, cause };
        let bins = bin_failures(
            &[
                f(9_900_000, Some(Cause::Capacity)),
                f(10_100_000, Some(Cause::EndpointLag)),
                f(10_200_000, None),
            ],
            10_000_000,
            250,
        );
        assert_eq!(bins.bins.len(), 2);
        assert_eq!(bins.bins[0].t_s, -0.25);
        assert_eq!(bins.bins[0].by_cause["capacity"], 1);
        assert_eq!(bins.bins[1].t_s, 0.0);
        assert_eq!(bins.bins[1].by_cause["unattributed"], 1);
        assert_eq!(bin_width_ms(30_000), 250);
        assert_eq!(bin_width_ms(600_000), 2_500);
    }
}
