//! The L7 proxy: per-request spreading, 502/503 answers, retries of
//! idempotent requests, backend connection reuse.

use super::*;

#[test]
fn l7_spreads_requests_of_one_connection_and_records_each() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let (b, _tb) = pod_server(&rt, "pod-b");
    let mut proxy = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        Propagation::default(),
    );
    proxy.apply(vec![ready("pod-a", a), ready("pod-b", b)]);
    let mut http = Http::connect(proxy.addr()).expect("connect");
    let pods: Vec<Option<String>> = (0..10).map(|_| http.get().pod()).collect();
    let counts = count(&pods);
    assert_eq!(
        (counts.get("pod-a"), counts.get("pod-b")),
        (Some(&5), Some(&5)),
        "{pods:?}"
    );

    let records = proxy.served_by(http.local(), 10);
    let recorded: Vec<Option<String>> = records.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(
        recorded, pods,
        "records name the pods that answered, in order"
    );
    assert!(records.iter().all(|(_, o)| matches!(
        o,
        Outcome::Response {
            status: 200,
            proxy: None,
            tries,
        } if tries.len() == 1 && tries[0].error.is_none()
    )));
}

#[test]
fn l7_answers_502_for_dead_backends_and_503_without_endpoints() {
    let rt = runtime();
    let (resetting, _tr) = resetting_server(&rt);
    let mut proxy = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        Propagation::default(),
    );
    let mut http = Http::connect(proxy.addr()).expect("connect");
    let cases = [
        (Vec::new(), 503, ProxyReason::NoEndpoints),
        (
            vec![ready("pod-dead", refused_addr())],
            502,
            ProxyReason::ConnectFailed,
        ),
        (
            vec![ready("pod-reset", resetting)],
            502,
            ProxyReason::BackendClosed,
        ),
    ];
    for (endpoints, status, reason) in cases {
        let pod = endpoints.first().map(|e| e.pod.clone());
        proxy.apply(endpoints);
        let response = http.get();
        assert_eq!(response.status, status);
        assert_eq!(response.header("x-rolltest-proxy"), Some(reason.as_str()));
        let records = proxy.served_by(http.local(), 1);
        let last = records.last().expect("a record");
        assert_eq!(last.0, pod);
        assert!(
            matches!(last.1, Outcome::Response { status: s, proxy: Some(r), .. } if s == status && r == reason),
            "{last:?}"
        );
        proxy.served.clear();
    }
}

#[test]
fn l7_retry_hides_a_refused_backend_for_idempotent_requests_only() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let dead = refused_addr();
    let endpoints = vec![ready("pod-dead", dead), ready("pod-a", a)];

    let mut plain = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        Propagation::default(),
    );
    plain.apply(endpoints.clone());
    let mut http = Http::connect(plain.addr()).expect("connect");
    let statuses: Vec<u16> = (0..4).map(|_| http.get().status).collect();
    assert!(
        statuses.contains(&502),
        "without retries the dead pod shows: {statuses:?}"
    );

    let mut retrying = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: true,
        },
        Propagation::default(),
    );
    retrying.apply(endpoints);
    let mut http = Http::connect(retrying.addr()).expect("connect");
    for _ in 0..4 {
        let response = http.get();
        assert_eq!(
            (response.status, response.pod().as_deref()),
            (200, Some("pod-a"))
        );
    }
    let posts: Vec<u16> = (0..4)
        .map(|_| http.request("POST").expect("POST").status)
        .collect();
    assert!(posts.contains(&502), "POST is never retried: {posts:?}");

    let records = retrying.served_by(http.local(), 8);
    let retried = records
        .iter()
        .filter(|(_, o)| {
            matches!(
                o,
                Outcome::Response {
                    status: 200,
                    tries,
                    ..
                } if tries.len() == 2
            )
        })
        .count();
    assert!(retried >= 1, "{records:?}");
    assert!(
        records[..4]
            .iter()
            .all(|(p, _)| p.as_deref() == Some("pod-a"))
    );
}

#[test]
fn l7_reuses_backend_connections() {
    let app = ServeProcess::start("pod-a", "127.0.0.1");
    let mut proxy = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        Propagation::default(),
    );
    proxy.apply(vec![ready("pod-a", app.addr)]);
    for _ in 0..3 {
        let mut http = Http::connect(proxy.addr()).expect("connect");
        for _ in 0..20 {
            assert_eq!(http.get().pod().as_deref(), Some("pod-a"));
        }
    }
    // Sequential requests need a single backend connection.
    let established = backend_connections(app.addr);
    assert_eq!(established, Some(1), "connections to the backend");
}

/// Established TCP connections whose local end is `addr` (Linux /proc).
fn backend_connections(addr: SocketAddr) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let ip = u32::from_ne_bytes(v4.ip().octets());
    let local = format!("{ip:08X}:{:04X}", v4.port());
    Some(
        table
            .lines()
            .skip(1)
            .filter(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"01")
            })
            .count(),
    )
}

