//! The embedded kubelet: runs the pods bound to its nodes as local processes
//! (through [`process`](super::process)) and publishes their status, events
//! and final deletion to the [`Store`], like a real kubelet against the API.
//!
//! One supervisor task follows the store (its watch broadcast, plus a full
//! resync every second) and runs one task per pod (`worker.rs`):
//! - start: image → local command ([`ImageMap`]), loopback IP, env (`env`,
//!   `fieldRef`s, `POD_NAME`, `POD_NAMESPACE`, `POD_IP`, `PORT`, and the
//!   Service variables `<NAME>_SERVICE_HOST`/`_PORT`… of the Services that
//!   exist in the namespace when the container starts), `$(VAR)` expansion
//!   in `env` values and `args`, log file
//!   `<work_dir>/<namespace>_<pod>_<container>.log`; events `Pulled`,
//!   `Created`, `Started`; status Pending → Running (with the pod IP)
//!   [`STATUS_SYNC`] after the start, when the readiness probe is triggered;
//! - probes with Kubernetes semantics (`probes.rs`); liveness/startup
//!   failures kill (with preStop) and restart the container;
//! - crashes restart per `restartPolicy`, with CrashLoopBackOff;
//! - a `deletionTimestamp` runs the `killContainer` sequence and publishes
//!   what a real kubelet publishes (`events.rs`): Event `Killing` "Stopping
//!   container NAME" when the sequence starts (before the preStop hook),
//!   `FailedPreStopHook` when the hook fails, nothing for SIGTERM, SIGKILL
//!   or the exit; the exit shows as `state.terminated` in the pod status
//!   one PLEG relist period ([`RELIST`]) after it, then the terminal phase is
//!   written and the pod deleted (uid precondition), as the status manager
//!   does; every Event as the legacy recorder writes it (`firstTimestamp` /
//!   `lastTimestamp` in seconds, no `eventTime`, `source.host` the node);
//! - the exact moments (preStop start and end, SIGTERM, SIGKILL, exit) go to
//!   the exact record ([`KubeletSignal`], `signals.rs`) when the cluster was
//!   given a channel for it, as the proxies' records are;
//! - a second delete with a shorter grace restarts that sequence with the
//!   shorter deadline (`Killing` and preStop again, as the kubelet's pod
//!   worker cancels the running kill and calls `killPod` anew);
//! - a pod that vanished from the store (grace 0, a force delete) still gets
//!   the sequence with the kubelet's minimum grace of 1 s (and the 2 s after
//!   SIGTERM); a kubelet shutdown SIGKILLs the process group.
//!
//! Limits: only the first container of a pod runs (the others are ignored,
//! not rejected); no init containers, postStart hooks,
//! `command` override, resource limits or `kubectl logs --previous`;
//! the relist delay is always the full period (a real kubelet's is 0-1 s,
//! wherever the exit falls in its relist cycle); repeated Events are not
//! aggregated into one with a growing `count`.

mod events;
mod image;
mod probes;
mod signals;
mod spec;
mod start;
mod status;
mod worker;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    sync::{broadcast::error::RecvError, watch},
    task::JoinHandle,
};

pub use image::{DEMO_PATTERN, ImageMap};
pub use signals::{KubeletSignal, SignalKind};
pub use spec::{DEFAULT_GRACE_SECONDS, DEFAULT_PORT};
pub use start::{DEFAULT_POD_START, PodStart};

use self::{
    spec::PodPlan,
    status::pods,
    worker::{Desired, run_pod},
};
use super::{
    process::{IpAllocator, PodProcess},
    store::{EventType, Store},
};

/// How often the pods are re-listed (catches anything the broadcast lost).
const RESYNC: Duration = Duration::from_secs(1);
/// The PLEG relist period (`pkg/kubelet/pleg`, `genericPLEG` relists every
/// second): a container's exit shows in the pod status this long after it.
pub const RELIST: Duration = Duration::from_secs(1);
/// From a container's start to the pod status that shows it running: the
/// kubelet relists the pod on demand after the sync that started it
/// (`kubelet.go` `SyncPod`'s `RequestPodRelist`, feature
/// `PLEGOnDemandRelist`, GA in 1.37) and syncs it again, which writes the
/// status and triggers the readiness probe (`prober_manager.go`
/// `UpdatePodStatus`). Measured on `scripts/realk8s`: the `Started` Event →
/// the status `running` 9-12 ms → `Ready` 13-32 ms (the first readiness
/// probe passing).
pub const STATUS_SYNC: Duration = Duration::from_millis(10);
/// How long shutdown waits for pod tasks after killing their processes.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);

