//! The lifecycle timeline: kube-runtime watchers that turn every pod,
//! endpoint, Event, ReplicaSet and Deployment transition of the workload under
//! test into [`LifecycleEvent`]s on the run clock, and (embedded mode) the
//! service proxies' reports ([`proxy::ProxyCollector`]) and the embedded
//! kubelet's exact record ([`kubelet::KubeletRecord`]).
//!
//! [`start`] spawns one task per watched kind on the caller's runtime
//! ([`start_shared`] subscribes to the run's shared watches, `crate::k8s::Watches`,
//! instead of opening its own for the kinds the waits watch too); each
//! keeps a small per-object state (a few flags and numbers per pod, never the
//! objects themselves) and emits an event for every transition it sees:
//!
//! | watch | emits |
//! | --- | --- |
//! | Pods (label selector) | `PodCreated`, `PodScheduled`, `PodIp`, `ContainerStarted`, `PodReady`, `PodNotReady`, `DeletionRequested`, `ContainerExited`, `PodDeleted` |
//! | EndpointSlices (`kubernetes.io/service-name`) | `EndpointChanged`, `EndpointRemoved`, `EndpointsCount` |
//! | Events (`involvedObject.kind=Pod`, pods of the Deployment) | `ProbeFailed` (`Unhealthy`), `Other`; inferred from a kubelet's `Killing` "Stopping container": `PreStopStarted` (a pod with a preStop hook) or `SigtermSent`; from `FailedPreStopHook`: `PreStopFinished` |
//! | (embedded) the kubelet's exact record | `PreStopStarted`, `PreStopFinished`, `SigtermSent`, `SigkillSent`, `ContainerExited` (`source: kubelet`, the instant itself) |
//! | ReplicaSets (label selector) | `ReplicaSetScaled` |
//! | the Deployment (`metadata.name`) | `DeploymentStatus` |
//!
//! Every event is stamped `at_us` = when rolltest observed it, and
//! `server_us` = the server's own timestamp for it where the object carries
//! one: `creationTimestamp`, the condition's `lastTransitionTime`,
//! `startedAt` / `finishedAt`, `deletionTimestamp − grace` (when the delete
//! was requested), all second precision on real clusters; for Events only a
//! microsecond stamp (`eventTime`, `series.lastObservedTime`), because
//! [`LifecycleEvent::when_us`] trusts an Event's `server_us` (a real
//! kubelet's Events carry only `lastTimestamp`, in seconds: `None`).
//! Separate watches are separate connections, so events from different
//! sources can be observed a few ms out of their true order (measured on
//! the embedded cluster: the pod watch is the slowest). In embedded mode a
//! termination step is reported twice: as a real kubelet lets rolltest infer
//! it (`Killing` → `source: event`; the exit from the pod watch, `source:
//! pod`, after the kubelet's 1 s relist) and by the exact record (`source:
//! kubelet`); the sources tell them apart, and the correlator prefers the
//! exact one.
//!
//! Watch errors are retried by kube-runtime with its default back-off; they
//! are collected (collapsed per watch and message) and returned by
//! [`WatchHandle::stop`].

mod endpoints;
mod events;
pub mod kubelet;
mod pods;
pub mod proxy;
mod workload;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use futures_util::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet},
        core::v1::{Event, Pod},
        discovery::v1::EndpointSlice,
    },
    jiff::Timestamp,
};
use kube::{Api, Client, ResourceExt, runtime::watcher};
use tokio::task::JoinHandle;

use rolltest_core::model::{LifecycleEvent, RunClock, Timeline};

use crate::{
    events::LifecycleSink,
    k8s::watches::{Shared, WatchItem, Watched, Watches},
};

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchTarget {
    /// The Deployment's name (its pods are named `<deployment>-…`).
    pub deployment: String,
    /// The label selector of its pods (and ReplicaSets), e.g. `app=api`.
    pub pod_selector: String,
    /// The Service whose EndpointSlices to watch (`None`: no endpoint watch).
    pub service: Option<String>,
    /// Infer the termination steps from a kubelet's `Killing` (every
    /// cluster: the embedded kubelet publishes what a real one does; its
    /// exact record comes separately). When set, a `Killing` "Stopping
    /// container" Event also yields `PreStopStarted` for a pod with a preStop
    /// hook, else `SigtermSent`: that is the moment a real kubelet starts the
    /// sequence.
    pub infer_steps_from_killing: bool,
}

