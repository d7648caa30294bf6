//! Aggregation: a stream of [`RequestRecord`]s folds into an [`Aggregate`]
//! (counts, HdrHistograms, time buckets), and an aggregate plus the run's
//! facts makes the [`Summary`] written to `summary.json`.
//!
//! The same fold runs live (in the record writer) and in `rolltest report`
//! (over `records.csv`), so both produce the same summary byte for byte.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{
    model::{
        Cause, CauseGroup, ErrorKind, Finding, Outcome, PodPropagation, ProxyKind, ProxyMode,
        RequestRecord,
    },
    verdict::{self, Check, Figures, Limits, Verdict},
};

/// Width of a throughput bucket (the report's throughput chart), µs.
pub const THROUGHPUT_BUCKET_US: u64 = 100_000;
/// Most latency-over-time buckets; longer runs get wider buckets.
pub const MAX_LATENCY_BUCKETS: u64 = 400;
/// Highest latency or lag the histograms track (1 hour, in µs); above it, saturates.
const HIST_MAX_US: u64 = 3_600_000_000;

/// Requests per throughput bucket, by scheduled time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThroughputBucket {
    /// Successful.
    pub ok: u32,
    /// Failed, by [`ErrorKind::index`].
    pub failed: [u32; ErrorKind::ALL.len()],
    /// Dropped by the generator.
    pub dropped: u32,
}

/// Per-pod counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodCounts {
    /// Successful requests served.
    pub ok: u64,
    /// Failed requests attributed to this pod.
    pub failed: u64,
}

/// Everything the summary and the report need, folded from the records.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// Records seen (= requests scheduled).
    pub scheduled: u64,
    /// Sent (not dropped).
    pub sent: u64,
    /// Successful.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Dropped.
    pub dropped: u64,
    /// Failures by kind, indexed by [`ErrorKind::index`].
    pub errors_by_kind: [u64; ErrorKind::ALL.len()],
    /// Failures by attributed cause.
    pub errors_by_cause: BTreeMap<Cause, u64>,
    /// Responses by HTTP status.
    pub status_codes: BTreeMap<u16, u64>,
    /// Requests by pod.
    pub pods: BTreeMap<String, PodCounts>,
    /// Latency of successful requests, µs from the scheduled time.
    pub latency: Histogram<u64>,
    /// Schedule lag of sent requests, µs.
    pub lag: Histogram<u64>,
    /// Earliest scheduled time, µs.
    pub first_intended_us: Option<u64>,
    /// Latest scheduled time, µs.
    pub last_intended_us: Option<u64>,
    /// Earliest send, µs.
    pub first_sent_us: Option<u64>,
    /// Latest send, µs.
    pub last_sent_us: Option<u64>,
    /// Throughput buckets of [`THROUGHPUT_BUCKET_US`], by scheduled time from `origin_us`.
    pub throughput: Vec<ThroughputBucket>,
    /// Latency buckets of `latency_bucket_us`, successful requests.
    pub latency_over_time: Vec<Histogram<u64>>,
    /// Width of a latency bucket, µs.
    pub latency_bucket_us: u64,
    /// Run-clock offset of the first bucket (the load's origin), µs.
    pub origin_us: u64,
}

fn new_histogram(sigfig: u8) -> Histogram<u64> {
    // The bounds are constants within hdrhistogram's limits, so this cannot fail.
    Histogram::new_with_bounds(1, HIST_MAX_US, sigfig).unwrap_or_else(|_| {
        Histogram::new(sigfig).unwrap_or_else(|_| unreachable!("valid hdrhistogram precision"))
    })
}

impl Aggregate {
    /// An empty aggregate for a load that starts at `origin_us` and is scheduled for `duration_us`.
    pub fn new(origin_us: u64, duration_us: u64) -> Self {
        let latency_bucket_us = latency_bucket_width(duration_us);
        Aggregate {
            scheduled: 0,
            sent: 0,
            ok: 0,
            failed: 0,
            dropped: 0,
            errors_by_kind: [0; ErrorKind::ALL.len()],
            errors_by_cause: BTreeMap::new(),
            status_codes: BTreeMap::new(),
            pods: BTreeMap::new(),
            latency: new_histogram(3),
            lag: new_histogram(3),
            first_intended_us: None,
            last_intended_us: None,
            first_sent_us: None,
            last_sent_us: None,
            throughput: Vec::new(),
            latency_over_time: Vec::new(),
            latency_bucket_us,
            origin_us,
        }
    }

