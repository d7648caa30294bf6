//! The control loops of the embedded cluster, run in-process against the
//! store (no HTTP): deployment → replicaset → scheduler → endpointslice →
//! disruption, plus the garbage collector. A pass runs on every store change
//! (coalesced: all changes queued by then are handled together) and at least
//! every `RESYNC`, and also when a time-based condition comes due (a pod
//! becoming available after `minReadySeconds`). Every write is a no-op when
//! nothing changed, so passes settle.

mod deployment;
mod disruption;
mod endpointslice;
mod gc;
mod replicaset;
mod scheduler;
pub mod util;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};

pub use deployment::{fenceposts, template_hash};

use super::{resources::ResourceKind, store::Store};

/// How often the controllers resync without a change.
const RESYNC: Duration = Duration::from_millis(500);

/// The resource kinds the controllers use.
pub struct Kinds {
    pub pods: &'static ResourceKind,
    pub nodes: &'static ResourceKind,
    pub services: &'static ResourceKind,
    pub deployments: &'static ResourceKind,
    pub replicasets: &'static ResourceKind,
    pub endpointslices: &'static ResourceKind,
    pub pdbs: &'static ResourceKind,
}

impl Kinds {
    fn get() -> Option<Kinds> {
        Some(Kinds {
            pods: ResourceKind::find("", "v1", "pods")?,
            nodes: ResourceKind::find("", "v1", "nodes")?,
            services: ResourceKind::find("", "v1", "services")?,
            deployments: ResourceKind::find("apps", "v1", "deployments")?,
            replicasets: ResourceKind::find("apps", "v1", "replicasets")?,
            endpointslices: ResourceKind::find("discovery.k8s.io", "v1", "endpointslices")?,
            pdbs: ResourceKind::find("policy", "v1", "poddisruptionbudgets")?,
        })
    }
}

/// What a controller pass works with.
pub struct Ctx {
    /// The objects.
    pub store: Arc<Store>,
    /// Resource kinds.
    pub kinds: Kinds,
    wake: Mutex<Option<SystemTime>>,
}

impl Ctx {
    /// Asks for a pass at `at` (the earliest request wins).
    pub fn wake_at(&self, at: SystemTime) {
        let mut w = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if w.is_none_or(|current| at < current) {
            *w = Some(at);
        }
    }

    /// Writes an object's `status` (a no-op write when it is unchanged).
    pub fn set_status(
        &self,
        kind: &'static ResourceKind,
        obj: &serde_json::Value,
        status: serde_json::Value,
    ) {
        let _ = self
            .store
            .update(kind, util::namespace(obj), util::name(obj), |o| {
                o["status"] = status;
                Ok(())
            });
    }

    fn take_wake(&self) -> Option<SystemTime> {
        self.wake.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// One pass of every controller.
    pub fn pass(&self) {
        gc::sync(self);
        deployment::sync(self);
        replicaset::sync(self);
        scheduler::sync(self);
        endpointslice::sync(self);
        disruption::sync(self);
    }
}

/// The running controllers.
pub struct Controllers {
    task: JoinHandle<()>,
}

impl Controllers {
    /// Starts the loop on the current tokio runtime.
    pub fn start(store: Arc<Store>) -> Option<Controllers> {
        let ctx = Arc::new(Ctx {
            store: store.clone(),
            kinds: Kinds::get()?,
            wake: Mutex::new(None),
        });
        let mut events = store.watch_all();
        let task = tokio::spawn(async move {
            loop {
                let wake = ctx.take_wake();
                let until = wake
                    .and_then(|w| w.duration_since(SystemTime::now()).ok())
                    .map_or(RESYNC, |d| d.min(RESYNC) + Duration::from_millis(5));
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(_) | Err(RecvError::Lagged(_)) => {
                            // Coalesce everything already queued.
                            while events.try_recv().is_ok() {}
                            if let Some(w) = wake {
                                ctx.wake_at(w);
                            }
                        }
                        Err(RecvError::Closed) => return,
                    },
                    () = tokio::time::sleep(until) => {}
                }
                let ctx2 = ctx.clone();
                // The passes are synchronous and short; keep them off the IO threads.
                if tokio::task::spawn_blocking(move || ctx2.pass())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Some(Controllers { task })
    }

    /// Stops the loop.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.task.abort();
    }
}