/// A watch that kept failing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The watch of `resource` failed `count` times with this message (kube
    /// retried each time with back-off).
    #[error(
        "watch of {resource} failed {count} time(s) between {first_us} µs and {last_us} µs: {message}"
    )]
    Failed {
        /// `pods`, `endpointslices`, `events`, `replicasets` or `deployments`.
        resource: &'static str,
        /// The error.
        message: String,
        /// How often it happened.
        count: u64,
        /// First occurrence (µs, run clock).
        first_us: u64,
        /// Last occurrence.
        last_us: u64,
    },
}

/// The running watchers. Dropping it aborts them; [`stop`](Self::stop)
/// aborts them, waits for them and hands back their errors.
#[derive(Debug)]
pub struct WatchHandle {
    tasks: Vec<JoinHandle<()>>,
    errors: Errors,
}

impl WatchHandle {
    /// Stops every watcher, returns after they have ended, with the errors
    /// they met (empty on a clean run).
    pub async fn stop(mut self) -> Vec<WatchError> {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // Cancelled (or a panic already reported by the runtime).
            let _ = t.await;
        }
        self.errors()
    }

    /// The errors so far.
    pub fn errors(&self) -> Vec<WatchError> {
        self.errors.snapshot()
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the watchers on the current Tokio runtime; every event goes to
/// `tx` (the run's stream, or a channel). Must be called from within a
/// runtime.
pub fn start<S: LifecycleSink>(
    client: Client,
    namespace: &str,
    target: WatchTarget,
    clock: RunClock,
    tx: S,
) -> WatchHandle {
    start_on(None, client, namespace, target, clock, tx)
}

/// [`start`], subscribing to the run's shared [`Watches`] for every kind
/// they carry with the same selection (the Deployment, its ReplicaSets and
/// pods, the Service's EndpointSlices) instead of opening a watch of its
/// own; the Events watch is always its own. A late subscriber is handed the
/// objects as a fresh list first, so the trackers see what their own watch
/// would have listed.
pub fn start_shared<S: LifecycleSink>(
    watches: &Watches,
    client: Client,
    target: WatchTarget,
    clock: RunClock,
    tx: S,
) -> WatchHandle {
    let namespace = watches.namespace.clone();
    start_on(Some(watches), client, &namespace, target, clock, tx)
}

/// The subscription to a shared watch, or (`None`) a watch of its own.
fn feed<K: Watched>(
    shared: Option<&Shared<K>>,
    own: impl FnOnce() -> Shared<K>,
) -> (Feed<K>, Option<Shared<K>>) {
    match shared {
        Some(s) => (Box::pin(s.events()), None),
        None => {
            let s = own();
            (Box::pin(s.events()), Some(s))
        }
    }
}

type Feed<K> = std::pin::Pin<Box<dyn futures_util::Stream<Item = WatchItem<K>> + Send>>;

fn start_on<S: LifecycleSink>(
    watches: Option<&Watches>,
    client: Client,
    namespace: &str,
    target: WatchTarget,
    clock: RunClock,
    tx: S,
) -> WatchHandle {
    let errors = Errors::default();
    let known = KnownPods::default();
    let started_wall = SystemTime::now();
    let mut tasks = Vec::new();
    let ctx = |resource: &'static str| Ctx {
        resource,
        clock,
        tx: tx.clone(),
        errors: errors.clone(),
    };
    // The shared watches serve only the same selection.
    let same = watches.filter(|w| {
        w.deployment == target.deployment
            && w.selector == target.pod_selector
            && w.namespace == namespace
    });

    let (pods, own) = feed(same.map(|w| &w.pods), || {
        Shared::start(
            Api::<Pod>::namespaced(client.clone(), namespace),
            watcher::Config::default().labels(&target.pod_selector),
            "pods",
        )
    });
    tasks.push(tokio::spawn(run(
        pods,
        own,
        ctx("pods"),
        pods::PodTracker::new(clock, known.clone()),
    )));

    if let Some(service) = &target.service {
        let shared = same
            .filter(|w| w.service.as_ref() == Some(service))
            .and_then(|w| w.slices.as_ref());
        let (slices, own) = feed(shared, || {
            Shared::start(
                Api::<EndpointSlice>::namespaced(client.clone(), namespace),
                watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}")),
                "endpointslices",
            )
        });
        tasks.push(tokio::spawn(run(
            slices,
            own,
            ctx("endpointslices"),
            endpoints::SliceTracker::default(),
        )));
    }

    let (events, own) = feed(None, || {
        Shared::start(
            Api::<Event>::namespaced(client.clone(), namespace),
            watcher::Config::default().fields("involvedObject.kind=Pod"),
            "events",
        )
    });
    tasks.push(tokio::spawn(run(
        events,
        own,
        ctx("events"),
        events::EventTracker::new(
            clock,
            known,
            format!("{}-", target.deployment),
            started_wall,
            target.infer_steps_from_killing,
        ),
    )));

    let (replicasets, own) = feed(same.map(|w| &w.replicasets), || {
        Shared::start(
            Api::<ReplicaSet>::namespaced(client.clone(), namespace),
            watcher::Config::default().labels(&target.pod_selector),
            "replicasets",
        )
    });
    tasks.push(tokio::spawn(run(
        replicasets,
        own,
        ctx("replicasets"),
        workload::ReplicaSetTracker::default(),
    )));

    let (deployments, own) = feed(same.map(|w| &w.deployments), || {
        Shared::start(
            Api::<Deployment>::namespaced(client.clone(), namespace),
            watcher::Config::default().fields(&format!("metadata.name={}", target.deployment)),
            "deployments",
        )
    });
    tasks.push(tokio::spawn(run(
        deployments,
        own,
        ctx("deployments"),
        workload::DeploymentTracker::default(),
    )));

    WatchHandle { tasks, errors }
}

