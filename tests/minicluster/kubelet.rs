//! The embedded kubelet with real `rolltest serve` processes on loopback:
//! pods are created directly in a `Store` (bound to `embedded-node-1`) and
//! the tests watch status, events, the kubelet's exact record and processes:
//! start and readiness, the graceful termination sequence (preStop → SIGTERM
//! → SIGKILL), crash loops, liveness restarts, unmapped images, force deletes
//! and shutdown; the Events as a real kubelet records them and the exit in
//! the status after the relist.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use rolltest_minicluster::{
    kubelet::{
        ImageMap, Kubelet, KubeletConfig, KubeletHandle, KubeletSignal, PodStart, SignalKind,
    },
    process::IpAllocator,
    resources::ResourceKind,
    store::{EventType, Store},
};
use serde_json::{Value, json};
use tempfile::TempDir;

const NODE: &str = "embedded-node-1";

/// One allocator for all tests: they run in parallel and must not share IPs.
fn ips() -> Arc<IpAllocator> {
    static IPS: OnceLock<Arc<IpAllocator>> = OnceLock::new();
    IPS.get_or_init(|| Arc::new(IpAllocator::new())).clone()
}

fn pods() -> &'static ResourceKind {
    ResourceKind::find("", "v1", "pods").expect("pods resource")
}

fn events_kind() -> &'static ResourceKind {
    ResourceKind::find("", "v1", "events").expect("events resource")
}

struct Harness {
    store: Arc<Store>,
    kubelet: Option<KubeletHandle>,
    /// The exact record so far.
    exact: Arc<Mutex<Vec<KubeletSignal>>>,
    _dir: TempDir,
}

/// An instant as wall time.
fn wall(at: Instant) -> SystemTime {
    let (now, wall_now) = (Instant::now(), SystemTime::now());
    wall_now - now.saturating_duration_since(at)
}

/// When the kubelet created an Event: its name is `<pod>.<hex nanos>`.
fn created(e: &Value) -> SystemTime {
    let name = e["metadata"]["name"].as_str().expect("name");
    let hex = name.rsplit('.').next().expect("suffix");
    let nanos = u128::from_str_radix(hex, 16).expect("hex nanos");
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).expect("fits"))
}

impl Harness {
    fn start() -> Harness {
        Harness::with_pod_start(PodStart::NONE)
    }

