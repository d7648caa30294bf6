//! The cluster stage of a run: the phases before the load (starting the
//! embedded cluster, applying, waiting ready, warming up), what the load's
//! phases act on (actions at their offsets, the rollout's settle) and the
//! teardown after it. One kube-rs code path serves both modes: in embedded
//! mode the cluster is started here and the same client is pointed at its
//! kubeconfig.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use rolltest_minicluster::cluster::EmbeddedCluster;
use tokio::{
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
};

use rolltest_core::model::RunClock;
use rolltest_loadgen::{self as loadgen, Target};

use super::{
    phase::ActionEnd,
    setup::{KUBECONFIG, Subject, cluster_options},
    warmup::warm_up,
};
use crate::{
    error::{RunError, SetupError},
    events::{Events, Phase},
    k8s::{self, KubeSource},
    rundir::RunDir,
    scenario::{Action, ClusterMode, ClusterSpec, Scenario},
    timeline::{self, WatchHandle, WatchTarget, kubelet::KubeletRecord, proxy::ProxyCollector},
};

/// The embedded cluster of a run, with its kubeconfig.
pub(super) struct Embedded {
    cluster: EmbeddedCluster,
    kubeconfig: String,
    collector: JoinHandle<ProxyCollector>,
    /// The kubelet's exact record, converted onto the stream.
    record: JoinHandle<()>,
}

/// The cluster a run talks to.
pub(super) enum Reach {
    /// Started by the run.
    Embedded(Box<Embedded>),
    /// Reached through a kubeconfig.
    Kubeconfig(KubeSource),
}

impl Reach {
    /// The embedded cluster, if the run started one.
    fn embedded(&self) -> Option<&Embedded> {
        match self {
            Reach::Embedded(e) => Some(e),
            Reach::Kubeconfig(_) => None,
        }
    }

    /// Stops the embedded cluster, if the run started one.
    pub async fn stop(self, events: &Events) {
        if let Reach::Embedded(e) = self {
            e.stop(events).await;
        }
    }
}

/// Reaches the scenario's cluster: in embedded mode starts it
/// (`StartingCluster`; its proxies report to the run's stream).
pub(super) async fn reach(
    cluster: &ClusterSpec,
    subject: &Subject,
    dir: &RunDir,
    clock: RunClock,
    events: &Events,
) -> Result<Reach, RunError> {
    let spec = match &cluster.mode {
        ClusterMode::Embedded(spec) => spec,
        ClusterMode::Kubeconfig { path, context } => {
            return Ok(Reach::Kubeconfig(
                KubeSource::file(path.clone())
                    .with_context(context.clone())
                    .with_namespace(cluster.namespace.clone()),
            ));
        }
    };
    events.phase(Phase::StartingCluster);
    events.note(format!(
        "starting the embedded cluster: {} node(s), {} proxy, endpoint propagation {}",
        spec.nodes, spec.proxy, spec.propagation
    ));
    let (proxy_tx, proxy_rx) = mpsc::unbounded_channel();
    let (kubelet_tx, kubelet_rx) = mpsc::unbounded_channel();
    let options = cluster_options(spec, proxy_tx, kubelet_tx);
    let started = EmbeddedCluster::start(&options).await;
    drop(options);
    let c = started.map_err(RunError::Cluster)?;
    let collector = tokio::spawn(
        ProxyCollector::new(clock)
            .only_pods(format!("{}-", subject.deployment))
            .run(proxy_rx, events.clone()),
    );
    let record = tokio::spawn(
        KubeletRecord::new(clock, format!("{}-", subject.deployment))
            .run(kubelet_rx, events.clone()),
    );
    let kubeconfig = c.kubeconfig();
    dir.write(KUBECONFIG, &kubeconfig)?;
    events.note(format!(
        "  watch it: kubectl --kubeconfig {} get pods -w",
        dir.file(KUBECONFIG).display()
    ));
    Ok(Reach::Embedded(Box::new(Embedded {
        cluster: c,
        kubeconfig,
        collector,
        record,
    })))
}

impl Embedded {
    /// Stops the cluster (and its proxies' reports and kubelet's record).
    async fn stop(self, events: &Events) {
        events.note("stopping the embedded cluster");
        // The proxies report until the cluster stops; their view after the
        // load is of no interest.
        self.collector.abort();
        let _ = self.collector.await;
        self.record.abort();
        let _ = self.record.await;
        self.cluster.shutdown().await;
    }
}

