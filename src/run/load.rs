//! A plain load run: the generator against a URL, into a run directory,
//! then summary, report and verdict. `rolltest load` builds its scenario
//! from flags; `rolltest run` without `[cluster]` reads it from a file.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use rolltest_core::{
    ExitStatus,
    model::RunClock,
    summary::{Aggregate, RunFacts, Summary},
};
use rolltest_loadgen::{self as loadgen, LiveCounters};

use super::{
    error::{RunError, bad},
    outcome::{check_junit, print_summary, write_junit},
};
use crate::{
    progress::Progress,
    report,
    rundir::{self, RunDir},
    scenario::{
        RawLoad, RawScenario, RawTarget, RawVerdict, Scenario,
        values::{HttpMethod, HttpUrl, NonNegative, PositiveDuration, Rate},
    },
};

/// `rolltest load`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Target URL.
    pub url: String,
    /// Requests per second.
    pub rate: f64,
    /// Duration text.
    pub duration: String,
    /// Timeout text.
    pub timeout: String,
    /// Most requests in flight.
    pub max_in_flight: usize,
    /// HTTP method.
    pub method: String,
    /// "Name: value" headers.
    pub headers: Vec<String>,
    /// Body.
    pub body: Option<String>,
    /// Keep-alive.
    pub keepalive: bool,
    /// Send quantum text (`None`: automatic).
    pub send_quantum: Option<String>,
    /// Failure limit.
    pub max_failed: Option<u64>,
    /// p99 limit, ms.
    pub max_p99_ms: Option<f64>,
    /// Run directory.
    pub out: Option<PathBuf>,
    /// Hide the progress bar.
    pub quiet: bool,
    /// Also write JUnit XML here.
    pub junit: Option<PathBuf>,
}

/// Runs ad hoc load described by flags.
pub fn run_load(opts: LoadOptions) -> Result<ExitStatus, RunError> {
    let raw = raw_from_flags(&opts)?;
    let mut text = String::from("# Written by `rolltest load` from its flags.\n");
    text.push_str(&toml::to_string(&raw).map_err(|e| RunError::BadFlag {
        flag: "flags",
        message: e.to_string(),
    })?);
    let scenario = Scenario::from_raw(raw, text, None)?;
    check_junit(opts.junit.as_deref())?;
    execute(&scenario, opts.out, opts.quiet, opts.junit.as_deref())
}

fn raw_from_flags(opts: &LoadOptions) -> Result<RawScenario, RunError> {
    let url: HttpUrl = opts.url.parse().map_err(bad("URL"))?;
    let rate = Rate::new(opts.rate).map_err(bad("--rate"))?;
    let duration: PositiveDuration = opts.duration.parse().map_err(bad("--duration"))?;
    let timeout: PositiveDuration = opts.timeout.parse().map_err(bad("--timeout"))?;
    let max_in_flight = std::num::NonZeroUsize::new(opts.max_in_flight)
        .ok_or_else(|| bad("--max-in-flight")("must be at least 1".into()))?;
    let send_quantum: Option<PositiveDuration> = opts
        .send_quantum
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(bad("--send-quantum"))?;
    let method: HttpMethod = opts.method.parse().map_err(bad("--method"))?;
    let mut headers = std::collections::BTreeMap::new();
    for h in &opts.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| bad("--header")(format!("{h:?} is not \"Name: value\"")))?;
        http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            bad("--header")(format!("{:?} is not a valid header name", name.trim()))
        })?;
        http::HeaderValue::from_str(value.trim()).map_err(|_| {
            bad("--header")(format!("{:?} is not a valid header value", value.trim()))
        })?;
        headers.insert(name.trim().to_string(), value.trim().to_string());
    }
    let max_p99_ms = match opts.max_p99_ms {
        Some(v) if !(v.is_finite() && v >= 0.0) => {
            return Err(bad("--max-p99-ms")(format!(
                "must be a number ≥ 0 (got {v})"
            )));
        }
        v => v.map(NonNegative),
    };
    Ok(RawScenario {
        name: "load".into(),
        description: None,
        target: RawTarget {
            url: Some(url),
            service: None,
            path: None,
            method: Some(method),
            headers,
            body: opts.body.clone(),
        },
        cluster: None,
        actions: Vec::new(),
        load: RawLoad {
            rate,
            duration,
            timeout: Some(timeout),
            max_in_flight: Some(max_in_flight),
            keepalive: Some(opts.keepalive),
            send_quantum,
        },
        verdict: RawVerdict {
            max_failed: opts.max_failed,
            max_p99_ms,
            ..RawVerdict::default()
        },
    })
}

