//! `rolltest run --kubeconfig/--context/--namespace` over a scenario's
//! `[cluster]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ClusterMode, ClusterModeName, ClusterSpec, namespace_problem};

/// `rolltest run --kubeconfig FILE --context NAME -n NAMESPACE`: kubectl's
/// flags over the scenario's `[cluster]`.
///
/// Each flag replaces its own key and nothing else, in the scenario's mode:
/// - kubeconfig mode: `--kubeconfig` replaces `kubeconfig` (the scenario's
///   `context` still applies unless `--context` is given, and the other way
///   round), `--context` replaces `context`;
/// - embedded mode: `--kubeconfig` or `--context` runs the scenario on that
///   real cluster instead (mode kubeconfig, the same manifests and actions,
///   `[cluster.embedded]` unused; a kubeconfig not given comes from the
///   environment like kubectl's, a context not given is the current one).
///   The embedded cluster sends the load to the manifests' Service itself, so
///   the scenario's `[target]` must have a `url` (where that Service is
///   reachable on the real cluster); without one this is refused;
/// - `--namespace` replaces `namespace` in either mode.
///
/// A relative `--kubeconfig` is relative to the current directory, as for
/// kubectl (the scenario's `kubeconfig` key is relative to the scenario file);
/// it is made absolute here so the run's record names the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterOverrides {
    /// `--kubeconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// `-n/--namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ClusterOverrides {
    /// No flag given.
    pub fn is_empty(&self) -> bool {
        self.kubeconfig.is_none() && self.context.is_none() && self.namespace.is_none()
    }

    /// The flags as typed on a command line (`--kubeconfig F --context C -n N`).
    pub fn to_flags(&self) -> String {
        let mut out = Vec::new();
        if let Some(k) = &self.kubeconfig {
            out.push(format!("--kubeconfig {}", k.display()));
        }
        if let Some(c) = &self.context {
            out.push(format!("--context {c}"));
        }
        if let Some(n) = &self.namespace {
            out.push(format!("-n {n}"));
        }
        out.join(" ")
    }

    /// The names of the flags given, e.g. `--kubeconfig/--namespace`.
    pub fn names(&self) -> String {
        self.names_of(true)
    }

    /// The names of the flags given that choose the cluster (`--kubeconfig`,
    /// `--context`) and, with `namespace`, `--namespace`.
    fn names_of(&self, namespace: bool) -> String {
        let mut names = Vec::new();
        if self.kubeconfig.is_some() {
            names.push("--kubeconfig");
        }
        if self.context.is_some() {
            names.push("--context");
        }
        if namespace && self.namespace.is_some() {
            names.push("--namespace");
        }
        names.join("/")
    }
}

/// The flags that replaced `[cluster]` values, and what the scenario said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overridden {
    /// The flags, `--kubeconfig` made absolute.
    pub flags: ClusterOverrides,
    /// The scenario's own mode (the mode run differs when the flags switched
    /// an embedded scenario to a real cluster).
    pub scenario_mode: ClusterModeName,
}

/// Why the flags cannot apply to this scenario (bad input; the caller wraps
/// it with the flag's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::scenario) struct OverrideProblem {
    /// The flag(s) at fault, e.g. `--namespace` or `--kubeconfig/--context`.
    pub flag: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Applies `flags` to a validated `[cluster]`. `has_url`: the scenario's
