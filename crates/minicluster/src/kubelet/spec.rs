//! What the kubelet reads out of a Pod (kept as JSON in the store): the
//! first container's image, args, env, ports, probes and preStop hook, the
//! restart policy and the grace period. Missing or malformed fields fall
//! back to the Kubernetes defaults instead of failing: the API server
//! validated the pod already.

use std::{net::IpAddr, time::Duration};

use serde_json::Value;

use crate::process::{Hook, HttpGetAction};

/// Port the app gets in `$PORT` when the container declares none.
pub const DEFAULT_PORT: u16 = 8080;
/// `spec.terminationGracePeriodSeconds` default.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whatever the exit (the default).
    Always,
    /// Restart only after a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Whether a container that exited this way is started again.
    pub fn restarts(self, success: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

/// One pod as the kubelet runs it.
#[derive(Debug, Clone)]
pub struct PodPlan {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid (the precondition of the final delete).
    pub uid: String,
    /// `spec.nodeName`.
    pub node: String,
    /// The (first) container.
    pub container: ContainerPlan,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// `spec.terminationGracePeriodSeconds` (default 30).
    pub grace_seconds: i64,
    /// `spec.enableServiceLinks` (default true): inject the Services'
    /// environment variables.
    pub enable_service_links: bool,
}

/// The first container of a pod.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `args` (appended to the mapped command).
    pub args: Vec<String>,
    /// `env`, in order.
    pub env: Vec<(String, EnvSource)>,
    /// `ports`: (name, containerPort).
    pub ports: Vec<(Option<String>, u16)>,
    /// `startupProbe`.
    pub startup: Option<ProbeSpec>,
    /// `readinessProbe`.
    pub readiness: Option<ProbeSpec>,
    /// `livenessProbe`.
    pub liveness: Option<ProbeSpec>,
    /// `lifecycle.preStop`.
    pub pre_stop: Option<Hook>,
}

/// Where an env variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// `value`.
    Value(String),
    /// `valueFrom.fieldRef.fieldPath`.
    Field(String),
}

/// A probe with its defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The handler.
    pub action: ProbeAction,
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10).
    pub period: Duration,
    /// `timeoutSeconds` (1).
    pub timeout: Duration,
    /// `successThreshold` (1).
    pub success_threshold: u32,
    /// `failureThreshold` (3).
    pub failure_threshold: u32,
    /// The probe's own `terminationGracePeriodSeconds`, for kills it causes.
    pub termination_grace: Option<i64>,
}

/// A probe handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// `httpGet` (host `None` = pod IP; named ports resolved, unknown ones 0).
    Http(HttpGetAction),
    /// `tcpSocket`.
    Tcp {
        /// Host (`None` = pod IP).
        host: Option<IpAddr>,
        /// Port.
        port: u16,
    },
    /// `exec`.
    Exec {
        /// The command.
        command: Vec<String>,
    },
    /// A handler this kubelet cannot run (`grpc`, none at all): always fails
    /// with this message.
    Unsupported(String),
}

impl ContainerPlan {
    /// The first `containerPort`, else 8080 (`$PORT`).
    pub fn port(&self) -> u16 {
        self.ports.first().map_or(DEFAULT_PORT, |(_, p)| *p)
    }

    /// The environment for the process: `POD_NAME`, `POD_NAMESPACE`,
    /// `POD_IP` and `PORT` first, then `services` (from [`service_env`]),
    /// then the manifest's `env`, which overrides them; `$(VAR)` in an
    /// `env` value is expanded from the variables before it, as the
    /// kubelet does.
    pub fn env_with_services(
        &self,
        plan: &PodPlan,
        pod_ip: IpAddr,
        services: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        let mut env = vec![
            ("POD_NAME".to_string(), plan.name.clone()),
            ("POD_NAMESPACE".to_string(), plan.namespace.clone()),
            ("POD_IP".to_string(), pod_ip.to_string()),
            ("PORT".to_string(), self.port().to_string()),
        ];
        for (name, value) in services {
            env.retain(|(k, _)| *k != name);
            env.push((name, value));
        }
        for (name, source) in &self.env {
            let value = match source {
                EnvSource::Value(v) => expand(v, &env),
                EnvSource::Field(path) => match path.as_str() {
                    "metadata.name" => plan.name.clone(),
                    "metadata.namespace" => plan.namespace.clone(),
                    "metadata.uid" => plan.uid.clone(),
                    "status.podIP" => pod_ip.to_string(),
                    "status.hostIP" => "127.0.0.1".to_string(),
                    "spec.nodeName" => plan.node.clone(),
                    _ => String::new(),
                },
            };
            env.retain(|(k, _)| k != name);
            env.push((name.clone(), value));
        }
        env
    }

