//! The whole embedded cluster with real pods: Deployments become processes
//! behind a service proxy; termination runs in the kubelet's order with
//! timestamps; the proxy keeps routing to a deleted pod for the propagation
//! delay; and no process outlives `rolltest cluster up`, whichever way it ends.

use crate::common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use rolltest_minicluster::{
    cluster::{ClusterOptions, EmbeddedCluster},
    proxy::{Propagation, ProxyMode},
    resources::ResourceKind,
};
use serde_json::{Value, json};

fn kind(group: &str, plural: &str) -> &'static ResourceKind {
    ResourceKind::find(group, "v1", plural).expect("kind")
}

fn options(proxy: ProxyMode, propagation: Propagation) -> ClusterOptions {
    ClusterOptions {
        proxy,
        propagation,
        demo_binary: Some(env!("CARGO_BIN_EXE_rolltest").into()),
        ..ClusterOptions::default()
    }
}

fn demo(
    name: &str,
    replicas: i64,
    node_port: u16,
    pre_stop_seconds: i64,
    grace: i64,
) -> (Value, Value) {
    let deployment = json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "containers": [{
                        "name": "app", "image": "rolltest-demo:v1",
                        "args": ["--on-sigterm", "drain"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                        "lifecycle": {"preStop": {"sleep": {"seconds": pre_stop_seconds}}},
                    }],
                },
            },
        },
    });
    let service = json!({
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080, "nodePort": node_port}]},
    });
    (deployment, service)
}

/// Creates through the validating API path (defaults applied) by way of the store's API semantics.
async fn apply(cluster: &EmbeddedCluster, deployment: Value, service: Value) {
    let client = kube_client(cluster).await;
    let d: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(deployment).expect("deployment");
    let s: k8s_openapi::api::core::v1::Service = serde_json::from_value(service).expect("service");
    kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "default")
        .create(&Default::default(), &d)
        .await
        .expect("create deployment");
    kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(client, "default")
        .create(&Default::default(), &s)
        .await
        .expect("create service");
}

