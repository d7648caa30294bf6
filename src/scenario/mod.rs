//! Scenario files: TOML in, a validated [`Scenario`] out.
//!
//! Parsing happens in one pass with serde: the value types in [`values`]
//! validate themselves while they are deserialized, so every error carries the
//! file, line, column and key path of the offending value (ripgrep's "low
//! args → high args" split, with nextest's habit of keeping the TOML path).
//! Unknown keys are refused everywhere.

pub mod cluster;
mod error;
mod raw;
pub mod values;

use std::path::{Path, PathBuf};

pub use cluster::{
    Action, ActionKind, ClusterMode, ClusterModeName, ClusterOverrides, ClusterSpec, EmbeddedSpec,
    Overridden,
};
pub use error::ScenarioError;
pub use raw::{RawLoad, RawScenario, RawTarget, RawVerdict};
pub use rolltest_core::model::ProxyKind;
pub use values::{HttpMethod, HttpUrl, PositiveDuration, Rate};

use rolltest_core::verdict::Limits;
use rolltest_loadgen::{LoadSpec, Target};

/// Default request timeout.
pub const DEFAULT_TIMEOUT: &str = "2s";
/// Default cap on requests in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;

/// A validated scenario, ready to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The scenario's name (used in the default run directory name).
    pub name: String,
    /// The file it was read from (`None` for a scenario built from flags).
    pub source: Option<PathBuf>,
    /// The TOML text as run (copied to the run directory).
    pub text: String,
    /// Where the load goes and what it sends.
    pub target: Target,
    /// The load.
    pub load: LoadSpec,
    /// The cluster under test (`None`: plain load against `target.url`).
    pub cluster: Option<ClusterSpec>,
    /// Disruptions fired while the load runs, by offset.
    pub actions: Vec<Action>,
    /// The verdict's limits.
    pub limits: Limits,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    /// Parses and validates scenario text; `path` names it in errors.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Self, ScenarioError> {
        let raw = raw::parse(text, path)?;
        Self::from_raw(raw, text.to_string(), path).map_err(|e| e.locate(text))
    }

    /// Applies `rolltest run`'s `--kubeconfig`, `--context` and
    /// `--namespace` to `[cluster]` (see [`ClusterOverrides`] for what each
    /// does in each mode). Nothing given: nothing changes. Otherwise the text
    /// kept for the run directory gets a comment header naming the flags and
    /// the values run; the TOML itself stays as written, so it parses to the
    /// same scenario (limits, name) when `rolltest report` reads it back.
    pub fn apply_overrides(&mut self, flags: &ClusterOverrides) -> Result<(), ScenarioError> {
        if flags.is_empty() {
            return Ok(());
        }
        let file = self
            .source
            .as_ref()
            .map_or_else(|| "(flags)".into(), |p| p.display().to_string());
        let has_url = self.target.service.is_none();
        let path = self.target.path_and_query().to_string();
        let Some(cluster) = self.cluster.as_mut() else {
            return Err(ScenarioError::Flag {
                flag: flags.names(),
                message: format!(
                    "{file} has no [cluster] (it sends plain load to {}): the cluster flags have nothing to apply to",
                    self.target.url
                ),
            });
        };
        cluster::apply_overrides(cluster, flags, has_url, &path, &file).map_err(|p| {
            ScenarioError::Flag {
                flag: p.flag,
                message: p.message,
            }
        })?;
        if let Some(o) = &cluster.overridden {
            self.text = format!("{}{}", override_header(cluster, o), self.text);
        }
        Ok(())
    }

    /// Builds a scenario from already-parsed values (used by `rolltest load`,
    /// whose flags go through the same value types).
    pub fn from_raw(
        raw: RawScenario,
        text: String,
        path: Option<&Path>,
    ) -> Result<Self, ScenarioError> {
        let file = path.map(Path::to_path_buf);
        let invalid = |key: &str, message: String| ScenarioError::Invalid {
            file: file.clone(),
            line: None,
            key: key.to_string(),
            message,
        };
        if raw.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        let base = path
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let cluster = raw
            .cluster
            .as_ref()
            .map(|c| cluster::validate_cluster(c, &base, invalid))
            .transpose()?;
        if !raw.actions.is_empty() && cluster.is_none() {
            return Err(invalid("actions", "need a [cluster] to act on".into()));
        }
        let actions = cluster::validate_actions(&raw.actions, raw.load.duration.0, invalid)?;
        let embedded = matches!(
            cluster.as_ref().map(|c| &c.mode),
            Some(ClusterMode::Embedded(_))
        );
        let (url, service) = match (&raw.target.url, embedded) {
            (Some(url), _) => {
                if raw.target.path.is_some() {
                    return Err(invalid(
                        "target.path",
                        "conflicts with target.url (put the path in the url)".into(),
                    ));
                }
                if raw.target.service.is_some() && cluster.is_none() {
                    return Err(invalid(
                        "target.service",
                        "needs a [cluster] whose Service it names".into(),
                    ));
                }
                (url.0.clone(), None)
            }
            (None, true) => {
                let path = raw.target.path.clone().unwrap_or_else(|| "/".into());
                if !path.starts_with('/') {
                    return Err(invalid(
                        "target.path",
                        format!("must start with '/' (got {path:?})"),
                    ));
                }
                let url: http::Uri = format!("http://service.invalid{path}")
                    .parse()
                    .map_err(|_| invalid("target.path", format!("{path:?} is not a valid path")))?;
                (url, Some(raw.target.service.clone()))
            }
            (None, false) => {
                let hint = if cluster.is_some() {
                    " (mode = \"kubeconfig\" needs the address the Service is reachable at, e.g. a kind NodePort)"
                } else {
                    ""
                };
                return Err(invalid("target.url", format!("is required{hint}")));
            }
        };
        let mut headers = Vec::with_capacity(raw.target.headers.len());
        for (name, value) in &raw.target.headers {
            let key = format!("target.headers.{name}");
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(&key, format!("{name:?} is not a valid header name")))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|_| invalid(&key, "is not a valid header value".into()))?;
            headers.push((name, value));
        }
        let limits = raw.verdict.to_limits();
        Ok(Scenario {
            name: raw.name.trim().to_string(),
            source: file.clone(),
            text,
            target: Target {
                url,
                service,
                service_name: raw.target.service.clone(),
                method: raw.target.method.map(|m| m.0).unwrap_or(http::Method::GET),
                headers,
                body: raw.target.body.map(bytes::Bytes::from).unwrap_or_default(),
            },
            load: LoadSpec {
                rate: raw.load.rate.0,
                duration: raw.load.duration.0,
                timeout: raw
                    .load
                    .timeout
                    .map(|t| t.0)
                    .unwrap_or(std::time::Duration::from_secs(2)),
                max_in_flight: raw
                    .load
                    .max_in_flight
                    .map(usize::from)
                    .unwrap_or(DEFAULT_MAX_IN_FLIGHT),
                keepalive: raw.load.keepalive.unwrap_or(true),
                idle_timeout: raw.load.idle_timeout.map(|t| t.0),
                send_quantum: raw.load.send_quantum.map(|q| q.0),
            },
            cluster,
            actions,
            limits,
        })
    }

    /// The name made safe for a directory name.
    pub fn slug(&self) -> String {
        let slug: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        slug.trim_matches(|c| c == '-' || c == '.').to_string()
    }
}

