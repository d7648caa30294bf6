//! The kube-rs side of `rolltest run` against the embedded cluster, through
//! its kubeconfig exactly as against kind: connect (text and file + context),
//! clear errors, server-side apply, watch-driven waits, every action's effect
//! and teardown.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Node, Pod},
};
use kube::{Api, ResourceExt, api::ListParams};
use rolltest::{
    k8s::{self, Cluster, K8sError, KubeSource},
    scenario::{Action, ActionKind},
};
use rolltest_core::model::{EventSource, LifecycleEvent, LifecycleKind, RunClock};
use rolltest_minicluster::cluster::{ClusterOptions, EmbeddedCluster};
use serde_json::{Value, json};

/// One embedded cluster at a time in this file: clusters started at the same
/// moment hand out pod IPs from the same 127.0.1.1 onwards, and the
/// allocator's check that an address is free races with the other cluster's
/// bind (a pod then crash-loops on "address in use").
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start() -> (tokio::sync::MutexGuard<'static, ()>, EmbeddedCluster) {
    let guard = ONE_CLUSTER.lock().await;
    let cluster = EmbeddedCluster::start(&ClusterOptions {
        demo_binary: Some(env!("CARGO_BIN_EXE_rolltest").into()),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    (guard, cluster)
}

async fn connect(cluster: &EmbeddedCluster) -> Cluster {
    k8s::connect(&KubeSource::text(cluster.kubeconfig()))
        .await
        .expect("connect")
}

/// A Deployment of the demo app that starts and stops fast (preStop 1 s).
fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "app", "image": "rolltest-demo:v1",
                        "args": ["--on-sigterm", "drain"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                        "lifecycle": {"preStop": {"sleep": {"seconds": 1}}},
                    }],
                },
            },
        },
    })
}

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    })
}

fn pdb(name: &str, min_available: i64) -> Value {
    json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": name}}},
    })
}

fn hash(p: &Pod) -> String {
    p.labels()
        .get("pod-template-hash")
        .cloned()
        .unwrap_or_default()
}

async fn pods(c: &Cluster, app: &str) -> Vec<Pod> {
    c.api::<Pod>()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
}

/// Asserts the rollout left exactly the current template's pods, none terminating.
async fn assert_only_current(c: &Cluster, app: &str, settled: &k8s::SettledInfo) {
    let current = settled.template_hash.clone().expect("hash");
    let now = pods(c, app).await;
    for p in &now {
        assert_eq!(hash(p), current, "old pod {} still listed", p.name_any());
        assert!(
            p.metadata.deletion_timestamp.is_none(),
            "pod {} still terminating",
            p.name_any()
        );
    }
    assert_eq!(now.len(), usize::try_from(settled.replicas).unwrap_or(0));
}

fn action(index: usize, kind: ActionKind) -> Action {
    Action {
        index,
        at: Duration::ZERO,
        kind,
    }
}