/// `[target]` has a `url` (an embedded scenario may leave it out and load
/// the Service); `target_path` is the path the load asks for and `file` the
/// scenario's name, for the hint.
pub(in crate::scenario) fn apply_overrides(
    spec: &mut ClusterSpec,
    flags: &ClusterOverrides,
    has_url: bool,
    target_path: &str,
    file: &str,
) -> Result<(), OverrideProblem> {
    if flags.is_empty() {
        return Ok(());
    }
    let problem = |flag: &str, message: String| OverrideProblem {
        flag: flag.to_string(),
        message,
    };
    if let Some(ns) = &flags.namespace
        && let Some(message) = namespace_problem(ns)
    {
        return Err(problem("--namespace", message));
    }
    if let Some(c) = &flags.context
        && c.trim().is_empty()
    {
        return Err(problem(
            "--context",
            "must not be empty (leave the flag out for the scenario's context, else the kubeconfig's current one)".into(),
        ));
    }
    let kubeconfig = match &flags.kubeconfig {
        Some(p) if p.as_os_str().is_empty() => {
            return Err(problem("--kubeconfig", "must name a file".into()));
        }
        // Relative to the current directory, like kubectl's flag.
        Some(p) => Some(std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        None => None,
    };
    let scenario_mode = spec.mode.name();
    let switches = kubeconfig.is_some() || flags.context.is_some();
    match &mut spec.mode {
        ClusterMode::Kubeconfig { path, context } => {
            if let Some(k) = &kubeconfig {
                *path = Some(k.clone());
            }
            if let Some(c) = &flags.context {
                *context = Some(c.clone());
            }
        }
        ClusterMode::Embedded(_) if switches => {
            if !has_url {
                return Err(problem(
                    &flags.names_of(false),
                    format!(
                        "runs the embedded scenario {file} on a real cluster, but its [target] has no url: the embedded cluster sends the load to the manifests' Service itself, and rolltest cannot know where that Service is reachable on another cluster. Add `url = \"http://HOST:PORT{target_path}\"` to [target]: the Service's address on that cluster, e.g. a kind NodePort http://127.0.0.1:30080{target_path} (a `path` key goes into the url)"
                    ),
                ));
            }
            spec.mode = ClusterMode::Kubeconfig {
                path: kubeconfig.clone(),
                context: flags.context.clone(),
            };
        }
        ClusterMode::Embedded(_) => {}
    }
    if let Some(ns) = &flags.namespace {
        spec.namespace = Some(ns.clone());
    }
    spec.overridden = Some(Overridden {
        flags: ClusterOverrides {
            kubeconfig,
            context: flags.context.clone(),
            namespace: flags.namespace.clone(),
        },
        scenario_mode,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::test_support::{HEAD, err, parse};
    use super::*;
    use crate::scenario::{Scenario, ScenarioError};

    const KIND: &str = "[target]\nurl = \"http://127.0.0.1:30080/\"\n[cluster]\nmode = \"kubeconfig\"\nkubeconfig = \"kc.yaml\"\ncontext = \"kind-rolltest\"\nnamespace = \"demo\"\nmanifests = [\"d.yaml\"]\n";
    const EMBEDDED: &str = "[cluster]\nmode = \"embedded\"\nmanifests = [\"d.yaml\"]\n[cluster.embedded]\nproxy = \"l7\"\n";

    fn flags(
        kubeconfig: Option<&str>,
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> ClusterOverrides {
        ClusterOverrides {
            kubeconfig: kubeconfig.map(PathBuf::from),
            context: context.map(String::from),
            namespace: namespace.map(String::from),
        }
    }

    fn overridden(rest: &str, f: &ClusterOverrides) -> Result<Scenario, ScenarioError> {
        let mut s = parse(rest).expect("valid scenario");
        s.apply_overrides(f)?;
        Ok(s)
    }

    fn kubeconfig_of(s: &Scenario) -> (Option<PathBuf>, Option<String>) {
        match &s.cluster.as_ref().expect("cluster").mode {
            ClusterMode::Kubeconfig { path, context } => (path.clone(), context.clone()),
            ClusterMode::Embedded(_) => panic!("kubeconfig mode expected"),
        }
    }

    fn flag_error(rest: &str, f: &ClusterOverrides) -> (String, String) {
        match overridden(rest, f) {
            Ok(_) => panic!("accepted {f:?}"),
            Err(ScenarioError::Flag { flag, message }) => (flag, message),
            Err(e) => panic!("not a flag error: {e}"),
        }
    }

    #[test]
    fn no_flag_changes_nothing() {
        let text = format!("{HEAD}{KIND}");
        let s = overridden(KIND, &ClusterOverrides::default()).expect("ok");
        assert_eq!(s.text, text);
        assert!(s.cluster.expect("cluster").overridden.is_none());
    }

    #[test]
    fn kubeconfig_flags_replace_each_their_own_key() {
        let cwd = std::env::current_dir().expect("cwd");
        // --kubeconfig alone: the file from the flag, relative to the current
        // directory (the key was relative to the scenario's); the context stays.
        let s = overridden(KIND, &flags(Some("other/kc"), None, None)).expect("ok");
        assert_eq!(
            kubeconfig_of(&s),
            (Some(cwd.join("other/kc")), Some("kind-rolltest".into()))
        );
        let c = s.cluster.as_ref().expect("cluster");
        assert_eq!(c.namespace.as_deref(), Some("demo"));
        let o = c.overridden.as_ref().expect("overridden");
        assert_eq!(o.scenario_mode, ClusterModeName::Kubeconfig);
        assert_eq!(o.flags.kubeconfig, Some(cwd.join("other/kc")));
        // --context alone: the scenario's file (relative to the scenario).
        let s = overridden(KIND, &flags(None, Some("kind-b"), None)).expect("ok");
        assert_eq!(
            kubeconfig_of(&s),
            (Some(PathBuf::from("dir/kc.yaml")), Some("kind-b".into()))
        );
        // All three; an absolute --kubeconfig stays as it is.
        let s =
            overridden(KIND, &flags(Some("/etc/kc"), Some("kind-b"), Some("ns-2"))).expect("ok");
        assert_eq!(
            kubeconfig_of(&s),
            (Some(PathBuf::from("/etc/kc")), Some("kind-b".into()))
        );
        assert_eq!(
            s.cluster.expect("cluster").namespace.as_deref(),
            Some("ns-2")
        );
    }

    #[test]
    fn cluster_flags_switch_an_embedded_scenario_with_a_url_to_that_cluster() {
        let rest =
            format!("[target]\nurl = \"http://127.0.0.1:30080/x\"\nservice = \"api\"\n{EMBEDDED}");
        // --context alone: the kubeconfig comes from the environment.
        let s = overridden(&rest, &flags(None, Some("kind-rolltest"), None)).expect("ok");
        assert_eq!(kubeconfig_of(&s), (None, Some("kind-rolltest".into())));
        assert_eq!(s.target.url.to_string(), "http://127.0.0.1:30080/x");
        assert_eq!(s.target.service_name.as_deref(), Some("api"));
        let c = s.cluster.as_ref().expect("cluster");
        assert_eq!(c.manifests, vec![PathBuf::from("dir/d.yaml")]);
        assert_eq!(
            c.overridden.as_ref().map(|o| o.scenario_mode),
            Some(ClusterModeName::Embedded)
        );
        // --kubeconfig alone: that file's current context.
        let s = overridden(&rest, &flags(Some("kc"), None, Some("demo"))).expect("ok");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(kubeconfig_of(&s), (Some(cwd.join("kc")), None));
        assert_eq!(
            s.cluster.expect("cluster").namespace.as_deref(),
            Some("demo")
        );
    }

    #[test]
    fn namespace_alone_keeps_an_embedded_scenario_embedded() {
        let s = overridden(EMBEDDED, &flags(None, None, Some("demo"))).expect("ok");
        let c = s.cluster.expect("cluster");
        assert!(matches!(c.mode, ClusterMode::Embedded(_)));
        assert_eq!(c.namespace.as_deref(), Some("demo"));
        // The service target is still resolved by the embedded cluster.
        assert_eq!(s.target.service, Some(None));
    }

    #[test]
    fn switching_an_embedded_scenario_without_a_url_says_what_to_add() {
        let rest = format!("[target]\npath = \"/work\"\n{EMBEDDED}");
        for (f, named) in [
            (flags(Some("kc"), None, None), "--kubeconfig"),
            (flags(None, Some("kind-x"), Some("demo")), "--context"),
            (
                flags(Some("kc"), Some("kind-x"), None),
                "--kubeconfig/--context",
            ),
        ] {
            let (flag, message) = flag_error(&rest, &f);
            assert_eq!(flag, named);
            assert!(message.contains("dir/s.toml"), "{message}");
            assert!(message.contains("[target] has no url"), "{message}");
            assert!(
                message.contains("Add `url = \"http://HOST:PORT/work\"` to [target]"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_bad_namespace_flag_is_refused_in_the_keys_words() {
        let key =
            err("[cluster]\nmode = \"embedded\"\nmanifests = [\"d\"]\nnamespace = \"Bad_NS\"\n");
        for rest in [EMBEDDED, KIND] {
            let (flag, message) = flag_error(rest, &flags(None, None, Some("Bad_NS")));
            assert_eq!(flag, "--namespace");
            assert!(
                key.ends_with(&format!("cluster.namespace: {message}")),
                "{key} / {message}"
            );
        }
        let e = overridden(KIND, &flags(None, None, Some(""))).expect_err("empty");
        assert_eq!(
            e.to_string(),
            "--namespace: \"\" is not a valid namespace name (lowercase letters, digits and '-')"
        );
        let (flag, _) = flag_error(KIND, &flags(None, Some(" "), None));
        assert_eq!(flag, "--context");
        let (flag, _) = flag_error(KIND, &flags(Some(""), None, None));
        assert_eq!(flag, "--kubeconfig");
    }

    #[test]
    fn cluster_flags_on_a_plain_load_scenario_are_refused() {
        let (flag, message) = flag_error(
            "[target]\nurl = \"http://127.0.0.1:9/\"\n",
            &flags(None, Some("kind-x"), Some("demo")),
        );
        assert_eq!(flag, "--context/--namespace");
        assert!(message.contains("has no [cluster]"), "{message}");
    }

    #[test]
    fn the_text_as_run_names_the_flags_and_parses_to_the_same_scenario() {
        let rest = format!(
            "[target]\nurl = \"http://127.0.0.1:30080/\"\n{EMBEDDED}[verdict]\nmax_p99_ms = 250\n"
        );
        let original = format!("{HEAD}{rest}");
        let s = overridden(&rest, &flags(Some("/k/config"), None, Some("demo"))).expect("ok");
        let header = s
            .text
            .strip_suffix(original.as_str())
            .expect("the file follows the header");
        assert!(
            header.starts_with("# Run with `rolltest run --kubeconfig /k/config -n demo`, which overrode [cluster] below:\n"),
            "{header}"
        );
        assert!(header.contains("mode = \"kubeconfig\", kubeconfig = \"/k/config\", the kubeconfig's current context, namespace = \"demo\""), "{header}");
        assert!(
            header.contains("the scenario's mode = \"embedded\" was not used"),
            "{header}"
        );
        assert!(
            header.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "{header}"
        );
        // `rolltest report` reads it back: the same name and limits.
        let again = Scenario::parse(&s.text, Some(Path::new("run/scenario.toml"))).expect("parses");
        assert_eq!(again.name, s.name);
        assert_eq!(again.limits, s.limits);
    }
}
