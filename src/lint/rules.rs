//! The checks behind each rule ID (see the table in the module docs).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    LintOptions, MAX_UNAVAILABLE_REASON, PropagationSource,
    k8s::{self, IntOrPercent},
};
use rolltest_core::model::{Finding, Severity};

use crate::manifest::{
    Manifest,
    knobs::{self, DEFAULT_GRACE_SECONDS, PreStop, ProbeTiming},
};

use Severity::{Error, Warning};

struct Workload<'a> {
    m: &'a Manifest,
    labels: BTreeMap<String, String>,
    replicas: i64,
}

/// Namespaces match when equal, or when either is unset (kubectl's current one).
fn same_ns(a: &Manifest, b: &Manifest) -> bool {
    match (&a.namespace, &b.namespace) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

fn is_workload(m: &Manifest) -> bool {
    matches!(m.kind.as_str(), "Deployment" | "StatefulSet") && m.api_version.starts_with("apps/")
}

/// `5 s`, `2.5 s`.
fn secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

fn label_list(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

struct Out<'o> {
    findings: &'o mut Vec<Finding>,
}

impl Out<'_> {
    fn push(
        &mut self,
        m: &Manifest,
        id: &str,
        severity: Option<Severity>,
        path: &str,
        message: String,
        fix: String,
    ) {
        let rule = super::rule(id);
        self.findings.push(Finding {
            id: id.to_owned(),
            severity: severity.or(rule.map(|r| r.severity)).unwrap_or(Warning),
            file: m.file.clone(),
            line: m.line_of(path),
            path: path.to_owned(),
            object: m.object(),
            message,
            why: rule.map(|r| r.why.to_owned()).unwrap_or_default(),
            fix,
        });
    }
}

pub(crate) fn check(manifests: &[Manifest], opts: &LintOptions) -> Vec<Finding> {
    let workloads: Vec<Workload> = manifests
        .iter()
        .filter(|m| is_workload(m))
        .map(|m| Workload {
            m,
            labels: k8s::labels(m.get("spec.template.metadata.labels")),
            replicas: replicas(m, manifests),
        })
        .collect();
    let pdbs: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.kind == "PodDisruptionBudget")
        .collect();
    let services: Vec<(&Manifest, BTreeMap<String, String>)> = manifests
        .iter()
        .filter(|m| {
            m.kind == "Service"
                && m.get("spec.type").and_then(Value::as_str) != Some("ExternalName")
        })
        .map(|m| (m, k8s::labels(m.get("spec.selector"))))
        .filter(|(_, sel)| !sel.is_empty())
        .collect();

    let mut findings = Vec::new();
    let mut out = Out {
        findings: &mut findings,
    };
    for w in &workloads {
        let selected_by_service = services
            .iter()
            .any(|(s, sel)| same_ns(s, w.m) && k8s::map_selector_matches(sel, &w.labels));
        let selecting: Vec<&Manifest> = pdbs
            .iter()
            .copied()
            .filter(|p| same_ns(p, w.m) && pdb_selects(p, &w.labels))
            .collect();
        check_workload(w, selected_by_service, &selecting, opts, &mut out);
    }
    for pdb in &pdbs {
        check_pdb(pdb, &workloads, &mut out);
    }
    if !workloads.is_empty() {
        for (svc, sel) in &services {
            let selects = workloads
                .iter()
                .any(|w| same_ns(svc, w.m) && k8s::map_selector_matches(sel, &w.labels));
            if !selects {
                out.push(
                    svc,
                    "RT020",
                    None,
                    "spec.selector",
                    format!(
                        "selector {} matches no Deployment or StatefulSet pods in the given files",
                        label_list(sel)
                    ),
                    "make spec.selector match the workload's spec.template.metadata.labels".into(),
                );
            }
        }
    }
    findings
}