fn drain_events(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<LifecycleEvent>,
) -> Vec<LifecycleEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn tamper_kubeconfig(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "kubeconfig has {from}");
    text.replace(from, to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_through_text_and_file_and_explains_failures() {
    let (_one, cluster) = start().await;
    let text = cluster.kubeconfig();

    // Text (the embedded path): current context, its namespace.
    let c = connect(&cluster).await;
    assert_eq!(c.namespace, "default");
    assert_eq!(c.context, "rolltest-embedded");
    assert!(c.server.starts_with("https://127.0.0.1:"), "{}", c.server);
    assert!(c.version.starts_with('v'), "{}", c.version);

    // A file plus a context (the real-cluster path), bearer token, namespace override.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config");
    std::fs::write(&path, &text).expect("write kubeconfig");
    let c2 = k8s::connect(
        &KubeSource::file(Some(path.clone()))
            .with_context(Some("rolltest-embedded-token".into()))
            .with_namespace(Some("kube-system".into())),
    )
    .await
    .expect("connect through a file and the token context");
    assert_eq!(c2.context, "rolltest-embedded-token");
    assert_eq!(c2.namespace, "kube-system");
    let nodes: Api<Node> = Api::all(c2.client.clone());
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .expect("nodes")
            .items
            .len(),
        2
    );

    // A context that is not there.
    let e =
        k8s::connect(&KubeSource::file(Some(path.clone())).with_context(Some("kind-nope".into())))
            .await
            .expect_err("missing context");
    assert!(matches!(e, K8sError::ContextNotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("kind-nope") && msg.contains("rolltest-embedded-token"),
        "{msg}"
    );

    // A missing file.
    let e = k8s::connect(&KubeSource::file(Some(dir.path().join("absent"))))
        .await
        .expect_err("missing file");
    assert!(matches!(e, K8sError::Kubeconfig { .. }), "{e:?}");

    // A wrong token: 401, named as such.
    let token_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("token: "))
        .expect("token line")
        .to_string();
    let wrong = tamper_kubeconfig(&text, &token_line, "    token: not-the-token");
    let e =
        k8s::connect(&KubeSource::text(wrong).with_context(Some("rolltest-embedded-token".into())))
            .await
            .expect_err("wrong token");
    assert!(matches!(e, K8sError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("401"), "{e}");

    // Nothing listening: unreachable, with the address.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let unreachable = tamper_kubeconfig(&text, &cluster.server.url, &format!("https://{closed}"));
    let t = Instant::now();
    let e = k8s::connect(&KubeSource::text(unreachable))
        .await
        .expect_err("unreachable");
    assert!(matches!(e, K8sError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&closed.to_string()), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "fails fast, not after retries"
    );

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_idempotently_waits_ready_and_tears_down() {
    let (_one, cluster) = start().await;
    let c = connect(&cluster).await;

    // Refusals before anything is applied.
    let e = k8s::apply(
        &c,
        &[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})],
    )
    .await
    .expect_err("cluster-scoped");
    assert!(matches!(e, K8sError::ClusterScoped { .. }), "{e:?}");
    let e = k8s::apply(
        &c,
        &[json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}})],
    )
    .await
    .expect_err("unknown kind");
    assert!(matches!(e, K8sError::UnknownKind { .. }), "{e}");
    let e = k8s::apply(
        &c,
        &[json!({"apiVersion": "v1", "kind": "Service", "metadata": {}})],
    )
    .await
    .expect_err("no name");
    assert!(
        matches!(e, K8sError::InvalidManifest { index: 1, .. }),
        "{e}"
    );

    // A manifest naming its namespace goes there.
    let mut elsewhere = service("elsewhere");
    elsewhere["metadata"]["namespace"] = json!("kube-system");
    let placed = k8s::apply(&c, &[elsewhere]).await.expect("apply elsewhere");
    assert_eq!(placed[0].namespace, "kube-system");
    let in_system: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(c.client.clone(), "kube-system");
    assert!(in_system.get_opt("elsewhere").await.expect("get").is_some());

    // Ready only after a second, so the wait has something to report.
    let mut web = deployment("web", 2);
    web["spec"]["template"]["spec"]["containers"][0]["args"] =
        json!(["--on-sigterm", "drain", "--ready-delay", "1s"]);
    let docs = vec![web, service("web")];
    let applied = k8s::apply(&c, &docs).await.expect("apply");
    let summary: Vec<(String, String, bool)> = applied
        .iter()
        .map(|a| (a.display(), a.namespace.clone(), a.created))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("Deployment/web".into(), "default".into(), true),
            ("Service/web".into(), "default".into(), true)
        ]
    );
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let progress = move |l: &str| sink.lock().expect("lock").push(l.to_string());
    let ready = k8s::wait_ready(
        &c,
        "web",
        Some("web"),
        Duration::from_secs(60),
        Some(&progress),
    )
    .await
    .expect("ready");
    assert_eq!(ready.selector, "app=web");
    assert_eq!(ready.replicas, 2);
    let svc = ready.service.clone().expect("service info");
    assert_eq!(svc.ready_endpoints, 2);
    assert!(svc.cluster_ip.is_some(), "{svc:?}");
    assert_eq!(svc.ports[0].port, 80);
    let current_hash = ready.template_hash.clone().expect("hash");
    let current = pods(&c, "web").await;
    assert_eq!(current.len(), 2);
    assert!(current.iter().all(|p| hash(p) == current_hash));
    assert!(
        lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains("available")),
        "progress lines: {:?}",
        lines.lock().expect("lock")
    );

    // Re-applying the same manifests changes nothing.
    let gen_before = c
        .api::<Deployment>()
        .get("web")
        .await
        .expect("get")
        .metadata
        .generation;
    let again = k8s::apply(&c, &docs).await.expect("re-apply");
    assert!(again.iter().all(|a| !a.created));
    let gen_after = c
        .api::<Deployment>()
        .get("web")
        .await
        .expect("get")
        .metadata
        .generation;
    assert_eq!(gen_before, gen_after);

    // A Deployment that cannot become ready: the time-out says why.
    let mut broken = deployment("broken", 1);
    broken["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nope.example/none:v1");
    k8s::apply(&c, &[broken]).await.expect("apply broken");
    let e = k8s::wait_ready(&c, "broken", None, Duration::from_secs(4), None)
        .await
        .expect_err("never ready");
    let msg = e.to_string();
    assert!(matches!(e, K8sError::Timeout { .. }), "{msg}");
    assert!(msg.contains("0 of 1 pods available"), "{msg}");
    assert!(msg.contains("ErrImagePull"), "{msg}");
    let e = k8s::wait_ready(&c, "absent", None, Duration::from_secs(4), None)
        .await
        .expect_err("absent");
    assert!(matches!(e, K8sError::NotFound { .. }), "{e}");

    // Teardown: everything deleted, the pods gone.
    let report = k8s::teardown(&c, &applied, Duration::from_secs(30))
        .await
        .expect("teardown");
    assert_eq!(report.deleted, vec!["Service/web", "Deployment/web"]);
    assert!(report.pods_waited >= 2);
    assert!(pods(&c, "web").await.is_empty());
    assert!(
        c.api::<Deployment>()
            .get_opt("web")
            .await
            .expect("get")
            .is_none()
    );
    let again = k8s::teardown(&c, &applied, Duration::from_secs(5))
        .await
        .expect("teardown twice");
    assert_eq!(again.already_gone.len(), 2);

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_change_the_deployment_and_settle_waits_for_old_pods() {
    let (_one, cluster) = start().await;
    let c = connect(&cluster).await;
    k8s::apply(&c, &[deployment("api", 2), service("api")])
        .await
        .expect("apply");
    let ready = k8s::wait_ready(&c, "api", Some("api"), Duration::from_secs(60), None)
        .await
        .expect("ready");
    let first_hash = ready.template_hash.clone().expect("hash");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let clock = RunClock::start();

    // Meanwhile, note when `kubectl rollout status` would first say
    // "successfully rolled out" for the new generation.
    let generation = c
        .api::<Deployment>()
        .get("api")
        .await
        .expect("get")
        .metadata
        .generation
        .unwrap_or(0);
    let observer = c.clone();
    let kubectl_done = tokio::spawn(async move {
        loop {
            if let Ok(d) = observer.api::<Deployment>().get("api").await {
                let g = d.metadata.generation.unwrap_or(0);
                let spec = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                let updated = st.updated_replicas.unwrap_or(0);
                if g > generation
                    && st.observed_generation.unwrap_or(0) >= g
                    && updated == spec
                    && st.replicas.unwrap_or(0) == updated
                    && st.available_replicas.unwrap_or(0) == updated
                {
                    return Instant::now();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    // rollout-restart: kubectl's annotation on the template, a new ReplicaSet.
    let report = k8s::run_action(
        &c,
        &action(0, ActionKind::RolloutRestart { deployment: None }),
        "api",
        &tx,
        &clock,
    )
    .await
    .expect("restart");
    assert_eq!(report.target, "deployment api");
    let d = c.api::<Deployment>().get("api").await.expect("get");
    let stamp = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("kubectl.kubernetes.io/restartedAt").cloned())
        .expect("restartedAt on the template");
    assert!(humantime::parse_rfc3339(&stamp).is_ok(), "{stamp}");
    let events = drain_events(&mut rx);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.source == EventSource::Action));
    assert!(
        matches!(&events[0].kind, LifecycleKind::ActionStarted { index: 0, action, target } if action == "rollout-restart" && target == "deployment api")
    );
    assert!(
        matches!(&events[1].kind, LifecycleKind::ActionFinished { detail: Some(d), .. } if d.contains("restartedAt"))
    );
    assert!(events[0].at_us <= events[1].at_us);

    let settled = k8s::wait_settled(&c, "api", Duration::from_secs(60), None)
        .await
        .expect("settled");
    let settled_at = Instant::now();
    assert_only_current(&c, "api", &settled).await;
    let kubectl_done = tokio::time::timeout(Duration::from_secs(5), kubectl_done)
        .await
        .expect("kubectl's criterion was met")
        .expect("observer");
    assert!(kubectl_done <= settled_at);
    eprintln!(
        "wait_settled returned {:.2} s after kubectl's \"successfully rolled out\" (preStop 1 s)",
        settled_at.duration_since(kubectl_done).as_secs_f64()
    );
    let second_hash = settled.template_hash.clone().expect("hash");
    assert_ne!(second_hash, first_hash, "a new template");
    let rss = c
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels("app=api"))
        .await
        .expect("rs");
    assert_eq!(rss.items.len(), 2, "old and new ReplicaSets");

    // delete-pod: the oldest pod goes, a replacement comes.
    let before: Vec<String> = pods(&c, "api")
        .await
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let report = k8s::run_action(
        &c,
        &action(
            1,
            ActionKind::DeletePod {
                pod: None,
                grace_period: Some(2),
            },
        ),
        "api",
        &tx,
        &clock,
    )
    .await
    .expect("delete-pod");
    let victim = report.pods[0].clone();
    assert!(before.contains(&victim));
    assert_eq!(report.target, format!("pod {victim}"));
    assert!(
        report.detail.contains("grace period 2 s"),
        "{}",
        report.detail
    );
    let events = drain_events(&mut rx);
    assert!(
        events
            .iter()
            .all(|e| e.pod.as_deref() == Some(victim.as_str()))
    );
    let settled = k8s::wait_settled(&c, "api", Duration::from_secs(60), None)
        .await
        .expect("settled after delete");
    assert!(!settled.pods.contains(&victim), "{settled:?}");
    assert_only_current(&c, "api", &settled).await;

    // scale: through the scale subresource.
    let report = k8s::run_action(
        &c,
        &action(
            2,
            ActionKind::Scale {
                deployment: Some("api".into()),
                replicas: 3,
            },
        ),
        "other",
        &tx,
        &clock,
    )
    .await
    .expect("scale");
    assert_eq!(report.detail, "scaled from 2 to 3 replicas");
    let settled = k8s::wait_settled(&c, "api", Duration::from_secs(60), None)
        .await
        .expect("settled after scale");
    assert_eq!(settled.pods.len(), 3);

    // set-image: only the image changes; the rollout replaces every pod.
    let report = k8s::run_action(
        &c,
        &action(
            3,
            ActionKind::SetImage {
                deployment: None,
                container: None,
                image: "rolltest-demo:v2".into(),
            },
        ),
        "api",
        &tx,
        &clock,
    )
    .await
    .expect("set-image");
    assert_eq!(
        report.detail,
        "container app: image rolltest-demo:v1 -> rolltest-demo:v2"
    );
    let d = c.api::<Deployment>().get("api").await.expect("get");
    let container = &d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec")
        .containers[0];
    assert_eq!(container.image.as_deref(), Some("rolltest-demo:v2"));
    assert!(
        container.readiness_probe.is_some(),
        "strategic merge kept the rest of the container"
    );
    let settled = k8s::wait_settled(&c, "api", Duration::from_secs(60), None)
        .await
        .expect("settled after set-image");
    assert_only_current(&c, "api", &settled).await;
    assert_ne!(settled.template_hash.as_deref(), Some(second_hash.as_str()));

    // A bad target fails clearly and still closes its action on the timeline.
    let e = k8s::run_action(
        &c,
        &action(
            4,
            ActionKind::SetImage {
                deployment: None,
                container: Some("nope".into()),
                image: "x".into(),
            },
        ),
        "api",
        &tx,
        &clock,
    )
    .await
    .expect_err("no such container");
    assert!(e.to_string().contains("no container nope"), "{e}");
    let events = drain_events(&mut rx);
    assert!(
        matches!(events.last().map(|e| &e.kind), Some(LifecycleKind::ActionFinished { index: 4, detail: Some(d), .. }) if d.starts_with("failed:")),
        "{events:?}"
    );

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_cordons_and_evicts_within_the_disruption_budget() {
    let (_one, cluster) = start().await;
    let c = connect(&cluster).await;
    k8s::apply(&c, &[deployment("db", 3), service("db"), pdb("db", 2)])
        .await
        .expect("apply");
    k8s::wait_ready(&c, "db", Some("db"), Duration::from_secs(60), None)
        .await
        .expect("ready");
    // Let the PDB controller see the ready pods (disruptionsAllowed = 1).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = pods(&c, "db").await;
    let mut per_node = std::collections::BTreeMap::<String, Vec<String>>::new();
    for p in &before {
        per_node
            .entry(
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .expect("node"),
            )
            .or_default()
            .push(p.name_any());
    }
    let (busiest, on_it) = per_node
        .iter()
        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))
        .map(|(n, p)| (n.clone(), p.clone()))
        .expect("a node");
    assert!(on_it.len() >= 2, "3 pods on 2 nodes: {per_node:?}");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let clock = RunClock::start();
    let report = k8s::run_action(
        &c,
        &action(
            0,
            ActionKind::DrainNode {
                node: None,
                grace_period: Some(2),
                timeout: Duration::from_secs(60),
            },
        ),
        "db",
        &tx,
        &clock,
    )
    .await
    .expect("drain");
    assert_eq!(report.target, format!("node {busiest}"));
    let mut evicted = report.pods.clone();
    evicted.sort();
    let mut expected = on_it.clone();
    expected.sort();
    assert_eq!(evicted, expected);
    assert!(
        report.eviction_refusals >= 1,
        "the PDB refused at least once: {}",
        report.detail
    );
    assert!(
        report.detail.contains("refused by a PodDisruptionBudget"),
        "{}",
        report.detail
    );
    let node: Node = Api::all(c.client.clone())
        .get(&busiest)
        .await
        .expect("node");
    assert_eq!(
        node.spec.and_then(|s| s.unschedulable),
        Some(true),
        "cordoned"
    );
    assert_eq!(report.cordoned.as_deref(), Some(busiest.as_str()));
    // Evicted pods are gone; no pod of the Deployment is on the drained node.
    let now = pods(&c, "db").await;
    for p in &now {
        assert!(!on_it.contains(&p.name_any()), "{} survived", p.name_any());
        assert_ne!(
            p.spec.as_ref().and_then(|s| s.node_name.clone()),
            Some(busiest.clone())
        );
    }
    let events = drain_events(&mut rx);
    assert!(
        matches!(
            &events[..],
            [
                LifecycleEvent {
                    kind: LifecycleKind::ActionStarted { .. },
                    ..
                },
                LifecycleEvent {
                    kind: LifecycleKind::ActionFinished { .. },
                    ..
                }
            ]
        ),
        "{events:?}"
    );
    let settled = k8s::wait_settled(&c, "db", Duration::from_secs(60), None)
        .await
        .expect("settled");
    assert_eq!(settled.pods.len(), 3);
    k8s::uncordon(&c, &busiest).await.expect("uncordon");
    let node: Node = Api::all(c.client.clone())
        .get(&busiest)
        .await
        .expect("node");
    assert_ne!(
        node.spec.and_then(|s| s.unschedulable),
        Some(true),
        "uncordoned"
    );
    eprintln!(
        "drain: {} (action took {:.1} s)",
        report.detail,
        (report.finished_us - report.started_us) as f64 / 1e6
    );

    cluster.shutdown().await;
}
