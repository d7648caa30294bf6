//! Benchmarks of the embedded cluster (ignored by default; they print
//! figures, they do not judge them):
//!
//!     cargo test --release --test minicluster bench:: -- --ignored --nocapture
//!
//! - watch delivery: a store write to the event arriving at a kube-rs watch
//!   over HTTPS;
//! - pod start to Ready for `rolltest serve` (no configured delays);
//! - a 6-replica rollout with no preStop, restart to the last old pod gone.

use crate::common;

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use rolltest_minicluster::{
    cluster::{ClusterOptions, EmbeddedCluster},
    resources::ResourceKind,
};
use serde_json::{Value, json};
use tokio::time::Instant;

fn kind(group: &str, plural: &str) -> &'static ResourceKind {
    ResourceKind::find(group, "v1", plural).expect("kind")
}

fn percentile(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

async fn cluster() -> EmbeddedCluster {
    EmbeddedCluster::start(&ClusterOptions {
        demo_binary: Some(env!("CARGO_BIN_EXE_rolltest").into()),
        // The embedded cluster's own speed, without a real kubelet's start.
        pod_start: rolltest_minicluster::kubelet::PodStart::NONE,
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster")
}

async fn client(cluster: &EmbeddedCluster) -> kube::Client {
    common::kube_client(&cluster.kubeconfig(), None).await
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints figures"]
async fn bench_cluster() {
    let c = cluster().await;
    let cm = kind("", "namespaces");

    // 1. Watch delivery latency over HTTPS (kube-rs).
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client(&c).await);
    let rv = c.store.version().to_string();
    let mut stream = Box::pin(
        api.watch(&kube::api::WatchParams::default().timeout(60), &rv)
            .await
            .expect("watch"),
    );
    let mut samples = Vec::new();
    for i in 0..300 {
        let start = Instant::now();
        c.store
            .create(cm, "", json!({"metadata": {"name": format!("bench-{i}")}}))
            .expect("create");
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("event");
        samples.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "watch delivery (store write -> kube-rs event over HTTPS), 300 events: p50 {:?} p99 {:?} max {:?}",
        percentile(samples.clone(), 0.5),
        percentile(samples.clone(), 0.99),
        percentile(samples, 1.0)
    );

    // 2. Pod start: created -> Ready (no probe: Ready once started), and
    // created -> the app answering on podIP:8080 (the process really serving).
    let pods = kind("", "pods");
    let mut to_ready = Vec::new();
    let mut to_serving = Vec::new();
    for i in 0..10 {
        let name = format!("start-{i}");
        let t = Instant::now();
        c.store
            .create(
                pods,
                "default",
                json!({
                    "metadata": {"name": name},
                    "spec": {"nodeName": "embedded-node-1", "terminationGracePeriodSeconds": 1,
                             "containers": [{"name": "app", "image": "rolltest-demo"}]},
                }),
            )
            .expect("pod");
        let ip = loop {
            if let Some(p) = c.store.get(pods, "default", &name).filter(|p| ready(p)) {
                to_ready.push(t.elapsed());
                break p["status"]["podIP"].as_str().unwrap_or("").to_string();
            }
            assert!(t.elapsed() < Duration::from_secs(20), "pod never ready");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        loop {
            if tokio::net::TcpStream::connect((ip.as_str(), 8080))
                .await
                .is_ok()
            {
                to_serving.push(t.elapsed());
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "app never listened");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let _ = rolltest_minicluster::api::graceful_delete_pod(
            &c.store,
            "default",
            &name,
            Some(0),
            None,
        );
    }
    println!(
        "pod created -> Ready (no readiness probe), 10 pods: p50 {:?} max {:?}",
        percentile(to_ready.clone(), 0.5),
        percentile(to_ready, 1.0)
    );
    println!(
        "pod created -> rolltest serve accepting on podIP:8080, 10 pods: p50 {:?} max {:?}",
        percentile(to_serving.clone(), 0.5),
        percentile(to_serving, 1.0)
    );

    // 3. A 6-replica rollout without preStop.
    let deployments = kind("apps", "deployments");
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "roll"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "roll"}},
                 "template": {"metadata": {"labels": {"app": "roll"}},
                              "spec": {"terminationGracePeriodSeconds": 5,
                                       "containers": [{"name": "app", "image": "rolltest-demo",
                                                       "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}}]}}},
    }))
    .expect("deployment");
    kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client(&c).await, "default")
        .create(&Default::default(), &d)
        .await
        .expect("create");
    let settled = |c: &EmbeddedCluster| {
        let pods_now: Vec<Arc<Value>> = c
            .store
            .list(pods, Some("default"))
            .0
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "roll")
            .collect();
        let hashes: std::collections::HashSet<String> = pods_now
            .iter()
            .filter_map(|p| {
                p["metadata"]["labels"]["pod-template-hash"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        pods_now.len() == 6 && hashes.len() == 1 && pods_now.iter().all(|p| ready(p))
    };
    let t = Instant::now();
    while !settled(&c) {
        assert!(t.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "6-replica Deployment created -> 6 pods Ready: {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    c.store
        .update(deployments, "default", "roll", |d| {
            d["spec"]["template"]["metadata"]["annotations"] =
                json!({"kubectl.kubernetes.io/restartedAt": "bench"});
            Ok(())
        })
        .expect("restart");
    tokio::time::sleep(Duration::from_millis(50)).await;
    while !settled(&c) {
        assert!(t.elapsed() < Duration::from_secs(120));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "6-replica rollout (25%/25%, no preStop), restart -> every old pod gone: {:?}",
        t.elapsed()
    );
    c.shutdown().await;
}