/// A cluster applied and ready, with its watchers on the run's stream.
pub(super) struct Stage {
    k: k8s::Cluster,
    applied: Vec<k8s::AppliedObject>,
    watch: WatchHandle,
    /// The workload's watches, shared by the waits and the timeline.
    watches: k8s::Watches,
    /// The run's stream, for the actions' lifecycle events.
    events: Events,
    deployment: String,
    /// Nodes cordoned before the run (a run with drains and teardown).
    cordoned_before: Option<Vec<String>>,
    teardown: bool,
    /// The load's target, resolved.
    pub target: Target,
    /// Its address.
    pub addr: SocketAddr,
    /// What the run connected to.
    pub facts: ConnectedFacts,
}

/// Where the run's cluster was.
#[derive(Debug, Clone)]
pub(super) struct ConnectedFacts {
    /// The namespace.
    pub namespace: String,
    /// The context connected with.
    pub context: String,
    /// The API server.
    pub server: String,
    /// Kubeconfig mode: where the kubeconfig came from.
    pub kubeconfig: Option<String>,
}

impl Stage {
    /// Connects, applies (`Applying`), waits until ready (`WaitingReady`),
    /// starts the watchers and warms the target up (`WarmingUp`).
    #[allow(clippy::too_many_arguments)]
    pub async fn up(
        scenario: &Scenario,
        cluster: &ClusterSpec,
        subject: &Subject,
        reach: &Reach,
        clock: RunClock,
        events: &Events,
        mut ready_view: watch::Receiver<u32>,
    ) -> Result<Stage, RunError> {
        let embedded = reach.embedded();
        let (source, kubeconfig) = match reach {
            Reach::Embedded(e) => (
                KubeSource::text(e.kubeconfig.clone()).with_namespace(cluster.namespace.clone()),
                None,
            ),
            Reach::Kubeconfig(source) => (source.clone(), Some(source.describe())),
        };
        events.phase(Phase::Applying);
        let k = k8s::connect(&source).await?;
        events.note(format!(
            "cluster {} ({}, context {}), namespace {}: applying {} object(s) (server-side apply, field manager rolltest)",
            k.server,
            k.version,
            k.context,
            k.namespace,
            subject.docs.len()
        ));
        if embedded.is_some() && k8s::ensure_namespace(&k).await? {
            events.note(format!("  created namespace {}", k.namespace));
        }
        let applied = k8s::apply(&k, &subject.docs).await?;
        events.phase(Phase::WaitingReady);
        let line = {
            let events = events.clone();
            move |line: &str| events.note(format!("  {line}"))
        };
        // One watch per kind of the workload for the whole run: the waits
        // read their stores, the timeline their events.
        let watches =
            k8s::Watches::start(&k, &subject.deployment, subject.service.as_deref()).await?;
        let ready = k8s::wait_ready_on(&k, &watches, cluster.ready_timeout, Some(&line)).await?;
        events.note(format!(
            "deployment {} ready: {} replica(s){}",
            subject.deployment,
            ready.replicas,
            ready.service.as_ref().map_or_else(String::new, |s| format!(
                ", service {} with {} ready endpoint(s)",
                s.name, s.ready_endpoints
            ))
        ));

        let mut target = scenario.target.clone();
        if target.service.is_some() {
            let Some(service) = &subject.service else {
                return Err(SetupError::NoService.into());
            };
            let key = format!("{}/{}", k.namespace, service);
            let addr = embedded
                .map(|e| e.cluster.service_addresses())
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.service == key)
                .min_by_key(|a| (a.node_port, a.port))
                .map(|a| a.listen)
                .ok_or(SetupError::NoProxy(key))?;
            target.resolve_service(addr);
        }

        // The watchers and the actions send to the run's stream.
        let watch = timeline::start_shared(
            &watches,
            k.client.clone(),
            WatchTarget {
                deployment: subject.deployment.clone(),
                pod_selector: ready.selector.clone(),
                service: subject.service.clone(),
                infer_steps_from_killing: true,
            },
            clock,
            events.clone(),
        );

        // Load starts once traffic can flow: in embedded mode when the
        // proxy's own (lagging) view has every replica, so the first
        // requests do not meet a proxy that has not heard of the pods yet;
        // in every mode once the target answers.
        events.phase(Phase::WarmingUp);
        if let (Some(_), ClusterMode::Embedded(spec)) = (embedded, &cluster.mode) {
            let want = u32::try_from(ready.replicas).unwrap_or(0);
            let wait = spec.propagation.max + Duration::from_secs(5);
            let seen = matches!(
                tokio::time::timeout(wait, ready_view.wait_for(|r| *r >= want)).await,
                Ok(Ok(_))
            );
            if !seen {
                events.note(format!(
                    "  the proxy lists {} of {want} ready endpoint(s) after {}; starting anyway",
                    *ready_view.borrow(),
                    humantime::format_duration(wait)
                ));
            }
        }
        let addr = loadgen::resolve(&target).await?;
        warm_up(
            addr,
            &target,
            scenario.load.timeout,
            cluster.ready_timeout,
            events,
        )
        .await?;

