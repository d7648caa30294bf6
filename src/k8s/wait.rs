//! Bounded waits driven by watches: the Deployment ready to serve (before the
//! load), and a rollout over with every old pod gone from the API (after it).

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream::BoxStream};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{ResourceExt, api::ListParams, runtime::watcher};

use super::{
    Cluster, K8sError,
    watches::{Shared, WatchItem, Watches, get_deployment},
};

/// A progress callback: receives lines such as
/// `waiting for deployment api: 3/6 available, 6/6 updated`, each time the
/// line changes.
pub type Progress = dyn Fn(&str) + Send + Sync;

/// What [`wait_ready`] found once the Deployment was ready.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyInfo {
    /// The Deployment.
    pub deployment: String,
    /// Its namespace.
    pub namespace: String,
    /// Its pod selector as a label selector string (`app=api`).
    pub selector: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// The current ReplicaSet.
    pub replicaset: Option<String>,
    /// The current ReplicaSet's `pod-template-hash`.
    pub template_hash: Option<String>,
    /// The Service, when one was named.
    pub service: Option<ServiceInfo>,
    /// How long the wait took.
    pub waited: Duration,
}

/// A Service's addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    /// Its name.
    pub name: String,
    /// `spec.type` (`ClusterIP`, `NodePort`, `LoadBalancer`).
    pub service_type: String,
    /// `spec.clusterIP` (`None` for headless or unset).
    pub cluster_ip: Option<String>,
    /// Its ports.
    pub ports: Vec<ServicePortInfo>,
    /// Ready endpoints counted in its EndpointSlices.
    pub ready_endpoints: usize,
}

/// One Service port.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePortInfo {
    /// `name`.
    pub name: Option<String>,
    /// `protocol` (`TCP`).
    pub protocol: String,
    /// `port`.
    pub port: i32,
    /// `targetPort` (a number or a port name).
    pub target_port: Option<String>,
    /// `nodePort`.
    pub node_port: Option<i32>,
}

/// What [`wait_settled`] found once the rollout was over.
#[derive(Debug, Clone, PartialEq)]
pub struct SettledInfo {
    /// `spec.replicas`.
    pub replicas: i32,
    /// The current ReplicaSet.
    pub replicaset: Option<String>,
    /// Its `pod-template-hash`.
    pub template_hash: Option<String>,
    /// The pods left (all of the current template, none terminating).
    pub pods: Vec<String>,
    /// How long the wait took.
    pub waited: Duration,
}

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

/// The watched state of one Deployment, its ReplicaSets, pods and (maybe)
/// its Service's EndpointSlices: the reflector stores of the run's
/// [`Watches`], objects by name.
struct View<'w> {
    watches: &'w Watches,
}

impl View<'_> {
    fn deployment(&self) -> Option<Arc<Deployment>> {
        self.watches
            .deployments
            .store()
            .find(|d| d.name_any() == self.watches.deployment)
    }

    fn pods(&self) -> Vec<Arc<Pod>> {
        self.watches.pods.objects()
    }

    fn slices(&self) -> Vec<Arc<EndpointSlice>> {
        self.watches
            .slices
            .as_ref()
            .map(Shared::objects)
            .unwrap_or_default()
    }

    /// The ReplicaSet of the Deployment's current revision.
    fn current_rs(&self, d: &Deployment) -> Option<Arc<ReplicaSet>> {
        let uid = d.metadata.uid.as_deref()?;
        let owned = self.watches.replicasets.objects().into_iter().filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        });
        let revision = |o: &kube::api::ObjectMeta| -> Option<i64> {
            o.annotations.as_ref()?.get(REVISION)?.parse().ok()
        };
        match revision(&d.metadata) {
            Some(r) => owned
                .into_iter()
                .find(|rs| revision(&rs.metadata) == Some(r)),
            None => owned.max_by_key(|rs| revision(&rs.metadata).unwrap_or(0)),
        }
    }
}

fn rs_hash(rs: &ReplicaSet) -> Option<String> {
    rs.metadata.labels.as_ref()?.get(HASH_LABEL).cloned()
}

fn pod_hash(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

/// The fatal part of a watch error (401, 403, 404), as a [`K8sError`].
fn fatal_watch_error(cluster: &Cluster, e: &watcher::Error) -> Result<String, K8sError> {
    let inner = match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        other => return Ok(other.to_string()),
    };
    match inner {
        kube::Error::Api(s) if matches!(s.code, 401 | 403) => Err(cluster.err(
            "watch the deployment's objects",
            kube::Error::Api(s.clone()),
        )),
        _ => Ok(super::chain(inner)),
    }
}

