//! `rolltest load`: its flags, validated into a scenario (written to the
//! run directory as scenario.toml like any other), run by the one
//! orchestrator.

use std::path::PathBuf;

use rolltest_core::ExitStatus;

use super::{execute::execute, output::check_junit};
use crate::{
    error::{RunError, bad},
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
    /// Pool idle timeout text (`None`: no limit).
    pub idle_timeout: Option<String>,
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
    text.push_str(&toml::to_string(&raw).map_err(RunError::Flags)?);
    let scenario = Scenario::from_raw(raw, text, None)?;
    check_junit(opts.junit.as_deref())?;
    execute(&scenario, opts.out, opts.quiet, opts.junit.as_deref())
}

/// The scenario the flags describe.
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
    let idle_timeout: Option<PositiveDuration> = opts
        .idle_timeout
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(bad("--idle-timeout"))?;
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
            idle_timeout,
            send_quantum,
        },
        verdict: RawVerdict {
            max_failed: opts.max_failed,
            max_p99_ms,
            ..RawVerdict::default()
        },
    })
}
