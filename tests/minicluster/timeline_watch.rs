//! The lifecycle watchers against the embedded cluster: a deleted pod's
//! termination, its replacement's start and a scale-up show on the timeline
//! in the order the cluster went through them, and the service proxies'
//! reports (one per listener) become one per-pod change each.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Service},
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rolltest::{
    k8s::{self, KubeSource},
    timeline::{self, WatchTarget, proxy::ProxyCollector},
};
use rolltest_core::model::{EventSource, LifecycleEvent, LifecycleKind, ProxyOutcome, RunClock};
use rolltest_minicluster::{
    cluster::{ClusterOptions, EmbeddedCluster},
    proxy::{Propagation, ProxyEvent},
};
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

const PROPAGATION: Duration = Duration::from_millis(500);

fn manifests() -> (Deployment, Service) {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "app", "image": "rolltest-demo:v1",
                        "args": ["--on-sigterm", "drain"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
                    }],
                },
            },
        },
    });
    // NodePort: a ClusterIP and a node-port listener, two proxies reporting
    // every endpoint change.
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    });
    (
        serde_json::from_value(deployment).expect("deployment"),
        serde_json::from_value(service).expect("service"),
    )
}

/// A client from the cluster's kubeconfig, without kube's retry of 429s.
async fn kube_client(kubeconfig: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).expect("parse kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

/// Collects events until `done` holds for what was collected, or panics.
async fn until(
    rx: &mut UnboundedReceiver<LifecycleEvent>,
    seen: &mut Vec<LifecycleEvent>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[LifecycleEvent]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => seen.push(e),
            Ok(None) => panic!("event channel closed waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}; saw:\n{}", dump(seen)),
        }
    }
}