        // Drains leave their nodes cordoned, as kubectl does, also when they
        // fail or are cut short; teardown gives back every node cordoned
        // during the run, so it notes which ones were cordoned before.
        let drains = scenario
            .actions
            .iter()
            .any(|a| matches!(a.kind, crate::scenario::ActionKind::DrainNode { .. }));
        let cordoned_before = if cluster.teardown && drains {
            Some(k8s::unschedulable_nodes(&k).await?)
        } else {
            None
        };
        let facts = ConnectedFacts {
            namespace: k.namespace.clone(),
            context: k.context.clone(),
            server: k.server.clone(),
            kubeconfig,
        };
        Ok(Stage {
            k,
            applied,
            watch,
            watches,
            events: events.clone(),
            deployment: subject.deployment.clone(),
            cordoned_before,
            teardown: cluster.teardown,
            target,
            addr,
            facts,
        })
    }

    /// Starts each action at its offset from `origin`.
    pub fn start_actions(&self, actions: &[Action], origin: Instant, clock: RunClock) -> Actions {
        let mut set = JoinSet::new();
        for action in actions.iter().cloned() {
            let k = self.k.clone();
            let events = self.events.clone();
            let deployment = self.deployment.clone();
            let due = tokio::time::Instant::from_std(origin + action.at);
            set.spawn(async move {
                tokio::time::sleep_until(due).await;
                let r = k8s::run_action(&k, &action, &deployment, &events, &clock).await;
                (action, r)
            });
        }
        Actions { set, origin }
    }

    /// Waits (at most `within`) for the rollout to be complete and every old
    /// pod gone.
    pub async fn settle(
        &self,
        origin: Instant,
        within: Duration,
        events: &Events,
    ) -> Result<String, String> {
        let note = {
            let events = events.clone();
            move |line: &str| events.note(line)
        };
        match k8s::wait_settled_on(&self.k, &self.watches, within, Some(&note)).await {
            Ok(s) => Ok(format!(
                "{:.2} s: rollout settled: {} pod(s) of the current template, every old pod gone",
                secs_since(origin),
                s.pods.len()
            )),
            Err(e) => Err(format!("the rollout did not settle: {e}")),
        }
    }

    /// Stops the watchers (their errors are problems) and, when asked,
    /// deletes what was applied and uncordons the nodes the run cordoned.
    pub async fn down(self, events: &Events) {
        for e in self.watch.stop().await {
            events.problem(format!("lifecycle watch: {e}"));
        }
        if self.teardown {
            events.note("teardown: deleting what was applied");
            if let Err(e) = k8s::teardown(&self.k, &self.applied, Duration::from_secs(60)).await {
                events.note(format!("teardown failed: {e}"));
            }
            if let Some(before) = &self.cordoned_before {
                match k8s::unschedulable_nodes(&self.k).await {
                    Ok(now) => {
                        for node in now.iter().filter(|n| !before.contains(n)) {
                            if let Err(e) = k8s::uncordon(&self.k, node).await {
                                events.note(format!("uncordon {node} failed: {e}"));
                            }
                        }
                    }
                    Err(e) => events.note(format!("cannot list nodes to uncordon them: {e}")),
                }
            }
        }
    }
}

/// The actions of a run, each started at its offset.
pub(super) struct Actions {
    set: JoinSet<(Action, Result<k8s::ActionReport, k8s::K8sError>)>,
    origin: Instant,
}

impl Actions {
    /// Actions not yet ended.
    pub fn left(&self) -> usize {
        self.set.len()
    }

    /// Aborts those still running.
    pub fn abort(&mut self) {
        self.set.abort_all();
    }

    /// The next action to end, in words.
    pub async fn next(&mut self) -> ActionEnd {
        match self.set.join_next().await {
            Some(Ok((action, Ok(report)))) => ActionEnd::Done(format!(
                "{:.2} s: {} {}: {}",
                secs_since(self.origin),
                action.kind.name(),
                report.target,
                report.detail
            )),
            Some(Ok((action, Err(e)))) => ActionEnd::Failed(format!(
                "action {} ({}) failed: {e}",
                action.index,
                action.kind.name()
            )),
            Some(Err(e)) if e.is_cancelled() => ActionEnd::Cancelled,
            Some(Err(e)) => ActionEnd::Failed(format!("an action's task failed: {e}")),
            None => ActionEnd::Cancelled,
        }
    }
}

/// Seconds from the load's start, for progress lines.
fn secs_since(origin: Instant) -> f64 {
    Instant::now()
        .saturating_duration_since(origin)
        .as_secs_f64()
}
