//! One watch per kind of the workload under test, shared by everything that
//! looks at it during a run: the waits read its kube-runtime reflector store
//! ([`Store`]), the lifecycle timeline (`crate::timeline`) reads its events.
//!
//! A run used to open the same watches up to three times (the wait before
//! the load, the timeline, the wait for the rollout to settle), each
//! listing the objects again. Now [`Watches::start`] opens one
//! [`watcher`] per kind (the Deployment by name, its ReplicaSets and pods by
//! selector, the Service's EndpointSlices) and a [`Shared`] watch fans it
//! out:
//!
//! - every event is applied to a reflector [`Writer`] first, so a reader of
//!   the store woken by the event already sees it;
//! - then it goes to each subscriber ([`Shared::subscribe`]), in order;
//!   a subscriber that joins late is first handed the objects as a fresh
//!   list (`Init`, one `InitApply` per object, `InitDone`), exactly what its
//!   own new watch would have listed, then the live events.
//!
//! kube-runtime's own shared reflector (`Writer::new_shared`, behind its
//! `unstable-runtime-subscribe` feature) hands subscribers only the objects
//! applied, not deletions nor re-lists, which the timeline needs: hence the
//! small fan-out here, over kube-runtime's [`watcher`] and [`Writer`].

use std::{
    fmt::Debug,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Pod,
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::{
    sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel},
    task::JoinHandle,
};

use super::{Cluster, K8sError, selector_string};

/// What a subscriber receives: a watch event, or a watch error (kube-runtime
/// retries after it with its default back-off).
#[derive(Debug, Clone)]
pub enum WatchItem<K> {
    /// An event, already applied to the store.
    Event(watcher::Event<K>),
    /// The watch failed; it will be retried.
    Error(Arc<watcher::Error>),
}

/// The kinds a shared watch can carry.
pub trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

struct Hub<K: Watched> {
    writer: Writer<K>,
    subscribers: Vec<UnboundedSender<WatchItem<K>>>,
    /// The objects of a list in progress (between `Init` and `InitDone`),
    /// for a subscriber that joins during it.
    listing: Option<Vec<K>>,
    /// The watch has ended: subscribers' streams end too.
    ended: bool,
}

impl<K: Watched> Hub<K> {
    fn publish(&mut self, item: WatchItem<K>) {
        if let WatchItem::Event(e) = &item {
            self.writer.apply_watcher_event(e);
            match e {
                watcher::Event::Init => self.listing = Some(Vec::new()),
                watcher::Event::InitApply(o) => {
                    if let Some(l) = &mut self.listing {
                        l.push(o.clone());
                    }
                }
                watcher::Event::InitDone => self.listing = None,
                watcher::Event::Apply(_) | watcher::Event::Delete(_) => {}
            }
        }
        self.subscribers.retain(|s| s.send(item.clone()).is_ok());
    }
}

/// One kube-runtime watch, its reflector store and its subscribers.
pub struct Shared<K: Watched> {
    resource: &'static str,
    store: Store<K>,
    hub: Arc<Mutex<Hub<K>>>,
    synced: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl<K: Watched> Debug for Shared<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("resource", &self.resource)
            .field("objects", &self.store.len())
            .field("synced", &self.is_synced())
            .finish()
    }
}

impl<K: Watched> Shared<K> {
    /// Starts the watch on the current Tokio runtime (kube-runtime's
    /// [`watcher`] with its default back-off). `resource` names it in
    /// errors (`pods`, `endpointslices`, ...).
    pub fn start(api: Api<K>, config: watcher::Config, resource: &'static str) -> Self {
        Self::from_stream(watcher(api, config).default_backoff(), resource)
    }

    /// Fans out any stream of watch events (a [`watcher`], or a test's).
    pub fn from_stream<S>(stream: S, resource: &'static str) -> Self
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let writer = Writer::default();
        let store = writer.as_reader();
        let hub = Arc::new(Mutex::new(Hub {
            writer,
            subscribers: Vec::new(),
            listing: None,
            ended: false,
        }));
        let synced = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(pump(stream, hub.clone(), synced.clone()));
        Shared {
            resource,
            store,
            hub,
            synced,
            task,
        }
    }

    /// The reflector store (current once [`is_synced`](Self::is_synced)).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// The objects in the store, by name.
    pub fn objects(&self) -> Vec<Arc<K>> {
        let mut all = self.store.state();
        all.sort_by_key(|o| o.name_any());
        all
    }