/// `spec.replicas`; when unset, the minReplicas of a HorizontalPodAutoscaler
/// scaling it (the lowest count it runs at), else the default 1.
fn replicas(m: &Manifest, manifests: &[Manifest]) -> i64 {
    if let Some(n) = m.get("spec.replicas").and_then(Value::as_i64) {
        return n;
    }
    manifests
        .iter()
        .filter(|h| h.kind == "HorizontalPodAutoscaler" && same_ns(h, m))
        .find(|h| {
            h.get("spec.scaleTargetRef.kind").and_then(Value::as_str) == Some(m.kind.as_str())
                && h.get("spec.scaleTargetRef.name").and_then(Value::as_str)
                    == Some(m.name.as_str())
        })
        .map_or(1, |h| {
            h.get("spec.minReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        })
}

/// policy/v1: a missing selector selects nothing, an empty one every pod.
fn pdb_selects(pdb: &Manifest, labels: &BTreeMap<String, String>) -> bool {
    match pdb.get("spec.selector") {
        None | Some(Value::Null) => false,
        Some(sel) => k8s::label_selector_matches(sel, labels),
    }
}

fn check_workload(
    w: &Workload,
    selected_by_service: bool,
    pdbs: &[&Manifest],
    opts: &LintOptions,
    out: &mut Out,
) {
    let m = w.m;
    let pod_path = "spec.template.spec";
    let containers = m
        .get("spec.template.spec.containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut serving: Vec<usize> = containers
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.get("ports")
                .and_then(Value::as_array)
                .is_some_and(|p| !p.is_empty())
        })
        .map(|(i, _)| i)
        .collect();
    if serving.is_empty() {
        if !selected_by_service || containers.is_empty() {
            out.push(
                m,
                "RT021",
                None,
                "spec.template.spec.containers",
                "no container declares a port and no given Service selects the pods: rollout checks skipped".into(),
                "declare containerPort on the serving container, or lint the Service with it".into(),
            );
            return;
        }
        serving.push(0);
    }

    let grace_path = format!("{pod_path}.terminationGracePeriodSeconds");
    let grace_set = m.get(&grace_path).and_then(Value::as_i64);
    let grace = grace_set.unwrap_or(DEFAULT_GRACE_SECONDS);
    if grace_set.is_none() {
        out.push(
            m,
            "RT006",
            None,
            &grace_path,
            format!(
                "terminationGracePeriodSeconds not set: the {DEFAULT_GRACE_SECONDS} s default applies"
            ),
            format!(
                "set terminationGracePeriodSeconds explicitly (preStop + drain {} + margin)",
                secs(opts.drain.as_secs_f64())
            ),
        );
    }
    let propagation = opts.propagation.as_secs_f64();
    let drain = opts.drain.as_secs_f64();
    let mut need_grace: Option<(f64, String)> = None;

    for &i in &serving {
        let c = &containers[i];
        let cname = c.get("name").and_then(Value::as_str).unwrap_or("?");
        let cpath = format!("{pod_path}.containers[{i}]");
        let hook_path = format!("{cpath}.lifecycle.preStop");
        let pre_stop = knobs::pre_stop(m.get(&hook_path));
        let pre_stop_secs = match &pre_stop {
            PreStop::Missing => {
                let n = propagation.ceil().max(1.0);
                out.push(
                    m,
                    "RT001",
                    None,
                    &hook_path,
                    format!(
                        "container {cname:?} has no preStop hook: SIGTERM arrives while proxies still route to the pod (expected propagation {})",
                        secs(propagation)
                    ),
                    format!(
                        "add lifecycle.preStop.sleep.seconds: {n:.0} (or exec [\"sleep\", \"{n:.0}\"]) and terminationGracePeriodSeconds ≥ {:.0}",
                        (n + drain).ceil()
                    ),
                );
                0.0
            }
            PreStop::Sleep {
                seconds,
                action,
                field,
            } => {
                let field_path = format!("{hook_path}.{field}");
                if *action && (*seconds <= 0.0 || *seconds > grace as f64) {
                    out.push(
                        m,
                        "RT004",
                        None,
                        &field_path,
                        format!(
                            "preStop sleep.seconds {} is outside 1..={grace} (terminationGracePeriodSeconds): the API server rejects it",
                            secs(*seconds)
                        ),
                        format!(
                            "set sleep.seconds between 1 and {grace}, or raise terminationGracePeriodSeconds to ≥ {:.0}",
                            (seconds + drain).ceil()
                        ),
                    );
                }
                if *seconds < propagation {
                    let (severity, source) = match &opts.propagation_source {
                        PropagationSource::Default => (Warning, "assumed (default)".to_owned()),
                        PropagationSource::Flag => (Error, "given by --propagation".to_owned()),
                        PropagationSource::Run(dir) => (Error, format!("measured in {dir}")),
                    };
                    out.push(
                        m,
                        "RT002",
                        Some(severity),
                        &field_path,
                        format!(
                            "container {cname:?} preStop sleeps {} but endpoint propagation is {} ({source})",
                            secs(*seconds),
                            secs(propagation)
                        ),
                        format!("sleep at least {:.0} s in preStop", propagation.ceil()),
                    );
                }
                *seconds
            }
            PreStop::Unknown(what) => {
                out.push(
                    m,
                    "RT003",
                    None,
                    &hook_path,
                    format!("container {cname:?} preStop is {what}: its duration is unknown"),
                    format!(
                        "make sure it waits at least {} before the app stops, or use sleep.seconds",
                        secs(propagation)
                    ),
                );
                0.0
            }
        };
        let need = pre_stop_secs + drain;
        if (grace as f64) < need && need_grace.as_ref().is_none_or(|(n, _)| need > *n) {
            need_grace = Some((
                need,
                format!(
                    "terminationGracePeriodSeconds {grace} < preStop {} + drain {} (container {cname:?}): SIGKILL cuts the drain short",
                    secs(pre_stop_secs),
                    secs(drain)
                ),
            ));
        }
        check_probes(m, c, &cpath, cname, out);
    }
    if let Some((need, message)) = need_grace {
        out.push(
            m,
            "RT005",
            None,
            &grace_path,
            message,
            format!(
                "set terminationGracePeriodSeconds ≥ {:.0} (preStop + drain + margin)",
                need.ceil() + 5.0
            ),
        );
    }

    // The PodDisruptionBudget.
    match pdbs {
        [] => out.push(
            m,
            "RT007",
            None,
            "spec.template.metadata.labels",
            format!(
                "no PodDisruptionBudget selects the pods ({}): a drain may evict all {} at once",
                label_list(&w.labels),
                w.replicas
            ),
            format!(
                "add a policy/v1 PodDisruptionBudget with selector.matchLabels {{{}}} and maxUnavailable: 1",
                w.labels
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        [_] => {}
        many => out.push(
            m,
            "RT009",
            None,
            "spec.template.metadata.labels",
            format!(
                "{} PodDisruptionBudgets select the pods: {}",
                many.len(),
                many.iter().map(|p| p.object()).collect::<Vec<_>>().join(", ")
            ),
            "keep one PodDisruptionBudget for these pods".into(),
        ),
    }

    // Rollout strategy.
    if m.kind == "Deployment" {
        check_strategy(w, out);
    }
    let mrs = m
        .get("spec.minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if mrs <= 0 {
        out.push(
            m,
            "RT015",
            None,
            "spec.minReadySeconds",
            "minReadySeconds is 0: a new pod counts as available the moment it is Ready".into(),
            "set spec.minReadySeconds: 10 (longer than a crash after start would take)".into(),
        );
    }
}

fn check_strategy(w: &Workload, out: &mut Out) {
    let m = w.m;
    let stype = m
        .get("spec.strategy.type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    if stype == "Recreate" {
        out.push(
            m,
            "RT014",
            None,
            "spec.strategy.type",
            "strategy Recreate stops every pod before starting new ones: each rollout is an outage"
                .into(),
            "set strategy.type: RollingUpdate with rollingUpdate {maxSurge: 1, maxUnavailable: 0}"
                .into(),
        );
        return;
    }
    let ru = "spec.strategy.rollingUpdate";
    let mu_path = format!("{ru}.maxUnavailable");
    let ms_path = format!("{ru}.maxSurge");
    let mu_set = IntOrPercent::from_value(m.get(&mu_path));
    let ms_set = IntOrPercent::from_value(m.get(&ms_path));
    let mu = mu_set.unwrap_or(IntOrPercent::Percent(25.0));
    let ms = ms_set.unwrap_or(IntOrPercent::Percent(25.0));
    if mu.is_zero() && ms.is_zero() {
        out.push(
            m,
            "RT013",
            None,
            &ms_path,
            "maxSurge and maxUnavailable are both 0: the API server rejects the Deployment".into(),
            "set maxSurge: 1 (or 25%) and keep maxUnavailable: 0".into(),
        );
        return;
    }
    let surge = ms.resolve(w.replicas, true);
    let mut unavailable = mu.resolve(w.replicas, false).min(w.replicas);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let reason = m
        .get(&format!(
            "metadata.annotations[\"{MAX_UNAVAILABLE_REASON}\"]"
        ))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty());
    if !mu.is_zero() && !reason {
        let default = if mu_set.is_none() { " (default)" } else { "" };
        let now = if unavailable > 0 {
            format!(
                "lets {unavailable} of {} pods be unavailable during a rollout",
                w.replicas
            )
        } else {
            // Rounds down to 0 now; from which replica count it bites.
            let from = (1..=10_000)
                .find(|&n| mu.resolve(n, false) >= 1)
                .map_or_else(String::new, |n| format!(" (from {n} replicas on)"));
            format!(
                "rounds to 0 at {} replicas but takes pods out of service as replicas grow{from}",
                w.replicas
            )
        };
        out.push(
            m,
            "RT011",
            None,
            &mu_path,
            format!("maxUnavailable {mu}{default} {now}"),
            format!(
                "set strategy.rollingUpdate.maxUnavailable: 0 (with maxSurge ≥ 1), or annotate {MAX_UNAVAILABLE_REASON}: \"why capacity may drop\""
            ),
        );
    }
    if surge <= 0 {
        out.push(
            m,
            "RT012",
            None,
            &ms_path,
            format!(
                "maxSurge {ms} resolves to 0 at {} replicas: each step removes a pod before adding one",
                w.replicas
            ),
            "set strategy.rollingUpdate.maxSurge: 1 or more (25% rounds up)".into(),
        );
    }
}

fn check_probes(m: &Manifest, c: &Value, cpath: &str, cname: &str, out: &mut Out) {
    let readiness = c.get("readinessProbe").filter(|p| !p.is_null());
    let liveness = c.get("livenessProbe").filter(|p| !p.is_null());
    let startup = c.get("startupProbe").filter(|p| !p.is_null());
    if readiness.is_none() {
        out.push(
            m,
            "RT016",
            None,
            &format!("{cpath}.readinessProbe"),
            format!("container {cname:?} has no readinessProbe: it receives traffic as soon as it starts"),
            "add readinessProbe.httpGet on an endpoint that answers 200 only when the app can serve".into(),
        );
    }
    if startup.is_none() {
        for (probe, field) in [(readiness, "readinessProbe"), (liveness, "livenessProbe")] {
            let Some(probe) = probe else { continue };
            let t = ProbeTiming::of(probe);
            if t.initial_delay >= 10 {
                out.push(
                    m,
                    "RT017",
                    None,
                    &format!("{cpath}.{field}.initialDelaySeconds"),
                    format!(
                        "container {cname:?} {field} waits initialDelaySeconds {} without a startupProbe",
                        t.initial_delay
                    ),
                    format!(
                        "add a startupProbe with periodSeconds 5 and failureThreshold {} and drop initialDelaySeconds",
                        ((t.initial_delay * 2 + 4) / 5).max(3)
                    ),
                );
                break;
            }
        }
    }
    if let (Some(r), Some(l)) = (readiness, liveness)
        && let (Some(rh), Some(lh)) = (k8s::probe_handler(r, c), k8s::probe_handler(l, c))
        && rh == lh
    {
        out.push(
            m,
            "RT018",
            None,
            &format!("{cpath}.livenessProbe"),
            format!("container {cname:?} livenessProbe is the readinessProbe's check ({rh})"),
            "point livenessProbe at a process-only endpoint (e.g. /livez) that ignores dependencies".into(),
        );
    }
    if readiness.is_some() || liveness.is_some() {
        let describe = |name: &str, p: Option<&Value>, what: &str| {
            p.map(|p| {
                let t = ProbeTiming::of(p);
                format!(
                    "{name} {what} after {} s ({} s × {})",
                    t.detection_seconds(),
                    t.period,
                    t.failure_threshold
                )
            })
        };
        let parts: Vec<String> = [
            describe(
                "readiness",
                readiness,
                "takes a failing pod out of rotation",
            ),
            describe("liveness", liveness, "restarts a hung container"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let field = if readiness.is_some() {
            "readinessProbe"
        } else {
            "livenessProbe"
        };
        out.push(
            m,
            "RT019",
            None,
            &format!("{cpath}.{field}"),
            format!("container {cname:?}: {}", parts.join("; ")),
            "tune periodSeconds × failureThreshold to the outage you can tolerate".into(),
        );
    }
}

fn check_pdb(pdb: &Manifest, workloads: &[Workload], out: &mut Out) {
    let selected: Vec<&Workload> = workloads
        .iter()
        .filter(|w| same_ns(pdb, w.m) && pdb_selects(pdb, &w.labels))
        .collect();
    if selected.is_empty() {
        if !workloads.is_empty() {
            out.push(
                pdb,
                "RT010",
                None,
                "spec.selector",
                "the selector matches no Deployment or StatefulSet pods in the given files".into(),
                "make spec.selector.matchLabels match the workload's pod template labels".into(),
            );
        }
        return;
    }
    let expected: i64 = selected.iter().map(|w| w.replicas).sum();
    if expected <= 0 {
        return;
    }
    let names = selected
        .iter()
        .map(|w| w.m.object())
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(min) = IntOrPercent::from_value(pdb.get("spec.minAvailable")) {
        let desired = min.resolve(expected, true);
        if desired >= expected {
            out.push(
                pdb,
                "RT008",
                None,
                "spec.minAvailable",
                format!(
                    "minAvailable {min} needs {desired} of {expected} pods ({names}) healthy: no eviction is ever allowed"
                ),
                format!(
                    "use maxUnavailable: 1, or minAvailable ≤ {}",
                    expected - 1
                ),
            );
        }
    } else if let Some(max) = IntOrPercent::from_value(pdb.get("spec.maxUnavailable"))
        && max.resolve(expected, true) <= 0
    {
        out.push(
            pdb,
            "RT008",
            None,
            "spec.maxUnavailable",
            format!("maxUnavailable {max} allows no eviction of {names}'s {expected} pods"),
            "use maxUnavailable: 1".into(),
        );
    }
}
