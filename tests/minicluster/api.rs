//! The embedded API server against real clients: the `kubectl` on this
//! machine (the dispatcher runs the bundled kubectl matching `/version`,
//! 1.33 here) over HTTPS with the cluster's CA and client certificate, and
//! kube-rs through the same kubeconfig.

use crate::common;

use std::{path::PathBuf, process::Output, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Pod},
};
use kube::{
    Api, Client, Config,
    api::{EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use rolltest_minicluster::{
    cluster::{ClusterOptions, EmbeddedCluster},
    resources::ResourceKind,
};
use serde_json::json;
use tempfile::TempDir;

/// An embedded cluster running real `rolltest serve` pods, with its
/// kubeconfig on disk for the machine's kubectl (also used by `verbs` and
/// `pdb`).
pub(crate) struct Harness {
    pub(crate) cluster: EmbeddedCluster,
    dir: TempDir,
}

impl Harness {
    pub(crate) async fn start() -> Harness {
        let cluster = EmbeddedCluster::start(&ClusterOptions {
            demo_binary: Some(env!("CARGO_BIN_EXE_rolltest").into()),
            ..ClusterOptions::default()
        })
        .await
        .expect("cluster");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("kubeconfig"), cluster.kubeconfig()).expect("kubeconfig");
        Harness { cluster, dir }
    }

    /// Stops the cluster and its pods.
    pub(crate) async fn shutdown(self) {
        self.cluster.shutdown().await;
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Runs kubectl with this cluster's kubeconfig and a private discovery cache.
    pub(crate) async fn kubectl(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("kubectl timed out")
            .expect("kubectl runs")
    }

    /// Runs kubectl, which must succeed; its stdout.
    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(!out.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn manifest(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("manifest");
        path.to_string_lossy().into_owned()
    }

    async fn client(&self, context: Option<&str>) -> Client {
        common::kube_client(&self.cluster.kubeconfig(), context).await
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: rolltest-demo:v1
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_talks_https_with_client_certificates() {
    let h = Harness::start().await;
    assert!(h.cluster.server.url.starts_with("https://127.0.0.1:"));
    let version = h.ok(&["version", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&version).expect("json");
    assert_eq!(v["serverVersion"]["minor"], "33");
    let nodes = h.ok(&["get", "nodes"]).await;
    assert!(nodes.starts_with("NAME"), "{nodes}");
    assert!(
        nodes.contains("embedded-node-1") && nodes.contains("embedded-node-2"),
        "{nodes}"
    );
    assert!(nodes.contains("Ready"), "{nodes}");
    // The bearer-token context works too.
    let ns = h
        .ok(&[
            "--context",
            "rolltest-embedded-token",
            "get",
            "namespaces",
            "-o",
            "name",
        ])
        .await;
    assert!(ns.contains("namespace/default"), "{ns}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_credentials_get_401() {
    let h = Harness::start().await;
    let kubeconfig = Kubeconfig::from_yaml(&h.cluster.kubeconfig()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.auth_info = Default::default();
    config.default_retry = false;
    let client = Client::try_from(config).expect("client");
    let err = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .expect_err("must be refused");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 401, "{status:?}");
            assert_eq!(status.reason, "Unauthorized");
        }
        other => panic!("expected a 401 Status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_scale_restart_cordon_delete() {
    let h = Harness::start().await;
    let file = h.manifest("web.yaml", DEPLOYMENT);
    let out = h.ok(&["apply", "-f", &file]).await;
    assert!(
        out.contains("deployment.apps/web created") && out.contains("service/web created"),
        "{out}"
    );
    let out = h.ok(&["apply", "-f", &file]).await;
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");

    let d = h.ok(&["get", "deploy", "web", "-o", "json"]).await;
    let d: serde_json::Value = serde_json::from_str(&d).expect("json");
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%",
        "defaults applied"
    );
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let svc = h
        .ok(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}",
        ])
        .await;
    let (ip, node_port) = svc.split_once(' ').expect("two fields");
    assert!(
        ip.parse::<std::net::Ipv4Addr>().expect("ip").is_loopback(),
        "{ip}"
    );
    assert!((30000..=32767).contains(&node_port.parse::<u16>().expect("port")));

    assert!(
        h.ok(&["scale", "deploy", "web", "--replicas=5"])
            .await
            .contains("scaled")
    );
    assert!(
        h.ok(&["rollout", "restart", "deploy", "web"])
            .await
            .contains("restarted")
    );
    let d = h.ok(&["get", "deploy", "web", "-o", "json"]).await;
    let d: serde_json::Value = serde_json::from_str(&d).expect("json");
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(
        d["metadata"]["generation"], 3,
        "scale and restart each bump the generation"
    );
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );

    assert!(
        h.ok(&["cordon", "embedded-node-1"])
            .await
            .contains("cordoned")
    );
    let nodes = h.ok(&["get", "nodes"]).await;
    assert!(nodes.contains("Ready,SchedulingDisabled"), "{nodes}");

    let out = h.ok(&["get", "deploy,svc"]).await;
    assert!(
        out.contains("READY") && out.contains("UP-TO-DATE") && out.contains("deployment.apps/web"),
        "{out}"
    );
    assert!(h.ok(&["delete", "deploy", "web"]).await.contains("deleted"));
    let err = h.fails(&["get", "deploy", "web"]).await;
    assert!(
        err.contains("NotFound") && err.contains("deployments.apps \"web\" not found"),
        "{err}"
    );
    let err = h.fails(&["create", "-f", &file]).await;
    assert!(err.contains("AlreadyExists"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_are_refused_with_field_paths() {
    let h = Harness::start().await;
    let bad = h.manifest(
        "bad.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: one}}\n  template:\n    metadata: {labels: {app: two}}\n    spec:\n      containers: [{name: app, image: i}]\n",
    );
    let err = h.fails(&["apply", "-f", &bad]).await;
    assert!(err.contains("is invalid"), "{err}");
    assert!(err.contains("spec.replicas: Invalid value: -1"), "{err}");
    assert!(err.contains("spec.template.metadata.labels"), "{err}");
    let no_selector = h.manifest(
        "nosel.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nosel}\nspec:\n  template:\n    metadata: {labels: {app: a}}\n    spec:\n      containers: [{name: app, image: i}]\n",
    );
    let err = h.fails(&["create", "-f", &no_selector]).await;
    assert!(err.contains("spec.selector: Required value"), "{err}");
    let unknown = h.manifest(
        "unknown.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: unk}\nspec:\n  bogusField: 1\n  ports: [{port: 80}]\n",
    );
    let err = h.fails(&["apply", "-f", &unknown]).await;
    assert!(err.contains("unknown field \"spec.bogusField\""), "{err}");
    // Nothing was half-applied.
    let out = h.kubectl(&["get", "deploy,svc", "-o", "name"]).await;
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        !names.contains("bad") && !names.contains("nosel") && !names.contains("unk"),
        "{names}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_crud_list_watch_and_expired_versions() {
    let h = Harness::start().await;
    let client = h.client(None).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api", "labels": {"app": "api"}},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "app", "image": "rolltest-demo"}]}}
        }
    }))
    .expect("deployment");
    let created = deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    let rv = created.metadata.resource_version.clone().expect("rv");

    // A watch from that version sees the next change, in order, one event per line.
    let mut stream = Box::pin(
        deployments
            .watch(&WatchParams::default().timeout(10), &rv)
            .await
            .expect("watch"),
    );
    deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("patch");
    use futures_util::StreamExt;
    // The controllers write status too: every event is a MODIFIED of this
    // object, in resourceVersion order, and one of them carries the patch.
    let mut last_rv: u64 = rv.parse().expect("rv");
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event");
        match event {
            WatchEvent::Modified(d) => {
                let v: u64 = d
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .expect("rv");
                assert!(v > last_rv, "events out of order");
                last_rv = v;
                if d.spec.and_then(|s| s.replicas) == Some(4) {
                    break;
                }
            }
            other => panic!("expected MODIFIED, got {other:?}"),
        }
    }

    // A replace carrying a stale resourceVersion is a 409 Conflict, not a lost update.
    match deployments
        .replace("api", &PostParams::default(), &created)
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"), "{s:?}");
            assert!(
                s.message.contains("the object has been modified"),
                "{}",
                s.message
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A negative scale is refused with the field path.
    match deployments
        .patch_scale(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(s.message.contains("spec.replicas"), "{}", s.message);
        }
        other => panic!("expected 422, got {other:?}"),
    }

    // Label selectors on list.
    let list = deployments
        .list(&ListParams::default().labels("app=api"))
        .await
        .expect("list");
    assert_eq!(list.items.len(), 1);
    assert!(
        list.metadata
            .resource_version
            .is_some_and(|v| !v.is_empty())
    );
    let none = deployments
        .list(&ListParams::default().labels("app=other"))
        .await
        .expect("list");
    assert!(none.items.is_empty());

    // A version older than the history is 410 Gone (events: no controller reacts to them).
    let events = ResourceKind::find("", "v1", "events").expect("events");
    for i in 0..(rolltest_minicluster::store::HISTORY + 10) {
        h.cluster
            .store
            .create(
                events,
                "default",
                json!({"metadata": {"name": format!("e{i}")}, "involvedObject": {}}),
            )
            .expect("create");
    }
    let mut old = Box::pin(
        deployments
            .watch(&WatchParams::default(), &rv)
            .await
            .expect("watch"),
    );
    let first = tokio::time::timeout(Duration::from_secs(5), old.next())
        .await
        .expect("in time")
        .expect("an item");
    match first {
        Ok(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_streams_changes() {
    let h = Harness::start().await;
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(h.kubeconfig())
        .arg("--cache-dir")
        .arg(h.dir.path().join("cache"))
        .args(["get", "deploy", "-w", "--request-timeout=8s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("kubectl -w");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let file = h.manifest("web.yaml", DEPLOYMENT);
    h.ok(&["apply", "-f", &file]).await;
    h.ok(&["scale", "deploy", "web", "--replicas=2"]).await;
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("kubectl -w ends")
        .expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NAME") && text.contains("READY"), "{text}");
    assert!(
        text.matches("web ").count() >= 2,
        "created and scaled rows expected:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_respects_the_disruption_budget() {
    let h = Harness::start().await;
    let store = &h.cluster.store;
    let pods_kind = ResourceKind::find("", "v1", "pods").expect("pods");
    let pdb_kind = ResourceKind::find("policy", "v1", "poddisruptionbudgets").expect("pdbs");
    let ready_pod = |name: &str| {
        json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            // A node no kubelet of this cluster serves: the status written here stays.
            "spec": {"nodeName": "external-node", "terminationGracePeriodSeconds": 30, "containers": [{"name": "app", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        })
    };
    for name in ["web-1", "web-2"] {
        store
            .create(pods_kind, "default", ready_pod(name))
            .expect("pod");
    }
    store
        .create(pdb_kind, "default", json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}))
        .expect("pdb");
    let pdb_status = |allowed: i64| {
        let store = store.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let pdb = store.get(pdb_kind, "default", "web").expect("pdb");
                if pdb["status"]["observedGeneration"] == 1
                    && pdb["status"]["disruptionsAllowed"] == allowed
                {
                    return pdb;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "PDB status never allowed {allowed}: {}",
                    pdb["status"]
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The disruption controller: 2 healthy, 2 desired, nothing allowed.
    pdb_status(0).await;
    let client = h.client(None).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let err = pods
        .evict("web-1", &EvictParams::default())
        .await
        .expect_err("blocked");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 429);
            assert_eq!(
                s.message,
                "Cannot evict pod as it would violate the pod's disruption budget."
            );
            let cause = s
                .details
                .and_then(|d| d.causes.into_iter().next())
                .expect("cause");
            assert_eq!(
                cause.message,
                "The disruption budget web needs 2 healthy pods and has 2 currently"
            );
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // A third ready pod makes one disruption allowed: the eviction deletes gracefully and spends it.
    store
        .create(pods_kind, "default", ready_pod("web-3"))
        .expect("pod");
    pdb_status(1).await;
    pods.evict("web-1", &EvictParams::default())
        .await
        .expect("evicted");
    let pod = pods.get("web-1").await.expect("still there, terminating");
    assert!(pod.metadata.deletion_timestamp.is_some());
    assert_eq!(pod.metadata.deletion_grace_period_seconds, Some(30));
    assert!(
        pods.evict("web-2", &EvictParams::default()).await.is_err(),
        "budget spent"
    );
    // kubectl shows the terminating pod as such.
    let out = h.ok(&["get", "pods"]).await;
    assert!(
        out.contains("web-1") && out.contains("Terminating"),
        "{out}"
    );
}