/// What the kubelet needs.
#[derive(Clone)]
pub struct KubeletConfig {
    /// The object store it reads pods from and writes status to.
    pub store: Arc<Store>,
    /// The node names it serves (`embedded-node-1` …).
    pub nodes: Vec<String>,
    /// Image → command rules.
    pub images: Arc<ImageMap>,
    /// Directory for the per-pod log files (created if missing); also the
    /// processes' working directory.
    pub work_dir: PathBuf,
    /// Pod IP allocator (shared with whoever else hands out IPs).
    pub ips: Arc<IpAllocator>,
    /// Where the exact record goes (`None`: not kept).
    pub signals: Option<tokio::sync::mpsc::UnboundedSender<KubeletSignal>>,
    /// How long each pod takes from its binding to a running container
    /// (sandbox, network, container start; [`PodStart::NONE`]: at once).
    pub pod_start: PodStart,
}

/// Why the kubelet could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// `nodes` was empty.
    #[error("the kubelet needs at least one node name")]
    NoNodes,
    /// `start` was called outside a tokio runtime.
    #[error("the kubelet must be started inside a tokio runtime")]
    NoRuntime,
    /// The work directory could not be created.
    #[error("cannot create the kubelet work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store lacks the pods resource (a build error).
    #[error("the store has no pods resource")]
    NoPods,
}

/// The embedded kubelet.
pub struct Kubelet;

impl Kubelet {
    /// Starts the kubelet's tasks on the current tokio runtime.
    pub fn start(config: KubeletConfig) -> Result<KubeletHandle, KubeletError> {
        if config.nodes.is_empty() {
            return Err(KubeletError::NoNodes);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| KubeletError::NoRuntime)?;
        pods().ok_or(KubeletError::NoPods)?;
        std::fs::create_dir_all(&config.work_dir).map_err(|source| KubeletError::WorkDir {
            path: config.work_dir.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            store: config.store,
            images: config.images,
            work_dir: config.work_dir,
            ips: config.ips,
            signals: config.signals,
            pod_start: config.pod_start,
            live: Mutex::new(HashMap::new()),
            pods: Mutex::new(HashMap::new()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let supervisor = Supervisor {
            shared: shared.clone(),
            nodes: config.nodes.into_iter().collect(),
            workers: HashMap::new(),
            done: HashSet::new(),
        };
        let task = runtime.spawn(supervisor.run(shutdown_rx));
        Ok(KubeletHandle {
            shared,
            shutdown,
            task: Some(task),
        })
    }
}

/// The running kubelet. Dropping it SIGKILLs every pod process at once.
pub struct KubeletHandle {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl KubeletHandle {
    /// Stops the kubelet: SIGKILLs every pod process and waits for the
    /// tasks (no status is written for the killed pods).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.kill_all();
    }

    /// A lookup of pods' log files that outlives this handle's borrow (for
    /// the API server's `pods/log`).
    pub fn log_index(&self) -> impl Fn(&str, &str) -> Option<PathBuf> + Send + Sync + 'static {
        let shared = self.shared.clone();
        move |namespace: &str, pod: &str| {
            lock(&shared.pods)
                .get(&(namespace.to_string(), pod.to_string()))
                .map(|i| i.log_path.clone())
        }
    }

    /// The log file of a pod's container (`kubectl logs`), once the pod was
    /// seen by this kubelet.
    pub fn log_path(&self, namespace: &str, pod: &str) -> Option<PathBuf> {
        lock(&self.shared.pods)
            .get(&(namespace.to_string(), pod.to_string()))
            .map(|i| i.log_path.clone())
    }

    /// The IP a pod got, once allocated.
    pub fn pod_ip(&self, namespace: &str, pod: &str) -> Option<IpAddr> {
        lock(&self.shared.pods)
            .get(&(namespace.to_string(), pod.to_string()))
            .and_then(|i| i.ip)
    }

    /// Process ids of the pod processes running now.
    pub fn pids(&self) -> Vec<i32> {
        lock(&self.shared.live).values().map(|p| p.pid()).collect()
    }

    fn kill_all(&self) {
        for process in lock(&self.shared.live).drain().map(|(_, p)| p) {
            let _ = process.kill_group();
        }
    }
}

impl Drop for KubeletHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.kill_all();
    }
}

/// Where a pod's log is and which IP it got (for `kubectl logs` and tests).
#[derive(Debug, Clone)]
pub(crate) struct PodInfo {
    /// The container log file.
    pub log_path: PathBuf,
    /// The pod IP once allocated.
    pub ip: Option<IpAddr>,
}

/// State shared by the supervisor, the pod tasks and the handle.
pub(crate) struct Shared {
    /// The object store.
    pub store: Arc<Store>,
    /// Image rules.
    pub images: Arc<ImageMap>,
    /// Directory of the log files and working directory of the processes.
    pub work_dir: PathBuf,
    /// Pod IPs.
    pub ips: Arc<IpAllocator>,
    /// The exact record's channel.
    pub signals: Option<tokio::sync::mpsc::UnboundedSender<KubeletSignal>>,
    /// The delay before each pod's sandbox and container start.
    pub pod_start: PodStart,
    /// Running processes by pod uid (killed synchronously on drop).
    pub live: Mutex<HashMap<String, Arc<PodProcess>>>,
    /// Log path and IP by (namespace, name).
    pub pods: Mutex<HashMap<(String, String), PodInfo>>,
}

