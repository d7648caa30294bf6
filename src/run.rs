//! The run orchestrator: scenario → run directory → load → summary, report
//! and verdict. `rolltest load` is a scenario built from flags, so both
//! commands share every step after parsing.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use rolltest_core::{
    ExitStatus,
    model::RunClock,
    summary::{Aggregate, RunFacts, Summary},
    verdict::Verdict,
};

use rolltest_loadgen::{self as loadgen, LiveCounters, LoadError};

use crate::{
    progress::Progress,
    report,
    rundir::{self, RunDir, RunDirError},
    scenario::{
        RawLoad, RawScenario, RawTarget, RawVerdict, Scenario, ScenarioError,
        values::{HttpMethod, HttpUrl, NonNegative, PositiveDuration, Rate},
    },
};

/// Why a command could not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario is invalid (exit 2).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A command-line flag is invalid (exit 2).
    #[error("{flag}: {message}")]
    BadFlag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The run directory could not be written, or (for `report`) read.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The load could not start (exit 3).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The async runtime could not start (exit 3).
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A manifest could not be read or is not a Kubernetes object (exit 2).
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The scenario and its manifests do not fit together (exit 2).
    #[error("{0}")]
    Setup(String),
    /// The app under test never served (exit 3).
    #[error("{0}")]
    NotServing(String),
    /// The embedded cluster could not start (exit 3).
    #[error("the embedded cluster could not start: {0}")]
    Cluster(String),
    /// The cluster refused or failed an operation (exit 3; 2 for a manifest it
    /// refused as invalid).
    #[error(transparent)]
    K8s(#[from] crate::k8s::K8sError),
    /// The JUnit file could not be written (exit 3).
    #[error(transparent)]
    Junit(#[from] crate::junit::JunitError),
}

impl RunError {
    /// The exit status this error maps to.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            RunError::Scenario(_)
            | RunError::BadFlag { .. }
            | RunError::Manifest(_)
            | RunError::Setup(_) => ExitStatus::BadInput,
            RunError::RunDir(e) if e.is_input_error() => ExitStatus::BadInput,
            RunError::K8s(e) if e.is_input_error() => ExitStatus::BadInput,
            RunError::RunDir(_)
            | RunError::Load(_)
            | RunError::Runtime(_)
            | RunError::Cluster(_)
            | RunError::K8s(_)
            | RunError::NotServing(_)
            | RunError::Junit(_) => ExitStatus::RunError,
        }
    }
}

/// `rolltest run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Run directory (default under `reports/`).
    pub out: Option<PathBuf>,
    /// Hide the progress bar.
    pub quiet: bool,
    /// Validate only.
    pub check_only: bool,
    /// Also write JUnit XML here.
    pub junit: Option<PathBuf>,
}

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

/// Runs (or, with `check_only`, validates) a scenario file.
pub fn run_scenario(opts: RunOptions) -> Result<ExitStatus, RunError> {
    let scenario = Scenario::load(&opts.scenario)?;
    check_junit(opts.junit.as_deref())?;
    if let Some(cluster) = &scenario.cluster {
        if opts.check_only {
            let line = crate::rollout::check(&scenario, cluster)?;
            println!(
                "{}: ok: scenario {:?}, {} req/s for {}; {line}",
                opts.scenario.display(),
                scenario.name,
                scenario.load.rate,
                humantime::format_duration(scenario.load.duration),
            );
            return Ok(ExitStatus::Pass);
        }
        return crate::rollout::execute(
            &scenario,
            cluster,
            opts.out,
            opts.quiet,
            opts.junit.as_deref(),
        );
    }
    if opts.check_only {
        println!(
            "{}: ok: scenario {:?}, {} req/s for {} ({} requests) to {}",
            opts.scenario.display(),
            scenario.name,
            scenario.load.rate,
            humantime::format_duration(scenario.load.duration),
            scenario.load.scheduled_requests(),
            scenario.target.url
        );
        return Ok(ExitStatus::Pass);
    }
    execute(&scenario, opts.out, opts.quiet, opts.junit.as_deref())
}

/// A `--junit` path that cannot be written is bad input, found before the run.
fn check_junit(path: Option<&Path>) -> Result<(), RunError> {
    match path {
        Some(p) => crate::junit::check_path(p).map_err(bad("--junit")),
        None => Ok(()),
    }
}

/// Writes the JUnit file, when asked, after summary.json (whatever the verdict).
pub(crate) fn write_junit(
    path: Option<&Path>,
    summary: &Summary,
    facts: &RunFacts,
    dir: &RunDir,
) -> Result<(), RunError> {
    if let Some(path) = path {
        crate::junit::write(path, summary, facts, dir.path())?;
        println!("  junit: {}", path.display());
    }
    Ok(())
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

fn bad(flag: &'static str) -> impl Fn(String) -> RunError {
    move |message| RunError::BadFlag { flag, message }
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
pub(crate) const START_MARGIN: Duration = Duration::from_millis(5);

fn execute(
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
fn finish(
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

/// Rebuilds summary.json and report.html of a run directory from its saved files.
pub fn rebuild_report(path: &Path) -> Result<ExitStatus, RunError> {
    let dir = RunDir::open(path)?;
    let facts = dir.read_facts()?;
    let text = dir.read(rundir::SCENARIO)?;
    let scenario = Scenario::parse(&text, Some(&dir.file(rundir::SCENARIO)))?;
    if let Some(cluster) = &facts.cluster {
        let mut records = Vec::new();
        dir.read_records(|r| records.push(r))?;
        let timeline: rolltest_core::model::Timeline =
            serde_json::from_str(&dir.read(rundir::TIMELINE)?).map_err(|e| {
                RunError::Setup(format!(
                    "{}: not a rolltest timeline: {e}",
                    dir.file(rundir::TIMELINE).display()
                ))
            })?;
        let mode = rolltest_core::correlate::ProxyMode::parse(&cluster.proxy)
            .unwrap_or(rolltest_core::correlate::ProxyMode::External);
        let summary = crate::rollout::finish(&dir, &facts, &records, &timeline, &scenario, mode)?;
        return Ok(summary.verdict.exit_status());
    }
    let duration_us = (facts.duration_s * 1e6).round() as u64;
    let mut aggregate = Aggregate::new(facts.load_started_us, duration_us);
    dir.read_records(|r| aggregate.add(&r))?;
    let summary = finish(&dir, &facts, &aggregate, &scenario)?;
    Ok(summary.verdict.exit_status())
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2} ms"))
}

pub(crate) fn print_summary(s: &Summary, dir: &Path) {
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