/// The events of a run as a [`Timeline`], sorted by `at_us` (stable: ties
/// keep the order they were received in).
pub fn finish(mut events: Vec<LifecycleEvent>) -> Timeline {
    events.sort_by_key(|e| e.at_us);
    Timeline { events }
}

/// Turns one kind's watch events into lifecycle events.
pub(crate) trait Tracker<K> {
    /// The object was added or modified (or listed).
    fn apply(&mut self, obj: &K, at_us: u64, out: &mut Vec<LifecycleEvent>);
    /// The object was deleted (its final state).
    fn delete(&mut self, obj: &K, at_us: u64, out: &mut Vec<LifecycleEvent>);
    /// A re-list finished: objects known but not in `listed` are gone.
    fn retain_listed(
        &mut self,
        listed: &HashSet<String>,
        at_us: u64,
        out: &mut Vec<LifecycleEvent>,
    );
}

struct Ctx<S> {
    resource: &'static str,
    clock: RunClock,
    tx: S,
    errors: Errors,
}

/// One watch's events (a shared watch's subscription, or its own watch,
/// `own`, kept alive here), fed to a tracker; ends when the receiver is gone
/// or the task is aborted.
async fn run<K, T, S>(mut feed: Feed<K>, own: Option<Shared<K>>, ctx: Ctx<S>, mut tracker: T)
where
    K: Watched,
    T: Tracker<K>,
    S: LifecycleSink,
{
    let _own = own;
    let mut out = Vec::new();
    let mut listed: Option<HashSet<String>> = None;
    while let Some(item) = feed.next().await {
        let at_us = ctx.clock.micros(Instant::now());
        match item {
            WatchItem::Event(watcher::Event::Apply(obj)) => tracker.apply(&obj, at_us, &mut out),
            WatchItem::Event(watcher::Event::Delete(obj)) => tracker.delete(&obj, at_us, &mut out),
            WatchItem::Event(watcher::Event::Init) => listed = Some(HashSet::new()),
            WatchItem::Event(watcher::Event::InitApply(obj)) => {
                if let Some(l) = listed.as_mut() {
                    l.insert(obj.name_any());
                }
                tracker.apply(&obj, at_us, &mut out);
            }
            WatchItem::Event(watcher::Event::InitDone) => {
                if let Some(l) = listed.take() {
                    tracker.retain_listed(&l, at_us, &mut out);
                }
            }
            WatchItem::Error(e) => ctx.errors.record(ctx.resource, e.to_string(), at_us),
        }
        for e in out.drain(..) {
            if !ctx.tx.send_lifecycle(e) {
                return;
            }
        }
    }
}

