//! PodDisruptionBudgets as policy/v1 defines them, against the embedded
//! cluster: the eviction subresource (`unhealthyPodEvictionPolicy`, label
//! selector objects, `Retry-After`, the `DisruptionTarget` condition) and
//! the disruption controller (which pods a selector selects, fail-safe), and
//! `kubectl drain` against a budget over unready pods.
//!
//! The eviction tests serve the API without controllers, so a budget's
//! status is exactly what the test writes (the controller would rewrite it).

use std::{sync::Arc, time::Duration};

use crate::api::Harness;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    api::{EvictParams, PostParams},
};
use rolltest_minicluster::{
    api::{self, ApiState},
    cluster::{ClusterOptions, EmbeddedCluster},
    controllers::Controllers,
    resources::ResourceKind,
    server::ApiServer,
    store::{EventType, Store},
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn kind(group: &str, plural: &str) -> &'static ResourceKind {
    ResourceKind::find(group, "v1", plural).expect("kind")
}

fn pods_kind() -> &'static ResourceKind {
    kind("", "pods")
}

fn pdbs() -> &'static ResourceKind {
    kind("policy", "poddisruptionbudgets")
}

/// A Running pod on a node no kubelet serves (its status stays as written).
fn pod(name: &str, labels: Value, ready: bool) -> Value {
    let status = if ready { "True" } else { "False" };
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "external-node", "terminationGracePeriodSeconds": 30,
                 "containers": [{"name": "app", "image": "i"}]},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    })
}

/// A budget with the status its controller would have written.
fn budget(name: &str, spec: Value, healthy: i64, desired: i64, allowed: i64) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": spec,
        "status": {"observedGeneration": 1, "currentHealthy": healthy, "desiredHealthy": desired,
                   "disruptionsAllowed": allowed, "expectedPods": healthy},
    })
}

/// The API server over plain HTTP on loopback, without controllers.
struct ApiOnly {
    store: Arc<Store>,
    server: ApiServer,
    client: Client,
}

impl ApiOnly {
    async fn start() -> ApiOnly {
        let store = Arc::new(Store::new());
        store
            .create(
                kind("", "namespaces"),
                "",
                json!({"metadata": {"name": "default"}}),
            )
            .expect("namespace");
        let state = ApiState::new(store.clone());
        let server = ApiServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            move |address| {
                let _ = state.server_address.set(address);
                api::router(state)
            },
            None,
        )
        .await
        .expect("server");
        let mut config = Config::new(server.url.parse().expect("url"));
        config.default_retry = false;
        let client = Client::try_from(config).expect("client");
        ApiOnly {
            store,
            server,
            client,
        }
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// POSTs an eviction as kubectl does; returns the status code, the
    /// `Retry-After` header and the body.
    async fn raw_evict(&self, ns: &str, name: &str) -> (u16, Option<String>, Value) {
        let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": name, "namespace": ns}})
        .to_string();
        let mut tcp = tokio::net::TcpStream::connect(self.server.addr)
            .await
            .expect("connect");
        let request = format!(
            "POST /api/v1/namespaces/{ns}/pods/{name}/eviction HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.server.addr,
            body.len()
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("read");
        let (head, rest) = answer.split_once("\r\n\r\n").expect("a response");
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let retry_after = head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                .map(|(_, v)| v.trim().to_string())
        });
        // The body may come chunked; the JSON object is between its braces.
        let json_text = rest
            .find('{')
            .and_then(|a| rest.rfind('}').map(|b| &rest[a..=b]))
            .expect("a JSON body");
        (
            code,
            retry_after,
            serde_json::from_str(json_text).expect("JSON"),
        )
    }
}

fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected a Status, got {other:?}"),
    }
}

