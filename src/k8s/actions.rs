//! The scenario's disruptions, sent the way kubectl sends them, each reported
//! on the lifecycle timeline as `action_started` / `action_finished`.
//!
//! Actions are async and only await the API: the run orchestrator spawns them
//! while the load runs.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use futures_util::future::join_all;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use super::{Cluster, K8sError, status_code};
use rolltest_core::model::{EventSource, LifecycleEvent, LifecycleKind, RunClock};

use crate::{
    events::LifecycleSink,
    scenario::{Action, ActionKind},
};

/// How long kubectl waits between evictions refused with 429.
pub const EVICTION_RETRY: Duration = Duration::from_secs(5);

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// What an action did.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionReport {
    /// Index in the scenario's `[[actions]]`.
    pub index: usize,
    /// The action's `do`.
    pub action: String,
    /// What it acted on ("deployment api", "node embedded-node-1", "pod api-x").
    pub target: String,
    /// What it did, in words (also the `action_finished` detail).
    pub detail: String,
    /// When it started, on the run clock (µs).
    pub started_us: u64,
    /// When its API calls (and, for a drain, the evicted pods' deletion) ended.
    pub finished_us: u64,
    /// Pods it evicted or deleted.
    pub pods: Vec<String>,
    /// Evictions refused with 429 (a PodDisruptionBudget) before succeeding.
    pub eviction_refusals: u32,
    /// The node a drain cordoned (left cordoned, like `kubectl drain`; see
    /// [`uncordon`] to undo it when the run ends).
    pub cordoned: Option<String>,
}

#[derive(Default)]
struct Outcome {
    detail: String,
    pods: Vec<String>,
    eviction_refusals: u32,
    cordoned: Option<String>,
}

fn emit(events: &impl LifecycleSink, at_us: u64, pod: Option<String>, kind: LifecycleKind) {
    // Nobody listening (the run is ending) is no reason to stop the action.
    let _ = events.send_lifecycle(LifecycleEvent {
        at_us,
        server_us: None,
        server_precision_us: None,
        pod,
        source: EventSource::Action,
        kind,
    });
}

/// Performs one action against the cluster. `default_deployment` is the
/// scenario's Deployment (for actions that name none, and to pick the default
/// node or pod). Emits `ActionStarted` when it begins and `ActionFinished`
/// (with what it did, or why it failed) when it ends, to `events` (the run's
/// stream, or a channel).
pub async fn run_action(
    cluster: &Cluster,
    action: &Action,
    default_deployment: &str,
    events: &impl LifecycleSink,
    clock: &RunClock,
) -> Result<ActionReport, K8sError> {
    let started_us = clock.now_micros();
    let name = action.kind.name().to_string();
    let resolved = resolve_target(cluster, &action.kind, default_deployment).await;
    let (target, pod) = match &resolved {
        Ok(t) => (t.words(), t.pod()),
        Err(_) => (
            format!(
                "deployment {}",
                deployment_of(&action.kind).unwrap_or(default_deployment)
            ),
            None,
        ),
    };
    emit(
        events,
        started_us,
        pod.clone(),
        LifecycleKind::ActionStarted {
            index: action.index,
            action: name.clone(),
            target: target.clone(),
        },
    );
    let result = match resolved {
        Ok(t) => perform(cluster, &action.kind, t).await,
        Err(e) => Err(e),
    };
    let finished_us = clock.now_micros();
    let detail = match &result {
        Ok(o) => o.detail.clone(),
        Err(e) => format!("failed: {e}"),
    };
    emit(
        events,
        finished_us,
        pod,
        LifecycleKind::ActionFinished {
            index: action.index,
            action: name.clone(),
            detail: Some(detail),
        },
    );
    let o = result?;
    Ok(ActionReport {
        index: action.index,
        action: name,
        target,
        detail: o.detail,
        started_us,
        finished_us,
        pods: o.pods,
        eviction_refusals: o.eviction_refusals,
        cordoned: o.cordoned,
    })
}

