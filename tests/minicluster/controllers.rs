//! The control loops against a stand-in kubelet (pods become Running and
//! Ready when bound, terminating pods go away after a short grace), so the
//! controllers' arithmetic is checked at every store change without real
//! processes: the rolling-update bounds, Recreate, EndpointSlice conditions,
//! PDB status, and `kubectl rollout status` / `kubectl drain` end to end.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rolltest_minicluster::{
    cluster::{ClusterOptions, EmbeddedCluster},
    controllers::{Controllers, util},
    resources::ResourceKind,
    store::{Store, now_rfc3339},
};
use serde_json::{Value, json};

fn kind(group: &str, plural: &str) -> &'static ResourceKind {
    let version = "v1";
    ResourceKind::find(group, version, plural).expect("kind")
}

/// Marks bound pods Running+Ready at once, and removes terminating pods after `grace`.
fn fake_kubelet(
    store: Arc<Store>,
    grace: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods = kind("", "pods");
        let mut ip = 0u32;
        let mut terminating_since: std::collections::HashMap<String, tokio::time::Instant> =
            Default::default();
        while !stop.load(Ordering::Relaxed) {
            for pod in store.list(pods, None).0 {
                let ns = util::namespace(&pod).to_string();
                let name = util::name(&pod).to_string();
                if !pod["metadata"]["deletionTimestamp"].is_null() {
                    let since = *terminating_since
                        .entry(util::uid(&pod).to_string())
                        .or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= grace {
                        let _ = store.delete(pods, &ns, &name, Some(util::uid(&pod)));
                    }
                    continue;
                }
                if pod["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
                    && pod["status"]["podIP"].is_null()
                {
                    ip += 1;
                    let _ = store.update(pods, &ns, &name, |p| {
                        let now = now_rfc3339();
                        p["status"]["phase"] = json!("Running");
                        p["status"]["podIP"] = json!(format!("127.0.9.{}", ip % 250 + 1));
                        p["status"]["conditions"] = json!([
                            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                            {"type": "Ready", "status": "True", "lastTransitionTime": now},
                        ]);
                        p["status"]["containerStatuses"] = json!([{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": now}}}]);
                        Ok(())
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// A store with a namespace and a node, the controllers, and the stand-in kubelet.
fn control_plane(
    grace: Duration,
) -> (
    Arc<Store>,
    Arc<AtomicBool>,
    tokio::task::JoinHandle<()>,
    Controllers,
) {
    let store = Arc::new(Store::new());
    store
        .create(
            kind("", "namespaces"),
            "",
            json!({"metadata": {"name": "default"}}),
        )
        .expect("ns");
    store
        .create(
            kind("", "nodes"),
            "",
            json!({"metadata": {"name": "n1"}, "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .expect("node");
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = fake_kubelet(store.clone(), grace, stop.clone());
    let controllers = Controllers::start(store.clone()).expect("controllers");
    (store, stop, kubelet, controllers)
}

fn deployment(name: &str, replicas: i64, strategy: Value) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "rolltest-demo"}]}},
        },
    })
}

async fn wait_for(store: &Store, what: &str, mut done: impl FnMut(&Store) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(store) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rolled_out(store: &Store, name: &str, replicas: i64) -> bool {
    let Some(d) = store.get(kind("apps", "deployments"), "default", name) else {
        return false;
    };
    let s = &d["status"];
    s["observedGeneration"] == d["metadata"]["generation"]
        && s["updatedReplicas"].as_i64() == Some(replicas)
        && s["replicas"].as_i64() == Some(replicas)
        && s["availableReplicas"].as_i64() == Some(replicas)
        && store
            .list(kind("", "pods"), Some("default"))
            .0
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == name)
            .count() as i64
            == replicas
}

/// Runs a rollout and checks, at every store change, the Deployment
/// controller's bounds: at most replicas + maxSurge non-terminating pods, at
/// least replicas − maxUnavailable ready ones.
async fn check_rollout(
    replicas: i64,
    surge: Value,
    unavailable: Value,
    max_total: usize,
    min_ready: usize,
) {
    let (store, stop, kubelet, controllers) = control_plane(Duration::from_millis(150));
    let deployments = kind("apps", "deployments");
    store
        .create(deployments, "default", deployment("web", replicas, json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})))
        .expect("create");
    wait_for(&store, "first rollout", |s| rolled_out(s, "web", replicas)).await;

    let mut events = store.watch_all();
    store
        .update(deployments, "default", "web", |d| {
            d["spec"]["template"]["metadata"]["annotations"] =
                json!({"kubectl.kubernetes.io/restartedAt": now_rfc3339()});
            Ok(())
        })
        .expect("restart");
    let checker = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen_max = 0;
            let mut seen_min = usize::MAX;
            let mut old_hashes: HashSet<String> = HashSet::new();
            loop {
                match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                    Ok(Ok(_)) => {}
                    _ => break,
                }
                let pods = store.list(kind("", "pods"), Some("default")).0;
                let active: Vec<_> = pods.iter().filter(|p| util::pod_active(p)).collect();
                let ready = active.iter().filter(|p| util::pod_ready(p)).count();
                seen_max = seen_max.max(active.len());
                seen_min = seen_min.min(ready);
                assert!(
                    active.len() <= max_total,
                    "{} non-terminating pods > {max_total}",
                    active.len()
                );
                assert!(ready >= min_ready, "{ready} ready pods < {min_ready}");
                for p in &pods {
                    if let Some(h) = p["metadata"]["labels"]["pod-template-hash"].as_str() {
                        old_hashes.insert(h.to_string());
                    }
                }
                if rolled_out(&store, "web", replicas) && old_hashes.len() >= 2 {
                    let hashes: HashSet<_> = pods
                        .iter()
                        .filter_map(|p| p["metadata"]["labels"]["pod-template-hash"].as_str())
                        .collect();
                    if hashes.len() == 1 {
                        return (seen_max, seen_min);
                    }
                }
            }
            panic!("rollout did not finish");
        })
    };
    let (seen_max, seen_min) = checker.await.expect("checker");
    assert!(
        seen_max > replicas as usize || seen_min < replicas as usize,
        "the rollout surged or dipped as allowed"
    );
    let rss = store.list(kind("apps", "replicasets"), Some("default")).0;
    assert_eq!(rss.len(), 2, "old and new ReplicaSet");
    assert!(
        rss.iter().any(|rs| rs["spec"]["replicas"] == 0),
        "old ReplicaSet scaled to 0"
    );
    let d = store.get(deployments, "default", "web").expect("d");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let conditions = d["status"]["conditions"].as_array().expect("conditions");
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True")
    );
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable")
    );
    stop.store(true, Ordering::Relaxed);
    controllers.stop();
    let _ = kubelet.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_6_replicas_surge_25pct_unavailable_0() {
    // surge ceil(1.5) = 2, unavailable 0: at most 8 pods, never fewer than 6 ready.
    check_rollout(6, json!("25%"), json!(0), 8, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_10_replicas_25pct_25pct() {
    // surge ceil(2.5) = 3, unavailable floor(2.5) = 2.
    check_rollout(10, json!("25%"), json!("25%"), 13, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_4_replicas_surge_0_unavailable_1() {
    check_rollout(4, json!(0), json!(1), 4, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_every_old_pod_before_starting_new_ones() {
    let (store, stop, kubelet, controllers) = control_plane(Duration::from_millis(200));
    let deployments = kind("apps", "deployments");
    store
        .create(
            deployments,
            "default",
            deployment("db", 3, json!({"type": "Recreate"})),
        )
        .expect("create");
    wait_for(&store, "first rollout", |s| rolled_out(s, "db", 3)).await;
    let first_hash = store.list(kind("", "pods"), Some("default")).0[0]["metadata"]["labels"]["pod-template-hash"].clone();
    let mut events = store.watch_all();
    store
        .update(deployments, "default", "db", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("rolltest-demo:v2");
            Ok(())
        })
        .expect("update");
    loop {
        tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("event")
            .expect("open");
        let pods = store.list(kind("", "pods"), Some("default")).0;
        let old = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["pod-template-hash"] == first_hash)
            .count();
        let new = pods.len() - old;
        assert!(
            old == 0 || new == 0,
            "old and new pods side by side: {old} old, {new} new"
        );
        if rolled_out(&store, "db", 3) && old == 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    controllers.stop();
    let _ = kubelet.await;
}

/// Scale-down picks pods with upstream's ranking (`ActivePodsWithRanks`):
/// a lower `controller.kubernetes.io/pod-deletion-cost` goes first, before
/// "ready most recently" is asked; the pod chosen here has been ready the
/// longest, which the old newest-first ranking kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_deletes_the_lowest_pod_deletion_cost_first() {
    let (store, stop, kubelet, controllers) = control_plane(Duration::from_millis(100));
    let (deployments, pods) = (kind("apps", "deployments"), kind("", "pods"));
    store
        .create(
            deployments,
            "default",
            deployment("rank", 3, json!({"type": "RollingUpdate"})),
        )
        .expect("create");
    wait_for(&store, "rollout", |s| rolled_out(s, "rank", 3)).await;
    let mut names: Vec<String> = store
        .list(pods, Some("default"))
        .0
        .iter()
        .map(|p| util::name(p).to_string())
        .collect();
    names.sort();
    let cheap = names[0].clone();
    store
        .update(pods, "default", &cheap, |p| {
            p["metadata"]["annotations"] =
                json!({"controller.kubernetes.io/pod-deletion-cost": "-10"});
            p["status"]["conditions"][1]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
            Ok(())
        })
        .expect("annotate");
    store
        .update(deployments, "default", "rank", |d| {
            d["spec"]["replicas"] = json!(2);
            Ok(())
        })
        .expect("scale");
    wait_for(&store, "one pod terminating", |s| {
        s.list(pods, Some("default"))
            .0
            .iter()
            .any(|p| !p["metadata"]["deletionTimestamp"].is_null())
            || s.get(pods, "default", &cheap).is_none()
    })
    .await;
    let deleting: Vec<String> = store
        .list(pods, Some("default"))
        .0
        .iter()
        .filter(|p| !p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| util::name(p).to_string())
        .collect();
    let gone = store.get(pods, "default", &cheap).is_none();
    assert!(
        gone || deleting == vec![cheap.clone()],
        "deleted {deleting:?}, expected {cheap}"
    );
    wait_for(&store, "two pods left", |s| {
        s.list(pods, Some("default")).0.len() == 2
    })
    .await;
    assert!(store.get(pods, "default", &cheap).is_none());
    stop.store(true, Ordering::Relaxed);
    controllers.stop();
    let _ = kubelet.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslices_and_pdb_status_follow_pods() {
    let (store, stop, kubelet, controllers) = control_plane(Duration::from_secs(2));
    store
        .create(
            kind("apps", "deployments"),
            "default",
            deployment("api", 3, json!({"type": "RollingUpdate"})),
        )
        .expect("d");
    store
        .create(kind("", "services"), "default", json!({"metadata": {"name": "api"}, "spec": {"selector": {"app": "api"}, "ports": [{"port": 80, "targetPort": 8080}]}}))
        .expect("svc");
    store
        .create(kind("policy", "poddisruptionbudgets"), "default", json!({"metadata": {"name": "api"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "api"}}}}))
        .expect("pdb");
    let slices = kind("discovery.k8s.io", "endpointslices");
    wait_for(&store, "3 ready endpoints", |s| {
        s.list(slices, Some("default")).0.first().is_some_and(|sl| {
            sl["endpoints"]
                .as_array()
                .is_some_and(|e| e.len() == 3 && e.iter().all(|x| x["conditions"]["ready"] == true))
        })
    })
    .await;
    let slice = store.list(slices, Some("default")).0[0].clone();
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "api"
    );
    assert_eq!(slice["ports"][0]["port"], 8080);
    wait_for(&store, "pdb status", |s| {
        s.get(kind("policy", "poddisruptionbudgets"), "default", "api")
            .is_some_and(|p| {
                p["status"]["disruptionsAllowed"] == 1 && p["status"]["currentHealthy"] == 3
            })
    })
    .await;
    // Delete one pod: its endpoint turns ready=false, serving=true, terminating=true at once.
    let victim = store.list(kind("", "pods"), Some("default")).0[0].clone();
    rolltest_minicluster::api::graceful_delete_pod(
        &store,
        "default",
        util::name(&victim),
        Some(30),
        None,
    )
    .expect("delete");
    wait_for(&store, "terminating endpoint", |s| {
        s.list(slices, Some("default")).0[0]["endpoints"]
            .as_array()
            .is_some_and(|eps| {
                eps.iter().any(|e| {
                    e["targetRef"]["name"] == util::name(&victim)
                        && e["conditions"]
                            == json!({"ready": false, "serving": true, "terminating": true})
                })
            })
    })
    .await;
    wait_for(&store, "endpoint removed after the pod is gone", |s| {
        s.list(slices, Some("default")).0[0]["endpoints"]
            .as_array()
            .is_some_and(|eps| {
                !eps.iter()
                    .any(|e| e["targetRef"]["name"] == util::name(&victim))
            })
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    controllers.stop();
    let _ = kubelet.await;
}

async fn kubectl(
    kubeconfig: &std::path::Path,
    cache: &std::path::Path,
    args: &[&str],
) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl in time")
    .expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_and_drain_blocked_by_pdb_with_real_pods() {
    // The real thing: the cluster's own kubelet runs the pods as processes.
    let cluster = EmbeddedCluster::start(&ClusterOptions {
        demo_binary: Some(env!("CARGO_BIN_EXE_rolltest").into()),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    let dir = tempfile::tempdir().expect("dir");
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, cluster.kubeconfig()).expect("kubeconfig");
    let cache = dir.path().join("cache");
    let manifest = dir.path().join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 4\n  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: app, image: rolltest-demo}]\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  minAvailable: 3\n  selector: {matchLabels: {app: web}}\n",
    )
    .expect("manifest");
    let (ok, out) = kubectl(
        &kc,
        &cache,
        &["apply", "-f", manifest.to_str().expect("path")],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &kc,
        &cache,
        &["rollout", "status", "deploy/web", "--timeout=60s"],
    )
    .await;
    assert!(ok && out.contains("successfully rolled out"), "{out}");
    let (_, wide) = kubectl(&kc, &cache, &["get", "pods", "-o", "wide"]).await;
    assert!(
        wide.contains("embedded-node-1") && wide.contains("embedded-node-2"),
        "pods spread over nodes:\n{wide}"
    );
    // With node 2 cordoned, the restart puts every new pod on node 1.
    let (ok, out) = kubectl(&kc, &cache, &["cordon", "embedded-node-2"]).await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&kc, &cache, &["rollout", "restart", "deploy/web"]).await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &kc,
        &cache,
        &["rollout", "status", "deploy/web", "--timeout=60s"],
    )
    .await;
    assert!(ok && out.contains("successfully rolled out"), "{out}");
    let (ok, table) = kubectl(&kc, &cache, &["get", "pods"]).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert!(
        ok && header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{table}"
    );
    assert!(
        table.contains("1/1") && table.contains("Running"),
        "{table}"
    );
    let (ok, out) = kubectl(
        &kc,
        &cache,
        &[
            "get",
            "rs,endpointslices,pdb,events,nodes,svc",
            "-o",
            "wide",
        ],
    )
    .await;
    assert!(
        ok && out.contains("replicaset.apps/web-")
            && out.contains("poddisruptionbudget.policy/web"),
        "{out}"
    );
    let (ok, out) = kubectl(
        &kc,
        &cache,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector",
            "spec.nodeName=embedded-node-1",
            "-o",
            "name",
        ],
    )
    .await;
    assert!(ok && !out.trim().is_empty(), "{out}");
    let (ok, out) = kubectl(&kc, &cache, &["uncordon", "embedded-node-2"]).await;
    assert!(ok, "{out}");

    // Drain node 1: evictions beyond the budget get 429 and kubectl retries until replacements are ready.
    let (ok, out) = kubectl(
        &kc,
        &cache,
        &[
            "drain",
            "embedded-node-1",
            "--ignore-daemonsets",
            "--timeout=90s",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("drained"), "{out}");
    assert!(
        out.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "four pods on the node and one disruption allowed at a time: evictions must have been refused and retried:\n{out}"
    );
    let pods = cluster.store.list(kind("", "pods"), Some("default")).0;
    assert!(
        pods.iter()
            .filter(|p| util::pod_active(p))
            .all(|p| p["spec"]["nodeName"] == "embedded-node-2"),
        "after the drain every pod runs on node 2"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_proxies_follow_endpointslices() {
    use rolltest_minicluster::{
        proxy::{Propagation, ProxyMode, SyncRunner},
        services::ServiceProxies,
    };
    // A real app on a loopback pod IP, and a port for the "NodePort".
    let app_port = std::net::TcpListener::bind("127.0.1.77:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut app = std::process::Command::new(env!("CARGO_BIN_EXE_rolltest"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.1.77:{app_port}"),
            "--pod-name",
            "web-abc",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("app");
    let node_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let store = Arc::new(Store::new());
    store
        .create(kind("", "services"), "default", json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "127.3.250.1", "ports": [{"port": 80, "nodePort": node_port}]}}))
        .expect("svc");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let proxies = ServiceProxies::start(
        store.clone(),
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        SyncRunner::start(Propagation::fixed(Duration::from_millis(200))).expect("runner"),
        tx,
        Arc::default(),
    )
    .expect("proxies");
    wait_for(&store, "listeners", |_| proxies.addresses().len() == 2).await;
    assert!(
        proxies
            .addresses()
            .iter()
            .any(|a| a.node_port && a.listen.port() == node_port)
    );
    let get = || async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", node_port))
            .await
            .expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        buf
    };
    // No endpoints yet: the L7 proxy answers 503.
    assert!(get().await.starts_with("HTTP/1.1 503"));
    store
        .create(
            kind("discovery.k8s.io", "endpointslices"),
            "default",
            json!({
                "metadata": {"name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "", "port": app_port, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["127.0.1.77"], "conditions": {"ready": true, "serving": true, "terminating": false}, "targetRef": {"kind": "Pod", "name": "web-abc"}}],
            }),
        )
        .expect("slice");
    // Not before the propagation delay...
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        get().await.starts_with("HTTP/1.1 503"),
        "applied before the delay"
    );
    // ...but after it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reply = get().await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains("x-rolltest-pod: web-abc"),
        "{reply}"
    );
    // The proxy reported the applied view and who served the request.
    let mut served_by_pod = false;
    while let Ok(ev) = rx.try_recv() {
        if let rolltest_minicluster::proxy::ProxyEvent::Served { pod: Some(p), .. } = ev {
            served_by_pod |= p == "web-abc";
        }
    }
    assert!(served_by_pod);
    proxies.stop();
    let _ = app.kill();
    let _ = app.wait();
}
