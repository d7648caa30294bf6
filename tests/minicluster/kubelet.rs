//! The embedded kubelet with real `rolltest serve` processes on loopback:
//! pods are created directly in a `Store` (bound to `embedded-node-1`) and
//! the tests watch status, events and processes: start and readiness, the
//! graceful termination sequence (preStop → SIGTERM → SIGKILL), crash loops,
//! liveness restarts, unmapped images, force deletes and shutdown.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use rolltest_minicluster::{
    kubelet::{ImageMap, Kubelet, KubeletConfig, KubeletHandle},
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
    _dir: TempDir,
}

impl Harness {
    fn start() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::new());
        let images = ImageMap::with_demo_default(PathBuf::from(env!("CARGO_BIN_EXE_rolltest")));
        let kubelet = Kubelet::start(KubeletConfig {
            store: store.clone(),
            nodes: vec![NODE.to_string(), "embedded-node-2".to_string()],
            images: Arc::new(images),
            work_dir: dir.path().join("pods"),
            ips: ips(),
        })
        .expect("kubelet starts");
        Harness {
            store,
            kubelet: Some(kubelet),
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

    /// The pod's events as (eventTime, type, reason, message), in time order.
    fn events(&self, pod: &str) -> Vec<(SystemTime, String, String, String)> {
        let (items, _) = self.store.list(events_kind(), Some("default"));
        let mut events: Vec<_> = items
            .iter()
            .filter(|e| e["involvedObject"]["name"] == pod)
            .map(|e| {
                let at = e["eventTime"].as_str().expect("eventTime");
                (
                    humantime::parse_rfc3339(at).expect("eventTime parses"),
                    e["type"].as_str().unwrap_or("").to_string(),
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
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
        let order: Vec<&str> = events
            .iter()
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
            .collect();
        assert_eq!(
            order,
            [
                "Killing",
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
    // Grace 0 / force delete: the object is gone at once, the process dies.
    h.store
        .delete(pods(), "default", "a", None)
        .expect("force delete");
    until("a's process gone", Duration::from_secs(3), || {
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
    let steps: Vec<(&str, &str)> = events
        .iter()
        .skip_while(|e| e.2 != "Killing")
        .map(|e| (e.1.as_str(), e.2.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("Normal", "Killing"),
            ("Normal", "PreStopStarted"),
            ("Normal", "PreStopFinished"),
            ("Warning", "FailedPreStopHook"),
            ("Normal", "SigtermSent"),
            ("Normal", "ContainerExited"),
        ]
    );
    let failed = events
        .iter()
        .find(|e| e.2 == "FailedPreStopHook")
        .expect("event");
    assert_eq!(failed.3, "PreStopHook failed");
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
