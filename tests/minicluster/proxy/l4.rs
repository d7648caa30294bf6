//! The L4 proxy: new connections spread, live ones pinned, resets both
//! ways, a clean close passed on, each connection recorded.

use super::*;

#[test]
fn l4_spreads_new_connections_over_two_ready_pods_and_records_them() {
    // Pods on their own loopback IPs, as the embedded kubelet runs them.
    let a = ServeProcess::start("pod-a", "127.0.1.21");
    let b = ServeProcess::start("pod-b", "127.0.1.22");
    let mut proxy = Harness::start(ProxyMode::L4, Propagation::default());
    proxy.apply(vec![ready("pod-a", a.addr), ready("pod-b", b.addr)]);

    let results: Vec<(Option<String>, SocketAddr)> =
        (0..10).map(|_| get_once(proxy.addr())).collect();
    let pods: Vec<Option<String>> = results.iter().map(|(p, _)| p.clone()).collect();
    let counts = count(&pods);
    assert_eq!(counts.get("pod-a"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("pod-b"), Some(&5), "{counts:?}");

    for (pod, client) in results {
        let records = proxy.served_by(client, 1);
        assert_eq!(records.len(), 1, "one record per connection: {records:?}");
        let (recorded, outcome) = &records[0];
        assert_eq!(recorded, &pod);
        let Outcome::Connection {
            to_backend,
            to_client,
            end,
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        assert!(*to_backend > 0 && *to_client > 0, "{outcome:?}");
        assert_eq!(*end, ConnectionEnd::Closed);
    }
}

#[test]
fn l4_keeps_a_live_connection_pinned_after_its_endpoint_is_removed() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let (b, _tb) = pod_server(&rt, "pod-b");
    let mut proxy = Harness::start(ProxyMode::L4, Propagation::default());
    proxy.apply(vec![ready("pod-a", a)]);
    let mut pinned = Http::connect(proxy.addr()).expect("connect");
    assert_eq!(pinned.get().pod().as_deref(), Some("pod-a"));

    proxy.apply(vec![ready("pod-b", b)]);
    for _ in 0..5 {
        assert_eq!(pinned.get().pod().as_deref(), Some("pod-a"));
    }
    assert_eq!(get_once(proxy.addr()).0.as_deref(), Some("pod-b"));

    let client = pinned.local();
    drop(pinned);
    let records = proxy.served_by(client, 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0.as_deref(), Some("pod-a"));
}

#[test]
fn l4_resets_the_client_for_dead_backends() {
    let rt = runtime();
    let (resetting, _tr) = resetting_server(&rt);
    let mut proxy = Harness::start(ProxyMode::L4, Propagation::default());

    let cases = [
        (
            vec![ready("pod-dead", refused_addr())],
            ConnectionEnd::ConnectFailed,
        ),
        (
            vec![ready("pod-reset", resetting)],
            ConnectionEnd::BackendReset,
        ),
    ];
    for (endpoints, expected) in cases {
        proxy.apply(endpoints);
        let (local, result) = rt.block_on(raw_get(proxy.addr()));
        let err = result.expect_err("no response expected");
        assert!(
            is_reset(&err),
            "{expected:?}: client saw {err:?}, not a reset"
        );
        let records = proxy.served_by(local, 1);
        assert!(
            matches!(&records[..], [(_, Outcome::Connection { end, .. })] if *end == expected),
            "{expected:?}: {records:?}"
        );
    }
}

#[test]
fn l4_resets_the_backend_when_the_client_resets_and_records_it() {
    use tokio::io::AsyncWriteExt;
    let rt = runtime();
    let (pod, _task) = pod_server(&rt, "pod-a");
    let mut proxy = Harness::start(ProxyMode::L4, Propagation::default());
    proxy.apply(vec![ready("pod-a", pod)]);
    let addr = proxy.addr();
    let local = rt.block_on(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
            .await
            .expect("send");
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.expect("response");
        assert!(String::from_utf8_lossy(&buf[..n]).contains("x-rolltest-pod: pod-a"));
        let local = stream.local_addr().expect("local addr");
        // An abortive close: the proxy reads a reset from the client.
        stream.set_zero_linger().expect("linger");
        drop(stream);
        local
    });
    let records = proxy.served_by(local, 1);
    assert!(
        matches!(
            &records[..],
            [(Some(pod), Outcome::Connection { end: ConnectionEnd::ClientReset, to_backend, to_client })]
                if pod == "pod-a" && *to_backend > 0 && *to_client > 0
        ),
        "{records:?}"
    );
}