fn dump(events: &[LifecycleEvent]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{:>9} {:>9?} {:<14} {:<24} {:?}",
                e.at_us,
                e.server_us,
                format!("{:?}", e.source),
                e.pod.as_deref().unwrap_or("-"),
                e.kind
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ready(e: &LifecycleEvent) -> bool {
    matches!(e.kind, LifecycleKind::EndpointChanged { ready: true, .. })
}

/// Position of the first event about `pod` matching `f`, in `events`.
fn position(
    events: &[LifecycleEvent],
    pod: &str,
    what: &str,
    f: impl Fn(&LifecycleEvent) -> bool,
) -> usize {
    events
        .iter()
        .position(|e| e.pod.as_deref() == Some(pod) && f(e))
        .unwrap_or_else(|| panic!("no {what} for {pod}:\n{}", dump(events)))
}

/// `GET /` on a fresh connection; the pod named by `x-rolltest-pod`.
async fn get_pod(addr: std::net::SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    buf.lines()
        .find_map(|l| l.strip_prefix("x-rolltest-pod: "))
        .map(|p| p.trim().to_string())
}

/// Separate watches are separate connections: their relative delivery order
/// is not guaranteed (measured here: a few ms, the pod stream being the
/// slowest). Steps seen by different sources may be this far out of order.
const CROSS_SOURCE_SKEW_US: i64 = 100_000;

/// A named step and how to recognise it.
type Step<'a> = (&'a str, &'a dyn Fn(&LifecycleEvent) -> bool);

/// The steps happened in this order for `pod`. Each step is its earliest
/// matching event by `when_us` (the Event's µs `eventTime`, else the
/// observation). Two steps from the same source must be strictly in timeline
/// order; from different sources, in order up to [`CROSS_SOURCE_SKEW_US`].
fn assert_in_order(events: &[LifecycleEvent], pod: &str, steps: &[Step<'_>]) {
    let picked: Vec<(usize, &str)> = steps
        .iter()
        .map(|(what, f)| {
            let i = events
                .iter()
                .enumerate()
                .filter(|(_, e)| e.pod.as_deref() == Some(pod) && f(e))
                .min_by_key(|(i, e)| (e.when_us(), *i))
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("no {what} for {pod}:\n{}", dump(events)));
            (i, *what)
        })
        .collect();
    let own = || {
        dump(
            &events
                .iter()
                .filter(|e| e.pod.as_deref() == Some(pod))
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    for pair in picked.windows(2) {
        let (a, b) = (&events[pair[0].0], &events[pair[1].0]);
        let ok = if a.source == b.source {
            pair[0].0 < pair[1].0
        } else {
            a.when_us() <= b.when_us() + CROSS_SOURCE_SKEW_US
        };
        assert!(
            ok,
            "{} should come before {} for {pod}:\n{}",
            pair[0].1,
            pair[1].1,
            own()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_start_and_scale_show_in_order_on_the_timeline() {
    let (proxy_tx, mut proxy_rx) = unbounded_channel::<ProxyEvent>();
    let (kubelet_tx, kubelet_rx) = unbounded_channel();
    let cluster = EmbeddedCluster::start(&ClusterOptions {
        demo_binary: Some(env!("CARGO_BIN_EXE_rolltest").into()),
        proxy_events: Some(proxy_tx),
        kubelet_signals: Some(kubelet_tx),
        propagation: Propagation::fixed(PROPAGATION),
        ..Default::default()
    })
    .await
    .expect("cluster");
    let client = kube_client(&cluster.kubeconfig()).await;
    let clock = RunClock::start();
    let (tx, mut rx) = unbounded_channel();
    let watch = timeline::start(
        client.clone(),
        "default",
        WatchTarget {
            deployment: "web".into(),
            pod_selector: "app=web".into(),
            service: Some("web".into()),
            infer_steps_from_killing: true,
        },
        clock,
        tx.clone(),
    );
    // The kubelet's exact record, on the same channel.
    let record_task = tokio::spawn(
        rolltest::timeline::kubelet::KubeletRecord::new(clock, "web-").run(kubelet_rx, tx.clone()),
    );
    // The proxies' reports, counted raw and collected.
    let proxy_task = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut collector = ProxyCollector::new(clock).only_pods("web-");
            let mut applied = 0usize;
            let mut records = Vec::new();
            let mut out = Vec::new();
            while let Some(ev) = proxy_rx.recv().await {
                if matches!(ev, ProxyEvent::Applied { .. }) {
                    applied += 1;
                }
                if let Some(r) = collector.handle(ev, &mut out) {
                    records.push(r);
                }
                for e in out.drain(..) {
                    let _ = tx.send(e);
                }
            }
            (applied, records)
        })
    };
    drop(tx);

    let (d, s) = manifests();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &s)
        .await
        .expect("create service");

    let mut seen = Vec::new();
    until(
        &mut rx,
        &mut seen,
        "2 ready endpoints in the proxy",
        Duration::from_secs(30),
        |ev| {
            ev.iter()
                .any(|e| matches!(e.kind, LifecycleKind::ProxyView { ready: 2, .. }))
        },
    )
    .await;
    let ready_pods: Vec<String> = seen
        .iter()
        .filter(|e| e.source == EventSource::EndpointSlice && is_ready(e))
        .filter_map(|e| e.pod.clone())
        .collect();
    let victim = ready_pods[0].clone();

    // A few requests through the node port: the proxy's records name the pods.
    let node_port = cluster
        .service_addresses()
        .into_iter()
        .find(|a| a.node_port)
        .expect("a node-port listener")
        .listen;
    let mut answered_by = Vec::new();
    for _ in 0..4 {
        answered_by.push(
            get_pod(node_port)
                .await
                .expect("an answer through the node port"),
        );
    }

    // Delete one pod: preStop `sleep 1`, SIGTERM, exit, removal; a replacement starts.
    let deleted_at = Instant::now();
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    let v = victim.clone();
    until(
        &mut rx,
        &mut seen,
        "the victim's removal from the proxy and a ready replacement",
        Duration::from_secs(40),
        |ev| {
            let removed = ev.iter().any(|e| {
                e.pod.as_deref() == Some(v.as_str())
                    && matches!(e.kind, LifecycleKind::ProxyApplied { present: false, .. })
            });
            let deleted = ev.iter().any(|e| {
                e.pod.as_deref() == Some(v.as_str()) && e.kind == LifecycleKind::PodDeleted
            });
            let replacement_ready = ev.iter().any(|e| {
                e.source == EventSource::EndpointSlice
                    && is_ready(e)
                    && !ready_pods.contains(e.pod.as_ref().unwrap_or(&String::new()))
            });
            removed && deleted && replacement_ready
        },
    )
    .await;
    let delete_call = clock.micros(deleted_at);

    // Scale to 3.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale");
    until(
        &mut rx,
        &mut seen,
        "the scale-up in the ReplicaSet and the Deployment",
        Duration::from_secs(40),
        |ev| {
            ev.iter().any(|e| {
                matches!(
                    e.kind,
                    LifecycleKind::ReplicaSetScaled {
                        replicas: 3,
                        ready: 3,
                        ..
                    }
                )
            }) && ev.iter().any(|e| {
                matches!(
                    e.kind,
                    LifecycleKind::DeploymentStatus {
                        replicas: 3,
                        ready: 3,
                        available: 3,
                        ..
                    }
                )
            })
        },
    )
    .await;

    let errors = watch.stop().await;
    cluster.shutdown().await;
    record_task.abort();
    let (applied, records) = proxy_task.await.expect("proxy task");
    for pod in &answered_by {
        assert!(
            records.iter().any(|r| r.pod.as_ref() == Some(pod)
                && r.outcome == ProxyOutcome::Closed
                && r.end_us >= r.start_us),
            "no closed l4 record for {pod}: {records:?}"
        );
    }
    while let Ok(e) = rx.try_recv() {
        seen.push(e);
    }
    assert!(errors.is_empty(), "watch errors: {errors:?}");
    let timeline = timeline::finish(seen);
    let events = &timeline.events;
    println!("timeline ({} events):\n{}", events.len(), dump(events));

    // The victim, in order.
    let k = |f: fn(&LifecycleKind) -> bool| move |e: &LifecycleEvent| f(&e.kind);
    assert_in_order(
        events,
        &victim,
        &[
            (
                "DeletionRequested",
                &k(|k| matches!(k, LifecycleKind::DeletionRequested { .. })),
            ),
            (
                "EndpointChanged{ready:false, terminating:true}",
                &k(|k| {
                    matches!(
                        k,
                        LifecycleKind::EndpointChanged {
                            ready: false,
                            terminating: true,
                            ..
                        }
                    )
                }),
            ),
            (
                "PreStopStarted",
                &k(|k| *k == LifecycleKind::PreStopStarted),
            ),
            (
                "PreStopFinished",
                &k(|k| *k == LifecycleKind::PreStopFinished),
            ),
            ("SigtermSent", &k(|k| *k == LifecycleKind::SigtermSent)),
            (
                "ContainerExited",
                &k(|k| matches!(k, LifecycleKind::ContainerExited { .. })),
            ),
            (
                "EndpointRemoved",
                &k(|k| *k == LifecycleKind::EndpointRemoved),
            ),
            ("PodDeleted", &k(|k| *k == LifecycleKind::PodDeleted)),
        ],
    );
    let at = |what: &str, f: &dyn Fn(&LifecycleEvent) -> bool| {
        events[position(events, &victim, what, f)].clone()
    };
    let deletion = at("DeletionRequested", &|e| {
        matches!(e.kind, LifecycleKind::DeletionRequested { .. })
    });
    assert_eq!(
        deletion.kind,
        LifecycleKind::DeletionRequested { grace_seconds: 10 }
    );
    // The exit is seen by both sources, told apart by `source`: the exact
    // record and the pod status (after the kubelet's relist).
    let exit_event = at("exit (exact)", &|e| {
        e.source == EventSource::Kubelet && matches!(e.kind, LifecycleKind::ContainerExited { .. })
    });
    let exit_pod = at("exit (pod)", &|e| {
        e.source == EventSource::Pod && matches!(e.kind, LifecycleKind::ContainerExited { .. })
    });
    println!(
        "exit: event {:?}, pod status {:?}",
        exit_event.kind, exit_pod.kind
    );
    // preStop really slept 1 s before SIGTERM (the exact record's instants).
    let pre_stop = at("PreStopStarted", &|e| {
        e.source == EventSource::Kubelet && e.kind == LifecycleKind::PreStopStarted
    });
    let sigterm = at("SigtermSent", &|e| {
        e.source == EventSource::Kubelet && e.kind == LifecycleKind::SigtermSent
    });
    let slept = sigterm.when_us() - pre_stop.when_us();
    assert!(slept >= 950_000, "preStop slept {slept} µs");
    // The Killing Event lets a real cluster's run infer the preStop start,
    // at its observation (no microsecond stamp: a legacy Event), within the
    // second of its lastTimestamp, which holds the true moment.
    let inferred = at("PreStopStarted (inferred)", &|e| {
        e.source == EventSource::Event && e.kind == LifecycleKind::PreStopStarted
    });
    assert_eq!(inferred.server_precision_us, Some(1_000_000));
    assert!(inferred.when_us() >= pre_stop.when_us());
    let (lo, hi) = inferred.window();
    assert!(
        lo <= pre_stop.when_us() && pre_stop.when_us() <= hi,
        "the exact preStop start {} lies in the Event's window {lo}..{hi}",
        pre_stop.when_us()
    );
    let exit_exact = exit_event.when_us();
    let exit_status = exit_pod.at_us as i64;
    assert!(
        exit_status - exit_exact >= 900_000,
        "the status shows the exit after the relist: {} µs",
        exit_status - exit_exact
    );

    // The proxy applied the removal a propagation delay after the deletion;
    // each change once although two listeners reported it.
    let terminating_in_proxy = at("ProxyApplied(terminating)", &|e| {
        matches!(
            e.kind,
            LifecycleKind::ProxyApplied {
                present: true,
                ready: false,
                terminating: true,
                ..
            }
        )
    });
    let gone_from_proxy = at("ProxyApplied(present=false)", &|e| {
        matches!(e.kind, LifecycleKind::ProxyApplied { present: false, .. })
    });
    let slice_gone = at("EndpointRemoved", &|e| {
        e.kind == LifecycleKind::EndpointRemoved
    });
    let lag = |a: &LifecycleEvent, b: u64| a.at_us as i64 - b as i64;
    println!(
        "proxy lag: terminating {} µs after the delete call, removal {} µs after the slice watch saw it",
        lag(&terminating_in_proxy, delete_call),
        lag(&gone_from_proxy, slice_gone.at_us)
    );
    let slice_terminating = at("EndpointChanged(terminating)", &|e| {
        e.source == EventSource::EndpointSlice
            && matches!(
                e.kind,
                LifecycleKind::EndpointChanged {
                    terminating: true,
                    ..
                }
            )
    });
    println!(
        "after the delete call: pod watch saw the deletion at +{} µs, slice watch the terminating endpoint at +{} µs",
        lag(&deletion, delete_call),
        lag(&slice_terminating, delete_call)
    );
    let min = PROPAGATION.as_micros() as i64;
    assert!(
        lag(&terminating_in_proxy, delete_call) >= min,
        "the proxy saw the deletion too early"
    );
    assert!(
        gone_from_proxy.at_us
            >= terminating_in_proxy.at_us + PROPAGATION.as_micros() as u64 - 100_000
    );
    let victim_in_proxy: Vec<&LifecycleKind> = events
        .iter()
        .filter(|e| e.pod.as_deref() == Some(victim.as_str()) && e.source == EventSource::Proxy)
        .map(|e| &e.kind)
        .collect();
    // Each endpoint change of the victim at most once (two listeners
    // reported each), never the same state twice in a row.
    let victim_in_slices = events
        .iter()
        .filter(|e| {
            e.pod.as_deref() == Some(victim.as_str()) && e.source == EventSource::EndpointSlice
        })
        .count();
    assert!(
        (3..=victim_in_slices).contains(&victim_in_proxy.len()),
        "{victim_in_slices} slice changes, proxy: {victim_in_proxy:?}"
    );
    assert!(
        victim_in_proxy.windows(2).all(|w| w[0] != w[1]),
        "{victim_in_proxy:?}"
    );
    let views = events
        .iter()
        .filter(|e| matches!(e.kind, LifecycleKind::ProxyView { .. }))
        .count();
    assert!(
        applied >= 2 * views,
        "two listeners: {applied} raw sets for {views} views"
    );
    println!(
        "proxy reports: {applied} applied sets, {} served records",
        records.len()
    );

    // The replacement, in order.
    let replacement = events
        .iter()
        .find(|e| matches!(e.kind, LifecycleKind::PodCreated { .. }) && e.at_us > deletion.at_us)
        .and_then(|e| e.pod.clone())
        .expect("a replacement pod");
    assert_in_order(
        events,
        &replacement,
        &[
            (
                "PodCreated",
                &k(|k| {
                    matches!(
                        k,
                        LifecycleKind::PodCreated {
                            replicaset: Some(_),
                            template_hash: Some(_)
                        }
                    )
                }),
            ),
            (
                "PodScheduled",
                &k(|k| matches!(k, LifecycleKind::PodScheduled { .. })),
            ),
            (
                "ContainerStarted",
                &k(|k| matches!(k, LifecycleKind::ContainerStarted { restart_count: 0 })),
            ),
            ("PodReady", &k(|k| *k == LifecycleKind::PodReady)),
            (
                "EndpointChanged{ready:true}",
                &k(|k| matches!(k, LifecycleKind::EndpointChanged { ready: true, .. })),
            ),
        ],
    );

    // Endpoint counts went 2 → 1 ready while the victim terminated.
    assert!(
        events
            .iter()
            .any(|e| e.kind == LifecycleKind::EndpointsCount { ready: 1, total: 2 })
    );

    // Watch delivery delay: server stamp (µs eventTime) → observation.
    let mut delays: Vec<i64> = events
        .iter()
        .filter(|e| e.source == EventSource::Event)
        .filter_map(|e| e.server_us.map(|s| e.at_us as i64 - s))
        .collect();
    delays.sort_unstable();
    if !delays.is_empty() {
        println!(
            "event watch delivery delay over {} events: min {} µs, median {} µs, max {} µs",
            delays.len(),
            delays[0],
            delays[delays.len() / 2],
            delays[delays.len() - 1]
        );
    }
}

/// What a timeline says about the workload's objects, without the moments
/// it observed them: (source, pod, what).
fn object_facts(events: &[LifecycleEvent]) -> Vec<String> {
    let mut facts: Vec<String> = events
        .iter()
        .filter(|e| {
            matches!(
                e.source,
                EventSource::Pod
                    | EventSource::EndpointSlice
                    | EventSource::ReplicaSet
                    | EventSource::Deployment
            )
        })
        .map(|e| {
            format!(
                "{:?} {} {:?}",
                e.source,
                e.pod.as_deref().unwrap_or("-"),
                e.kind
            )
        })
        .collect();
    facts.sort();
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_on_the_waits_shared_watches_sees_what_its_own_watches_see() {
    let cluster = EmbeddedCluster::start(&ClusterOptions {
        demo_binary: Some(env!("CARGO_BIN_EXE_rolltest").into()),
        propagation: Propagation::fixed(Duration::from_millis(200)),
        ..Default::default()
    })
    .await
    .expect("cluster");
    let c = k8s::connect(&KubeSource::text(cluster.kubeconfig()))
        .await
        .expect("connect");
    let (d, s) = manifests();
    Api::<Deployment>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    Api::<Service>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &s)
        .await
        .expect("create service");

    // The waits and one timeline on one set of watches, as a run does.
    let watches = k8s::Watches::start(&c, "web", Some("web"))
        .await
        .expect("watches");
    let ready = k8s::wait_ready_on(&c, &watches, Duration::from_secs(60), None)
        .await
        .expect("ready");
    assert_eq!(ready.selector, "app=web");
    assert_eq!(ready.service.as_ref().map(|s| s.ready_endpoints), Some(2));
    let target = WatchTarget {
        deployment: "web".into(),
        pod_selector: ready.selector.clone(),
        service: Some("web".into()),
        infer_steps_from_killing: false,
    };
    let clock = RunClock::start();
    let (shared_tx, mut shared_rx) = unbounded_channel();
    let shared =
        timeline::start_shared(&watches, c.client.clone(), target.clone(), clock, shared_tx);
    let (own_tx, mut own_rx) = unbounded_channel();
    let own = timeline::start(c.client.clone(), "default", target, clock, own_tx);

    // Both list the same two ready pods first.
    let two_ready = |ev: &[LifecycleEvent]| {
        ev.iter()
            .filter(|e| e.source == EventSource::EndpointSlice && is_ready(e))
            .count()
            >= 2
    };
    let (mut from_shared, mut from_own) = (Vec::new(), Vec::new());
    let t = Duration::from_secs(30);
    until(
        &mut shared_rx,
        &mut from_shared,
        "the shared listing",
        t,
        two_ready,
    )
    .await;
    until(&mut own_rx, &mut from_own, "the own listing", t, two_ready).await;
    let victim = from_shared
        .iter()
        .find(|e| e.source == EventSource::EndpointSlice && is_ready(e))
        .and_then(|e| e.pod.clone())
        .expect("a ready pod");

    // A rollout, waited for on the same watches: every old pod gone.
    Api::<Deployment>::namespaced(c.client.clone(), "default")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"rolltest/restart": "1"}}}}})),
        )
        .await
        .expect("restart");
    let settled = k8s::wait_settled_on(&c, &watches, Duration::from_secs(90), None)
        .await
        .expect("settled");
    assert_eq!(settled.pods.len(), 2);
    assert!(!settled.pods.contains(&victim), "{:?}", settled.pods);

    // Each timeline saw the old pods deleted and the new ones ready.
    let done = |ev: &[LifecycleEvent]| {
        let deleted = ev
            .iter()
            .filter(|e| e.kind == LifecycleKind::PodDeleted)
            .count();
        let ready: std::collections::BTreeSet<_> = ev
            .iter()
            .filter(|e| e.source == EventSource::EndpointSlice && is_ready(e))
            .filter_map(|e| e.pod.clone())
            .collect();
        deleted >= 2 && settled.pods.iter().all(|p| ready.contains(p))
    };
    until(
        &mut shared_rx,
        &mut from_shared,
        "the rollout (shared)",
        t,
        done,
    )
    .await;
    until(&mut own_rx, &mut from_own, "the rollout (own)", t, done).await;
    // Let both drain what the API sent after the last pod went.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (rx, seen) in [
        (&mut shared_rx, &mut from_shared),
        (&mut own_rx, &mut from_own),
    ] {
        while let Ok(e) = rx.try_recv() {
            seen.push(e);
        }
    }
    assert!(shared.stop().await.is_empty());
    assert!(own.stop().await.is_empty());
    assert_eq!(
        object_facts(&from_shared),
        object_facts(&from_own),
        "shared:\n{}\nown:\n{}",
        dump(&from_shared),
        dump(&from_own)
    );
}