    /// Folds one record in.
    pub fn add(&mut self, r: &RequestRecord) {
        self.scheduled += 1;
        self.first_intended_us = Some(
            self.first_intended_us
                .map_or(r.intended_us, |f| f.min(r.intended_us)),
        );
        self.last_intended_us = Some(
            self.last_intended_us
                .map_or(r.intended_us, |l| l.max(r.intended_us)),
        );
        let offset = r.intended_us.saturating_sub(self.origin_us);
        let bucket = (offset / THROUGHPUT_BUCKET_US) as usize;
        if self.throughput.len() <= bucket {
            self.throughput
                .resize(bucket + 1, ThroughputBucket::default());
        }
        let tb = &mut self.throughput[bucket];
        match r.outcome {
            Outcome::Ok => tb.ok += 1,
            Outcome::Failed(kind) => tb.failed[kind.index()] += 1,
            Outcome::Dropped => tb.dropped += 1,
        }
        if let Some(code) = r.status {
            *self.status_codes.entry(code).or_default() += 1;
        }
        match r.outcome {
            Outcome::Dropped => {
                self.dropped += 1;
                return;
            }
            Outcome::Ok => {
                self.ok += 1;
                if let Some(lat) = r.latency_us {
                    self.latency.saturating_record(lat.max(1));
                    let lb = (offset / self.latency_bucket_us) as usize;
                    if self.latency_over_time.len() <= lb {
                        // One significant digit (values within 1/16): enough
                        // for the chart's lines, and 3.6 KB a bucket where 2
                        // digits take 26 KB: up to 400 buckets fill in as a
                        // run goes on, so they are its memory's growth.
                        self.latency_over_time
                            .resize_with(lb + 1, || new_histogram(1));
                    }
                    self.latency_over_time[lb].saturating_record(lat.max(1));
                }
            }
            Outcome::Failed(kind) => {
                self.failed += 1;
                self.errors_by_kind[kind.index()] += 1;
                if let Some(cause) = r.cause {
                    *self.errors_by_cause.entry(cause).or_default() += 1;
                }
            }
        }
        self.sent += 1;
        if let Some(pod) = &r.pod {
            let counts = self.pods.entry(pod.clone()).or_default();
            if r.outcome == Outcome::Ok {
                counts.ok += 1;
            } else {
                counts.failed += 1;
            }
        }
        if let Some(sent) = r.sent_us {
            self.first_sent_us = Some(self.first_sent_us.map_or(sent, |f| f.min(sent)));
            self.last_sent_us = Some(self.last_sent_us.map_or(sent, |l| l.max(sent)));
        }
        if let Some(lag) = r.schedule_lag_us() {
            self.lag.saturating_record(lag.max(1));
        }
    }
}

/// Latency buckets: 100 ms, widened in 100 ms steps so a run has at most
/// [`MAX_LATENCY_BUCKETS`] of them.
pub fn latency_bucket_width(duration_us: u64) -> u64 {
    let per = duration_us.div_ceil(MAX_LATENCY_BUCKETS);
    per.div_ceil(THROUGHPUT_BUCKET_US).max(1) * THROUGHPUT_BUCKET_US
}

/// Run facts that do not come from the records (saved in `run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFacts {
    /// The scenario's name.
    pub scenario: String,
    /// Wall-clock start of the run, RFC 3339.
    pub started_at: String,
    /// The target URL.
    pub target: String,
    /// Asked rate, requests/s.
    pub rate: f64,
    /// Asked duration, seconds.
    pub duration_s: f64,
    /// Run-clock offset of the load's origin, µs.
    pub load_started_us: u64,
    /// Run-clock offset when the last request finished, µs.
    pub ended_us: u64,
    /// Ctrl-C (or a stop) ended scheduling early.
    pub interrupted: bool,
    /// TCP connections the generator opened.
    pub connections: u64,
    /// The rolltest version that ran it.
    pub rolltest_version: String,
    /// Rollout runs: how the cluster was reached and what was tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterFacts>,
}

