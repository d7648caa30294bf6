//! Runs a service proxy per Service port — on the Service's loopback
//! ClusterIP and, for NodePort Services, on 127.0.0.1:nodePort — and feeds
//! each one the endpoints of the Service's EndpointSlice as they are written.
//! The listeners share one sync runner, which applies a change only after
//! its propagation delay and in batches on its sync period, as kube-proxy
//! does: that delay is the race a rollout test exercises.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    sync::{broadcast::error::RecvError, mpsc},
    task::JoinHandle,
};

use super::{
    controllers::util,
    process::IpAllocator,
    proxy::{Endpoint, ProxyEvent, ProxyMode, ServiceProxy, SyncRunner},
    resources::ResourceKind,
    store::Store,
};

const RESYNC: Duration = Duration::from_millis(500);

/// A proxy the manager runs, as reported to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddress {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The Service port.
    pub port: u16,
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Whether this is the NodePort listener (127.0.0.1:nodePort).
    pub node_port: bool,
}

struct Running {
    proxy: ServiceProxy,
    address: ServiceAddress,
    last: Vec<Endpoint>,
}

/// The proxies of every Service.
pub struct ServiceProxies {
    task: JoinHandle<()>,
    addresses: Arc<std::sync::Mutex<Vec<ServiceAddress>>>,
}

impl ServiceProxies {
    /// Starts the manager on the current runtime. Every listener shares
    /// `runner`, so all of them apply endpoint changes in the same syncs, as
    /// one kube-proxy syncs every Service at once. `network` is the pods'
    /// (the kubelet's allocator): new connections to the addresses it tore
    /// down go unanswered, as on a real network.
    pub fn start(
        store: Arc<Store>,
        mode: ProxyMode,
        runner: SyncRunner,
        events: mpsc::UnboundedSender<ProxyEvent>,
        network: Arc<IpAllocator>,
    ) -> Option<ServiceProxies> {
        let services = ResourceKind::find("", "v1", "services")?;
        let slices = ResourceKind::find("discovery.k8s.io", "v1", "endpointslices")?;
        let addresses = Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = addresses.clone();
        let mut changes = store.watch_all();
        let task = tokio::spawn(async move {
            let mut running: HashMap<(String, u16, SocketAddr), Running> = HashMap::new();
            loop {
                let start = Start {
                    mode,
                    runner: &runner,
                    events: &events,
                    network: &network,
                };
                sync(&store, services, slices, &start, &mut running);
                let list: Vec<ServiceAddress> =
                    running.values().map(|r| r.address.clone()).collect();
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = list;
                tokio::select! {
                    ev = changes.recv() => match ev {
                        Ok(_) | Err(RecvError::Lagged(_)) => while changes.try_recv().is_ok() {},
                        Err(RecvError::Closed) => return,
                    },
                    () = tokio::time::sleep(RESYNC) => {}
                }
            }
        });
        Some(ServiceProxies { task, addresses })
    }

    /// The listeners running now.
    pub fn addresses(&self) -> Vec<ServiceAddress> {
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops every proxy.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for ServiceProxies {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn endpoints_for(slice: Option<&Value>, port_name: &str) -> Vec<Endpoint> {
    let Some(slice) = slice else {
        return Vec::new();
    };
    let port = slice["ports"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["name"].as_str().unwrap_or("") == port_name)
                .or_else(|| ps.first())
        })
        .and_then(|p| p["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok());
    let Some(port) = port else { return Vec::new() };
    slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let ip: IpAddr = e["addresses"][0].as_str()?.parse().ok()?;
            let c = &e["conditions"];
            // Nil semantics: ready nil = ready, serving nil = ready, terminating nil = false.
            let ready = c["ready"].as_bool().unwrap_or(true);
            Some(Endpoint {
                pod: e["targetRef"]["name"].as_str().unwrap_or("").to_string(),
                addr: SocketAddr::new(ip, port),
                ready,
                serving: c["serving"].as_bool().unwrap_or(ready),
                terminating: c["terminating"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

/// What a new listener is started with.
struct Start<'a> {
    mode: ProxyMode,
    runner: &'a SyncRunner,
    events: &'a mpsc::UnboundedSender<ProxyEvent>,
    network: &'a Arc<IpAllocator>,
}

fn sync(
    store: &Store,
    services: &'static ResourceKind,
    slices: &'static ResourceKind,
    start: &Start<'_>,
    running: &mut HashMap<(String, u16, SocketAddr), Running>,
) {
    let (svcs, _) = store.list(services, None);
    let (all_slices, _) = store.list(slices, None);
    // One moment for every change this pass sees: the listeners of a
    // Service learn of the same slice write at once, so the shared sync
    // runner applies it to all of them in the same sync (stamped one by
    // one, a sync could fall between them and split a change in two).
    let written = Instant::now();
    let mut wanted = Vec::new();
    for svc in &svcs {
        let ns = util::namespace(svc);
        let name = util::name(svc);
        let slice = all_slices
            .iter()
            .find(|s| {
                util::namespace(s) == ns
                    && s["metadata"]["labels"]["kubernetes.io/service-name"] == name
            })
            .map(|s| s.as_ref());
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            let Some(port) = p["port"].as_u64().and_then(|v| u16::try_from(v).ok()) else {
                continue;
            };
            let port_name = p["name"].as_str().unwrap_or("").to_string();
            let mut listens = Vec::new();
            if let Some(ip) = svc["spec"]["clusterIP"]
                .as_str()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                && ip.is_loopback()
            {
                listens.push((SocketAddr::new(ip, port), false));
            }
            if let Some(np) = p["nodePort"].as_u64().and_then(|v| u16::try_from(v).ok()) {
                listens.push((SocketAddr::from(([127, 0, 0, 1], np)), true));
            }
            let endpoints = endpoints_for(slice, &port_name);
            for (listen, node_port) in listens {
                let key = (util::uid(svc).to_string(), port, listen);
                wanted.push(key.clone());
                let entry = match running.get_mut(&key) {
                    Some(r) => r,
                    None => {
                        let Ok(proxy) = ServiceProxy::start_on(
                            listen,
                            start.mode,
                            start.runner,
                            start.events.clone(),
                            Arc::clone(start.network),
                        ) else {
                            // Taken or not permitted (a port below 1024 without privileges):
                            // the Service stays reachable through its other listeners.
                            continue;
                        };
                        running.insert(
                            key.clone(),
                            Running {
                                address: ServiceAddress {
                                    service: format!("{ns}/{name}"),
                                    port,
                                    listen: proxy.local_addr(),
                                    node_port,
                                },
                                proxy,
                                last: Vec::new(),
                            },
                        );
                        let Some(r) = running.get_mut(&key) else {
                            continue;
                        };
                        r
                    }
                };
                if entry.last != endpoints {
                    entry.proxy.update_written_at(written, endpoints.clone());
                    entry.last = endpoints.clone();
                }
            }
        }
    }
    running.retain(|key, _| wanted.contains(key));
}