enum Eval<T> {
    Done(T),
    Pending { line: String, missing: String },
    Fail(K8sError),
}

/// A wake-up from one of the shared watches: `None` for an event (already in
/// the stores), the error for a failed watch.
type Wakeups = BoxStream<'static, Option<Arc<watcher::Error>>>;

fn wakeups<K: super::watches::Watched>(shared: &Shared<K>) -> Wakeups {
    shared
        .events()
        .map(|item| match item {
            WatchItem::Event(_) => None,
            WatchItem::Error(e) => Some(e),
        })
        .boxed()
}

/// The run's watches, re-evaluated on every change, bounded by one deadline.
struct Watch<'a> {
    cluster: &'a Cluster,
    watches: &'a Watches,
    merged: futures_util::stream::SelectAll<Wakeups>,
    tick: tokio::time::Interval,
    deadline: tokio::time::Instant,
    timeout: Duration,
    what: String,
    progress: Option<&'a Progress>,
    last_line: String,
    missing: String,
    last_error: Option<String>,
}

impl<'a> Watch<'a> {
    fn new(
        cluster: &'a Cluster,
        watches: &'a Watches,
        timeout: Duration,
        what: String,
        progress: Option<&'a Progress>,
    ) -> Self {
        let mut streams = vec![
            wakeups(&watches.deployments),
            wakeups(&watches.replicasets),
            wakeups(&watches.pods),
        ];
        if let Some(s) = &watches.slices {
            streams.push(wakeups(s));
        }
        Watch {
            cluster,
            watches,
            merged: futures_util::stream::select_all(streams),
            tick: tokio::time::interval(Duration::from_secs(1)),
            deadline: tokio::time::Instant::now() + timeout,
            timeout,
            what,
            progress,
            last_line: String::new(),
            missing: "the watches have not listed the objects yet".into(),
            last_error: None,
        }
    }

    /// Evaluates now and after every change until `eval` says done.
    async fn until<T>(&mut self, mut eval: impl FnMut(&View) -> Eval<T>) -> Result<T, K8sError> {
        loop {
            if self.watches.synced() {
                match eval(&View {
                    watches: self.watches,
                }) {
                    Eval::Done(t) => return Ok(t),
                    Eval::Fail(e) => return Err(e),
                    Eval::Pending { line, missing } => {
                        if line != self.last_line {
                            if let Some(p) = self.progress {
                                p(&line);
                            }
                            self.last_line = line;
                        }
                        self.missing = missing;
                    }
                }
            }
            self.step().await?;
        }
    }