/// The comment put above a scenario run with cluster flags: the command's
/// flags and the `[cluster]` values they made (paths absolute).
fn override_header(cluster: &ClusterSpec, o: &Overridden) -> String {
    let mut values = Vec::new();
    match &cluster.mode {
        ClusterMode::Kubeconfig { path, context } => {
            values.push("mode = \"kubeconfig\"".to_string());
            match path {
                Some(p) => {
                    let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                    values.push(format!("kubeconfig = {:?}", p.display().to_string()));
                }
                None => values.push("kubeconfig from $KUBECONFIG, else ~/.kube/config".into()),
            }
            match context {
                Some(c) => values.push(format!("context = {c:?}")),
                None => values.push("the kubeconfig's current context".into()),
            }
        }
        ClusterMode::Embedded(_) => values.push("mode = \"embedded\"".into()),
    }
    if let Some(ns) = &cluster.namespace {
        values.push(format!("namespace = {ns:?}"));
    }
    let switched = if o.scenario_mode == cluster.mode.name() {
        String::new()
    } else {
        format!(
            "\n# (the scenario's mode = \"{}\" was not used: [cluster.embedded] below did not apply)",
            o.scenario_mode.as_str()
        )
    };
    format!(
        "# Run with `rolltest run {}`, which overrode [cluster] below:\n# {}{switched}\n# run.json \"cluster\" names the context and API server the run used.\n\n",
        o.flags.to_flags(),
        values.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_safe_for_paths() {
        let s = Scenario::parse(
            "name = \"naive rollout/../x\"\n[target]\nurl = \"http://127.0.0.1:1/\"\n[load]\nrate = 1\nduration = \"1s\"\n",
            None,
        )
        .unwrap();
        assert_eq!(s.slug(), "naive-rollout-..-x");
        assert!(!s.slug().contains('/'));
    }
}