/// `run.json` `cluster`: what a rollout run ran against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterFacts {
    /// `embedded` or `kubeconfig`.
    pub mode: String,
    /// The namespace.
    pub namespace: String,
    /// The Deployment under test.
    pub deployment: String,
    /// The Service whose endpoints were watched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Embedded: `l4` or `l7`; kubeconfig: `external`.
    pub proxy: String,
    /// Static findings of the manifests, as linted when the run started.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Asked load duration, s (the load goes on until the rollout settled).
    pub asked_duration_s: f64,
    /// What went wrong with the disruption itself (an action failed, the
    /// rollout never settled, a watch broke): each makes the run inconclusive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The kube context the run connected with (embedded: `rolltest-embedded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The API server the run talked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Kubeconfig mode: where the kubeconfig came from (its file, or
    /// `$KUBECONFIG` / `~/.kube/config` as kubectl finds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// `rolltest run --kubeconfig/--context/--namespace`: the flags that
    /// replaced the scenario's `[cluster]` values (scenario.toml is the file
    /// as written, with a comment naming them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<OverrideFacts>,
}

/// `run.json` `cluster.overrides`: the cluster flags of `rolltest run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideFacts {
    /// `--kubeconfig`, made absolute (it is relative to the directory rolltest ran in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// `--context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// `--namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The scenario's own `mode` (`mode` above is what ran: an embedded
    /// scenario given `--kubeconfig` or `--context` ran on that cluster).
    pub scenario_mode: String,
}

/// Rounded milliseconds from microseconds (three decimals, so JSON stays stable).
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// `requests` in summary.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Requests the schedule reached.
    pub scheduled: u64,
    /// Sent.
    pub sent: u64,
    /// Successful.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Never sent by the generator.
    pub dropped: u64,
}

/// `schedule_lag_ms` in summary.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagStats {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
}

/// `latency_ms` in summary.json: successful requests, from the scheduled time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// pass, fail or inconclusive.
    pub verdict: Verdict,
    /// The scenario's name.
    pub scenario: String,
    /// Wall-clock start, RFC 3339.
    pub started_at: String,
    /// The run was interrupted (and so is inconclusive).
    pub interrupted: bool,
    /// Target URL.
    pub target: String,
    /// Asked rate, requests/s.
    pub rate: f64,
    /// Asked duration, s.
    pub duration_s: f64,
    /// Request counts.
    pub requests: RequestCounts,
    /// Sent requests per second over the span the generator was sending.
    pub achieved_rate: f64,
    /// `achieved_rate / rate`.
    pub achieved_ratio: f64,
    /// How late requests left, ms.
    pub schedule_lag_ms: LagStats,
    /// Latency of successful requests, ms from the scheduled time.
    pub latency_ms: LatencyStats,
    /// Failures by error kind (every kind listed).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Failures by attributed cause.
    pub errors_by_cause: BTreeMap<String, u64>,
    /// Responses by HTTP status code.
    pub status_codes: BTreeMap<String, u64>,
    /// Requests by the pod that served them (from the `x-rolltest-pod` header).
    pub pods: BTreeMap<String, PodCounts>,
    /// TCP connections the generator opened.
    pub connections: u64,
    /// Static findings on the manifests (`rolltest lint`'s, for a run's
    /// `[cluster].manifests`).
    pub lint: Vec<Finding>,
    /// The failures grouped by cause and pod, with their evidence and the fix
    /// (rollout runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<CauseGroup>,
    /// Measured endpoint propagation (rollout runs): deletion → EndpointSlice
    /// → proxy, per pod that was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<PropagationStats>,
    /// What the ingress's retries did (embedded `ingress-nginx`, or any run
    /// whose records carry retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryStats>,
    /// Every check of the verdict.
    pub checks: Vec<Check>,
    /// Why the run proves nothing, when the verdict is inconclusive.
    pub inconclusive_reasons: Vec<String>,
    /// What went wrong with the disruption itself (an action failed, the
    /// rollout never settled): a run that would pass is inconclusive; a run
    /// that failed keeps its failures as evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// rolltest version.
    pub rolltest_version: String,
}

/// `summary.json` `propagation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropagationStats {
    /// Pods measured.
    pub pods: Vec<PodPropagation>,
    /// Slowest deletion → proxy applied (or → slice, where no proxy is seen), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// Median of the same, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_ms: Option<f64>,
    /// A real cluster's: how long after an EndpointSlice update the node
    /// proxies were allowed to route to the removed endpoint, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance_ms: Option<f64>,
    /// Where `allowance_ms` came from: `scenario`, `measured` or `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance_source: Option<String>,
}