async fn kube_client(cluster: &EmbeddedCluster) -> kube::Client {
    common::kube_client(&cluster.kubeconfig(), None).await
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ready_pods(cluster: &EmbeddedCluster, app: &str) -> Vec<Arc<Value>> {
    cluster
        .store
        .list(kind("", "pods"), Some("default"))
        .0
        .into_iter()
        .filter(|p| {
            p["metadata"]["labels"]["app"] == app
                && p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .collect()
}

fn free_node_port() -> u16 {
    // A port in the NodePort range that nothing listens on right now.
    for _ in 0..200 {
        let port = 30000 + (std::process::id() as u16 ^ rand_u16()) % 2700;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free node port");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos / 1000) as u16
}

async fn get_pod(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    buf.lines()
        .find_map(|l| l.strip_prefix("x-rolltest-pod: "))
        .map(|p| p.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_serves_through_the_node_port_and_terminates_in_order() {
    let cluster = EmbeddedCluster::start(&options(
        ProxyMode::L4,
        Propagation::fixed(Duration::from_millis(300)),
    ))
    .await
    .expect("cluster");
    let port = free_node_port();
    let (d, s) = demo("web", 3, port, 1, 10);
    apply(&cluster, d, s).await;
    wait_until("3 ready pods", Duration::from_secs(30), || {
        ready_pods(&cluster, "web").len() == 3
    })
    .await;
    // Through the NodePort, requests reach the Deployment's pods.
    let names: Vec<String> = ready_pods(&cluster, "web")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 && tokio::time::Instant::now() < deadline {
        if let Some(p) = get_pod(port).await {
            assert!(names.contains(&p), "{p} is not one of {names:?}");
            seen.insert(p);
        }
    }
    assert!(seen.len() >= 2, "connections spread over pods: {seen:?}");

    // Delete one pod: the kubelet says Killing, as a real one does (legacy
    // Event: seconds, no eventTime), and nothing about SIGTERM or the exit.
    let victim = names[0].clone();
    rolltest_minicluster::api::graceful_delete_pod(&cluster.store, "default", &victim, None, None)
        .expect("delete");
    wait_until("the pod to be gone", Duration::from_secs(20), || {
        cluster
            .store
            .get(kind("", "pods"), "default", &victim)
            .is_none()
    })
    .await;
    let events = cluster.store.list(kind("", "events"), Some("default")).0;
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["involvedObject"]["name"] == victim.as_str())
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"Killing"), "{reasons:?}");
    assert!(
        !reasons
            .iter()
            .any(|r| ["SigtermSent", "ContainerExited"].contains(r)),
        "{reasons:?}"
    );
    let killing = events
        .iter()
        .find(|e| e["involvedObject"]["name"] == victim.as_str() && e["reason"] == "Killing")
        .expect("Killing");
    assert!(killing["eventTime"].is_null(), "{killing}");
    assert_eq!(killing["source"]["component"], "kubelet");
    // The ReplicaSet replaced it.
    wait_until("a replacement", Duration::from_secs(20), || {
        ready_pods(&cluster, "web").len() == 3
    })
    .await;
    // kubectl logs through the API: the pod's own log lines.
    let client = kube_client(&cluster).await;
    let pod = ready_pods(&cluster, "web")[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let logs = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client, "default")
        .logs(&pod, &Default::default())
        .await
        .expect("logs");
    assert!(logs.contains("listening on"), "{logs}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_keeps_routing_to_a_deleted_pod_for_the_propagation_delay() {
    // l7 picks a backend per request, so the change shows per request.
    let propagation = Duration::from_millis(1500);
    let cluster = EmbeddedCluster::start(&options(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        Propagation::fixed(propagation),
    ))
    .await
    .expect("cluster");
    let port = free_node_port();
    // A long preStop keeps the deleted pod serving, so requests that reach it succeed.
    let (d, s) = demo("lag", 2, port, 4, 10);
    apply(&cluster, d, s).await;
    wait_until("2 ready pods", Duration::from_secs(30), || {
        ready_pods(&cluster, "lag").len() == 2
    })
    .await;
    tokio::time::sleep(propagation + Duration::from_millis(300)).await;
    let victim = ready_pods(&cluster, "lag")[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let deleted_at = tokio::time::Instant::now();
    rolltest_minicluster::api::graceful_delete_pod(&cluster.store, "default", &victim, None, None)
        .expect("delete");
    let mut early_hits = 0;
    let mut late_hits = 0;
    let mut late_total = 0;
    while deleted_at.elapsed() < propagation + Duration::from_millis(1500) {
        let pod = get_pod(port).await;
        let elapsed = deleted_at.elapsed();
        if elapsed < propagation - Duration::from_millis(300) {
            early_hits += usize::from(pod.as_deref() == Some(victim.as_str()));
        } else if elapsed > propagation + Duration::from_millis(400) {
            late_total += 1;
            late_hits += usize::from(pod.as_deref() == Some(victim.as_str()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        early_hits > 0,
        "before the proxy applied the change, the deleted pod still got requests"
    );
    assert!(
        late_total > 10 && late_hits == 0,
        "after it, none: {late_hits} of {late_total}"
    );
    cluster.shutdown().await;
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| !r.trim().starts_with('Z')))
        .unwrap_or(false)
}

/// Starts `rolltest cluster up` with one demo Deployment, returns it and its pods' pids.
#[allow(clippy::zombie_processes)] // the caller waits for it after signalling it
fn cluster_up_with_pods(dir: &std::path::Path) -> (std::process::Child, Vec<i32>) {
    let kubeconfig = dir.join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolltest"))
        .args(["cluster", "up", "--kubeconfig"])
        .arg(&kubeconfig)
        // Its work directory (pod logs) goes here: a SIGKILL leaves it.
        .env("TMPDIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cluster up");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let up = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(up.contains("embedded cluster up"), "{up}");
    std::thread::spawn(move || for _ in lines {});
    let manifest = dir.join("d.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: app\n        image: rolltest-demo:v1\n        args: [\"--on-sigterm\", \"ignore\"]\n        lifecycle: {postStart: null}\n",
    )
    .expect("manifest");
    let kubectl = |args: &[&str]| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(args)
            .output()
            .expect("kubectl")
    };
    let out = kubectl(&["apply", "-f", manifest.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = kubectl(&[
            "get",
            "pods",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].containerID}",
        ]);
        let ids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|id| id.strip_prefix("rolltest://").and_then(|p| p.parse().ok()))
            .collect();
        if ids.len() == 2 && ids.iter().all(|p| alive(*p)) {
            return (child, ids);
        }
        assert!(std::time::Instant::now() < deadline, "pods did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_all_gone(pids: &[i32], how: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "pods survived {how}: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn no_pod_outlives_cluster_up_after_ctrl_c_sigterm_or_sigkill() {
    for (signal, how) in [
        (libc::SIGINT, "Ctrl-C"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGKILL, "SIGKILL"),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let (mut child, pids) = cluster_up_with_pods(dir.path());
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let _ = child.wait();
        // The apps ignore SIGTERM: only a SIGKILL of their groups ends them.
        assert_all_gone(&pids, how);
        // Its work directory goes too, unless it had no chance to remove it.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("rolltest-cluster-"))
            .collect();
        assert_eq!(left.is_empty(), signal != libc::SIGKILL, "{how}: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_endpoints_refuses_connections_like_kube_proxys_reject() {
    let cluster = EmbeddedCluster::start(&options(
        ProxyMode::L4,
        Propagation::fixed(Duration::from_millis(200)),
    ))
    .await
    .expect("cluster");
    let port = free_node_port();
    // No replica: the Service has no endpoint at all.
    let (d, s) = demo("empty", 0, port, 1, 10);
    apply(&cluster, d, s).await;
    wait_until("the node port listener", Duration::from_secs(10), || {
        cluster
            .service_addresses()
            .iter()
            .any(|a| a.node_port && a.listen.port() == port)
    })
    .await;
    for _ in 0..3 {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
            Ok(_) => panic!("connect() succeeded: REJECT refuses it"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_through_a_stale_view_to_a_torn_down_pod_times_out() {
    // The proxy learns of the deletion 5 s late; the pod is gone long before.
    let propagation = Duration::from_secs(5);
    let cluster = EmbeddedCluster::start(&options(ProxyMode::L4, Propagation::fixed(propagation)))
        .await
        .expect("cluster");
    let port = free_node_port();
    let (mut d, s) = demo("gone", 1, port, 1, 1);
    // No preStop, and an app that exits on SIGTERM: the pod is deleted at once.
    let container = &mut d["spec"]["template"]["spec"]["containers"][0];
    container["args"] = json!(["--on-sigterm", "exit"]);
    container
        .as_object_mut()
        .expect("container")
        .remove("lifecycle");
    apply(&cluster, d, s).await;
    wait_until("1 ready pod", Duration::from_secs(30), || {
        ready_pods(&cluster, "gone").len() == 1
    })
    .await;
    let served = tokio::time::Instant::now() + propagation + Duration::from_secs(2);
    let victim = loop {
        if let Some(p) = get_pod(port).await {
            break p;
        }
        assert!(tokio::time::Instant::now() < served, "the pod never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deleted_at = tokio::time::Instant::now();
    rolltest_minicluster::api::graceful_delete_pod(&cluster.store, "default", &victim, None, None)
        .expect("delete");
    wait_until("the pod to be gone", Duration::from_secs(3), || {
        cluster
            .store
            .get(kind("", "pods"), "default", &victim)
            .is_none()
    })
    .await;
    // Its sandbox is gone, the proxy still routes to it: no answer (before,
    // the kernel refused its loopback address and the client was reset).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the listener still has the pod in its view");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await;
    assert!(
        deleted_at.elapsed() < propagation,
        "the view was no longer stale: the test proves nothing"
    );
    assert!(
        read.is_err(),
        "a torn-down pod answers nothing, got {read:?}"
    );
    drop(stream);
    cluster.shutdown().await;
}