/// Errors collapsed per (watch, message).
#[derive(Debug, Clone, Default)]
struct Errors(Arc<Mutex<Vec<WatchError>>>);

impl Errors {
    fn record(&self, resource: &'static str, message: String, at_us: u64) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for WatchError::Failed {
            resource: r,
            message: m,
            count,
            last_us,
            ..
        } in list.iter_mut()
        {
            if *r == resource && *m == message {
                *count += 1;
                *last_us = at_us;
                return;
            }
        }
        list.push(WatchError::Failed {
            resource,
            message,
            count: 1,
            first_us: at_us,
            last_us: at_us,
        });
    }

    fn snapshot(&self) -> Vec<WatchError> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The pods the pod watch has seen, with whether they have a preStop hook:
/// the Event watch uses it to pick the workload's events.
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownPods(Arc<RwLock<HashMap<String, bool>>>);

impl KnownPods {
    pub(crate) fn insert(&self, name: &str, pre_stop: bool) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.get(name) != Some(&pre_stop) {
            map.insert(name.to_string(), pre_stop);
        }
    }

    /// `Some(has_pre_stop)` for a known pod.
    pub(crate) fn get(&self, name: &str) -> Option<bool> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }
}

/// A server timestamp as µs since the Unix epoch.
pub(crate) fn unix_us(t: &Timestamp) -> i64 {
    t.as_microsecond()
}

/// A server timestamp (µs since the Unix epoch) on the run clock.
pub(crate) fn to_run_us(clock: &RunClock, unix_us: i64) -> i64 {
    let wall = if unix_us >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_micros(unix_us.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_micros(unix_us.unsigned_abs())
    };
    clock.wall_to_run_us(wall)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rolltest_core::model::{EventSource, LifecycleKind};

    #[test]
    fn finish_sorts_stably_by_observation() {
        let ev = |at_us, pod: &str| LifecycleEvent {
            at_us,
            server_us: None,
            server_precision_us: None,
            pod: Some(pod.into()),
            source: EventSource::Pod,
            kind: LifecycleKind::PodReady,
        };
        let t = finish(vec![ev(5, "a"), ev(3, "b"), ev(5, "c"), ev(1, "d")]);
        let order: Vec<_> = t.events.iter().map(|e| e.pod.clone().unwrap()).collect();
        assert_eq!(order, ["d", "b", "a", "c"]);
    }

    #[test]
    fn errors_collapse_per_watch_and_message() {
        let e = Errors::default();
        e.record("pods", "boom".into(), 1);
        e.record("pods", "boom".into(), 5);
        e.record("events", "boom".into(), 6);
        let s = e.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            WatchError::Failed {
                resource: "pods",
                message: "boom".into(),
                count: 2,
                first_us: 1,
                last_us: 5
            }
        );
    }

    #[test]
    fn server_times_convert_to_the_run_clock() {
        let clock = RunClock::start();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let run = to_run_us(&clock, now);
        assert!((0..1_000_000).contains(&run), "{run}");
        assert!(to_run_us(&clock, now - 5_000_000) < -3_000_000);
    }
}