    /// Whether the first list has completed.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The resource's name in errors.
    pub fn resource(&self) -> &'static str {
        self.resource
    }

    /// A receiver of every event from now on, preceded by the current
    /// objects as a list (or the part of a list in progress). It ends when
    /// the watch ends (dropped, or its source ended).
    pub fn subscribe(&self) -> UnboundedReceiver<WatchItem<K>> {
        let (tx, rx) = unbounded_channel();
        let mut hub = lock(&self.hub);
        let replay: Option<Vec<K>> = match &hub.listing {
            Some(partial) => Some(partial.clone()),
            None if self.is_synced() => Some(
                self.objects()
                    .into_iter()
                    .map(Arc::unwrap_or_clone)
                    .collect(),
            ),
            None => None,
        };
        if let Some(objects) = replay {
            let in_progress = hub.listing.is_some();
            // The receiver is ours and alive: these sends cannot fail.
            let _ = tx.send(WatchItem::Event(watcher::Event::Init));
            for o in objects {
                let _ = tx.send(WatchItem::Event(watcher::Event::InitApply(o)));
            }
            if !in_progress {
                let _ = tx.send(WatchItem::Event(watcher::Event::InitDone));
            }
        }
        if !hub.ended {
            hub.subscribers.push(tx);
        }
        rx
    }

    /// [`subscribe`](Self::subscribe) as a stream.
    pub fn events(&self) -> impl Stream<Item = WatchItem<K>> + Send + Unpin + 'static {
        receiver_stream(self.subscribe())
    }
}

impl<K: Watched> Drop for Shared<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An unbounded receiver as a stream.
pub(crate) fn receiver_stream<T: Send + 'static>(
    rx: UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + Unpin + 'static {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn lock<K: Watched>(hub: &Mutex<Hub<K>>) -> std::sync::MutexGuard<'_, Hub<K>> {
    hub.lock().unwrap_or_else(|e| e.into_inner())
}

async fn pump<K, S>(stream: S, hub: Arc<Mutex<Hub<K>>>, synced: Arc<AtomicBool>)
where
    K: Watched,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        let mut h = lock(&hub);
        match item {
            Ok(event) => {
                let done = matches!(event, watcher::Event::InitDone);
                h.publish(WatchItem::Event(event));
                if done {
                    synced.store(true, Ordering::Release);
                }
            }
            Err(e) => h.publish(WatchItem::Error(Arc::new(e))),
        }
    }
    let mut h = lock(&hub);
    h.ended = true;
    h.subscribers.clear();
}

/// GETs the Deployment, with a clear error when it does not exist.
pub(crate) async fn get_deployment(
    cluster: &Cluster,
    deployment: &str,
) -> Result<Deployment, K8sError> {
    cluster
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
        })
}

/// GETs the Deployment (a clear error when it does not exist) and returns
/// its pod selector as a label selector string (empty when it has none).
pub(crate) async fn deployment_selector(
    cluster: &Cluster,
    deployment: &str,
) -> Result<String, K8sError> {
    let d = get_deployment(cluster, deployment).await?;
    Ok(d.spec
        .as_ref()
        .map(|s| selector_string(&s.selector))
        .unwrap_or_default())
}

/// The shared watches of one Deployment: the Deployment itself (by name),
/// its ReplicaSets and pods (by its selector) and, when a Service is named,
/// the Service's EndpointSlices. Dropping it ends the watches.
#[derive(Debug)]
pub struct Watches {
    /// The Deployment's name.
    pub deployment: String,
    /// Its pod selector as a label selector string (`app=api`).
    pub selector: String,
    /// The Service whose EndpointSlices are watched.
    pub service: Option<String>,
    /// The namespace.
    pub namespace: String,
    /// The Deployment (`metadata.name` field selector).
    pub deployments: Shared<Deployment>,
    /// Its ReplicaSets.
    pub replicasets: Shared<ReplicaSet>,
    /// Its pods.
    pub pods: Shared<Pod>,
    /// The Service's EndpointSlices (`kubernetes.io/service-name`).
    pub slices: Option<Shared<EndpointSlice>>,
}

impl Watches {
    /// GETs the Deployment (a clear error when it does not exist or has an
    /// empty selector) and starts the watches on the current runtime.
    pub async fn start(
        cluster: &Cluster,
        deployment: &str,
        service: Option<&str>,
    ) -> Result<Watches, K8sError> {
        let selector = deployment_selector(cluster, deployment).await?;
        if selector.is_empty() {
            return Err(K8sError::Action {
                action: "wait".into(),
                message: format!("deployment {deployment} has an empty selector"),
            });
        }
        let ns = &cluster.namespace;
        let client = &cluster.client;
        Ok(Watches {
            deployments: Shared::start(
                Api::namespaced(client.clone(), ns),
                watcher::Config::default().fields(&format!("metadata.name={deployment}")),
                "deployments",
            ),
            replicasets: Shared::start(
                Api::namespaced(client.clone(), ns),
                watcher::Config::default().labels(&selector),
                "replicasets",
            ),
            pods: Shared::start(
                Api::namespaced(client.clone(), ns),
                watcher::Config::default().labels(&selector),
                "pods",
            ),
            slices: service.map(|svc| {
                Shared::start(
                    Api::namespaced(client.clone(), ns),
                    watcher::Config::default().labels(&format!("kubernetes.io/service-name={svc}")),
                    "endpointslices",
                )
            }),
            deployment: deployment.to_string(),
            selector,
            service: service.map(str::to_string),
            namespace: ns.clone(),
        })
    }

