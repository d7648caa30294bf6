//! The scenario file's schema as serde structs. Every table refuses unknown
//! keys. `[cluster]` and `[[actions]]` live in [`super::cluster`].

use std::{collections::BTreeMap, num::NonZeroUsize, path::Path};

use serde::{Deserialize, Serialize};

use super::{
    ScenarioError,
    error::line_col,
    values::{HttpMethod, HttpUrl, NonNegative, PositiveDuration, Rate, Ratio},
};
use rolltest_core::verdict::Limits;

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    /// Name, used for the run directory.
    pub name: String,
    /// Free text shown in the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `[target]`.
    #[serde(default)]
    pub target: RawTarget,
    /// `[load]`.
    pub load: RawLoad,
    /// `[cluster]`: absent for load against a plain URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<super::cluster::RawCluster>,
    /// `[[actions]]`: disruptions fired while the load runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<super::cluster::RawAction>,
    /// `[verdict]`.
    #[serde(default)]
    pub verdict: RawVerdict,
}

/// `[target]`: where the load goes and what each request carries.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// `http://host:port/path`. In embedded mode it defaults to the address
    /// of the manifests' Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<HttpUrl>,
    /// The Service under test (default: the only Service in the manifests):
    /// its endpoints are watched, and in embedded mode without `url` the load
    /// goes to its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Embedded mode without `url`: the path and query (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// `[load]`: the constant arrival rate and its bounds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoad {
    /// Requests per second.
    pub rate: Rate,
    /// How long to schedule requests.
    pub duration: PositiveDuration,
    /// Per-request timeout (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<PositiveDuration>,
    /// Most requests in flight (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<NonZeroUsize>,
    /// Reuse connections (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<bool>,
    /// Close a pooled keep-alive connection idle longer than this instead
    /// of reusing it, like Go's `IdleConnTimeout` (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<PositiveDuration>,
    /// Send requests that are closer together than this in groups (default:
    /// 100us up to 10k req/s, 200us above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_quantum: Option<PositiveDuration>,
}

/// `[verdict]`: limits. Failures are limited to 0 unless `max_failed` or
/// `max_failed_ratio` is set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerdict {
    /// Most failed requests allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed: Option<u64>,
    /// Most failed requests allowed, as a share of those sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_ratio: Option<Ratio>,
    /// Latency limits in ms (successful requests, from the scheduled time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p50_ms: Option<NonNegative>,
    /// p99 latency limit, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<NonNegative>,
    /// p99.9 latency limit, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p999_ms: Option<NonNegative>,
    /// Maximum latency limit, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<NonNegative>,
    /// Generator check: schedule lag p99 above this makes the run inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_schedule_lag_p99_ms: Option<NonNegative>,
    /// Generator check: achieved/asked rate below this makes the run inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_achieved_ratio: Option<Ratio>,
}

impl RawVerdict {
    /// The limits, with defaults filled in.
    pub fn to_limits(&self) -> Limits {
        let defaults = Limits::default();
        let failure_limit_set = self.max_failed.is_some() || self.max_failed_ratio.is_some();
        Limits {
            max_failed: if failure_limit_set {
                self.max_failed
            } else {
                Some(0)
            },
            max_failed_ratio: self.max_failed_ratio.map(|r| r.0),
            max_p50_ms: self.max_p50_ms.map(|v| v.0),
            max_p99_ms: self.max_p99_ms.map(|v| v.0),
            max_p999_ms: self.max_p999_ms.map(|v| v.0),
            max_latency_ms: self.max_latency_ms.map(|v| v.0),
            max_schedule_lag_p99_ms: self
                .max_schedule_lag_p99_ms
                .map_or(defaults.max_schedule_lag_p99_ms, |v| v.0),
            min_achieved_ratio: self
                .min_achieved_ratio
                .map_or(defaults.min_achieved_ratio, |v| v.0),
        }
    }
}

/// Parses the text into the raw schema, keeping the key path and position of any error.
pub(super) fn parse(text: &str, path: Option<&Path>) -> Result<RawScenario, ScenarioError> {
    let file = path.map(Path::to_path_buf);
    let de = toml::de::Deserializer::parse(text).map_err(|e| ScenarioError::Invalid {
        file: file.clone(),
        line: e.span().map(|s| line_col(text, s.start)),
        key: String::new(),
        message: e.message().trim().to_string(),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut key = e.path().to_string();
        if key == "." {
            key.clear();
        }
        let inner = e.into_inner();
        let message = inner.message().trim().to_string();
        // Name the unknown key itself, whether or not the path already ends with it.
        if let Some(unknown) = unknown_field(&message)
            && key.rsplit('.').next() != Some(unknown)
        {
            key = if key.is_empty() {
                unknown.to_string()
            } else {
                format!("{key}.{unknown}")
            };
        }
        ScenarioError::Invalid {
            file,
            line: inner.span().map(|s| line_col(text, s.start)),
            key,
            message,
        }
    })
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}