/// Locks ignoring poison (every critical section leaves the maps consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pod task and its steering channel.
struct WorkerSlot {
    desired: watch::Sender<Desired>,
    task: JoinHandle<()>,
}

struct Supervisor {
    shared: Arc<Shared>,
    nodes: HashSet<String>,
    /// Pod tasks by uid.
    workers: HashMap<String, WorkerSlot>,
    /// Pods whose task ended (terminal or gone): never started again.
    done: HashSet<String>,
}

impl Supervisor {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let Some(pods) = pods() else { return };
        let Ok(start) = self.shared.store.watch(pods, None, None) else {
            return;
        };
        let mut live = start.live;
        for ev in start.initial {
            self.on_pod(ev.kind, &ev.object);
        }
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                ev = live.recv() => match ev {
                    Ok(ev) if std::ptr::eq(ev.resource, pods) => self.on_pod(ev.kind, &ev.object),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => self.resync(),
                    Err(RecvError::Closed) => break,
                },
                _ = resync.tick() => self.resync(),
            }
        }
        for slot in self.workers.values() {
            let _ = slot.desired.send(Desired::Kill);
        }
        let tasks = self.workers.drain().map(|(_, s)| s.task);
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, futures_util::future::join_all(tasks)).await;
    }

    fn ours(&self, pod: &Value) -> bool {
        pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| self.nodes.contains(n))
    }

    fn on_pod(&mut self, kind: EventType, pod: &Arc<Value>) {
        if !self.ours(pod) {
            return;
        }
        let Some(uid) = pod["metadata"]["uid"].as_str() else {
            return;
        };
        if kind == EventType::Deleted {
            // Gone from the API (grace 0, a force delete): the kubelet still
            // kills it with the effective grace, at least 1 s
            // (pod_workers.go calculateEffectiveGracePeriod).
            let grace = pod["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0);
            if let Some(slot) = self.workers.get(uid) {
                steer(slot, Desired::Terminate { grace });
            }
            return;
        }
        self.ensure(uid, pod);
    }

    /// Starts or steers the task of a pod that exists on one of our nodes.
    fn ensure(&mut self, uid: &str, pod: &Arc<Value>) {
        let meta = &pod["metadata"];
        let deleting = meta.get("deletionTimestamp").is_some_and(|t| !t.is_null());
        let grace = meta["deletionGracePeriodSeconds"]
            .as_i64()
            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let want = if deleting {
            Desired::Terminate { grace }
        } else {
            Desired::Run
        };
        if let Some(slot) = self.workers.get(uid) {
            steer(slot, want);
            return;
        }
        let terminal = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        if self.done.contains(uid) || terminal {
            self.done.insert(uid.to_string());
            // Nothing runs any more: a deleted pod only needs the final delete.
            if deleting && let Some(pods) = pods() {
                let ns = meta["namespace"].as_str().unwrap_or("default");
                let name = meta["name"].as_str().unwrap_or("");
                let _ = self.shared.store.delete(pods, ns, name, Some(uid));
            }
            return;
        }
        let Some(plan) = PodPlan::from_pod(pod) else {
            self.done.insert(uid.to_string());
            return;
        };
        let (tx, rx) = watch::channel(want);
        let task = tokio::spawn(run_pod(self.shared.clone(), pod.clone(), plan, rx));
        self.workers
            .insert(uid.to_string(), WorkerSlot { desired: tx, task });
    }

    /// Re-lists the pods: starts missing tasks, kills those whose pod is gone,
    /// forgets finished ones.
    fn resync(&mut self) {
        let finished: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, s)| s.task.is_finished())
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in finished {
            self.workers.remove(&uid);
            self.done.insert(uid);
        }
        let Some(pods) = pods() else { return };
        let (items, _) = self.shared.store.list(pods, None);
        let mut present = HashSet::new();
        for pod in &items {
            if !self.ours(pod) {
                continue;
            }
            if let Some(uid) = pod["metadata"]["uid"].as_str() {
                present.insert(uid.to_string());
                self.ensure(uid, pod);
            }
        }
        for (uid, slot) in &self.workers {
            if !present.contains(uid) {
                steer(slot, Desired::Terminate { grace: 0 });
            }
        }
        self.done.retain(|uid| present.contains(uid));
    }
}

/// Moves a pod task towards `want`: a running pod may be told to terminate,
/// a terminating one only to terminate sooner (the kubelet's grace period
/// "can only decrease", pod_workers.go `calculateEffectiveGracePeriod`; the
/// effective grace is at least 1 s on both sides of the comparison), and a
/// kill is final.
fn steer(slot: &WorkerSlot, want: Desired) {
    let effective = |g: i64| g.max(1);
    slot.desired.send_if_modified(|d| {
        let change = match (*d, want) {
            (Desired::Run, w) => w != Desired::Run,
            (Desired::Terminate { grace: now }, Desired::Terminate { grace: new }) => {
                effective(new) < effective(now)
            }
            (Desired::Terminate { .. }, Desired::Kill) => true,
            _ => false,
        };
        if change {
            *d = want;
        }
        change
    });
}