    /// Whether every watch has listed its objects once.
    pub fn synced(&self) -> bool {
        self.deployments.is_synced()
            && self.replicasets.is_synced()
            && self.pods.is_synced()
            && self.slices.as_ref().is_none_or(Shared::is_synced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::time::Duration;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn names(items: &[WatchItem<Pod>]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                WatchItem::Event(watcher::Event::Init) => "Init".into(),
                WatchItem::Event(watcher::Event::InitApply(p)) => {
                    format!("InitApply {}", p.name_any())
                }
                WatchItem::Event(watcher::Event::InitDone) => "InitDone".into(),
                WatchItem::Event(watcher::Event::Apply(p)) => format!("Apply {}", p.name_any()),
                WatchItem::Event(watcher::Event::Delete(p)) => format!("Delete {}", p.name_any()),
                WatchItem::Error(_) => "Error".into(),
            })
            .collect()
    }

    fn drain(rx: &mut UnboundedReceiver<WatchItem<Pod>>) -> Vec<WatchItem<Pod>> {
        let mut out = Vec::new();
        while let Ok(i) = rx.try_recv() {
            out.push(i);
        }
        out
    }

    /// A watch fed by hand, one event at a time.
    fn manual() -> (
        UnboundedSender<Result<watcher::Event<Pod>, watcher::Error>>,
        Shared<Pod>,
    ) {
        let (tx, rx) = unbounded_channel();
        let shared = Shared::from_stream(receiver_stream(rx), "pods");
        (tx, shared)
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_late_subscriber_gets_the_store_as_a_list_then_live_events() {
        let (tx, shared) = manual();
        let mut early = shared.subscribe();
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(pod("b")),
            watcher::Event::InitApply(pod("a")),
            watcher::Event::InitDone,
            watcher::Event::Apply(pod("c")),
            watcher::Event::Delete(pod("b")),
        ] {
            tx.send(Ok(e)).unwrap();
        }
        settle().await;
        assert!(shared.is_synced());
        assert_eq!(
            names(&drain(&mut early)),
            [
                "Init",
                "InitApply b",
                "InitApply a",
                "InitDone",
                "Apply c",
                "Delete b"
            ]
        );
        let mut late = shared.subscribe();
        tx.send(Ok(watcher::Event::Apply(pod("d")))).unwrap();
        settle().await;
        assert_eq!(
            names(&drain(&mut late)),
            ["Init", "InitApply a", "InitApply c", "InitDone", "Apply d"]
        );
        let in_store: Vec<_> = shared.objects().iter().map(|p| p.name_any()).collect();
        assert_eq!(in_store, ["a", "c", "d"]);
    }

    #[tokio::test]
    async fn a_subscriber_joining_during_a_list_gets_its_part_and_the_rest_live() {
        let (tx, shared) = manual();
        tx.send(Ok(watcher::Event::Init)).unwrap();
        tx.send(Ok(watcher::Event::InitApply(pod("a")))).unwrap();
        settle().await;
        assert!(!shared.is_synced());
        let mut joined = shared.subscribe();
        tx.send(Ok(watcher::Event::InitApply(pod("b")))).unwrap();
        tx.send(Ok(watcher::Event::InitDone)).unwrap();
        settle().await;
        assert_eq!(
            names(&drain(&mut joined)),
            ["Init", "InitApply a", "InitApply b", "InitDone"]
        );
        // Before the first list, a subscriber gets nothing but what comes.
        let (tx2, fresh) = manual();
        let mut first = fresh.subscribe();
        tx2.send(Ok(watcher::Event::Init)).unwrap();
        tx2.send(Ok(watcher::Event::InitDone)).unwrap();
        settle().await;
        assert_eq!(names(&drain(&mut first)), ["Init", "InitDone"]);
    }

    #[tokio::test]
    async fn a_subscriber_woken_by_an_event_finds_it_in_the_store() {
        let (tx, shared) = manual();
        let mut rx = shared.subscribe();
        tx.send(Ok(watcher::Event::Init)).unwrap();
        tx.send(Ok(watcher::Event::InitDone)).unwrap();
        tx.send(Ok(watcher::Event::Apply(pod("x")))).unwrap();
        loop {
            let item = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an event within 5 s")
                .expect("the watch is alive");
            if let WatchItem::Event(watcher::Event::Apply(p)) = item {
                assert_eq!(p.name_any(), "x");
                break;
            }
        }
        assert_eq!(shared.objects().len(), 1);
        // Errors reach subscribers too, and a dropped watch ends their stream.
        tx.send(Err(watcher::Error::NoResourceVersion)).unwrap();
        drop(tx);
        let rest: Vec<_> = receiver_stream(rx).collect().await;
        assert_eq!(names(&rest), ["Error"]);
    }
}