fn has_disruption_target(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == "DisruptionTarget"
                && c["status"] == "True"
                && c["reason"] == "EvictionByEvictionAPI"
                && c["message"] == "Eviction API: evicting"
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_pods_go_as_the_budgets_policy_says() {
    let h = ApiOnly::start().await;
    for (name, ready) in [("web-1", true), ("web-2", true), ("web-3", false)] {
        h.store
            .create(
                pods_kind(),
                "default",
                pod(name, json!({"app": "web"}), ready),
            )
            .expect("pod");
    }
    // Two healthy of three desired: the application is disrupted.
    h.store
        .create(
            pdbs(),
            "default",
            budget(
                "web",
                json!({"minAvailable": 3, "selector": {"matchLabels": {"app": "web"}}}),
                2,
                3,
                0,
            ),
        )
        .expect("pdb");
    let pods = h.pods("default");
    // IfHealthyBudget (the default): the not-ready pod waits for the application.
    let refused = api_status(
        pods.evict("web-3", &EvictParams::default())
            .await
            .expect_err("IfHealthyBudget keeps an unready pod of a disrupted application"),
    );
    assert_eq!(refused.code, 429);
    // AlwaysAllow: the not-ready pod goes at once, without spending the budget.
    h.store
        .update(pdbs(), "default", "web", |pdb| {
            pdb["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
            Ok(())
        })
        .expect("policy");
    h.store
        .update(pdbs(), "default", "web", |pdb| {
            pdb["status"]["observedGeneration"] = pdb["metadata"]["generation"].clone();
            Ok(())
        })
        .expect("observed");
    pods.evict("web-3", &EvictParams::default())
        .await
        .expect("AlwaysAllow evicts an unready pod");
    let evicted = h
        .store
        .get(pods_kind(), "default", "web-3")
        .expect("terminating");
    assert!(!evicted["metadata"]["deletionTimestamp"].is_null());
    assert!(has_disruption_target(&evicted), "{}", evicted["status"]);
    let pdb = h.store.get(pdbs(), "default", "web").expect("pdb");
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
    assert!(
        pdb["status"]["disruptedPods"].is_null(),
        "an unhealthy pod spends nothing: {}",
        pdb["status"]
    );
    // A healthy pod is still guarded.
    let refused = api_status(
        pods.evict("web-1", &EvictParams::default())
            .await
            .expect_err("a ready pod needs the budget"),
    );
    assert_eq!(refused.code, 429);
    let untouched = h.store.get(pods_kind(), "default", "web-1").expect("pod");
    assert!(untouched["metadata"]["deletionTimestamp"].is_null());
    assert!(!has_disruption_target(&untouched));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_reads_budget_selectors_as_label_selector_objects() {
    let h = ApiOnly::start().await;
    // Namespace "every": a budget with the empty selector guards even a pod without labels.
    h.store
        .create(pods_kind(), "every", pod("bare", json!({}), true))
        .expect("pod");
    h.store
        .create(
            pdbs(),
            "every",
            budget("all", json!({"minAvailable": 1, "selector": {}}), 1, 1, 0),
        )
        .expect("pdb");
    let refused = api_status(
        h.pods("every")
            .evict("bare", &EvictParams::default())
            .await
            .expect_err("{} selects every pod of the namespace"),
    );
    assert_eq!(refused.code, 429);
    let cause = refused
        .details
        .and_then(|d| d.causes.into_iter().next())
        .expect("cause");
    assert_eq!(
        cause.message,
        "The disruption budget all needs 1 healthy pods and has 1 currently"
    );
    // Namespace "exprs": matchExpressions select; a budget without a selector selects nothing.
    for (name, app) in [("web-1", "web"), ("api-1", "api")] {
        h.store
            .create(pods_kind(), "exprs", pod(name, json!({"app": app}), true))
            .expect("pod");
    }
    let in_web = json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]});
    h.store
        .create(
            pdbs(),
            "exprs",
            budget(
                "web",
                json!({"minAvailable": 1, "selector": in_web}),
                1,
                1,
                0,
            ),
        )
        .expect("pdb");
    h.store
        .create(
            pdbs(),
            "exprs",
            budget("nil", json!({"minAvailable": 1}), 0, 1, 0),
        )
        .expect("pdb");
    let refused = api_status(
        h.pods("exprs")
            .evict("web-1", &EvictParams::default())
            .await
            .expect_err("matchExpressions select web-1"),
    );
    assert_eq!(refused.code, 429);
    h.pods("exprs")
        .evict("api-1", &EvictParams::default())
        .await
        .expect("neither the In budget nor the nil selector guards api-1");
    // A second budget over web-1 ({} selects it too): the eviction cannot choose.
    h.store
        .create(
            pdbs(),
            "exprs",
            budget("all", json!({"minAvailable": 1, "selector": {}}), 1, 1, 1),
        )
        .expect("pdb");
    let refused = api_status(
        h.pods("exprs")
            .evict("web-1", &EvictParams::default())
            .await
            .expect_err("two budgets"),
    );
    assert_eq!(refused.code, 500);
    assert_eq!(
        refused.message,
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_with_an_unknown_policy_or_operator_are_invalid() {
    let h = ApiOnly::start().await;
    let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(h.client.clone(), "default");
    let create = |spec: Value| {
        let budgets = budgets.clone();
        async move {
            let pdb = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": spec}))
                .expect("pdb");
            budgets.create(&PostParams::default(), &pdb).await
        }
    };
    let err = api_status(
        create(
            json!({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Sometimes",
                      "selector": {"matchLabels": {"app": "web"}}}),
        )
        .await
        .expect_err("unknown policy"),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.unhealthyPodEvictionPolicy: Unsupported value: \"Sometimes\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\""),
        "{}",
        err.message
    );
    let err = api_status(
        create(json!({"minAvailable": 1, "selector": {"matchExpressions": [
            {"key": "app", "operator": "Equals", "values": ["web"]}]}}))
        .await
        .expect_err("unknown operator"),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.selector.matchExpressions[0].operator: Invalid value: \"Equals\": not a valid selector operator"),
        "{}",
        err.message
    );
    create(
        json!({"minAvailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                  "selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}),
    )
    .await
    .expect("a valid budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_when_to_retry_in_the_retry_after_header() {
    let h = ApiOnly::start().await;
    for name in ["web-1", "web-2"] {
        h.store
            .create(
                pods_kind(),
                "default",
                pod(name, json!({"app": "web"}), true),
            )
            .expect("pod");
    }
    let spec = json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}});
    h.store
        .create(pdbs(), "default", budget("web", spec, 2, 2, 0))
        .expect("pdb");
    // No disruption allowed: retryAfterSeconds is 0, so neither the field nor the header.
    let (code, retry_after, body) = h.raw_evict("default", "web-1").await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(retry_after, None, "{body}");
    assert!(body["details"]["retryAfterSeconds"].is_null(), "{body}");
    // A budget the controller has not seen since it changed: retry in 10 s.
    h.store
        .update(pdbs(), "default", "web", |pdb| {
            pdb["spec"]["minAvailable"] = json!(1);
            Ok(())
        })
        .expect("change");
    let (code, retry_after, body) = h.raw_evict("default", "web-1").await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("10"), "{body}");
    assert_eq!(body["details"]["retryAfterSeconds"], 10);
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "The disruption budget web is still being processed by the server."
    );
    let pod = h.store.get(pods_kind(), "default", "web-1").expect("pod");
    assert!(pod["metadata"]["deletionTimestamp"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disruption_target_condition_outlives_the_kubelets_status_writes() {
    let cluster = EmbeddedCluster::start(&ClusterOptions {
        demo_binary: Some(env!("CARGO_BIN_EXE_rolltest").into()),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    let client = crate::common::kube_client(&cluster.kubeconfig(), None).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let manifest: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"terminationGracePeriodSeconds": 10, "containers": [{
            "name": "app", "image": "rolltest-demo:v1",
            "lifecycle": {"preStop": {"sleep": {"seconds": 1}}},
        }]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &manifest)
        .await
        .expect("create");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let p = cluster
            .store
            .get(pods_kind(), "default", "web")
            .expect("pod");
        if p["status"]["containerStatuses"][0]["ready"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {}",
            p["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut changes = cluster.store.watch_all();
    pods.evict("web", &EvictParams::default())
        .await
        .expect("no budget: evicted");
    // Every version of the pod from the eviction on carries the condition,
    // through the kubelet's writes (the container's termination) to the end.
    let mut kubelet_writes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let change = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .expect("the pod goes away in time")
            .expect("changes");
        if change.resource.plural != "pods" || change.object["metadata"]["name"] != "web" {
            continue;
        }
        assert!(
            has_disruption_target(&change.object),
            "a version without DisruptionTarget: {}",
            change.object["status"]
        );
        if change.object["status"]["containerStatuses"][0]["state"]["terminated"].is_object() {
            kubelet_writes += 1;
        }
        if change.kind == EventType::Deleted {
            break;
        }
    }
    assert!(
        kubelet_writes >= 1,
        "the kubelet wrote the container's termination"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disruption_controller_selects_with_label_selector_objects() {
    let store = Arc::new(Store::new());
    let controllers = Controllers::start(store.clone()).expect("controllers");
    for ns in ["every", "exprs", "nil", "orphan"] {
        for (name, app) in [("web-1", "web"), ("web-2", "web"), ("api-1", "api")] {
            store
                .create(pods_kind(), ns, pod(name, json!({"app": app}), true))
                .expect("pod");
        }
    }
    let create = |ns: &str, spec: Value| {
        store
            .create(pdbs(), ns, json!({"metadata": {"name": "b"}, "spec": spec}))
            .expect("pdb");
    };
    create("every", json!({"minAvailable": 1, "selector": {}}));
    create(
        "exprs",
        json!({"minAvailable": 1, "selector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["web"]}]}}),
    );
    create("nil", json!({"minAvailable": 1}));
    // maxUnavailable counts the controllers' scale; web-1's controller is gone.
    store
        .update(pods_kind(), "orphan", "web-1", |p| {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "gone", "uid": "gone-uid", "controller": true}]);
            Ok(())
        })
        .expect("owner");
    create(
        "orphan",
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
    );
    let every = pdb_status(&store, "every").await;
    assert_eq!(
        (
            every["expectedPods"].clone(),
            every["currentHealthy"].clone(),
            every["disruptionsAllowed"].clone()
        ),
        (json!(3), json!(3), json!(2)),
        "{{}} selects all three pods: {every}"
    );
    let exprs = pdb_status(&store, "exprs").await;
    assert_eq!(
        (
            exprs["expectedPods"].clone(),
            exprs["currentHealthy"].clone(),
            exprs["disruptionsAllowed"].clone()
        ),
        (json!(2), json!(2), json!(1)),
        "app In (web) selects the two web pods: {exprs}"
    );
    let nil = pdb_status(&store, "nil").await;
    assert_eq!(
        (
            nil["expectedPods"].clone(),
            nil["currentHealthy"].clone(),
            nil["disruptionsAllowed"].clone()
        ),
        (json!(0), json!(0), json!(0)),
        "no selector selects nothing: {nil}"
    );
    assert_eq!(nil["conditions"][0]["reason"], "InsufficientPods");
    let orphan = pdb_status(&store, "orphan").await;
    assert_eq!(orphan["disruptionsAllowed"], 0, "{orphan}");
    assert_eq!(orphan["conditions"][0]["type"], "DisruptionAllowed");
    assert_eq!(orphan["conditions"][0]["status"], "False");
    assert_eq!(orphan["conditions"][0]["reason"], "SyncFailed");
    assert_eq!(
        orphan["conditions"][0]["message"],
        "found no controllers for pod \"web-1\""
    );
    controllers.stop();
}

/// The budget `b`'s status once the controller has written it.
async fn pdb_status(store: &Store, ns: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pdb = store.get(pdbs(), ns, "b").expect("pdb");
        if !pdb["status"]["conditions"].is_null() {
            return pdb["status"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{ns}: no status");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the machine's kubectl against the harness's cluster; (success,
/// stdout + stderr).
async fn kubectl(h: &Harness, args: &[&str]) -> (bool, String) {
    let out = h.kubectl(args).await;
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
async fn kubectl_drain_takes_unready_pods_only_when_the_budget_always_allows() {
    let h = Harness::start().await;
    let cluster = &h.cluster;
    let dir = h.dir();
    // Two pods that never get ready (nothing answers the probe's port),
    // guarded by a budget that selects them with matchExpressions.
    let manifest = dir.join("stuck.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: stuck}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: stuck}}\n  template:\n    metadata: {labels: {app: stuck}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: app\n        image: rolltest-demo\n        readinessProbe: {tcpSocket: {port: 9}, periodSeconds: 1}\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: stuck}\nspec:\n  minAvailable: 2\n  selector:\n    matchExpressions: [{key: app, operator: In, values: [stuck]}]\n",
    )
    .expect("manifest");
    let (ok, out) = kubectl(&h, &["apply", "-f", manifest.to_str().expect("path")]).await;
    assert!(ok, "{out}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pdb = cluster.store.get(pdbs(), "default", "stuck").expect("pdb");
        let running = cluster
            .store
            .list(pods_kind(), Some("default"))
            .0
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        if running == 2 && pdb["status"]["expectedPods"] == 2 {
            assert_eq!(pdb["status"]["currentHealthy"], 0, "{}", pdb["status"]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pods running and the budget seen: {}",
            pdb["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // IfHealthyBudget (the default): the application is disrupted, its unready pods stay.
    let (ok, out) = kubectl(
        &h,
        &[
            "drain",
            "embedded-node-1",
            "--ignore-daemonsets",
            "--timeout=7s",
        ],
    )
    .await;
    assert!(!ok, "the budget must hold the drain:\n{out}");
    assert!(
        out.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{out}"
    );
    // AlwaysAllow: the unready pods go at once.
    let (ok, out) = kubectl(
        &h,
        &[
            "patch",
            "pdb",
            "stuck",
            "--type=merge",
            "-p",
            r#"{"spec":{"unhealthyPodEvictionPolicy":"AlwaysAllow"}}"#,
        ],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &h,
        &[
            "drain",
            "embedded-node-1",
            "--ignore-daemonsets",
            "--timeout=30s",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("evicted") && out.contains("drained"), "{out}");
    h.shutdown().await;
}
