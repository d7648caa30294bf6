//! Bounded waits driven by watches: the Deployment ready to serve (before the
//! load), and a rollout over with every old pod gone from the API (after it).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream::BoxStream};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, ResourceExt,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};

use super::{Cluster, K8sError, selector_string};

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

/// Objects of one kind as a watch reports them.
struct Mirror<K> {
    objects: BTreeMap<String, K>,
    pending: Option<BTreeMap<String, K>>,
    synced: bool,
}

impl<K: ResourceExt> Mirror<K> {
    fn new(synced: bool) -> Self {
        Mirror {
            objects: BTreeMap::new(),
            pending: None,
            synced,
        }
    }

    fn apply(&mut self, event: watcher::Event<K>) {
        match event {
            watcher::Event::Init => self.pending = Some(BTreeMap::new()),
            watcher::Event::InitApply(o) => {
                if let Some(p) = &mut self.pending {
                    p.insert(o.name_any(), o);
                }
            }
            watcher::Event::InitDone => {
                if let Some(p) = self.pending.take() {
                    self.objects = p;
                }
                self.synced = true;
            }
            watcher::Event::Apply(o) => {
                self.objects.insert(o.name_any(), o);
            }
            watcher::Event::Delete(o) => {
                self.objects.remove(&o.name_any());
            }
        }
    }
}

enum Update {
    Deployment(watcher::Event<Deployment>),
    ReplicaSet(watcher::Event<ReplicaSet>),
    Pod(watcher::Event<Pod>),
    Slice(watcher::Event<EndpointSlice>),
}

/// The watched state of one Deployment, its ReplicaSets, pods and (maybe)
/// its Service's EndpointSlices.
struct View {
    name: String,
    deployments: Mirror<Deployment>,
    replicasets: Mirror<ReplicaSet>,
    pods: Mirror<Pod>,
    slices: Mirror<EndpointSlice>,
}

impl View {
    fn synced(&self) -> bool {
        self.deployments.synced && self.replicasets.synced && self.pods.synced && self.slices.synced
    }

    fn apply(&mut self, u: Update) {
        match u {
            Update::Deployment(e) => self.deployments.apply(e),
            Update::ReplicaSet(e) => self.replicasets.apply(e),
            Update::Pod(e) => self.pods.apply(e),
            Update::Slice(e) => self.slices.apply(e),
        }
    }

    fn deployment(&self) -> Option<&Deployment> {
        self.deployments.objects.get(&self.name)
    }