    /// Waits for the next batch of watch events (or a tick); the time-out
    /// error when the deadline passes.
    async fn step(&mut self) -> Result<(), K8sError> {
        tokio::select! {
            item = self.merged.next() => match item {
                Some(None) => {
                    // Take every wake-up already queued before evaluating again.
                    while let Some(Some(next)) = self.merged.next().now_or_never() {
                        if let Some(e) = next {
                            self.last_error = Some(fatal_watch_error(self.cluster, &e)?);
                        }
                    }
                }
                Some(Some(e)) => self.last_error = Some(fatal_watch_error(self.cluster, &e)?),
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            _ = self.tick.tick() => {}
            _ = tokio::time::sleep_until(self.deadline) => {
                let mut missing = std::mem::take(&mut self.missing);
                if let Some(e) = &self.last_error {
                    missing = format!("{missing} (last watch error: {e})");
                }
                return Err(K8sError::Timeout {
                    what: self.what.clone(),
                    waited: self.timeout,
                    missing,
                });
            }
        }
        Ok(())
    }
}

use futures_util::FutureExt;

/// Ready endpoints (by pod, else address) in the slices.
fn ready_endpoints(slices: &[Arc<EndpointSlice>]) -> usize {
    let mut seen = BTreeSet::new();
    for s in slices {
        for e in &s.endpoints {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let key = e
                .target_ref
                .as_ref()
                .and_then(|t| t.name.clone())
                .or_else(|| e.addresses.first().cloned());
            if let Some(k) = key {
                seen.insert(k);
            }
        }
    }
    seen.len()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a pod is not ready, in a few words (`CrashLoopBackOff`,
/// `unschedulable: ...`); `None` when it is ready.
pub(crate) fn pod_problem(p: &Pod) -> Option<String> {
    if p.metadata.deletion_timestamp.is_some() {
        return Some("terminating".into());
    }
    if is_ready(p) {
        return None;
    }
    let Some(st) = &p.status else {
        return Some("no status yet".into());
    };
    let restarts: i32 = st
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    let restarts = if restarts > 0 {
        format!(" ({restarts} restarts)")
    } else {
        String::new()
    };
    for cs in st.container_statuses.iter().flatten() {
        let Some(state) = &cs.state else { continue };
        if let Some(w) = &state.waiting
            && let Some(reason) = &w.reason
        {
            let msg = w
                .message
                .as_deref()
                .map(|m| format!(": {}", m.chars().take(120).collect::<String>()))
                .unwrap_or_default();
            return Some(format!("{reason}{restarts}{msg}"));
        }
        if let Some(t) = &state.terminated {
            return Some(format!(
                "container {} {} (exit code {}){restarts}",
                cs.name,
                t.reason.as_deref().unwrap_or("terminated"),
                t.exit_code
            ));
        }
    }
    if st.phase.as_deref() == Some("Pending") {
        if let Some(c) = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        {
            return Some(format!(
                "unschedulable: {}",
                c.message.as_deref().unwrap_or("no node fits")
            ));
        }
        return Some("Pending".into());
    }
    Some(format!(
        "running, not ready (readiness probe not passing){restarts}"
    ))
}

fn pod_problems(pods: &[Arc<Pod>]) -> String {
    let problems: Vec<String> = pods
        .iter()
        .filter_map(|p| pod_problem(p).map(|why| format!("pod {}: {why}", p.name_any())))
        .collect();
    if problems.is_empty() {
        return String::new();
    }
    let shown = problems.len().min(4);
    let more = if problems.len() > shown {
        format!("; and {} more", problems.len() - shown)
    } else {
        String::new()
    };
    format!("; {}{more}", problems[..shown].join("; "))
}

struct Status {
    spec_replicas: i32,
    observed: bool,
    replicas: i32,
    updated: i32,
    available: i32,
    available_true: bool,
    deadline_exceeded: Option<String>,
    available_message: Option<String>,
}

fn status_of(d: &Deployment) -> Status {
    let spec_replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let conditions = st.conditions.unwrap_or_default();
    let available = conditions.iter().find(|c| c.type_ == "Available");
    Status {
        spec_replicas,
        observed: st.observed_generation.unwrap_or(0) >= generation,
        replicas: st.replicas.unwrap_or(0),
        updated: st.updated_replicas.unwrap_or(0),
        available: st.available_replicas.unwrap_or(0),
        available_true: available.is_some_and(|c| c.status == "True"),
        available_message: available
            .filter(|c| c.status != "True")
            .and_then(|c| c.message.clone()),
        deadline_exceeded: conditions
            .iter()
            .find(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
            .map(|c| {
                c.message
                    .clone()
                    .unwrap_or_else(|| "exceeded its progress deadline".into())
            }),
    }
}

fn service_info(s: &Service, ready_endpoints: usize) -> ServiceInfo {
    let spec = s.spec.clone().unwrap_or_default();
    ServiceInfo {
        name: s.name_any(),
        service_type: spec.type_.unwrap_or_else(|| "ClusterIP".into()),
        cluster_ip: spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None"),
        ports: spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| ServicePortInfo {
                name: p.name,
                protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                port: p.port,
                target_port: p.target_port.map(|t| match t {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => {
                        i.to_string()
                    }
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
                }),
                node_port: p.node_port,
            })
            .collect(),
        ready_endpoints,
    }
}

/// Waits until the Deployment is Available with every replica updated and
/// available and its generation observed, and — when `service` is given —
/// the Service's EndpointSlices list at least as many ready endpoints as
/// replicas. Bounded by `timeout`; the time-out error names what was missing
/// and why pods are not ready.
pub async fn wait_ready(
    cluster: &Cluster,
    deployment: &str,
    service: Option<&str>,
    timeout: Duration,
    progress: Option<&Progress>,
) -> Result<ReadyInfo, K8sError> {
    let started = Instant::now();
    if let Some(svc) = service {
        get_service(cluster, svc).await?;
    }
    let watches = Watches::start(cluster, deployment, service).await?;
    ready_on(cluster, &watches, started, timeout, progress).await
}

/// [`wait_ready`] on the run's shared [`Watches`] (the Deployment and the
/// Service they watch).
pub async fn wait_ready_on(
    cluster: &Cluster,
    watches: &Watches,
    timeout: Duration,
    progress: Option<&Progress>,
) -> Result<ReadyInfo, K8sError> {
    let started = Instant::now();
    if let Some(svc) = &watches.service {
        get_service(cluster, svc).await?;
    }
    ready_on(cluster, watches, started, timeout, progress).await
}

async fn get_service(cluster: &Cluster, svc: &str) -> Result<Service, K8sError> {
    cluster.api::<Service>().get(svc).await.map_err(|e| {
        cluster.err(
            format!("get service {svc} in namespace {}", cluster.namespace),
            e,
        )
    })
}

async fn ready_on(
    cluster: &Cluster,
    watches: &Watches,
    started: Instant,
    timeout: Duration,
    progress: Option<&Progress>,
) -> Result<ReadyInfo, K8sError> {
    let deployment = watches.deployment.as_str();
    let service = watches.service.as_deref();
    let what = format!("deployment {deployment} to be ready");
    let mut watch = Watch::new(cluster, watches, timeout, what, progress);
    let found = watch
        .until(
            |v: &View| -> Eval<(i32, Option<String>, Option<String>, usize)> {
                let Some(d) = v.deployment() else {
                    return Eval::Pending {
                        line: format!("waiting for deployment {deployment} to exist"),
                        missing: format!("deployment {deployment} does not exist"),
                    };
                };
                let s = status_of(&d);
                if let Some(m) = s.deadline_exceeded {
                    return Eval::Fail(K8sError::RolloutFailed {
                        deployment: deployment.to_string(),
                        message: format!("{m}{}", pod_problems(&v.pods())),
                    });
                }
                let r = s.spec_replicas;
                let eps = ready_endpoints(&v.slices());
                let mut line = format!(
                    "waiting for deployment {deployment}: {}/{r} available, {}/{r} updated",
                    s.available, s.updated
                );
                if let Some(svc) = service {
                    line.push_str(&format!("; service {svc}: {eps}/{r} ready endpoints"));
                }
                let svc_ok = service.is_none() || eps >= usize::try_from(r).unwrap_or(0);
                if s.observed && s.available_true && s.updated == r && s.available == r && svc_ok {
                    let rs = v.current_rs(&d);
                    return Eval::Done((
                        r,
                        rs.as_deref().map(ResourceExt::name_any),
                        rs.as_deref().and_then(rs_hash),
                        eps,
                    ));
                }
                let mut missing = format!("{} of {r} pods available", s.available);
                if s.updated != r {
                    missing.push_str(&format!(", {} of {r} updated", s.updated));
                }
                if !s.observed {
                    missing
                        .push_str("; the latest spec change is not yet observed by the controller");
                }
                if !s.available_true {
                    missing.push_str(&format!(
                        "; condition Available is not True{}",
                        s.available_message
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    ));
                }
                if let Some(svc) = service
                    && !svc_ok
                {
                    missing.push_str(&format!("; service {svc} has {eps} of {r} ready endpoints"));
                }
                missing.push_str(&pod_problems(&v.pods()));
                Eval::Pending { line, missing }
            },
        )
        .await?;
    let (replicas, replicaset, template_hash, eps) = found;
    let service = match service {
        Some(svc) => Some(service_info(&get_service(cluster, svc).await?, eps)),
        None => None,
    };
    Ok(ReadyInfo {
        deployment: deployment.to_string(),
        namespace: cluster.namespace.clone(),
        selector: watches.selector.clone(),
        replicas,
        replicaset,
        template_hash,
        service,
        waited: started.elapsed(),
    })
}

/// Waits until the rollout is complete as `kubectl rollout status` judges it
/// (generation observed, updated == spec replicas == status replicas ==
/// available) **and** no pod of the Deployment remains that is of another
/// template hash or terminating — kubectl reports success before old pods
/// have exited; this returns only once they are gone from the API (checked
/// with a fresh list before returning).
pub async fn wait_settled(
    cluster: &Cluster,
    deployment: &str,
    timeout: Duration,
    progress: Option<&Progress>,
) -> Result<SettledInfo, K8sError> {
    let started = Instant::now();
    let watches = Watches::start(cluster, deployment, None).await?;
    settled_on(cluster, &watches, started, timeout, progress).await
}

/// [`wait_settled`] on the run's shared [`Watches`].
pub async fn wait_settled_on(
    cluster: &Cluster,
    watches: &Watches,
    timeout: Duration,
    progress: Option<&Progress>,
) -> Result<SettledInfo, K8sError> {
    settled_on(cluster, watches, Instant::now(), timeout, progress).await
}

async fn settled_on(
    cluster: &Cluster,
    watches: &Watches,
    started: Instant,
    timeout: Duration,
    progress: Option<&Progress>,
) -> Result<SettledInfo, K8sError> {
    let deployment = watches.deployment.as_str();
    let selector = &watches.selector;
    // Shared watches may not have delivered a change made just before (the
    // rollout's own patch): the Deployment's generation now, read from the
    // API, is the least the watched one must show before it is judged.
    let generation = get_deployment(cluster, deployment)
        .await?
        .metadata
        .generation
        .unwrap_or(0);
    let what = format!("deployment {deployment} to settle");
    let mut watch = Watch::new(cluster, watches, timeout, what, progress);
    loop {
        let candidate = watch
            .until(|v| settled_eval(cluster, deployment, generation, v))
            .await?;
        // The watch may lag the API; confirm with a fresh list.
        let list = cluster
            .api::<Pod>()
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| cluster.err(format!("list pods {selector}"), e))?;
        let (old, terminating) = leftover(candidate.template_hash.as_deref(), list.items.iter());
        if old.is_empty() && terminating.is_empty() {
            let mut pods: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
            pods.sort();
            return Ok(SettledInfo {
                pods,
                waited: started.elapsed(),
                ..candidate
            });
        }
        watch.step().await?;
    }
}

/// Pods of another template than `hash`, and pods of it terminating.
fn leftover<'p>(
    hash: Option<&str>,
    pods: impl Iterator<Item = &'p Pod>,
) -> (Vec<String>, Vec<String>) {
    let mut old = Vec::new();
    let mut terminating = Vec::new();
    for p in pods {
        if hash.is_none() || pod_hash(p) != hash {
            old.push(p.name_any());
        } else if p.metadata.deletion_timestamp.is_some() {
            terminating.push(p.name_any());
        }
    }
    (old, terminating)
}

fn settled_eval(
    cluster: &Cluster,
    deployment: &str,
    generation: i64,
    v: &View,
) -> Eval<SettledInfo> {
    let Some(d) = v.deployment() else {
        return Eval::Fail(K8sError::NotFound {
            what: format!("deployment {deployment} in namespace {}", cluster.namespace),
            message: "it was deleted while waiting for the rollout".into(),
        });
    };
    let seen = d.metadata.generation.unwrap_or(0);
    if seen < generation {
        return Eval::Pending {
            line: format!("waiting for the watch to see deployment {deployment}'s latest change"),
            missing: format!(
                "the watch shows generation {seen} of the deployment, the API server {generation}"
            ),
        };
    }
    let s = status_of(&d);
    let pods = v.pods();
    if let Some(m) = s.deadline_exceeded {
        return Eval::Fail(K8sError::RolloutFailed {
            deployment: deployment.to_string(),
            message: format!("{m}{}", pod_problems(&pods)),
        });
    }
    let r = s.spec_replicas;
    let rs = v.current_rs(&d);
    let hash = rs.as_deref().and_then(rs_hash);
    let (old, terminating) = leftover(hash.as_deref(), pods.iter().map(|p| &**p));
    let complete =
        s.observed && s.updated == r && s.replicas == s.updated && s.available == s.updated;
    if complete && old.is_empty() && terminating.is_empty() && hash.is_some() {
        return Eval::Done(SettledInfo {
            replicas: r,
            replicaset: rs.as_deref().map(ResourceExt::name_any),
            template_hash: hash,
            pods: Vec::new(),
            waited: Duration::ZERO,
        });
    }
    let line = format!(
        "waiting for deployment {deployment} to settle: {}/{r} updated, {}/{r} available, {} old and {} terminating pods left",
        s.updated,
        s.available,
        old.len(),
        terminating.len()
    );
    let mut missing = if !s.observed {
        "the latest spec change is not yet observed by the controller".to_string()
    } else if s.updated < r {
        format!("{} out of {r} new replicas have been updated", s.updated)
    } else if s.replicas > s.updated {
        format!(
            "{} old replicas are pending termination",
            s.replicas - s.updated
        )
    } else if s.available < s.updated {
        format!(
            "{} of {} updated replicas are available",
            s.available, s.updated
        )
    } else {
        "the rollout is complete".to_string()
    };
    if hash.is_none() {
        missing.push_str("; the current ReplicaSet is not known yet");
    }
    if !old.is_empty() {
        missing.push_str(&format!(
            "; {} pods of an old template still exist: {}",
            old.len(),
            old.join(", ")
        ));
    }
    if !terminating.is_empty() {
        missing.push_str(&format!(
            "; {} pods still terminating: {}",
            terminating.len(),
            terminating.join(", ")
        ));
    }
    Eval::Pending { line, missing }
}
