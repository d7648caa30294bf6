//! The proxy's applied endpoint view and the backend choice on the hot path.
//!
//! The view is an `Arc` snapshot behind a `RwLock` that is only written when
//! an update is applied; readers hold the lock just long enough to clone the
//! `Arc`. Choice follows kube-proxy's `CategorizeEndpoints`: round-robin over
//! `ready` endpoints, and only if there is none over `serving && terminating`
//! ones.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::mpsc;

use super::{Endpoint, ProxyEvent, gate::Gate};
use crate::process::IpAllocator;

/// One applied endpoint set, with the usable endpoints precomputed.
#[derive(Debug, Default)]
pub(crate) struct Table {
    endpoints: Arc<[Endpoint]>,
    /// Indices of the endpoints traffic goes to: the ready ones, or the
    /// serving-and-terminating ones when none is ready.
    usable: Vec<usize>,
}

impl Table {
    pub(crate) fn new(endpoints: Arc<[Endpoint]>) -> Table {
        let ready: Vec<usize> = indices(&endpoints, |e| e.ready);
        let usable = if ready.is_empty() {
            indices(&endpoints, |e| e.serving && e.terminating)
        } else {
            ready
        };
        Table { endpoints, usable }
    }

    /// Whether some endpoint takes traffic (kube-proxy's `hasEndpoints`:
    /// without one it installs a REJECT rule).
    pub(crate) fn has_usable(&self) -> bool {
        !self.usable.is_empty()
    }
}

fn indices(endpoints: &[Endpoint], keep: impl Fn(&Endpoint) -> bool) -> Vec<usize> {
    endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| keep(e))
        .map(|(i, _)| i)
        .collect()
}

/// A chosen backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    pub(crate) pod: String,
    pub(crate) addr: SocketAddr,
}

/// State shared by the applier and the forwarders.
#[derive(Debug)]
pub(crate) struct Shared {
    view: RwLock<Arc<Table>>,
    next: AtomicUsize,
    events: mpsc::UnboundedSender<ProxyEvent>,
    /// The listener stopped: its sync runner applies nothing more to it.
    closed: AtomicBool,
    /// The pods' addresses and which are torn down.
    network: Arc<IpAllocator>,
    /// L4: the listener, refusing while the view has no usable endpoint.
    gate: OnceLock<Gate>,
}

impl Shared {
    pub(crate) fn new(
        events: mpsc::UnboundedSender<ProxyEvent>,
        network: Arc<IpAllocator>,
    ) -> Shared {
        Shared {
            view: RwLock::new(Arc::new(Table::default())),
            next: AtomicUsize::new(0),
            events,
            closed: AtomicBool::new(false),
            network,
            gate: OnceLock::new(),
        }
    }

    /// Whether `addr`'s pod sandbox is gone: on a real network nothing
    /// answers there, packets are dropped.
    pub(crate) fn torn_down(&self, addr: SocketAddr) -> bool {
        self.network.is_torn_down(addr.ip())
    }

    /// Makes the listener follow the view: it refuses new connections while
    /// no endpoint is usable (see [`Gate`]).
    pub(crate) fn install_gate(&self, gate: Gate) {
        if self.gate.set(gate).is_ok()
            && let Some(gate) = self.gate.get()
        {
            gate.follow(self);
        }
    }

    /// Marks the listener stopped (see [`is_closed`](Self::is_closed)).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(gate) = self.gate.get() {
            gate.close();
        }
    }

    /// Whether the listener stopped, so pending updates are dropped.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The current view (cheap: an `Arc` clone under a read lock).
    pub(crate) fn view(&self) -> Arc<Table> {
        match self.view.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Makes `endpoints` the view and reports it.
    pub(crate) fn apply(&self, endpoints: Arc<[Endpoint]>) {
        let table = Arc::new(Table::new(Arc::clone(&endpoints)));
        match self.view.write() {
            Ok(mut guard) => *guard = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
        if let Some(gate) = self.gate.get() {
            gate.follow(self);
        }
        self.emit(ProxyEvent::Applied {
            at: Instant::now(),
            endpoints,
        });
    }

    /// The next backend, round-robin over the usable endpoints, skipping
    /// `avoid` when another one exists.
    pub(crate) fn pick(&self, avoid: Option<SocketAddr>) -> Option<Backend> {
        let view = self.view();
        let n = view.usable.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let tries = if avoid.is_some() { n } else { 1 };
        let chosen = (0..tries)
            .map(|k| &view.endpoints[view.usable[(start + k) % n]])
            .find(|e| Some(e.addr) != avoid)?;
        Some(Backend {
            pod: chosen.pod.clone(),
            addr: chosen.addr,
        })
    }

    /// Sends an event; a closed channel (nobody listening) is not an error.
    pub(crate) fn emit(&self, event: ProxyEvent) {
        let _ = self.events.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(pod: &str, port: u16, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            pod: pod.to_owned(),
            addr: SocketAddr::from(([127, 0, 1, 1], port)),
            ready,
            serving,
            terminating,
        }
    }

    fn shared_with(eps: Vec<Endpoint>) -> Shared {
        let (tx, _rx) = mpsc::unbounded_channel();
        let shared = Shared::new(tx, Arc::default());
        shared.apply(eps.into());
        shared
    }

    fn pods(shared: &Shared, n: usize) -> Vec<String> {
        (0..n)
            .filter_map(|_| shared.pick(None))
            .map(|b| b.pod)
            .collect()
    }

    #[test]
    fn round_robin_over_ready_only() {
        let shared = shared_with(vec![
            ep("a", 1, true, true, false),
            ep("t", 2, false, true, true),
            ep("b", 3, true, true, false),
            ep("n", 4, false, false, false),
        ]);
        assert_eq!(pods(&shared, 4), ["a", "b", "a", "b"]);
    }

    #[test]
    fn serving_terminating_only_when_none_ready() {
        let shared = shared_with(vec![
            ep("t", 2, false, true, true),
            ep("dead", 3, false, false, true),
            ep("n", 4, false, false, false),
        ]);
        assert_eq!(pods(&shared, 2), ["t", "t"]);
    }

    #[test]
    fn nothing_usable_picks_none() {
        let shared = shared_with(vec![ep("n", 4, false, false, false)]);
        assert_eq!(shared.pick(None), None);
        let empty = shared_with(vec![]);
        assert_eq!(empty.pick(None), None);
    }

    #[test]
    fn avoid_skips_the_failed_backend_when_possible() {
        let shared = shared_with(vec![
            ep("a", 1, true, true, false),
            ep("b", 3, true, true, false),
        ]);
        let avoid = SocketAddr::from(([127, 0, 1, 1], 1));
        for _ in 0..4 {
            assert_eq!(
                shared.pick(Some(avoid)).map(|b| b.pod),
                Some("b".to_owned())
            );
        }
        let single = shared_with(vec![ep("a", 1, true, true, false)]);
        assert_eq!(single.pick(Some(avoid)), None);
    }
}