/// Marks the node schedulable again (`kubectl uncordon`: the strategic
/// patch `{"spec":{"unschedulable":false}}`).
pub async fn uncordon(cluster: &Cluster, node: &str) -> Result<(), K8sError> {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": false}})),
        )
        .await
        .map_err(|e| cluster.err(format!("uncordon node {node}"), e))?;
    Ok(())
}

/// The nodes marked unschedulable (cordoned) now, sorted.
pub async fn unschedulable_nodes(cluster: &Cluster) -> Result<Vec<String>, K8sError> {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| cluster.err("list nodes", e))?;
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
        .filter_map(|n| n.metadata.name)
        .collect();
    names.sort();
    Ok(names)
}

fn deployment_of(kind: &ActionKind) -> Option<&str> {
    match kind {
        ActionKind::RolloutRestart { deployment }
        | ActionKind::Scale { deployment, .. }
        | ActionKind::SetImage { deployment, .. } => deployment.as_deref(),
        ActionKind::DrainNode { .. } | ActionKind::DeletePod { .. } => None,
    }
}

enum Target {
    Deployment(String),
    Node(String),
    Pod(String),
}

impl Target {
    fn words(&self) -> String {
        match self {
            Target::Deployment(d) => format!("deployment {d}"),
            Target::Node(n) => format!("node {n}"),
            Target::Pod(p) => format!("pod {p}"),
        }
    }

    fn pod(&self) -> Option<String> {
        match self {
            Target::Pod(p) => Some(p.clone()),
            _ => None,
        }
    }

    fn name(&self) -> &str {
        match self {
            Target::Deployment(n) | Target::Node(n) | Target::Pod(n) => n,
        }
    }
}

/// The Deployment's live pods (not terminating).
async fn deployment_pods(cluster: &Cluster, deployment: &str) -> Result<Vec<Pod>, K8sError> {
    let selector = super::watches::deployment_selector(cluster, deployment).await?;
    let pods = cluster
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| cluster.err(format!("list the pods of deployment {deployment}"), e))?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

async fn resolve_target(
    cluster: &Cluster,
    kind: &ActionKind,
    default_deployment: &str,
) -> Result<Target, K8sError> {
    let deployment = deployment_of(kind)
        .unwrap_or(default_deployment)
        .to_string();
    match kind {
        ActionKind::RolloutRestart { .. }
        | ActionKind::Scale { .. }
        | ActionKind::SetImage { .. } => Ok(Target::Deployment(deployment)),
        ActionKind::DrainNode { node: Some(n), .. } => Ok(Target::Node(n.clone())),
        ActionKind::DrainNode { node: None, .. } => {
            let pods = deployment_pods(cluster, &deployment).await?;
            let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
            for p in &pods {
                if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    *per_node.entry(n).or_default() += 1;
                }
            }
            // Most pods; ties go to the first node by name.
            let best = per_node
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(n, _)| n.clone());
            best.map(Target::Node).ok_or_else(|| K8sError::Action {
                action: "drain-node".into(),
                message: format!(
                    "no pod of deployment {deployment} is scheduled on a node; name the node with `node = \"...\"`"
                ),
            })
        }
        ActionKind::DeletePod { pod: Some(p), .. } => Ok(Target::Pod(p.clone())),
        ActionKind::DeletePod { pod: None, .. } => {
            let mut pods = deployment_pods(cluster, &deployment).await?;
            pods.sort_by(|a, b| {
                let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
                    .then_with(|| a.name_any().cmp(&b.name_any()))
            });
            pods.first()
                .map(|p| Target::Pod(p.name_any()))
                .ok_or_else(|| K8sError::Action {
                    action: "delete-pod".into(),
                    message: format!("deployment {deployment} has no running pod to delete"),
                })
        }
    }
}