    /// The ReplicaSet of the Deployment's current revision.
    fn current_rs(&self, d: &Deployment) -> Option<&ReplicaSet> {
        let uid = d.metadata.uid.as_deref()?;
        let owned = self.replicasets.objects.values().filter(|rs| {
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

fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(watcher::Event<K>) -> Update,
) -> BoxStream<'static, Result<Update, watcher::Error>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .map(move |r| r.map(wrap))
        .boxed()
}

/// The fatal part of a watch error (401, 403, 404), as a [`K8sError`].
fn fatal_watch_error(cluster: &Cluster, e: watcher::Error) -> Result<String, K8sError> {
    let inner = match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        other => return Ok(other.to_string()),
    };
    match super::status_code(&inner) {
        Some(401 | 403) => Err(cluster.err("watch the deployment's objects", inner)),
        _ => Ok(super::chain(&inner)),
    }
}

enum Eval<T> {
    Done(T),
    Pending { line: String, missing: String },
    Fail(K8sError),
}

type UpdateStream = BoxStream<'static, Result<Update, watcher::Error>>;

/// A view kept current by its watches, bounded by one deadline.
struct Watch<'a> {
    cluster: &'a Cluster,
    view: View,
    merged: futures_util::stream::SelectAll<UpdateStream>,
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
        view: View,
        streams: Vec<UpdateStream>,
        timeout: Duration,
        what: String,
        progress: Option<&'a Progress>,
    ) -> Self {
        Watch {
            cluster,
            view,
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
            if self.view.synced() {
                match eval(&self.view) {
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
                Some(Ok(u)) => {
                    self.view.apply(u);
                    // Take every event already queued before evaluating again.
                    while let Some(Some(next)) = self.merged.next().now_or_never() {
                        match next {
                            Ok(u) => self.view.apply(u),
                            Err(e) => self.last_error = Some(fatal_watch_error(self.cluster, e)?),
                        }
                    }
                }
                Some(Err(e)) => self.last_error = Some(fatal_watch_error(self.cluster, e)?),
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

/// GETs the Deployment (a clear error when it does not exist) and returns
/// its pod selector as a label selector string (empty when it has none).
pub(crate) async fn deployment_selector(
    cluster: &Cluster,
    deployment: &str,
) -> Result<String, K8sError> {
    let d = cluster
        .api::<Deployment>()
        .get(deployment)
        .await
        .map_err(|e| {
            cluster.err(
                format!(
                    "get deployment {deployment} in namespace {}",
                    cluster.namespace
                ),
                e,
            )
        })?;
    Ok(d.spec
        .as_ref()
        .map(|s| selector_string(&s.selector))
        .unwrap_or_default())
}

/// GETs the Deployment (a clear error when it does not exist) and sets up
/// the view and its watches.
async fn start_view(
    cluster: &Cluster,
    deployment: &str,
    service: Option<&str>,
) -> Result<(View, Vec<UpdateStream>, String), K8sError> {
    let selector = deployment_selector(cluster, deployment).await?;
    if selector.is_empty() {
        return Err(K8sError::Action {
            action: "wait".into(),
            message: format!("deployment {deployment} has an empty selector"),
        });
    }
    let ns = &cluster.namespace;
    let client = &cluster.client;
    let mut streams = vec![
        watch(
            Api::<Deployment>::namespaced(client.clone(), ns),
            watcher::Config::default().fields(&format!("metadata.name={deployment}")),
            Update::Deployment,
        ),
        watch(
            Api::<ReplicaSet>::namespaced(client.clone(), ns),
            watcher::Config::default().labels(&selector),
            Update::ReplicaSet,
        ),
        watch(
            Api::<Pod>::namespaced(client.clone(), ns),
            watcher::Config::default().labels(&selector),
            Update::Pod,
        ),
    ];
    if let Some(svc) = service {
        streams.push(watch(
            Api::<EndpointSlice>::namespaced(client.clone(), ns),
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={svc}")),
            Update::Slice,
        ));
    }
    let view = View {
        name: deployment.to_string(),
        deployments: Mirror::new(false),
        replicasets: Mirror::new(false),
        pods: Mirror::new(false),
        slices: Mirror::new(service.is_none()),
    };
    Ok((view, streams, selector))
}

/// Ready endpoints (by pod, else address) in the slices.
fn ready_endpoints(slices: &Mirror<EndpointSlice>) -> usize {
    let mut seen = BTreeSet::new();
    for s in slices.objects.values() {
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

fn pod_problems(pods: &Mirror<Pod>) -> String {
    let problems: Vec<String> = pods
        .objects
        .values()
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
        cluster.api::<Service>().get(svc).await.map_err(|e| {
            cluster.err(
                format!("get service {svc} in namespace {}", cluster.namespace),
                e,
            )
        })?;
    }
    let (view, streams, selector) = start_view(cluster, deployment, service).await?;
    let what = format!("deployment {deployment} to be ready");
    let mut watch = Watch::new(cluster, view, streams, timeout, what, progress);
    let found = watch
        .until(
            |v: &View| -> Eval<(i32, Option<String>, Option<String>, usize)> {
                let Some(d) = v.deployment() else {
                    return Eval::Pending {
                        line: format!("waiting for deployment {deployment} to exist"),
                        missing: format!("deployment {deployment} does not exist"),
                    };
                };
                let s = status_of(d);
                if let Some(m) = s.deadline_exceeded {
                    return Eval::Fail(K8sError::RolloutFailed {
                        deployment: deployment.to_string(),
                        message: format!("{m}{}", pod_problems(&v.pods)),
                    });
                }
                let r = s.spec_replicas;
                let eps = ready_endpoints(&v.slices);
                let mut line = format!(
                    "waiting for deployment {deployment}: {}/{r} available, {}/{r} updated",
                    s.available, s.updated
                );
                if let Some(svc) = service {
                    line.push_str(&format!("; service {svc}: {eps}/{r} ready endpoints"));
                }
                let svc_ok = service.is_none() || eps >= usize::try_from(r).unwrap_or(0);
                if s.observed && s.available_true && s.updated == r && s.available == r && svc_ok {
                    let rs = v.current_rs(d);
                    return Eval::Done((
                        r,
                        rs.map(ResourceExt::name_any),
                        rs.and_then(rs_hash),
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
                missing.push_str(&pod_problems(&v.pods));
                Eval::Pending { line, missing }
            },
        )
        .await?;
    let (replicas, replicaset, template_hash, eps) = found;
    let service = match service {
        Some(svc) => {
            let s = cluster.api::<Service>().get(svc).await.map_err(|e| {
                cluster.err(
                    format!("get service {svc} in namespace {}", cluster.namespace),
                    e,
                )
            })?;
            Some(service_info(&s, eps))
        }
        None => None,
    };
    Ok(ReadyInfo {
        deployment: deployment.to_string(),
        namespace: cluster.namespace.clone(),
        selector,
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
    let (view, streams, selector) = start_view(cluster, deployment, None).await?;
    let what = format!("deployment {deployment} to settle");
    let mut watch = Watch::new(cluster, view, streams, timeout, what, progress);
    loop {
        let candidate = watch
            .until(|v| settled_eval(cluster, deployment, v))
            .await?;
        // The watch may lag the API; confirm with a fresh list.
        let list = cluster
            .api::<Pod>()
            .list(&ListParams::default().labels(&selector))
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

fn settled_eval(cluster: &Cluster, deployment: &str, v: &View) -> Eval<SettledInfo> {
    let Some(d) = v.deployment() else {
        return Eval::Fail(K8sError::NotFound {
            what: format!("deployment {deployment} in namespace {}", cluster.namespace),
            message: "it was deleted while waiting for the rollout".into(),
        });
    };
    let s = status_of(d);
    if let Some(m) = s.deadline_exceeded {
        return Eval::Fail(K8sError::RolloutFailed {
            deployment: deployment.to_string(),
            message: format!("{m}{}", pod_problems(&v.pods)),
        });
    }
    let r = s.spec_replicas;
    let rs = v.current_rs(d);
    let hash = rs.and_then(rs_hash);
    let (old, terminating) = leftover(hash.as_deref(), v.pods.objects.values());
    let complete =
        s.observed && s.updated == r && s.replicas == s.updated && s.available == s.updated;
    if complete && old.is_empty() && terminating.is_empty() && hash.is_some() {
        return Eval::Done(SettledInfo {
            replicas: r,
            replicaset: rs.map(ResourceExt::name_any),
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