impl PropagationStats {
    /// Statistics over the pods measured.
    pub fn new(pods: Vec<PodPropagation>) -> Self {
        let mut totals: Vec<f64> = pods.iter().filter_map(PodPropagation::total_ms).collect();
        totals.sort_by(f64::total_cmp);
        let median_ms = crate::stats::median(&totals);
        PropagationStats {
            max_ms: totals.last().copied(),
            median_ms,
            pods,
            allowance_ms: None,
            allowance_source: None,
        }
    }

    /// With the allowance a real cluster's run used.
    pub fn with_allowance(mut self, allowance: crate::correlate::Allowance) -> Self {
        use crate::correlate::AllowanceSource;
        self.allowance_ms = Some(allowance.us as f64 / 1e3);
        self.allowance_source = Some(
            match allowance.source {
                AllowanceSource::Scenario => "scenario",
                AllowanceSource::Measured => "measured",
                AllowanceSource::Default => "default",
            }
            .to_owned(),
        );
        self
    }
}

/// `summary.json` `retries`: requests the ingress sent to more than one
/// upstream ([`RequestRecord::failed_tries`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryStats {
    /// Requests retried at least once.
    pub retried: u64,
    /// Of those, ok in the end: failures the retries hid.
    pub ok_after_retry: u64,
    /// Of those, failed in the end.
    pub failed_after_retry: u64,
    /// Retried requests that ended ok, by tries in all (`"2"`, `"3"`).
    pub ok_by_tries: BTreeMap<String, u64>,
    /// Retried requests that failed, by tries in all.
    pub failed_by_tries: BTreeMap<String, u64>,
    /// The failed tries by why they failed (`connect_refused`, `reset`, ...).
    pub failed_tries_by_error: BTreeMap<String, u64>,
}

impl RetryStats {
    /// The statistics of `records` for a run through `mode`: `None` unless
    /// the proxy is `ingress-nginx` or some record was retried.
    pub fn for_run(mode: ProxyMode, records: &[RequestRecord]) -> Option<RetryStats> {
        let nginx = mode == ProxyMode::Embedded(ProxyKind::IngressNginx);
        let mut stats = RetryStats::default();
        for r in records.iter().filter(|r| r.retried()) {
            stats.retried += 1;
            let tries = (r.failed_tries.len() + 1).to_string();
            let by_tries = match r.outcome {
                Outcome::Failed(_) => {
                    stats.failed_after_retry += 1;
                    &mut stats.failed_by_tries
                }
                Outcome::Ok | Outcome::Dropped => {
                    stats.ok_after_retry += 1;
                    &mut stats.ok_by_tries
                }
            };
            *by_tries.entry(tries).or_default() += 1;
            for t in &r.failed_tries {
                *stats
                    .failed_tries_by_error
                    .entry(t.error.as_str().to_owned())
                    .or_default() += 1;
            }
        }
        (nginx || stats.retried > 0).then_some(stats)
    }