    fn with_pod_start(pod_start: PodStart) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::new());
        let images = ImageMap::with_demo_default(PathBuf::from(env!("CARGO_BIN_EXE_rolltest")));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let kubelet = Kubelet::start(KubeletConfig {
            store: store.clone(),
            nodes: vec![NODE.to_string(), "embedded-node-2".to_string()],
            images: Arc::new(images),
            work_dir: dir.path().join("pods"),
            ips: ips(),
            signals: Some(tx),
            pod_start,
        })
        .expect("kubelet starts");
        let exact = Arc::new(Mutex::new(Vec::new()));
        let sink = exact.clone();
        tokio::spawn(async move {
            while let Some(s) = rx.recv().await {
                sink.lock().expect("lock").push(s);
            }
        });
        Harness {
            store,
            kubelet: Some(kubelet),
            exact,
            _dir: dir,
        }
    }

    fn kubelet(&self) -> &KubeletHandle {
        self.kubelet.as_ref().expect("kubelet running")
    }

    /// Creates a pod with one container `app` (image `rolltest-demo:v1`,
    /// port 8080) merged with `container`, and `spec` merged into the spec.
    fn create(&self, name: &str, container: Value, spec: Value) -> Arc<Value> {
        let mut c = json!({"name": "app", "image": "rolltest-demo:v1",
            "ports": [{"name": "http", "containerPort": 8080}]});
        merge(&mut c, container);
        let mut pod_spec = json!({"nodeName": NODE, "containers": [c]});
        merge(&mut pod_spec, spec);
        self.store
            .create(
                pods(),
                "default",
                json!({"metadata": {"name": name}, "spec": pod_spec}),
            )
            .expect("create pod")
    }

    fn pod(&self, name: &str) -> Option<Arc<Value>> {
        self.store.get(pods(), "default", name)
    }

    /// A graceful delete as the API server records it.
    fn delete(&self, name: &str, grace: i64) {
        self.store
            .update(pods(), "default", name, |pod| {
                let at = SystemTime::now() + Duration::from_secs(grace as u64);
                pod["metadata"]["deletionTimestamp"] =
                    json!(humantime::format_rfc3339_seconds(at).to_string());
                pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                Ok(())
            })
            .expect("graceful delete");
    }

    /// The pod's Events (when created, type, reason, message) merged with
    /// its exact record (type `Exact`, reasons `PreStopStarted`,
    /// `PreStopFinished`, `SigtermSent`, `SigkillSent`, `ContainerExited`),
    /// in time order.
    fn events(&self, pod: &str) -> Vec<(SystemTime, String, String, String)> {
        let (items, _) = self.store.list(events_kind(), Some("default"));
        let mut events: Vec<_> = items
            .iter()
            .filter(|e| e["involvedObject"]["name"] == pod)
            .map(|e| {
                (
                    created(e),
                    e["type"].as_str().unwrap_or("").to_string(),
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        for s in self
            .exact
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.pod == pod)
        {
            let (reason, message) = match s.kind {
                SignalKind::PreStopStarted => ("PreStopStarted", String::new()),
                SignalKind::PreStopFinished => ("PreStopFinished", String::new()),
                SignalKind::Sigterm => ("SigtermSent", String::new()),
                SignalKind::Sigkill => ("SigkillSent", String::new()),
                SignalKind::Exited { code, signal } => (
                    "ContainerExited",
                    format!("code {} signal {}", code.unwrap_or(-1), signal.unwrap_or(0)),
                ),
            };
            events.push((wall(s.at), "Exact".into(), reason.into(), message));
        }
        events.sort_by_key(|e| e.0);
        events
    }

    fn event(&self, pod: &str, reason: &str) -> Option<(SystemTime, String, String, String)> {
        self.events(pod).into_iter().find(|e| e.2 == reason)
    }

    async fn shutdown(mut self) {
        if let Some(k) = self.kubelet.take() {
            k.shutdown().await;
        }
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        for (k, v) in from {
            into.insert(k, v);
        }
    }
}

/// Polls `f` every 20 ms until it gives a value; panics after `limit`.
async fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn condition(pod: &Value, type_: &str) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

fn container(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn pid_of(pod: &Value) -> Option<i32> {
    container(pod)["containerID"]
        .as_str()?
        .strip_prefix("rolltest://")?
        .parse()
        .ok()
}

/// Present and neither zombie nor dead.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// GET `path` from `addr`; the raw response head.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The DELETED events of pods (their final objects), from a watch started
/// earlier, by name — whichever pod goes first.
async fn deleted_all(
    live: &mut tokio::sync::broadcast::Receiver<Arc<rolltest_minicluster::store::WatchEvent>>,
    names: &[&str],
    limit: Duration,
) -> std::collections::HashMap<String, Arc<Value>> {
    let mut found = std::collections::HashMap::new();
    let wait = async {
        while found.len() < names.len() {
            match live.recv().await {
                Ok(ev) if ev.kind == EventType::Deleted && std::ptr::eq(ev.resource, pods()) => {
                    if let Some(name) = ev.object["metadata"]["name"].as_str()
                        && names.contains(&name)
                    {
                        found.insert(name.to_string(), ev.object.clone());
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("watch failed: {e}"),
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .expect("pods deleted in time");
    found
}

/// The DELETED event of one pod (its final object), from a watch started earlier.
async fn deleted(
    live: &mut tokio::sync::broadcast::Receiver<Arc<rolltest_minicluster::store::WatchEvent>>,
    name: &str,
    limit: Duration,
) -> Arc<Value> {
    deleted_all(live, &[name], limit)
        .await
        .remove(name)
        .expect("deleted")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_starts_becomes_ready_after_its_probe_and_serves() {
    let h = Harness::start();
    h.create(
        "web-1",
        json!({"args": ["--ready-delay", "1s"],
               "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1}}),
        json!({}),
    );
    let running = until("Running with a pod IP", Duration::from_secs(5), || {
        h.pod("web-1")
            .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
    })
    .await;
    let ip = running["status"]["podIP"]
        .as_str()
        .expect("podIP")
        .to_string();
    assert!(ip.starts_with("127.0."), "{ip}");
    assert_ne!(ip, "127.0.0.1");
    assert_eq!(running["status"]["hostIP"], "127.0.0.1");
    assert_eq!(running["status"]["podIPs"], json!([{"ip": ip}]));
    assert_eq!(container(&running)["started"], true);
    assert_eq!(condition(&running, "PodScheduled").as_deref(), Some("True"));
    assert_eq!(condition(&running, "Initialized").as_deref(), Some("True"));
    assert_eq!(
        h.kubelet()
            .pod_ip("default", "web-1")
            .map(|i| i.to_string()),
        Some(ip.clone())
    );
    let running_at = Instant::now();

    // --ready-delay 1s: not Ready for about a second, then Ready.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let early = h.pod("web-1").expect("pod");
    assert_eq!(condition(&early, "Ready").as_deref(), Some("False"));
    assert_eq!(container(&early)["ready"], false);
    let ready = until("Ready", Duration::from_secs(5), || {
        h.pod("web-1")
            .filter(|p| condition(p, "Ready").as_deref() == Some("True"))
    })
    .await;
    let took = running_at.elapsed();
    assert!(took >= Duration::from_millis(600), "Ready after {took:?}");
    assert_eq!(
        condition(&ready, "ContainersReady").as_deref(),
        Some("True")
    );
    assert_eq!(container(&ready)["ready"], true);

    // The app really answers on podIP:PORT with its pod name.
    let addr: SocketAddr = format!("{ip}:8080").parse().expect("addr");
    let response = http_get(addr, "/").expect("GET /");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("x-rolltest-pod: web-1"),
        "{response}"
    );

    let reasons: Vec<String> = h.events("web-1").into_iter().map(|e| e.2).collect();
    for reason in ["Pulled", "Created", "Started"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    let (_, type_, _, message) = h.event("web-1", "Unhealthy").expect("a readiness failure");
    assert_eq!(type_, "Warning");
    assert!(message.starts_with("Readiness probe failed: "), "{message}");
    let log = h.kubelet().log_path("default", "web-1").expect("log path");
    assert!(log.ends_with("default_web-1_app.log"), "{}", log.display());
    assert!(log.exists());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_delete_runs_pre_stop_before_sigterm_then_deletes() {
    let h = Harness::start();
    let prestops = [
        ("sleepy", json!({"sleep": {"seconds": 1}})),
        ("execy", json!({"exec": {"command": ["sleep", "1"]}})),
    ];
    for (name, pre_stop) in &prestops {
        h.create(
            name,
            json!({"args": ["--on-sigterm", "drain", "--idle-grace", "100ms"],
                   "lifecycle": {"preStop": pre_stop}}),
            json!({"terminationGracePeriodSeconds": 10}),
        );
    }
    for (name, _) in &prestops {
        let pod = until("Ready", Duration::from_secs(5), || {
            h.pod(name)
                .filter(|p| condition(p, "Ready").as_deref() == Some("True"))
        })
        .await;
        let addr: SocketAddr = format!("{}:8080", pod["status"]["podIP"].as_str().expect("ip"))
            .parse()
            .expect("addr");
        until("app listening", Duration::from_secs(5), || {
            http_get(addr, "/livez").ok()
        })
        .await;
    }
    let mut live = h
        .store
        .watch(pods(), Some("default"), Some(h.store.version()))
        .expect("watch")
        .live;
    for (name, _) in &prestops {
        h.delete(name, 10);
    }
    // Both go at about the same time: collect both DELETED events, in either order.
    let names: Vec<&str> = prestops.iter().map(|(n, _)| *n).collect();
    let mut gone = deleted_all(&mut live, &names, Duration::from_secs(10)).await;
    for (name, _) in &prestops {
        let last = gone.remove(*name).expect("deleted");
        assert!(h.pod(name).is_none());
        assert_eq!(
            last["status"]["phase"], "Succeeded",
            "{name}: {}",
            last["status"]
        );
        let t = &container(&last)["state"]["terminated"];
        assert_eq!(
            (t["exitCode"].as_i64(), t["reason"].as_str()),
            (Some(0), Some("Completed")),
            "{name}"
        );
        assert_eq!(condition(&last, "Ready").as_deref(), Some("False"));

        let events = h.events(name);
        // The Events (stamped when the worker recorded them, a few ms after
        // the step) and the exact record (stamped with the instant), each
        // in its own order.
        let order = |type_: &str| -> Vec<&str> {
            events
                .iter()
                .filter(|e| (e.1 == "Exact") == (type_ == "Exact"))
                .map(|e| e.2.as_str())
                .filter(|r| {
                    [
                        "Killing",
                        "PreStopStarted",
                        "PreStopFinished",
                        "SigtermSent",
                        "SigkillSent",
                        "ContainerExited",
                    ]
                    .contains(r)
                })
                .collect()
        };
        assert_eq!(order("Normal"), ["Killing"], "{name}");
        assert_eq!(
            order("Exact"),
            [
                "PreStopStarted",
                "PreStopFinished",
                "SigtermSent",
                "ContainerExited"
            ],
            "{name}"
        );
        let at = |reason: &str| {
            events
                .iter()
                .find(|e| e.2 == reason)
                .map(|e| e.0)
                .expect(reason)
        };
        let pre_stop = at("SigtermSent")
            .duration_since(at("PreStopStarted"))
            .expect("order");
        assert!(
            pre_stop >= Duration::from_millis(950) && pre_stop < Duration::from_millis(1800),
            "{name}: SIGTERM {pre_stop:?} after preStop started"
        );
        let killing = events.iter().find(|e| e.2 == "Killing").expect("Killing");
        assert_eq!(killing.3, "Stopping container app");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_sigterm_gets_sigkill_after_the_grace_period() {
    let h = Harness::start();
    h.create(
        "stubborn",
        json!({"args": ["--on-sigterm", "ignore"]}),
        json!({}),
    );
    let pod = until("Running", Duration::from_secs(5), || {
        h.pod("stubborn")
            .filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let pid = pid_of(&pod).expect("pid");
    let addr: SocketAddr = format!("{}:8080", pod["status"]["podIP"].as_str().expect("ip"))
        .parse()
        .expect("addr");
    until("app listening", Duration::from_secs(5), || {
        http_get(addr, "/livez").ok()
    })
    .await;
    let mut live = h
        .store
        .watch(pods(), Some("default"), Some(h.store.version()))
        .expect("watch")
        .live;
    h.delete("stubborn", 2);
    let last = deleted(&mut live, "stubborn", Duration::from_secs(8)).await;
    assert!(!alive(pid));
    let t = &container(&last)["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["signal"].as_i64()),
        (Some(137), Some(9)),
        "{t}"
    );
    assert_eq!(t["reason"], "Error");
    assert_eq!(last["status"]["phase"], "Failed");
    let at = |reason: &str| h.event("stubborn", reason).map(|e| e.0).expect(reason);
    let grace = at("SigkillSent")
        .duration_since(at("SigtermSent"))
        .expect("order");
    assert!(
        grace >= Duration::from_millis(1900) && grace < Duration::from_millis(2800),
        "SIGKILL {grace:?} after SIGTERM"
    );
    assert!(h.event("stubborn", "PreStopStarted").is_none());
    let exited = h
        .event("stubborn", "ContainerExited")
        .expect("ContainerExited");
    assert!(exited.3.contains("signal 9"), "{}", exited.3);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_restarts_into_crash_loop_back_off() {
    let h = Harness::start();
    h.create(
        "crashy",
        json!({"args": ["--crash-after", "500ms"]}),
        json!({}),
    );
    h.create(
        "once",
        json!({"args": ["--crash-after", "300ms"]}),
        json!({"restartPolicy": "Never"}),
    );
    let pod = until("CrashLoopBackOff", Duration::from_secs(8), || {
        h.pod("crashy")
            .filter(|p| container(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff")
    })
    .await;
    let c = container(&pod);
    assert!(c["restartCount"].as_u64() >= Some(1), "{c}");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 1, "{c}");
    assert_eq!(c["ready"], false);
    assert!(
        c["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("back-off 10s")),
        "{c}"
    );
    assert_eq!(pod["status"]["phase"], "Running");
    let (_, type_, _, message) = h.event("crashy", "BackOff").expect("BackOff event");
    assert_eq!(type_, "Warning");
    assert_eq!(
        message,
        "Back-off restarting failed container app in pod crashy"
    );

    // restartPolicy Never: no restart, phase Failed, the object stays.
    let once = until("Failed", Duration::from_secs(5), || {
        h.pod("once").filter(|p| p["status"]["phase"] == "Failed")
    })
    .await;
    assert_eq!(container(&once)["restartCount"], 0);
    assert_eq!(container(&once)["state"]["terminated"]["exitCode"], 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_liveness_probe_restarts_the_container() {
    let h = Harness::start();
    h.create(
        "sick",
        json!({"livenessProbe": {"httpGet": {"path": "/missing", "port": 8080},
                                 "periodSeconds": 1, "failureThreshold": 2, "initialDelaySeconds": 1}}),
        json!({"terminationGracePeriodSeconds": 3}),
    );
    let first = until("Running", Duration::from_secs(5), || {
        h.pod("sick").filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let first_pid = pid_of(&first).expect("pid");
    let restarted = until("a restart", Duration::from_secs(10), || {
        h.pod("sick").filter(|p| {
            container(p)["restartCount"] == 1 && container(p)["state"]["running"].is_object()
        })
    })
    .await;
    assert_ne!(pid_of(&restarted), Some(first_pid));
    assert!(!alive(first_pid));
    assert!(container(&restarted)["lastState"]["terminated"].is_object());
    let events = h.events("sick");
    assert!(
        events.iter().any(|e| e.2 == "Unhealthy"
            && e.3 == "Liveness probe failed: HTTP probe failed with statuscode: 404"),
        "{events:?}"
    );
    assert!(events.iter().any(
        |e| e.2 == "Killing" && e.3 == "Container app failed liveness probe, will be restarted"
    ));
    h.shutdown().await;
}

/// The first readiness probe runs when the status shows the container
/// running (`STATUS_SYNC` after its start, as kubelet 1.37's on-demand relist
/// does), by which time a healthy app listens: it passes, and the pod is
/// Ready at once. Probed at the spawn itself it would find nothing listening,
/// fail, and leave the pod unready until the next tick of a 10 s ticker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_apps_first_readiness_probe_passes() {
    let h = Harness::start();
    h.create(
        "quick",
        json!({"readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10}}),
        json!({}),
    );
    until("Running", Duration::from_secs(5), || {
        h.pod("quick").filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let ready = until(
        "Ready before the ticker's first tick",
        Duration::from_secs(5),
        || {
            h.pod("quick")
                .filter(|p| condition(p, "Ready").as_deref() == Some("True"))
        },
    )
    .await;
    assert_eq!(container(&ready)["ready"], true, "{ready}");
    let failed: Vec<_> = h
        .events("quick")
        .into_iter()
        .filter(|e| e.2 == "Unhealthy")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    h.shutdown().await;
}

/// With a pod start delay (`[cluster.embedded] pod_start`) a bound pod stays
/// Pending, with no address and no process, for that long, as a real
/// kubelet's sandbox, network and container start take; then it runs. One
/// deleted during the delay is finished without ever starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_start_delay_keeps_the_pod_pending_then_starts_it() {
    let h = Harness::with_pod_start("700ms".parse().expect("pod start"));
    let created = Instant::now();
    h.create("slow", json!({}), json!({}));
    h.create("gone", json!({}), json!({}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["slow", "gone"] {
        let early = h.pod(name).expect("pod");
        assert_eq!(early["status"]["phase"], "Pending", "{early}");
        assert!(early["status"]["podIP"].is_null(), "{early}");
        assert!(h.kubelet().pod_ip("default", name).is_none());
    }
    h.delete("gone", 30);
    let running = until("Running", Duration::from_secs(5), || {
        h.pod("slow").filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    assert!(
        created.elapsed() >= Duration::from_millis(700),
        "running after {:?}",
        created.elapsed()
    );
    assert!(running["status"]["podIP"].is_string(), "{running}");
    until("the deleted pod gone", Duration::from_secs(5), || {
        h.pod("gone").is_none().then_some(())
    })
    .await;
    assert!(
        h.exact
            .lock()
            .expect("lock")
            .iter()
            .all(|s| s.pod != "gone"),
        "the pod deleted before its start never ran"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_image_is_err_image_pull() {
    let h = Harness::start();
    h.create("nginx", json!({"image": "nginx:1.25"}), json!({}));
    let pod = until("ErrImagePull", Duration::from_secs(5), || {
        h.pod("nginx")
            .filter(|p| container(p)["state"]["waiting"]["reason"] == "ErrImagePull")
    })
    .await;
    assert_eq!(
        container(&pod)["state"]["waiting"]["message"],
        "no local command for image nginx:1.25: map it in [cluster.embedded.images]"
    );
    assert_eq!(pod["status"]["phase"], "Pending");
    let failed = until("Failed event", Duration::from_secs(2), || {
        h.event("nginx", "Failed")
    })
    .await;
    assert_eq!(failed.1, "Warning");
    // A graceful delete still finishes it.
    h.delete("nginx", 30);
    until("deleted", Duration::from_secs(5), || {
        h.pod("nginx").is_none().then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_delete_and_shutdown_leave_no_process() {
    let h = Harness::start();
    for name in ["a", "b", "c"] {
        h.create(name, json!({"args": ["--on-sigterm", "ignore"]}), json!({}));
    }
    let mut pids = Vec::new();
    for name in ["a", "b", "c"] {
        let pod = until("Running", Duration::from_secs(5), || {
            h.pod(name).filter(|p| p["status"]["phase"] == "Running")
        })
        .await;
        pids.push(pid_of(&pod).expect("pid"));
    }
    assert!(pids.iter().all(|&p| alive(p)));
    // Grace 0 / force delete: the object is gone at once; the process dies
    // after the kubelet's minimum grace (SIGTERM, ignored, then SIGKILL 2 s on).
    h.store
        .delete(pods(), "default", "a", None)
        .expect("force delete");
    until("a's process gone", Duration::from_secs(6), || {
        (!alive(pids[0])).then_some(())
    })
    .await;
    until("a forgotten", Duration::from_secs(3), || {
        (h.kubelet().pids().len() == 2).then_some(())
    })
    .await;
    h.shutdown().await;
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived the kubelet");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_keeps_probing_while_terminating() {
    let h = Harness::start();
    h.create(
        "draining",
        json!({"args": ["--on-sigterm", "ignore", "--fail-readiness-on-sigterm"],
               "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                  "periodSeconds": 1, "failureThreshold": 1}}),
        json!({}),
    );
    until("Ready", Duration::from_secs(5), || {
        h.pod("draining")
            .filter(|p| condition(p, "Ready").as_deref() == Some("True"))
    })
    .await;
    h.delete("draining", 3);
    // SIGTERM makes /healthz fail; the next readiness probe flips Ready
    // while the pod is still terminating (SIGKILL comes at 3 s).
    let unready = until(
        "not Ready while terminating",
        Duration::from_secs(3),
        || {
            h.pod("draining")
                .filter(|p| condition(p, "Ready").as_deref() == Some("False"))
        },
    )
    .await;
    assert!(unready["metadata"]["deletionTimestamp"].is_string());
    assert!(
        container(&unready)["state"]["running"].is_object(),
        "{}",
        unready["status"]
    );
    let events = h.events("draining");
    assert!(
        events.iter().any(|e| e.2 == "Unhealthy"
            && e.3 == "Readiness probe failed: HTTP probe failed with statuscode: 503"),
        "{events:?}"
    );
    until("deleted", Duration::from_secs(6), || {
        h.pod("draining").is_none().then_some(())
    })
    .await;
    assert!(h.event("draining", "SigkillSent").is_some());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_kills_pods() {
    let mut h = Harness::start();
    h.create(
        "dropped",
        json!({"args": ["--on-sigterm", "ignore"]}),
        json!({}),
    );
    let pod = until("Running", Duration::from_secs(5), || {
        h.pod("dropped")
            .filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let pid = pid_of(&pod).expect("pid");
    assert!(alive(pid));
    drop(h.kubelet.take());
    until("process gone", Duration::from_secs(3), || {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pre_stop_is_reported_and_shutdown_continues() {
    let h = Harness::start();
    h.create(
        "hooked",
        json!({"lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo nope; exit 3"]}}}}),
        json!({}),
    );
    until("Running", Duration::from_secs(5), || {
        h.pod("hooked")
            .filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    h.delete("hooked", 5);
    until("deleted", Duration::from_secs(5), || {
        h.pod("hooked").is_none().then_some(())
    })
    .await;
    let events = h.events("hooked");
    let steps = |exact: bool| -> Vec<(&str, &str)> {
        events
            .iter()
            .skip_while(|e| e.2 != "Killing" && e.2 != "PreStopStarted")
            .filter(|e| (e.1 == "Exact") == exact)
            .map(|e| (e.1.as_str(), e.2.as_str()))
            .collect()
    };
    assert_eq!(
        steps(false),
        [("Normal", "Killing"), ("Warning", "FailedPreStopHook")]
    );
    assert_eq!(
        steps(true),
        [
            ("Exact", "PreStopStarted"),
            ("Exact", "PreStopFinished"),
            ("Exact", "SigtermSent"),
            ("Exact", "ContainerExited"),
        ]
    );
    let failed = events
        .iter()
        .find(|e| e.2 == "FailedPreStopHook")
        .expect("event");
    assert!(
        failed
            .3
            .starts_with("Exec lifecycle hook ([sh -c echo nope; exit 3]) for Container \"app\" in Pod \"hooked_default(")
            && failed.3.contains(")\" failed - error: command "),
        "{}",
        failed.3
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_probe_gates_started_and_ready() {
    let h = Harness::start();
    let mut live = h
        .store
        .watch(pods(), Some("default"), Some(h.store.version()))
        .expect("watch")
        .live;
    h.create(
        "slow",
        json!({"args": ["--startup-delay", "1s"],
               "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 5},
               "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}}),
        json!({}),
    );
    let mut seen_unstarted_running = false;
    let ready = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            let ev = live.recv().await.expect("watch");
            if !std::ptr::eq(ev.resource, pods()) {
                continue;
            }
            let c = container(&ev.object);
            if c["state"]["running"].is_object() && c["started"] == false {
                assert_eq!(c["ready"], false);
                seen_unstarted_running = true;
            }
            if condition(&ev.object, "Ready").as_deref() == Some("True") {
                return ev.object.clone();
            }
        }
    })
    .await
    .expect("Ready in time");
    assert!(seen_unstarted_running);
    assert_eq!(container(&ready)["started"], true);
    assert_eq!(container(&ready)["restartCount"], 0);
    let failures = h
        .events("slow")
        .into_iter()
        .filter(|e| e.3.starts_with("Startup probe failed: "))
        .count();
    assert!(failures >= 1, "the app listens only after 1 s");
    h.shutdown().await;
}

/// Probes run on the kubelet's ticker (prober `worker.go`): a readiness
/// probe whose trigger at start falls inside `initialDelaySeconds` (1 s)
/// first runs on the next tick of its 3 s ticker, not when the delay ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_inside_its_initial_delay_waits_for_the_next_tick() {
    let h = Harness::start();
    let created = Instant::now();
    h.create(
        "tick",
        json!({"readinessProbe": {"tcpSocket": {"port": "http"},
                                  "initialDelaySeconds": 1, "periodSeconds": 3}}),
        json!({}),
    );
    until("Ready", Duration::from_secs(8), || {
        h.pod("tick")
            .filter(|p| condition(p, "Ready").as_deref() == Some("True"))
    })
    .await;
    let took = created.elapsed();
    assert!(
        took >= Duration::from_millis(2_500),
        "Ready after {took:?}: the first probe ran before the tick at 3 s"
    );
    h.shutdown().await;
}

/// Runs a pod that ignores SIGTERM and has a 10 s preStop sleep (merged with
/// `spec`) until its app answers; its pid.
async fn stubborn_with_pre_stop(h: &Harness, name: &str, spec: Value) -> i32 {
    h.create(
        name,
        json!({"args": ["--on-sigterm", "ignore"],
               "lifecycle": {"preStop": {"sleep": {"seconds": 10}}}}),
        spec,
    );
    let pod = until("Running", Duration::from_secs(5), || {
        h.pod(name).filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let addr: SocketAddr = format!("{}:8080", pod["status"]["podIP"].as_str().expect("ip"))
        .parse()
        .expect("addr");
    until("app listening", Duration::from_secs(5), || {
        http_get(addr, "/livez").ok()
    })
    .await;
    pid_of(&pod).expect("pid")
}

/// `terminationGracePeriodSeconds: 0` (a delete that removes the object at
/// once) still gets the kubelet's 1 s grace (pod_workers.go
/// `calculateEffectiveGracePeriod`): the preStop hook is cut after 1 s, then
/// SIGTERM, then SIGKILL after killContainer's 2 s minimum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_zero_still_gets_one_second_and_two_after_sigterm() {
    let h = Harness::start();
    let pid = stubborn_with_pre_stop(&h, "zero", json!({"terminationGracePeriodSeconds": 0})).await;
    rolltest_minicluster::api::graceful_delete_pod(&h.store, "default", "zero", None, None)
        .expect("delete");
    assert!(
        h.pod("zero").is_none(),
        "grace 0 removes the object at once"
    );
    until("SigkillSent", Duration::from_secs(8), || {
        h.event("zero", "SigkillSent")
    })
    .await;
    until("process gone", Duration::from_secs(5), || {
        (!alive(pid)).then_some(())
    })
    .await;
    let at = |reason: &str| h.event("zero", reason).map(|e| e.0).expect(reason);
    let pre_stop = at("SigtermSent")
        .duration_since(at("PreStopStarted"))
        .expect("order");
    assert!(
        pre_stop >= Duration::from_millis(900) && pre_stop < Duration::from_millis(2500),
        "preStop ran {pre_stop:?}"
    );
    let after_sigterm = at("SigkillSent")
        .duration_since(at("SigtermSent"))
        .expect("order");
    assert!(
        after_sigterm >= Duration::from_millis(1900),
        "SIGKILL {after_sigterm:?} after SIGTERM"
    );
    h.shutdown().await;
}

/// A second delete with a shorter grace restarts the kill with the shorter
/// deadline (the pod worker cancels the running kill and kills anew): a
/// second `Killing`, preStop cut at the new 2 s, SIGKILL 2 s after SIGTERM,
/// the pod gone long before the first delete's 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shorter_second_delete_restarts_the_kill() {
    let h = Harness::start();
    let pid = stubborn_with_pre_stop(&h, "twice", json!({})).await;
    let mut live = h
        .store
        .watch(pods(), Some("default"), Some(h.store.version()))
        .expect("watch")
        .live;
    rolltest_minicluster::api::graceful_delete_pod(&h.store, "default", "twice", Some(30), None)
        .expect("first delete");
    until("PreStopStarted", Duration::from_secs(3), || {
        h.event("twice", "PreStopStarted")
    })
    .await;
    let first = h.pod("twice").expect("pod");
    rolltest_minicluster::api::graceful_delete_pod(&h.store, "default", "twice", Some(2), None)
        .expect("second delete");
    let second = h.pod("twice").expect("pod");
    assert_eq!(second["metadata"]["deletionGracePeriodSeconds"], 2);
    // The API server counts the shorter grace from the first delete.
    let stamp = |p: &Value| {
        humantime::parse_rfc3339(p["metadata"]["deletionTimestamp"].as_str().expect("stamp"))
            .expect("rfc3339")
    };
    let moved = stamp(&first)
        .duration_since(stamp(&second))
        .expect("earlier");
    assert!(
        moved >= Duration::from_secs(27) && moved <= Duration::from_secs(29),
        "deletionTimestamp moved back {moved:?}"
    );
    deleted(&mut live, "twice", Duration::from_secs(10)).await;
    assert!(!alive(pid));
    let events = h.events("twice");
    let count = |reason: &str| events.iter().filter(|e| e.2 == reason).count();
    assert_eq!(count("Killing"), 2, "{events:?}");
    assert_eq!(count("PreStopStarted"), 2, "{events:?}");
    let last = |reason: &str| {
        events
            .iter()
            .rev()
            .find(|e| e.2 == reason)
            .map(|e| e.0)
            .expect(reason)
    };
    let pre_stop = last("SigtermSent")
        .duration_since(last("PreStopStarted"))
        .expect("order");
    assert!(
        pre_stop >= Duration::from_millis(1900) && pre_stop < Duration::from_millis(3500),
        "second preStop ran {pre_stop:?}"
    );
    let after_sigterm = last("SigkillSent")
        .duration_since(last("SigtermSent"))
        .expect("order");
    assert!(
        after_sigterm >= Duration::from_millis(1900),
        "SIGKILL {after_sigterm:?} after SIGTERM"
    );
    h.shutdown().await;
}

/// Everything a pod's deletion publishes: the Events as a real kubelet's
/// legacy recorder writes them (no `eventTime`, seconds, `source.host`), no
/// Event for SIGTERM or the exit; the exit in the status one relist (~1 s)
/// after the exact record's exit, with second-precision times; the final
/// delete after that status write; the exact record's moments in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_publishes_what_a_real_kubelet_does() {
    let h = Harness::start();
    h.create(
        "real",
        json!({"args": ["--on-sigterm", "drain", "--idle-grace", "100ms"],
               "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}),
        json!({"terminationGracePeriodSeconds": 10}),
    );
    until("Running", Duration::from_secs(5), || {
        h.pod("real").filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let mut live = h
        .store
        .watch(pods(), Some("default"), Some(h.store.version()))
        .expect("watch")
        .live;
    h.delete("real", 10);
    // Every write of the pod until its deletion, with when it was seen.
    let mut writes: Vec<(Instant, EventType, Arc<Value>)> = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match live.recv().await {
                Ok(ev)
                    if std::ptr::eq(ev.resource, pods())
                        && ev.object["metadata"]["name"] == "real" =>
                {
                    writes.push((Instant::now(), ev.kind, ev.object.clone()));
                    if ev.kind == EventType::Deleted {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("watch failed: {e}"),
            }
        }
    })
    .await
    .expect("deleted in time");

    // The exact record: preStop, SIGTERM, exit, in order.
    let exact: Vec<KubeletSignal> = h
        .exact
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| s.pod == "real")
        .cloned()
        .collect();
    let kinds: Vec<SignalKind> = exact.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            SignalKind::PreStopStarted,
            SignalKind::PreStopFinished,
            SignalKind::Sigterm,
            SignalKind::Exited {
                code: Some(0),
                signal: None
            }
        ]
    );
    assert!(exact.windows(2).all(|w| w[0].at <= w[1].at));
    let pre_stop = exact[2].at - exact[0].at;
    assert!(
        pre_stop >= Duration::from_millis(950) && pre_stop < Duration::from_millis(1800),
        "SIGTERM {pre_stop:?} after the preStop start"
    );
    let exit = exact[3].at;

    // The exit shows in the status after the relist, not before.
    let (seen, _, terminated) = writes
        .iter()
        .find(|(_, _, p)| !container(p)["state"]["terminated"].is_null())
        .expect("a status write with the container terminated");
    let delay = seen.saturating_duration_since(exit);
    assert!(
        delay >= Duration::from_millis(900) && delay < Duration::from_millis(2500),
        "terminated state {delay:?} after the exit (relist 1 s)"
    );
    let t = &container(terminated)["state"]["terminated"];
    for field in ["startedAt", "finishedAt"] {
        let v = t[field].as_str().expect(field);
        assert!(
            v.len() == "2024-01-01T00:00:00Z".len() && v.ends_with('Z'),
            "{field} {v}: seconds precision"
        );
    }
    // The final delete comes after the terminal status write.
    let kinds: Vec<EventType> = writes.iter().map(|w| w.1).collect();
    assert_eq!(kinds.last(), Some(&EventType::Deleted), "{kinds:?}");
    let before_delete = &writes[writes.len() - 2];
    assert_eq!(before_delete.1, EventType::Modified);
    assert_eq!(before_delete.2["status"]["phase"], "Succeeded");

    // The Events: a real kubelet's reasons, messages and fields.
    let (items, _) = h.store.list(events_kind(), Some("default"));
    let events: Vec<&Arc<Value>> = items
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "real")
        .collect();
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    for r in ["Pulled", "Created", "Started", "Killing"] {
        assert!(reasons.contains(&r), "{r} in {reasons:?}");
    }
    for r in [
        "PreStopStarted",
        "PreStopFinished",
        "SigtermSent",
        "SigkillSent",
        "ContainerExited",
    ] {
        assert!(!reasons.contains(&r), "no {r} Event: {reasons:?}");
    }
    for e in &events {
        assert!(e["eventTime"].is_null(), "eventTime unset: {e}");
        assert_eq!(e["count"], 1, "{e}");
        assert_eq!(
            e["source"],
            json!({"component": "kubelet", "host": NODE}),
            "{e}"
        );
        assert_eq!(e["reportingComponent"], "kubelet", "{e}");
        assert_eq!(e["reportingInstance"], NODE, "{e}");
        let first = e["firstTimestamp"].as_str().expect("firstTimestamp");
        assert_eq!(e["lastTimestamp"].as_str(), Some(first), "{e}");
        assert!(
            humantime::parse_rfc3339(first).is_ok() && !first.contains('.'),
            "seconds precision: {first}"
        );
    }
    let killing = events
        .iter()
        .find(|e| e["reason"] == "Killing")
        .expect("Killing");
    assert_eq!(killing["message"], "Stopping container app");
    assert_eq!(killing["type"], "Normal");
    h.shutdown().await;
}