async fn perform(
    cluster: &Cluster,
    kind: &ActionKind,
    target: Target,
) -> Result<Outcome, K8sError> {
    let name = target.name().to_string();
    match kind {
        ActionKind::RolloutRestart { .. } => rollout_restart(cluster, &name).await,
        ActionKind::Scale { replicas, .. } => scale(cluster, &name, *replicas).await,
        ActionKind::SetImage {
            container, image, ..
        } => set_image(cluster, &name, container.as_deref(), image).await,
        ActionKind::DeletePod { grace_period, .. } => {
            delete_pod(cluster, &name, *grace_period).await
        }
        ActionKind::DrainNode {
            grace_period,
            timeout,
            ..
        } => drain(cluster, &name, *grace_period, *timeout).await,
    }
}

fn grace_u32(action: &str, g: Option<i64>) -> Result<Option<u32>, K8sError> {
    g.map(|g| {
        u32::try_from(g).map_err(|_| K8sError::Action {
            action: action.into(),
            message: format!("grace period {g} s is out of range"),
        })
    })
    .transpose()
}

fn now_rfc3339_seconds() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `kubectl rollout restart`: the strategic-merge patch of the template's
/// `kubectl.kubernetes.io/restartedAt`, field manager `kubectl-rollout`.
async fn rollout_restart(cluster: &Cluster, name: &str) -> Result<Outcome, K8sError> {
    let api = cluster.api::<Deployment>();
    let what = format!("get deployment {name} in namespace {}", cluster.namespace);
    let d = api.get(name).await.map_err(|e| cluster.err(what, e))?;
    if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
        return Err(K8sError::Action {
            action: "rollout-restart".into(),
            message: format!(
                "can't restart paused deployment {name} (run `kubectl rollout resume deployment/{name}` first)"
            ),
        });
    }
    let previous = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(RESTARTED_AT).cloned());
    let mut stamp = now_rfc3339_seconds();
    if previous.as_deref() == Some(stamp.as_str()) {
        // The same second as the last restart would be an empty patch.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        stamp = now_rfc3339_seconds();
    }
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}});
    let params = PatchParams {
        field_manager: Some("kubectl-rollout".into()),
        ..PatchParams::default()
    };
    let after = api
        .patch(name, &params, &Patch::Strategic(&patch))
        .await
        .map_err(|e| cluster.err(format!("restart deployment {name}"), e))?;
    Ok(Outcome {
        detail: format!(
            "restarted: {RESTARTED_AT}={stamp} on the pod template (generation {})",
            after.metadata.generation.unwrap_or(0)
        ),
        ..Outcome::default()
    })
}