#[test]
fn l4_passes_a_clean_backend_close_on_as_a_close() {
    let app = ServeProcess::start("pod-a", "127.0.0.1");
    let mut proxy = Harness::start(ProxyMode::L4, Propagation::default());
    proxy.apply(vec![ready("pod-a", app.addr)]);
    let mut http = Http::connect(proxy.addr()).expect("connect");
    http.stream
        .write_all(b"GET / HTTP/1.1\r\nHost: svc\r\nconnection: close\r\n\r\n")
        .expect("send");
    let mut all = Vec::new();
    http.stream
        .read_to_end(&mut all)
        .expect("a clean end of stream, not a reset");
    assert!(String::from_utf8_lossy(&all).contains("x-rolltest-pod: pod-a"));
}

/// One connect to `addr`: `Ok` if it was accepted, else its error.
fn connect_once(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
}

#[test]
fn l4_refuses_connections_while_no_endpoint_is_usable_like_a_reject_rule() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let mut proxy = Harness::start(ProxyMode::L4, Propagation::default());
    let refused = |what: &str, result: io::Result<TcpStream>| match result {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{what}: {e}"),
        Ok(_) => panic!("{what}: connect() succeeded, kube-proxy's REJECT refuses it"),
    };
    // No endpoint yet: the connect itself fails, as with REJECT.
    refused("no endpoints yet", connect_once(proxy.addr()));

    proxy.apply(vec![ready("pod-a", a)]);
    assert_eq!(get_once(proxy.addr()).0.as_deref(), Some("pod-a"));
    let mut pinned = Http::connect(proxy.addr()).expect("connect");
    assert_eq!(pinned.get().pod().as_deref(), Some("pod-a"));

    // Only a not-ready endpoint: no usable one, refused again on the same
    // address; the established connection lives on (conntrack).
    let mut not_ready = ready("pod-a", a);
    not_ready.ready = false;
    not_ready.serving = false;
    proxy.apply(vec![not_ready]);
    refused("no usable endpoint", connect_once(proxy.addr()));
    assert_eq!(pinned.get().pod().as_deref(), Some("pod-a"));
    proxy.apply(Vec::new());
    refused("no endpoint", connect_once(proxy.addr()));

    // Endpoints back: the same address accepts again.
    proxy.apply(vec![ready("pod-a", a)]);
    for _ in 0..3 {
        assert_eq!(get_once(proxy.addr()).0.as_deref(), Some("pod-a"));
    }
}

#[test]
fn l4_holds_a_new_connection_to_a_torn_down_pod_unanswered() {
    let network = Arc::new(IpAllocator::new());
    let mut proxy = Harness::start_on(ProxyMode::L4, Arc::clone(&network));
    // Nothing listens there: while the sandbox lives, the kernel refuses
    // and the client is reset at once.
    let dead = SocketAddr::new([127, 0, 1, 77].into(), refused_addr().port());
    proxy.apply(vec![ready("pod-dead", dead)]);
    let rt = runtime();
    let (_, result) = rt.block_on(raw_get(proxy.addr()));
    let err = result.expect_err("refused backend");
    assert!(is_reset(&err), "sandbox alive: a reset, got {err:?}");

    // Sandbox gone: nobody answers, the client waits until it gives up.
    network.tear_down(dead.ip());
    let started = Instant::now();
    let (local, result) = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let local = socket.local_addr().expect("local");
        let mut stream = socket
            .connect(proxy.addr())
            .await
            .expect("the proxy accepts");
        use tokio::io::AsyncWriteExt;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
            .await
            .expect("send");
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await;
        (local, read)
    });
    assert!(
        result.is_err(),
        "torn down: no answer at all, got {result:?} after {:?}",
        started.elapsed()
    );
    // The client gave up (dropped its connection): recorded as a failed connect.
    let records = proxy.served_by(local, 1);
    assert!(
        matches!(&records[..], [(Some(pod), Outcome::Connection { end: ConnectionEnd::ConnectFailed, to_backend: 0, to_client: 0 })] if pod == "pod-dead"),
        "{records:?}"
    );
}