    /// Resolves a port given as a number or as the name of a container port
    /// (0 when unknown, which makes the connection fail).
    fn resolve_port(&self, port: &Value) -> u16 {
        match port {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
            Value::String(s) => match s.parse::<u16>() {
                Ok(n) => n,
                Err(_) => self
                    .ports
                    .iter()
                    .find(|(name, _)| name.as_deref() == Some(s.as_str()))
                    .map_or(0, |(_, p)| *p),
            },
            _ => 0,
        }
    }
}

impl PodPlan {
    /// Reads a pod object. `None` if it has no name, uid or container.
    pub fn from_pod(pod: &Value) -> Option<PodPlan> {
        let meta = &pod["metadata"];
        let spec = &pod["spec"];
        let c = spec["containers"].as_array()?.first()?;
        let ports = c["ports"]
            .as_array()
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(|p| {
                        let port = u16::try_from(p["containerPort"].as_u64()?).ok()?;
                        Some((p["name"].as_str().map(str::to_string), port))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut container = ContainerPlan {
            name: c["name"].as_str().unwrap_or("app").to_string(),
            image: c["image"].as_str().unwrap_or("").to_string(),
            args: strings(&c["args"]),
            env: c["env"]
                .as_array()
                .map(|env| env.iter().filter_map(env_var).collect())
                .unwrap_or_default(),
            ports,
            startup: None,
            readiness: None,
            liveness: None,
            pre_stop: None,
        };
        container.startup = container.probe(&c["startupProbe"]);
        container.readiness = container.probe(&c["readinessProbe"]);
        container.liveness = container.probe(&c["livenessProbe"]);
        container.pre_stop = container.hook(&c["lifecycle"]["preStop"]);
        Some(PodPlan {
            namespace: meta["namespace"].as_str().unwrap_or("default").to_string(),
            name: meta["name"].as_str()?.to_string(),
            uid: meta["uid"].as_str()?.to_string(),
            node: spec["nodeName"].as_str().unwrap_or("").to_string(),
            container,
            restart_policy: match spec["restartPolicy"].as_str() {
                Some("Never") => RestartPolicy::Never,
                Some("OnFailure") => RestartPolicy::OnFailure,
                _ => RestartPolicy::Always,
            },
            grace_seconds: spec["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(DEFAULT_GRACE_SECONDS),
            enable_service_links: spec["enableServiceLinks"].as_bool().unwrap_or(true),
        })
    }
}

impl ContainerPlan {
    fn probe(&self, p: &Value) -> Option<ProbeSpec> {
        if !p.is_object() {
            return None;
        }
        let secs = |field: &str, default: u64| {
            Duration::from_secs(p[field].as_u64().filter(|s| *s > 0).unwrap_or(default))
        };
        let count = |field: &str, default: u32| {
            p[field]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let action = if p["httpGet"].is_object() {
            ProbeAction::Http(self.http_action(&p["httpGet"]))
        } else if p["tcpSocket"].is_object() {
            ProbeAction::Tcp {
                host: host(&p["tcpSocket"]),
                port: self.resolve_port(&p["tcpSocket"]["port"]),
            }
        } else if p["exec"].is_object() {
            ProbeAction::Exec {
                command: strings(&p["exec"]["command"]),
            }
        } else if p["grpc"].is_object() {
            ProbeAction::Unsupported("grpc probes are not supported by the embedded kubelet".into())
        } else {
            ProbeAction::Unsupported("probe has no handler".into())
        };
        Some(ProbeSpec {
            action,
            initial_delay: Duration::from_secs(p["initialDelaySeconds"].as_u64().unwrap_or(0)),
            period: secs("periodSeconds", 10),
            timeout: secs("timeoutSeconds", 1),
            success_threshold: count("successThreshold", 1),
            failure_threshold: count("failureThreshold", 3),
            termination_grace: p["terminationGracePeriodSeconds"].as_i64(),
        })
    }

    fn hook(&self, h: &Value) -> Option<Hook> {
        if h["exec"].is_object() {
            Some(Hook::Exec {
                command: strings(&h["exec"]["command"]),
            })
        } else if h["sleep"].is_object() {
            Some(Hook::Sleep {
                seconds: h["sleep"]["seconds"].as_i64().unwrap_or(0),
            })
        } else if h["httpGet"].is_object() {
            Some(Hook::HttpGet(self.http_action(&h["httpGet"])))
        } else {
            None
        }
    }

    fn http_action(&self, h: &Value) -> HttpGetAction {
        HttpGetAction {
            host: host(h),
            port: self.resolve_port(&h["port"]),
            path: h["path"].as_str().unwrap_or("/").to_string(),
            headers: h["httpHeaders"]
                .as_array()
                .map(|hs| {
                    hs.iter()
                        .filter_map(|x| {
                            Some((
                                x["name"].as_str()?.to_string(),
                                x["value"].as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

fn host(h: &Value) -> Option<IpAddr> {
    h["host"].as_str().and_then(|s| s.parse().ok())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The variables the kubelet injects for the Services of the pod's
/// namespace (`enableServiceLinks`), as `pkg/kubelet/envvars` makes them:
/// for a Service `db-main` with clusterIP 10.0.0.5 and ports
/// `[{name: http, port: 80}]`: `DB_MAIN_SERVICE_HOST=10.0.0.5`,
/// `DB_MAIN_SERVICE_PORT=80`, `DB_MAIN_SERVICE_PORT_HTTP=80`, and the
/// Docker-link style `DB_MAIN_PORT=tcp://10.0.0.5:80`,
/// `DB_MAIN_PORT_80_TCP=tcp://10.0.0.5:80`, `DB_MAIN_PORT_80_TCP_PROTO=tcp`,
/// `DB_MAIN_PORT_80_TCP_PORT=80`, `DB_MAIN_PORT_80_TCP_ADDR=10.0.0.5`.
/// Services without a clusterIP (or headless) give none.
pub fn service_env(services: &[std::sync::Arc<Value>]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for svc in services {
        let Some(name) = svc["metadata"]["name"].as_str() else {
            continue;
        };
        let ip = match svc["spec"]["clusterIP"].as_str() {
            Some(ip) if !ip.is_empty() && ip != "None" => ip,
            _ => continue,
        };
        let ports: Vec<&Value> = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let Some(first) = ports.first().and_then(|p| p["port"].as_u64()) else {
            continue;
        };
        let prefix = name.to_ascii_uppercase().replace('-', "_");
        let mut push = |k: String, v: String| env.push((k, v));
        push(format!("{prefix}_SERVICE_HOST"), ip.to_string());
        push(format!("{prefix}_SERVICE_PORT"), first.to_string());
        for p in &ports {
            let (Some(port), Some(pname)) = (p["port"].as_u64(), p["name"].as_str()) else {
                continue;
            };
            if !pname.is_empty() {
                let pname = pname.to_ascii_uppercase().replace('-', "_");
                push(format!("{prefix}_SERVICE_PORT_{pname}"), port.to_string());
            }
        }
        let first_proto = ports[0]["protocol"]
            .as_str()
            .unwrap_or("TCP")
            .to_ascii_lowercase();
        push(
            format!("{prefix}_PORT"),
            format!("{first_proto}://{ip}:{first}"),
        );
        for p in &ports {
            let Some(port) = p["port"].as_u64() else {
                continue;
            };
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            let base = format!("{prefix}_PORT_{port}_{}", proto.to_ascii_uppercase());
            let lower = proto.to_ascii_lowercase();
            push(base.clone(), format!("{lower}://{ip}:{port}"));
            push(format!("{base}_PROTO"), lower);
            push(format!("{base}_PORT"), port.to_string());
            push(format!("{base}_ADDR"), ip.to_string());
        }
    }
    env
}

/// Kubernetes' `$(VAR)` expansion (used for `command`, `args` and `env`
/// values): `$(NAME)` becomes NAME's value from `env`; a reference to an
/// unknown variable, or an unclosed `$(`, stays as written; `$$` is an
/// escaped `$`; any other `$` is kept.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
        {
            let name = &tail[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn env_var(e: &Value) -> Option<(String, EnvSource)> {
    let name = e["name"].as_str()?.to_string();
    let source = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
        Some(path) => EnvSource::Field(path.to_string()),
        None => EnvSource::Value(e["value"].as_str().unwrap_or("").to_string()),
    };
    Some((name, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_pod_with_defaults() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "ns", "uid": "u1"},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "app", "image": "rolltest-demo:v1", "args": ["--x"],
                "ports": [{"name": "http", "containerPort": 9000}],
                "env": [{"name": "A", "value": "1"},
                        {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "PORT", "value": "7"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
                "livenessProbe": {"tcpSocket": {"port": 9000}},
                "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}
            }]}
        });
        let plan = PodPlan::from_pod(&pod).expect("plan");
        let c = &plan.container;
        assert_eq!(plan.grace_seconds, 30);
        assert_eq!(plan.restart_policy, RestartPolicy::Always);
        assert_eq!(c.port(), 9000);
        let r = c.readiness.as_ref().expect("readiness");
        assert_eq!(r.period, Duration::from_secs(2));
        assert_eq!(
            (r.timeout, r.failure_threshold),
            (Duration::from_secs(1), 3)
        );
        assert!(
            matches!(&r.action, ProbeAction::Http(h) if h.port == 9000 && h.path == "/healthz")
        );
        assert!(matches!(
            c.liveness.as_ref().map(|l| &l.action),
            Some(ProbeAction::Tcp { port: 9000, .. })
        ));
        assert_eq!(c.pre_stop, Some(Hook::Sleep { seconds: 5 }));
        let env = c.env_with_services(&plan, "127.0.1.9".parse().expect("ip"), Vec::new());
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ME"), Some("web-1"));
        assert_eq!(get("PORT"), Some("7"));
        assert_eq!(get("POD_IP"), Some("127.0.1.9"));
        assert_eq!(get("A"), Some("1"));
        assert!(plan.enable_service_links);
    }

    #[test]
    fn expands_references_like_kubernetes() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x".to_string()),
        ];
        let cases = [
            ("$(A)", "1"),
            ("http://$(A):$(B)/p", "http://1:x/p"),
            ("$(MISSING)", "$(MISSING)"),
            ("$$(A)", "$(A)"),
            ("$$", "$"),
            ("a$b", "a$b"),
            ("$(A", "$(A"),
            ("end$", "end$"),
            ("$()", "$()"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env), want, "{input}");
        }
    }

    #[test]
    fn service_variables_and_env_references() {
        let services = vec![
            std::sync::Arc::new(json!({
                "metadata": {"name": "db-main"},
                "spec": {"clusterIP": "127.2.0.5", "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP"},
                    {"name": "admin-port", "port": 9000}]}
            })),
            std::sync::Arc::new(json!({
                "metadata": {"name": "headless"},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
            })),
        ];
        let vars = service_env(&services);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("DB_MAIN_SERVICE_HOST"), Some("127.2.0.5"));
        assert_eq!(get("DB_MAIN_SERVICE_PORT"), Some("80"));
        assert_eq!(get("DB_MAIN_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get("DB_MAIN_SERVICE_PORT_ADMIN_PORT"), Some("9000"));
        assert_eq!(get("DB_MAIN_PORT"), Some("tcp://127.2.0.5:80"));
        assert_eq!(get("DB_MAIN_PORT_9000_TCP_ADDR"), Some("127.2.0.5"));
        assert!(vars.iter().all(|(k, _)| !k.starts_with("HEADLESS")));

        let pod = json!({
            "metadata": {"name": "api-1", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "app", "image": "x",
                "env": [{"name": "DB", "value": "http://$(DB_MAIN_SERVICE_HOST):$(DB_MAIN_SERVICE_PORT)"},
                        {"name": "DB_MAIN_SERVICE_PORT", "value": "81"}]}]}
        });
        let plan = PodPlan::from_pod(&pod).expect("plan");
        let env = plan
            .container
            .env_with_services(&plan, "127.0.1.9".parse().expect("ip"), vars);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("DB"), Some("http://127.2.0.5:80"));
        assert_eq!(get("DB_MAIN_SERVICE_PORT"), Some("81"), "env overrides");
    }
}