/// A shared watch may not yet have delivered a change the run has just made:
/// the settle wait must not judge the rollout on the Deployment as it was
/// before the restart (it would find every pod "of the current template"
/// and return at once). Here the Deployment's watch is held back by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settle_wait_does_not_judge_a_deployment_its_watch_has_not_seen_change() {
    use futures_util::StreamExt;
    use kube::runtime::watcher;

    let cluster = EmbeddedCluster::start(&ClusterOptions {
        demo_binary: Some(env!("CARGO_BIN_EXE_rolltest").into()),
        propagation: Propagation::fixed(Duration::from_millis(100)),
        ..Default::default()
    })
    .await
    .expect("cluster");
    let c = k8s::connect(&KubeSource::text(cluster.kubeconfig()))
        .await
        .expect("connect");
    let (d, _) = manifests();
    let deployments = Api::<Deployment>::namespaced(c.client.clone(), "default");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    let ready = k8s::wait_ready(&c, "web", None, Duration::from_secs(60), None)
        .await
        .expect("ready");
    let before = deployments.get("web").await.expect("get");

    // The Deployment's watch, fed by hand: it lists the Deployment as it was.
    let (feed, rx) = unbounded_channel::<Result<watcher::Event<Deployment>, watcher::Error>>();
    let held = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    for e in [
        watcher::Event::Init,
        watcher::Event::InitApply(before.clone()),
        watcher::Event::InitDone,
    ] {
        feed.send(Ok(e)).expect("feed");
    }
    let real = k8s::Watches::start(&c, "web", None).await.expect("watches");
    let watches = k8s::Watches {
        deployments: k8s::Shared::from_stream(held, "deployments"),
        ..real
    };

    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"rolltest/restart": "1"}}}}})),
        )
        .await
        .expect("restart");
    let held_back = k8s::wait_settled_on(&c, &watches, Duration::from_secs(2), None).await;
    let e = held_back.expect_err("settled on a Deployment its watch has not seen change");
    assert!(e.to_string().contains("the watch shows generation"), "{e}");

    // Once the watch delivers the Deployment's changes, the rollout settles
    // with none of the old pods.
    let live = watcher(
        deployments.clone(),
        watcher::Config::default().fields("metadata.name=web"),
    );
    let pump = tokio::spawn(async move {
        let mut live = std::pin::pin!(live);
        while let Some(item) = live.next().await {
            if let Ok(e) = item
                && feed.send(Ok(e)).is_err()
            {
                return;
            }
        }
    });
    let settled = k8s::wait_settled_on(&c, &watches, Duration::from_secs(90), None)
        .await
        .expect("settled");
    pump.abort();
    assert_eq!(settled.pods.len(), 2);
    let old_hash = ready.template_hash.expect("a template hash");
    assert_ne!(settled.template_hash.as_deref(), Some(old_hash.as_str()));
}