#[test]
fn ingress_nginx_retries_on_the_next_upstream_up_to_3_tries_and_records_each() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let (resetting, _tr) = resetting_server(&rt);
    // ingress-nginx's data path; its sync rate has a test of its own
    // (crates/minicluster/src/proxy/sync.rs), here changes apply at once.
    let fast_sync = IngressNginx {
        min_sync_interval: ms(0),
        backends_sync_interval: ms(0),
        ..IngressNginx::DEFAULT
    };
    let mut proxy = Harness::start(ProxyMode::IngressNginx(fast_sync), Propagation::default());
    // One live pod among dead ones: every GET ends on pod-a, after as many
    // failed tries as the round-robin put in front of it.
    proxy.apply(vec![
        ready("pod-dead", refused_addr()),
        ready("pod-reset", resetting),
        ready("pod-a", a),
    ]);
    let mut http = Http::connect(proxy.addr()).expect("connect");
    for _ in 0..6 {
        let response = http.get();
        assert_eq!(
            (response.status, response.pod().as_deref()),
            (200, Some("pod-a"))
        );
    }
    let records = proxy.served_by(http.local(), 6);
    let tries: Vec<Vec<(String, Option<UpstreamError>)>> = records
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Response { tries, .. } => {
                Some(tries.iter().map(|t| (t.pod.clone(), t.error)).collect())
            }
            _ => None,
        })
        .collect();
    println!("tries: {tries:?}");
    assert!(
        tries.iter().any(|t| t.len() == 3),
        "some request needed all 3 tries: {tries:?}"
    );
    assert!(
        tries
            .iter()
            .flatten()
            .any(|t| t.1 == Some(UpstreamError::ConnectRefused))
    );
    assert!(
        tries
            .iter()
            .flatten()
            .any(|t| t.1 == Some(UpstreamError::Reset))
    );
    assert!(
        tries
            .iter()
            .all(|t| t.last().is_some_and(|l| l.0 == "pod-a" && l.1.is_none()))
    );
    proxy.served.clear();

    // Only dead pods: 502 after exactly 3 tries.
    proxy.apply(vec![
        ready("pod-dead", refused_addr()),
        ready("pod-dead-2", refused_addr()),
        ready("pod-dead-3", refused_addr()),
        ready("pod-dead-4", refused_addr()),
    ]);
    let response = http.get();
    assert_eq!(response.status, 502);
    let records = proxy.served_by(http.local(), 1);
    match &records.last().expect("a record").1 {
        Outcome::Response {
            status: 502,
            proxy: Some(ProxyReason::ConnectFailed),
            tries,
        } => assert_eq!(tries.len(), 3, "{tries:?}"),
        other => panic!("{other:?}"),
    }
    proxy.served.clear();

    // POST: retried after a refused connect (never sent), not after a reset
    // (sent: nginx does not repeat a non-idempotent request).
    proxy.apply(vec![ready("pod-dead", refused_addr()), ready("pod-a", a)]);
    for _ in 0..4 {
        let response = http.request("POST").expect("POST");
        assert_eq!(response.status, 200);
    }
    proxy.apply(vec![ready("pod-reset", resetting)]);
    let response = http.request("POST").expect("POST");
    assert_eq!(response.status, 502);
    let records = proxy.served_by(http.local(), 5);
    match &records.last().expect("a record").1 {
        Outcome::Response {
            status: 502,
            proxy: Some(ProxyReason::BackendClosed),
            tries,
        } => assert_eq!(tries.len(), 1, "POST not repeated once sent: {tries:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_l7_tries_once() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let mut proxy = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        Propagation::default(),
    );
    proxy.apply(vec![ready("pod-dead", refused_addr()), ready("pod-a", a)]);
    let mut http = Http::connect(proxy.addr()).expect("connect");
    let statuses: Vec<u16> = (0..4).map(|_| http.get().status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "{statuses:?}"
    );
    let records = proxy.served_by(http.local(), 4);
    assert!(records.iter().all(|(_, o)| matches!(
        o,
        Outcome::Response { tries, .. } if tries.len() == 1
    )));
}

#[test]
fn ingress_nginx_connects_to_a_torn_down_pod_time_out_then_go_to_the_next_upstream() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let network = Arc::new(IpAllocator::new());
    let connect_timeout = ms(300);
    let nginx = IngressNginx {
        min_sync_interval: ms(0),
        backends_sync_interval: ms(0),
        connect_timeout,
        ..IngressNginx::DEFAULT
    };
    let mut proxy = Harness::start_on(ProxyMode::IngressNginx(nginx), Arc::clone(&network));
    // Torn down: nothing listens there, but the kernel's refusal is what a
    // live sandbox gives; the network of a gone one drops the SYNs.
    let dead = SocketAddr::new([127, 0, 1, 78].into(), refused_addr().port());
    network.tear_down(dead.ip());
    proxy.apply(vec![ready("pod-dead", dead)]);
    let mut http = Http::connect(proxy.addr()).expect("connect");
    let started = Instant::now();
    let response = http.get();
    let took = started.elapsed();
    assert_eq!(response.status, 504, "nginx answers a timeout with 504");
    assert_eq!(
        response.header("x-rolltest-proxy"),
        Some(ProxyReason::Timeout.as_str())
    );
    assert!(
        took >= connect_timeout * 3,
        "3 tries of {connect_timeout:?}: {took:?}"
    );
    let records = proxy.served_by(http.local(), 1);
    assert!(
        matches!(&records[..], [(_, Outcome::Response { tries, .. })]
            if tries.len() == 3 && tries.iter().all(|t| t.error == Some(UpstreamError::ConnectTimeout))),
        "{records:?}"
    );
    proxy.served.clear();

    // With a live pod next to it, a request that tried the dead one first
    // succeeds on the next upstream, a connect timeout later.
    proxy.apply(vec![ready("pod-dead", dead), ready("pod-a", a)]);
    for _ in 0..2 {
        assert_eq!(http.get().pod().as_deref(), Some("pod-a"));
    }
    let records = proxy.served_by(http.local(), 2);
    let tried: Vec<Vec<(String, Option<UpstreamError>)>> = records
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Response { tries, .. } => {
                Some(tries.iter().map(|t| (t.pod.clone(), t.error)).collect())
            }
            _ => None,
        })
        .collect();
    assert!(
        tried.iter().any(|t| t.first()
            == Some(&("pod-dead".to_owned(), Some(UpstreamError::ConnectTimeout)))
            && t.last() == Some(&("pod-a".to_owned(), None))),
        "{tried:?}"
    );
}