/// `kubectl scale`: a merge patch of the scale subresource.
async fn scale(cluster: &Cluster, name: &str, replicas: i32) -> Result<Outcome, K8sError> {
    let api = cluster.api::<Deployment>();
    let before = api
        .get_scale(name)
        .await
        .map_err(|e| cluster.err(format!("get the scale of deployment {name}"), e))?
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or(0);
    let params = PatchParams {
        field_manager: Some(super::apply::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch_scale(
        name,
        &params,
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .map_err(|e| cluster.err(format!("scale deployment {name}"), e))?;
    Ok(Outcome {
        detail: format!("scaled from {before} to {replicas} replicas"),
        ..Outcome::default()
    })
}

/// `kubectl set image`: a strategic-merge patch of one container's image
/// (containers merge by name, so the rest of the container stays).
async fn set_image(
    cluster: &Cluster,
    name: &str,
    container: Option<&str>,
    image: &str,
) -> Result<Outcome, K8sError> {
    let api = cluster.api::<Deployment>();
    let what = format!("get deployment {name} in namespace {}", cluster.namespace);
    let d = api.get(name).await.map_err(|e| cluster.err(what, e))?;
    let containers = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let found = match container {
        Some(c) => containers.iter().find(|x| x.name == c),
        None => containers.first(),
    };
    let Some(found) = found else {
        return Err(K8sError::Action {
            action: "set-image".into(),
            message: format!(
                "deployment {name} has no container {} (containers: {})",
                container.unwrap_or("at all"),
                containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    let previous = found.image.clone().unwrap_or_default();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": found.name, "image": image}]}}}});
    let params = PatchParams {
        field_manager: Some(super::apply::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Strategic(&patch))
        .await
        .map_err(|e| cluster.err(format!("set the image of deployment {name}"), e))?;
    Ok(Outcome {
        detail: format!("container {}: image {previous} -> {image}", found.name),
        ..Outcome::default()
    })
}

/// `kubectl delete pod` (graceful; the grace period overridden when given).
async fn delete_pod(
    cluster: &Cluster,
    name: &str,
    grace: Option<i64>,
) -> Result<Outcome, K8sError> {
    let params = DeleteParams {
        grace_period_seconds: grace_u32("delete-pod", grace)?,
        ..DeleteParams::default()
    };
    let res = cluster
        .api::<Pod>()
        .delete(name, &params)
        .await
        .map_err(|e| {
            cluster.err(
                format!("delete pod {name} in namespace {}", cluster.namespace),
                e,
            )
        })?;
    let grace_text = match res
        .left()
        .and_then(|p| p.metadata.deletion_grace_period_seconds)
    {
        Some(g) => format!(" (grace period {g} s)"),
        None => String::new(),
    };
    Ok(Outcome {
        detail: format!("deleted pod {name}{grace_text}"),
        pods: vec![name.to_string()],
        ..Outcome::default()
    })
}

struct Evicted {
    name: String,
    uid: Option<String>,
    refusals: u32,
    first_refusal: Option<String>,
    already_gone: bool,
}

fn refusal_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let cause = s
                .details
                .as_ref()
                .and_then(|d| d.causes.first())
                .map(|c| format!(" ({})", c.message))
                .unwrap_or_default();
            format!("{}{cause}", s.message)
        }
        other => other.to_string(),
    }
}

/// Evicts one pod, retrying 429 every [`EVICTION_RETRY`] until `deadline`
/// (404: already gone; any other error aborts), like kubectl drain.
async fn evict_one(
    cluster: &Cluster,
    api: &Api<Pod>,
    pod: &Pod,
    params: &EvictParams,
    deadline: Instant,
    started: Instant,
) -> Result<Evicted, K8sError> {
    let name = pod.name_any();
    let mut out = Evicted {
        name: name.clone(),
        uid: pod.metadata.uid.clone(),
        refusals: 0,
        first_refusal: None,
        already_gone: false,
    };
    loop {
        match api.evict(&name, params).await {
            Ok(_) => return Ok(out),
            Err(e) if status_code(&e) == Some(404) => {
                out.already_gone = true;
                return Ok(out);
            }
            Err(e) if status_code(&e) == Some(429) => {
                out.refusals += 1;
                let msg = refusal_message(&e);
                if out.first_refusal.is_none() {
                    out.first_refusal = Some(msg.clone());
                }
                if Instant::now() + EVICTION_RETRY > deadline {
                    return Err(K8sError::Timeout {
                        what: format!("pod {name} to be evicted"),
                        waited: started.elapsed(),
                        missing: format!(
                            "the eviction was refused {} times; last: {msg}",
                            out.refusals
                        ),
                    });
                }
                tokio::time::sleep(EVICTION_RETRY).await;
            }
            Err(e) => return Err(cluster.err(format!("evict pod {name}"), e)),
        }
    }
}

/// Polls until the pod is gone from the API (404, or a new pod under the same
/// name), like kubectl drain's wait.
async fn wait_gone(
    cluster: &Cluster,
    api: &Api<Pod>,
    name: &str,
    uid: Option<&str>,
    deadline: Instant,
    started: Instant,
) -> Result<(), K8sError> {
    loop {
        match api.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(p)) if p.metadata.uid.as_deref() != uid => return Ok(()),
            Ok(Some(_)) => {}
            Err(e) => return Err(cluster.err(format!("get pod {name}"), e)),
        }
        if Instant::now() >= deadline {
            return Err(K8sError::Timeout {
                what: format!("evicted pod {name} to be deleted"),
                waited: started.elapsed(),
                missing: format!("pod {name} still exists (terminating)"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn is_daemonset_pod(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
}

fn is_mirror_pod(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
}

/// `kubectl drain --ignore-daemonsets` limited to the cluster's namespace:
/// cordon, evict every pod concurrently (429 retried every 5 s), then wait
/// for the evicted pods to be gone — all within `timeout`.
async fn drain(
    cluster: &Cluster,
    node: &str,
    grace: Option<i64>,
    timeout: Duration,
) -> Result<Outcome, K8sError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .map_err(|e| cluster.err(format!("cordon node {node}"), e))?;
    let all: Api<Pod> = Api::all(cluster.client.clone());
    let listed = all
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| cluster.err(format!("list the pods on node {node}"), e))?;
    let mut skipped = Vec::new();
    let mut victims = Vec::new();
    for p in listed.items {
        if p.metadata.namespace.as_deref() != Some(cluster.namespace.as_str())
            || p.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if is_daemonset_pod(&p) {
            skipped.push(format!("{} (DaemonSet)", p.name_any()));
        } else if is_mirror_pod(&p) {
            skipped.push(format!("{} (mirror pod)", p.name_any()));
        } else {
            victims.push(p);
        }
    }
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            grace_period_seconds: grace_u32("drain-node", grace)?,
            ..DeleteParams::default()
        }),
        ..EvictParams::default()
    };
    let api = cluster.api::<Pod>();
    let results = join_all(
        victims
            .iter()
            .map(|p| evict_one(cluster, &api, p, &params, deadline, started)),
    )
    .await;
    let mut evicted = Vec::new();
    for r in results {
        evicted.push(r?);
    }
    let gone = join_all(
        evicted
            .iter()
            .filter(|e| !e.already_gone)
            .map(|e| wait_gone(cluster, &api, &e.name, e.uid.as_deref(), deadline, started)),
    )
    .await;
    for r in gone {
        r?;
    }
    let refused: Vec<&Evicted> = evicted.iter().filter(|e| e.refusals > 0).collect();
    let refusals: u32 = refused.iter().map(|e| e.refusals).sum();
    let names: Vec<String> = evicted.iter().map(|e| e.name.clone()).collect();
    let mut detail = format!(
        "cordoned node {node}; evicted {} pods{}",
        names.len(),
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        }
    );
    if !refused.is_empty() {
        detail.push_str(&format!(
            "; {} {} refused by a PodDisruptionBudget {refusals} {} before succeeding",
            refused.len(),
            if refused.len() == 1 {
                "eviction was"
            } else {
                "evictions were"
            },
            if refusals == 1 { "time" } else { "times" },
        ));
        if let Some(m) = refused.iter().find_map(|e| e.first_refusal.clone()) {
            detail.push_str(&format!(" (first refusal: {m})"));
        }
    }
    if !skipped.is_empty() {
        detail.push_str(&format!("; skipped {}", skipped.join(", ")));
    }
    detail.push_str(&format!(
        "; all evicted pods gone after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(Outcome {
        detail,
        pods: names,
        eviction_refusals: refusals,
        cordoned: Some(node.to_string()),
    })
}

/// Compile-time proof that the futures can be spawned on a multi-threaded
/// runtime while the load runs.
#[allow(dead_code)]
fn futures_are_send(
    c: &Cluster,
    a: &Action,
    tx: &UnboundedSender<LifecycleEvent>,
    clock: &RunClock,
    progress: &super::Progress,
) {
    fn is_send<T: Send>(_: T) {}
    is_send(run_action(c, a, "x", tx, clock));
    is_send(super::wait_ready(
        c,
        "x",
        Some("x"),
        Duration::ZERO,
        Some(progress),
    ));
    is_send(super::wait_settled(c, "x", Duration::ZERO, None));
    is_send(super::apply(c, &[]));
    is_send(super::teardown(c, &[], Duration::ZERO));
    is_send(super::connect(&super::KubeSource::text("")));
}