    /// One line: "127 requests succeeded only after a retry; 3 failed after
    /// 3 tries".
    pub fn sentence(&self) -> String {
        let requests = |n: u64| if n == 1 { "request" } else { "requests" };
        let ok = match self.ok_after_retry {
            0 => "no request needed a retry to succeed".to_owned(),
            n => format!("{n} {} succeeded only after a retry", requests(n)),
        };
        let tries = |t: &str| if t == "1" { "try" } else { "tries" };
        let failed = match self.failed_by_tries.len() {
            0 => "none failed after a retry".to_owned(),
            1 => self
                .failed_by_tries
                .iter()
                .map(|(t, n)| format!("{n} failed after {t} {}", tries(t)))
                .collect(),
            _ => format!(
                "{} failed after retries ({})",
                self.failed_after_retry,
                self.failed_by_tries
                    .iter()
                    .rev()
                    .map(|(t, n)| format!("{n} after {t} {}", tries(t)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!("{ok}; {failed}")
    }
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| ms(h.value_at_quantile(q)))
}

fn max_ms(h: &Histogram<u64>) -> Option<f64> {
    (!h.is_empty()).then(|| ms(h.max()))
}

impl Summary {
    /// Builds the summary and judges it.
    pub fn build(facts: &RunFacts, agg: &Aggregate, limits: &Limits) -> Summary {
        let interval_s = 1.0 / facts.rate;
        // Sent requests over the time from the first due time to the last
        // send (or the last due time, if later). Lateness within the lag limit
        // is the lag check's business, not a rate shortfall (else a 1 s run
        // whose last request left 5 ms late would "miss" 0.5% of its rate);
        // a generator that ends further behind stretches the window, and one
        // that stalls and bursts to catch up fails the lag check.
        let tolerance_us = (limits.max_schedule_lag_p99_ms.max(0.0) * 1000.0) as u64;
        let achieved_rate = match (
            agg.first_intended_us,
            agg.last_intended_us,
            agg.last_sent_us,
        ) {
            (Some(first), Some(last_due), Some(last_sent)) if agg.sent > 0 => {
                let end = last_due.max(last_sent.saturating_sub(tolerance_us));
                let span_s = (end - first) as f64 / 1e6 + interval_s;
                agg.sent as f64 / span_s
            }
            _ => 0.0,
        };
        // A generator cannot beat the schedule; tiny sends-early noise is not "more than asked".
        let achieved_ratio = round((achieved_rate / facts.rate).min(1.0), 5);
        let achieved_rate = round(achieved_rate, 3);
        let latency_ms = LatencyStats {
            p50: quantile_ms(&agg.latency, 0.5),
            p90: quantile_ms(&agg.latency, 0.9),
            p99: quantile_ms(&agg.latency, 0.99),
            p999: quantile_ms(&agg.latency, 0.999),
            max: max_ms(&agg.latency),
        };
        let schedule_lag_ms = LagStats {
            p50: quantile_ms(&agg.lag, 0.5),
            p99: quantile_ms(&agg.lag, 0.99),
            max: max_ms(&agg.lag),
        };
        let figures = Figures {
            sent: agg.sent,
            failed: agg.failed,
            dropped: agg.dropped,
            p50_ms: latency_ms.p50,
            p99_ms: latency_ms.p99,
            p999_ms: latency_ms.p999,
            max_ms: latency_ms.max,
            lag_p99_ms: schedule_lag_ms.p99,
            achieved_ratio,
            interrupted: facts.interrupted,
        };
        let (verdict, checks) = verdict::judge(limits, &figures);
        let mut inconclusive_reasons = Vec::new();
        if facts.interrupted {
            inconclusive_reasons.push("the run was interrupted before the schedule ended".into());
        }
        for c in checks
            .iter()
            .filter(|c| c.kind == verdict::CheckKind::Generator && !c.pass)
        {
            inconclusive_reasons.push(match c.name.as_str() {
                "max_dropped" => format!(
                    "the generator dropped {} requests it could not send (max_in_flight reached or too far behind)",
                    agg.dropped
                ),
                "max_schedule_lag_p99_ms" => match c.actual {
                    Some(lag) => format!(
                        "requests left late: schedule lag p99 {lag} ms > {} ms",
                        c.limit
                    ),
                    None => "no request was sent, so the schedule was not held".into(),
                },
                "min_achieved_ratio" => format!(
                    "the generator achieved {achieved_rate} req/s of {} asked ({:.2}% < {:.2}%)",
                    facts.rate,
                    achieved_ratio * 100.0,
                    c.limit * 100.0
                ),
                other => format!("generator check {other} failed"),
            });
        }
        // A rollout run's disruption that did not go as asked.
        let problems = facts
            .cluster
            .as_ref()
            .map(|c| c.problems.clone())
            .unwrap_or_default();
        let (verdict, from_problems) = verdict::with_problems(verdict, &problems);
        inconclusive_reasons.extend(from_problems);
        Summary {
            verdict,
            scenario: facts.scenario.clone(),
            started_at: facts.started_at.clone(),
            interrupted: facts.interrupted,
            target: facts.target.clone(),
            rate: facts.rate,
            duration_s: facts.duration_s,
            requests: RequestCounts {
                scheduled: agg.scheduled,
                sent: agg.sent,
                ok: agg.ok,
                failed: agg.failed,
                dropped: agg.dropped,
            },
            achieved_rate,
            achieved_ratio,
            schedule_lag_ms,
            latency_ms,
            errors_by_kind: ErrorKind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), agg.errors_by_kind[k.index()]))
                .collect(),
            errors_by_cause: agg
                .errors_by_cause
                .iter()
                .map(|(c, n)| (c.as_str().to_string(), *n))
                .collect(),
            status_codes: agg
                .status_codes
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect(),
            pods: agg.pods.clone(),
            connections: facts.connections,
            lint: facts
                .cluster
                .as_ref()
                .map(|c| c.findings.clone())
                .unwrap_or_default(),
            causes: Vec::new(),
            propagation: None,
            retries: None,
            checks,
            inconclusive_reasons,
            problems,
            rolltest_version: facts.rolltest_version.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(seq: u64, intended: u64, lag: u64, lat: u64) -> RequestRecord {
        RequestRecord {
            seq,
            intended_us: intended,
            sent_us: Some(intended + lag),
            latency_us: Some(lat),
            status: Some(200),
            outcome: Outcome::Ok,
            detail: None,
            pod: Some("p1".into()),
            conn: Some(0),
            cause: None,
            failed_tries: Vec::new(),
        }
    }

    #[test]
    fn retry_stats_count_what_the_retries_hid_and_what_failed_after_them() {
        use crate::model::{FailedTry, TryError};
        let tried = |pod: &str, error| FailedTry {
            pod: pod.into(),
            error,
        };
        let mut records: Vec<RequestRecord> = (0..5).map(|i| ok(i, i * 1000, 0, 10)).collect();
        records[1].failed_tries = vec![tried("a", TryError::ConnectRefused)];
        records[2].failed_tries = vec![
            tried("a", TryError::ConnectRefused),
            tried("b", TryError::Reset),
        ];
        records[3].outcome = Outcome::Failed(ErrorKind::Http5xx);
        records[3].failed_tries = records[2].failed_tries.clone();
        let nginx = ProxyMode::Embedded(ProxyKind::IngressNginx);
        let stats = RetryStats::for_run(nginx, &records).expect("ingress-nginx has stats");
        assert_eq!(
            (
                stats.retried,
                stats.ok_after_retry,
                stats.failed_after_retry
            ),
            (3, 2, 1)
        );
        assert_eq!(stats.ok_by_tries.get("2"), Some(&1));
        assert_eq!(stats.ok_by_tries.get("3"), Some(&1));
        assert_eq!(stats.failed_by_tries.get("3"), Some(&1));
        assert_eq!(stats.failed_tries_by_error.get("connect_refused"), Some(&3));
        assert_eq!(stats.failed_tries_by_error.get("reset"), Some(&2));
        assert_eq!(
            stats.sentence(),
            "2 requests succeeded only after a retry; 1 failed after 3 tries"
        );
        // Other proxies: only when something was retried.
        assert_eq!(RetryStats::for_run(ProxyMode::L7, &records[4..]), None);
        assert!(RetryStats::for_run(ProxyMode::L7, &records).is_some());
        assert_eq!(
            RetryStats::for_run(nginx, &records[4..]).map(|s| s.sentence()),
            Some("no request needed a retry to succeed; none failed after a retry".to_owned())
        );
    }

    fn facts(rate: f64, secs: f64) -> RunFacts {
        RunFacts {
            scenario: "t".into(),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            target: "http://127.0.0.1:1/".into(),
            rate,
            duration_s: secs,
            load_started_us: 0,
            ended_us: (secs * 1e6) as u64,
            interrupted: false,
            connections: 1,
            rolltest_version: "test".into(),
            cluster: None,
        }
    }

    #[test]
    fn cluster_problems_reach_the_summary_and_its_verdict() {
        let mut agg = Aggregate::new(0, 1_000_000);
        for i in 0..100 {
            agg.add(&ok(i, i * 10_000, 50, 1_000));
        }
        let problem = "action 0 (drain-node) failed: timed out".to_string();
        let mut f = facts(100.0, 1.0);
        f.cluster = Some(ClusterFacts {
            mode: "embedded".into(),
            namespace: "default".into(),
            deployment: "api".into(),
            service: None,
            proxy: "l7".into(),
            findings: Vec::new(),
            asked_duration_s: 1.0,
            problems: vec![problem.clone()],
            context: None,
            server: None,
            kubeconfig: None,
            overrides: None,
        });
        let s = Summary::build(&f, &agg, &Limits::default());
        assert_eq!(s.verdict, Verdict::Inconclusive);
        assert_eq!(s.problems, vec![problem.clone()]);
        assert_eq!(s.inconclusive_reasons, vec![problem]);
    }

    #[test]
    fn perfect_schedule_achieves_the_rate() {
        let mut agg = Aggregate::new(0, 1_000_000);
        for i in 0..100 {
            agg.add(&ok(i, i * 10_000, 50, 1_000));
        }
        let s = Summary::build(&facts(100.0, 1.0), &agg, &Limits::default());
        assert_eq!(s.requests.sent, 100);
        assert!(
            (s.achieved_rate - 100.0).abs() < 0.01,
            "{}",
            s.achieved_rate
        );
        assert_eq!(s.verdict, Verdict::Pass);
        assert_eq!(s.latency_ms.p50, Some(1.0));
        assert_eq!(s.schedule_lag_ms.p99, Some(0.05));
        assert_eq!(agg.throughput.len(), 10);
        assert!(agg.throughput.iter().all(|b| b.ok == 10));
    }

    #[test]
    fn failures_and_drops_are_counted_apart() {
        let mut agg = Aggregate::new(0, 1_000_000);
        agg.add(&ok(0, 0, 0, 500));
        let mut failed = ok(1, 10_000, 0, 900);
        failed.outcome = Outcome::Failed(ErrorKind::Http5xx);
        failed.status = Some(502);
        agg.add(&failed);
        agg.add(&RequestRecord::dropped(2, 20_000));
        assert_eq!(
            (agg.scheduled, agg.sent, agg.ok, agg.failed, agg.dropped),
            (3, 2, 1, 1, 1)
        );
        assert_eq!(agg.errors_by_kind[ErrorKind::Http5xx.index()], 1);
        assert_eq!(agg.status_codes.get(&502), Some(&1));
        assert_eq!(agg.pods["p1"], PodCounts { ok: 1, failed: 1 });
        let s = Summary::build(&facts(100.0, 0.03), &agg, &Limits::default());
        assert_eq!(s.verdict, Verdict::Inconclusive);
        assert!(s.inconclusive_reasons[0].contains("dropped 1"));
    }

    #[test]
    fn late_generator_lowers_the_achieved_rate() {
        let mut agg = Aggregate::new(0, 1_000_000);
        // 100 requests scheduled over 1 s, sent over 2 s.
        for i in 0..100 {
            agg.add(&ok(i, i * 10_000, i * 10_000, 1_000));
        }
        let s = Summary::build(&facts(100.0, 1.0), &agg, &Limits::default());
        assert!(s.achieved_ratio < 0.55, "{}", s.achieved_ratio);
        assert_eq!(s.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn a_last_request_a_little_late_is_not_a_rate_shortfall() {
        let mut agg = Aggregate::new(0, 1_000_000);
        for i in 0..200 {
            let lag = if i == 199 { 5_000 } else { 50 };
            agg.add(&ok(i, i * 5_000, lag, 1_000));
        }
        let s = Summary::build(&facts(200.0, 1.0), &agg, &Limits::default());
        assert_eq!(s.achieved_ratio, 1.0);
        assert_eq!(s.verdict, Verdict::Pass);
    }

    #[test]
    fn stall_then_burst_is_caught_by_the_lag() {
        let mut agg = Aggregate::new(0, 1_000_000);
        // All sent in the second half: the window still covers the schedule,
        // and the lag makes the run inconclusive.
        for i in 0..100 {
            agg.add(&ok(i, i * 10_000, 500_000 - i * 5_000, 1_000));
        }
        let s = Summary::build(&facts(100.0, 1.0), &agg, &Limits::default());
        assert!(s.achieved_ratio > 0.99, "{}", s.achieved_ratio);
        assert_eq!(s.verdict, Verdict::Inconclusive);
        assert!(s.inconclusive_reasons.iter().any(|r| r.contains("late")));
    }

    #[test]
    fn latency_buckets_stay_bounded() {
        assert_eq!(latency_bucket_width(10_000_000), 100_000);
        assert_eq!(latency_bucket_width(40_000_000), 100_000);
        assert_eq!(latency_bucket_width(600_000_000), 1_500_000);
    }

    #[test]
    fn propagation_carries_a_real_clusters_allowance_and_its_source() {
        use crate::correlate::{Allowance, AllowanceSource};
        let p = PropagationStats::new(Vec::new());
        assert_eq!(
            (p.allowance_ms, p.allowance_source.as_deref()),
            (None, None)
        );
        let json = serde_json::to_value(&p).expect("json");
        assert!(json.get("allowance_ms").is_none(), "{json}");
        let p = p.with_allowance(Allowance {
            us: 1_250_000,
            source: AllowanceSource::Measured,
        });
        assert_eq!(
            (p.allowance_ms, p.allowance_source.as_deref()),
            (Some(1250.0), Some("measured"))
        );
    }
}