/// How far ahead of "now" the schedule's origin is set, so both generator
/// threads are running when request 0 is due.
pub(super) const START_MARGIN: Duration = Duration::from_millis(5);

/// Runs the load of a scenario without a cluster, into its run directory.
pub(super) fn execute(
    scenario: &Scenario,
    out: Option<PathBuf>,
    quiet: bool,
    junit: Option<&Path>,
) -> Result<ExitStatus, RunError> {
    let clock = RunClock::start();
    let out = out.unwrap_or_else(|| {
        Path::new("reports").join(format!(
            "{}-{}",
            scenario.slug(),
            clock.started_at_compact()
        ))
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let addr = runtime.block_on(loadgen::resolve(&scenario.target))?;

    let dir = RunDir::create(&out)?;
    dir.write(rundir::SCENARIO, &scenario.text)?;
    dir.write_timeline(&rolltest_core::model::Timeline::default())?;

    let origin = Instant::now() + START_MARGIN;
    let duration_us = u64::try_from(scenario.load.duration.as_micros()).unwrap_or(u64::MAX);
    let writer = dir.start_writer(Aggregate::new(clock.micros(origin), duration_us))?;
    let live = Arc::new(LiveCounters::default());
    let stop = Arc::new(loadgen::Stop::default());
    let load = loadgen::start(
        &scenario.target,
        addr,
        &scenario.load,
        clock,
        origin,
        writer.sender(),
        stop.clone(),
        live.clone(),
    )?;
    let progress = Progress::start(scenario.load.duration, live.clone(), quiet);
    runtime.block_on(async {
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        let mut interrupted = false;
        while !load.is_finished() {
            tokio::select! {
                result = &mut ctrl_c, if !interrupted => {
                    interrupted = true;
                    if result.is_ok() {
                        stop.interrupt.store(true, Ordering::Relaxed);
                        progress.note(&format!(
                            "interrupted: no new requests; waiting up to {} for those in flight",
                            humantime::format_duration(scenario.load.timeout)
                        ));
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });
    let outcome = load.wait()?;
    progress.finish();
    let aggregate = writer.finish()?;
    let facts = RunFacts {
        scenario: scenario.name.clone(),
        started_at: clock.started_at(),
        target: scenario.target.url.to_string(),
        rate: scenario.load.rate,
        duration_s: scenario.load.duration.as_secs_f64(),
        load_started_us: outcome.started_us,
        ended_us: outcome.ended_us,
        interrupted: outcome.interrupted,
        connections: live.connections.load(Ordering::Relaxed),
        rolltest_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster: None,
    };
    dir.write_facts(&facts)?;
    let summary = finish(&dir, &facts, &aggregate, scenario)?;
    write_junit(junit, &summary, &facts, &dir)?;
    Ok(summary.verdict.exit_status())
}

/// Writes summary.json and report.html and prints the outcome.
pub(super) fn finish(
    dir: &RunDir,
    facts: &RunFacts,
    aggregate: &Aggregate,
    scenario: &Scenario,
) -> Result<Summary, RunError> {
    let summary = Summary::build(facts, aggregate, &scenario.limits);
    dir.write_summary(&summary)?;
    dir.write(
        rundir::REPORT,
        report::render(&summary, aggregate, facts, None),
    )?;
    print_summary(&summary, dir.path());
    Ok(summary)
}
