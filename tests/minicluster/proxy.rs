//! The embedded cluster's service proxy over real loopback sockets: backend
//! choice (ready first, serving-and-terminating as the fallback), the
//! propagation delay, L4 pinning and resets, L7 per-request spreading,
//! 502/503 answers and retries, and the attribution records.
//!
//! Backends are small in-test HTTP servers that name their pod in
//! `x-rolltest-pod`, plus real `rolltest serve` processes where it matters.
//! Clients are blocking raw HTTP/1.1 connections so resets are visible.

use std::{
    collections::HashMap,
    convert::Infallible,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::mpsc as std_mpsc,
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use rolltest_minicluster::proxy::{
    ConnectionEnd, Endpoint, Outcome, Propagation, ProxyEvent, ProxyMode, ProxyReason, ServiceProxy,
};
use tokio::{io::AsyncReadExt, runtime::Runtime, sync::mpsc, task::JoinHandle};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------- backends

/// A tokio task killed on drop.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An in-test HTTP/1.1 keep-alive server answering every request with 200,
/// `x-rolltest-pod: <pod>` and the pod name as body.
fn pod_server(rt: &Runtime, pod: &str) -> (SocketAddr, Task) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    let pod = pod.to_owned();
    let task = rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let pod = pod.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let pod = pod.clone();
                    async move {
                        let mut response = Response::new(Full::new(Bytes::from(pod.clone())));
                        response
                            .headers_mut()
                            .insert("x-rolltest-pod", pod.parse().expect("header value"));
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, Task(task))
}

/// A server that reads a request and then resets the connection.
fn resetting_server(rt: &Runtime) -> (SocketAddr, Task) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    let task = rt.spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.set_zero_linger();
                drop(stream);
            });
        }
    });
    (addr, Task(task))
}

/// An address nothing listens on (connecting is refused).
fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// `rolltest serve` as a child process; killed on drop.
struct ServeProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServeProcess {
    /// Listens on `ip` (a pod IP such as 127.0.1.N) and a free port.
    fn start(pod: &str, ip: &str) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rolltest"))
            .args(["serve", "--listen", &format!("{ip}:0"), "--pod-name", pod])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rolltest serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std_mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(10));
        // Built before checking, so the child is killed if the check fails.
        let mut process = ServeProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        process.addr = addr
            .ok()
            .and_then(|a| a.parse().ok())
            .expect("rolltest serve did not report its address");
        process
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(pod: &str, addr: SocketAddr) -> Endpoint {
    Endpoint {
        pod: pod.to_owned(),
        addr,
        ready: true,
        serving: true,
        terminating: false,
    }
}

fn terminating(pod: &str, addr: SocketAddr, serving: bool) -> Endpoint {
    Endpoint {
        pod: pod.to_owned(),
        addr,
        ready: false,
        serving,
        terminating: true,
    }
}

// ------------------------------------------------------------------- proxy

/// A proxy with its events collected.
struct Harness {
    proxy: ServiceProxy,
    events: mpsc::UnboundedReceiver<ProxyEvent>,
    /// Served records seen so far.
    served: Vec<ProxyEvent>,
    /// Applied events seen so far.
    applied: usize,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

impl Harness {
    fn start(mode: ProxyMode, propagation: Propagation) -> Harness {
        let (tx, events) = mpsc::unbounded_channel();
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let proxy = ServiceProxy::start_with_seed(listen, mode, propagation, 1, tx).expect("start");
        Harness {
            proxy,
            events,
            served: Vec::new(),
            applied: 0,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.local_addr()
    }

    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            match event {
                ProxyEvent::Applied { .. } => self.applied += 1,
                served => self.served.push(served),
            }
        }
    }

    /// Updates the endpoints and waits until the proxy applied them.
    fn apply(&mut self, endpoints: Vec<Endpoint>) {
        self.drain();
        let before = self.applied;
        self.proxy.update(endpoints);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.applied == before {
            assert!(Instant::now() < deadline, "update not applied within 5s");
            thread::sleep(ms(1));
            self.drain();
        }
    }

    /// The Served record of the connection whose local address is `client`,
    /// waiting up to 3 s for it; all of them for L7 (one per request).
    fn served_by(&mut self, client: SocketAddr, count: usize) -> Vec<(Option<String>, Outcome)> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            self.drain();
            let found: Vec<(Option<String>, Outcome)> = self
                .served
                .iter()
                .filter_map(|e| match e {
                    ProxyEvent::Served {
                        client: c,
                        pod,
                        outcome,
                        ..
                    } if *c == client => Some((pod.clone(), outcome.clone())),
                    _ => None,
                })
                .collect();
            if found.len() >= count || Instant::now() > deadline {
                return found;
            }
            thread::sleep(ms(2));
        }
    }
}

// ------------------------------------------------------------------ client

/// A raw HTTP/1.1 client connection (keep-alive).
struct Http {
    stream: TcpStream,
    local: SocketAddr,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn pod(&self) -> Option<String> {
        self.header("x-rolltest-pod").map(str::to_owned)
    }
}

impl Http {
    fn connect(addr: SocketAddr) -> io::Result<Http> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        // Taken at once: the proxy may reset the connection right away.
        let local = stream.local_addr()?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        // Fails on a connection that was already reset; the request will say.
        let _ = stream.set_nodelay(true);
        Ok(Http {
            stream,
            local,
            buf: Vec::new(),
        })
    }

    fn local(&self) -> SocketAddr {
        self.local
    }

    fn request(&mut self, method: &str) -> io::Result<Resp> {
        let request = format!("{method} / HTTP/1.1\r\nHost: svc\r\ncontent-length: 0\r\n\r\n");
        self.stream.write_all(request.as_bytes())?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status = lines
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| io::Error::other(format!("bad head {head:?}")))?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let length = if method == "HEAD" { 0 } else { length };
                while self.buf.len() < end + 4 + length {
                    self.fill()?;
                }
                self.buf.drain(..end + 4 + length);
                return Ok(Resp { status, headers });
            }
            self.fill()?;
        }
    }

    fn get(&mut self) -> Resp {
        self.request("GET").unwrap_or_else(|e| panic!("GET: {e}"))
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// One GET on a fresh connection; returns the pod and the client address.
fn get_once(addr: SocketAddr) -> (Option<String>, SocketAddr) {
    let mut http = Http::connect(addr).expect("connect");
    let response = http.get();
    (response.pod(), http.local())
}

fn count(pods: &[Option<String>]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for pod in pods.iter().flatten() {
        *counts.entry(pod.clone()).or_insert(0) += 1;
    }
    counts
}

/// One GET on a fresh connection whose local address is known before
/// connecting (the proxy may reset it during the handshake); returns that
/// address and what the client read.
async fn raw_get(addr: SocketAddr) -> (SocketAddr, io::Result<Vec<u8>>) {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let local = socket.local_addr().expect("local addr");
    let exchange = async {
        let mut stream = socket.connect(addr).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
            .await?;
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await?;
        Ok(all)
    };
    let result = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)));
    (local, result)
}

fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

// ------------------------------------------------------------------- tests

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
fn an_update_takes_effect_only_after_the_propagation_delay() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let (b, _tb) = pod_server(&rt, "pod-b");
    let delay = Propagation::fixed(ms(300));
    let mut proxy = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        delay,
    );
    let started = Instant::now();
    proxy.apply(vec![ready("pod-a", a), ready("pod-b", b)]);
    assert!(
        started.elapsed() >= ms(290),
        "applied after {:?}",
        started.elapsed()
    );

    let mut http = Http::connect(proxy.addr()).expect("connect");
    let written = Instant::now();
    proxy.proxy.update(vec![ready("pod-b", b)]);
    thread::sleep(ms(100));
    let early: Vec<Option<String>> = (0..6).map(|_| http.get().pod()).collect();
    assert!(
        written.elapsed() < ms(280),
        "too slow to test: {:?}",
        written.elapsed()
    );
    assert!(
        count(&early).contains_key("pod-a"),
        "removed pod gone too early: {early:?}"
    );

    thread::sleep(ms(500).saturating_sub(written.elapsed()));
    let late: Vec<Option<String>> = (0..6).map(|_| http.get().pod()).collect();
    assert_eq!(count(&late).get("pod-b"), Some(&6), "{late:?}");
}

#[test]
fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let (old, _told) = pod_server(&rt, "pod-old");
    let (gone, _tgone) = pod_server(&rt, "pod-gone");
    let mut proxy = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        Propagation::default(),
    );
    let mut http = Http::connect(proxy.addr()).expect("connect");

    proxy.apply(vec![terminating("pod-old", old, true), ready("pod-a", a)]);
    let pods: Vec<Option<String>> = (0..6).map(|_| http.get().pod()).collect();
    assert_eq!(count(&pods).get("pod-a"), Some(&6), "{pods:?}");

    let not_ready = Endpoint {
        ready: false,
        serving: false,
        ..ready("pod-gone", gone)
    };
    proxy.apply(vec![
        terminating("pod-old", old, true),
        terminating("pod-gone", gone, false),
        not_ready,
    ]);
    let pods: Vec<Option<String>> = (0..6).map(|_| http.get().pod()).collect();
    assert_eq!(count(&pods).get("pod-old"), Some(&6), "{pods:?}");

    proxy.apply(vec![terminating("pod-gone", gone, false)]);
    let response = http.get();
    assert_eq!(response.status, 503);
    assert_eq!(response.header("x-rolltest-proxy"), Some("no-endpoints"));
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
fn l4_resets_the_client_for_dead_backends_and_missing_endpoints() {
    let rt = runtime();
    let (resetting, _tr) = resetting_server(&rt);
    let mut proxy = Harness::start(ProxyMode::L4, Propagation::default());

    let cases = [
        (Vec::new(), ConnectionEnd::NoEndpoints),
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
            attempts: 1
        }
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
                    attempts: 2,
                    ..
                }
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
fn shutdown_closes_the_listener_and_cuts_live_connections() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let mut proxy = Harness::start(ProxyMode::L4, Propagation::default());
    proxy.apply(vec![ready("pod-a", a)]);
    let mut live = Http::connect(proxy.addr()).expect("connect");
    assert_eq!(live.get().pod().as_deref(), Some("pod-a"));
    let addr = proxy.addr();
    proxy.proxy.shutdown();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    assert!(live.request("GET").is_err(), "the live connection was cut");
}

// --------------------------------------------------------------- benchmark

/// What one `rolltest load` run measured.
struct LoadFigures {
    /// Achieved share of the asked rate.
    ratio: f64,
    /// Requests that were not sent in time (the generator could not keep up).
    dropped: u64,
    /// Requests that failed.
    failed: u64,
    /// Latency of each ok request from when it was sent to its response, in
    /// µs, sorted: the generator's own scheduling lag is left out, so the
    /// difference between two targets is what the hop in between adds.
    service_us: Vec<u64>,
}

impl LoadFigures {
    /// The `q` quantile of the service latency, µs.
    fn quantile(&self, q: f64) -> u64 {
        if self.service_us.is_empty() {
            return 0;
        }
        let rank = ((self.service_us.len() as f64) * q).ceil() as usize;
        self.service_us[rank.clamp(1, self.service_us.len()) - 1]
    }
}

/// `rolltest load URL` for `duration` at `rate`, read back from its run
/// directory.
fn load(url: &str, rate: u32, duration: &str, out: &std::path::Path) -> Option<LoadFigures> {
    let status = Command::new(env!("CARGO_BIN_EXE_rolltest"))
        .args([
            "load",
            url,
            "--rate",
            &rate.to_string(),
            "--duration",
            duration,
            "--quiet",
        ])
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    let _ = status;
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).ok()?).ok()?;
    let count = |k: &str| summary["requests"][k].as_u64().unwrap_or(0);
    let mut reader = csv::Reader::from_path(out.join("records.csv")).ok()?;
    let headers = reader.headers().ok()?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (intended, sent, latency, outcome) = (
        column("intended_us")?,
        column("sent_us")?,
        column("latency_us")?,
        column("outcome")?,
    );
    let mut service_us: Vec<u64> = reader
        .records()
        .map_while(Result::ok)
        .filter(|r| r.get(outcome) == Some("ok"))
        .filter_map(|r| {
            let field = |i: usize| r.get(i).and_then(|v| v.parse::<u64>().ok());
            let lag = field(sent)?.checked_sub(field(intended)?)?;
            field(latency)?.checked_sub(lag)
        })
        .collect();
    service_us.sort_unstable();
    let _ = std::fs::remove_dir_all(out);
    Some(LoadFigures {
        ratio: summary["achieved_ratio"].as_f64().unwrap_or(0.0),
        dropped: count("dropped"),
        failed: count("failed"),
        service_us,
    })
}

/// A reference forwarder from the distribution (haproxy, socat), started
/// only if installed; killed on drop.
struct Reference {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Reference {
    /// A free loopback port (bound, read, released: fine for a benchmark).
    fn free_addr() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local addr")
    }

    fn start(name: &'static str, mut command: Command, addr: SocketAddr) -> Option<Reference> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let reference = Reference { name, child, addr };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(ms(20));
        }
        Some(reference)
    }

    /// haproxy in TCP mode, one thread, splicing when it pays
    /// (`option splice-auto`).
    fn haproxy(backend: SocketAddr, dir: &std::path::Path) -> Option<Reference> {
        let addr = Self::free_addr();
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
                 timeout client 60s\n  timeout server 60s\n  option splice-auto\n\
                 listen l4\n  bind {addr}\n  server app {backend}\n"
            ),
        )
        .ok()?;
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&config);
        Self::start("haproxy", command, addr)
    }

    /// socat forking a process per connection.
    fn socat(backend: SocketAddr) -> Option<Reference> {
        let addr = Self::free_addr();
        let mut command = Command::new("socat");
        command.args([
            format!(
                "TCP-LISTEN:{},bind={},reuseaddr,fork,nodelay",
                addr.port(),
                addr.ip()
            ),
            format!("TCP:{backend},nodelay"),
        ]);
        Self::start("socat", command, addr)
    }
}

impl Reference {
    /// CPU time (user + system) of the reference process so far, from
    /// `/proc` (children not included, so socat's per-connection forks
    /// are not counted; haproxy is one process).
    fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line; 12 and 13
        // after the command name.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(Duration::from_micros(ticks * 1_000_000 / hz))
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut values: Vec<i64>) -> i64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Latency and throughput direct vs through the proxy (and, when installed,
/// haproxy and socat as references for what any user-space TCP forwarder
/// costs on this machine). A benchmark, not a check: run with
/// `cargo test --release --test minicluster_proxy bench -- --ignored --nocapture`.
/// `ROLLTEST_BENCH_ROUNDS` (default 3) sets the interleaved 5k req/s rounds.
#[test]
#[ignore = "benchmark; prints figures"]
fn bench_direct_vs_l4_vs_l7() {
    let app = ServeProcess::start("bench", "127.0.0.1");
    let dir = std::env::temp_dir().join(format!("rolltest-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    // Attribution records are drained as they would be in a run.
    let drainer = |mut h: Harness| {
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while Instant::now() < deadline && !h.events.is_closed() {
                while h.events.try_recv().is_ok() {}
                thread::sleep(ms(5));
            }
            h
        })
    };
    let mut l4 = Harness::start(ProxyMode::L4, Propagation::default());
    let mut l7 = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        Propagation::default(),
    );
    l4.apply(vec![ready("bench", app.addr)]);
    l7.apply(vec![ready("bench", app.addr)]);
    let (l4_addr, l7_addr) = (l4.addr(), l7.addr());
    let (l4, l7) = (drainer(l4), drainer(l7));
    let references: Vec<Reference> = [
        Reference::haproxy(app.addr, &dir),
        Reference::socat(app.addr),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut targets = vec![("direct", app.addr), ("l4", l4_addr), ("l7", l7_addr)];
    targets.extend(references.iter().map(|r| (r.name, r.addr)));
    let rounds: usize = std::env::var("ROLLTEST_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);

    // Latency at 5k req/s: every target once per round, so machine noise
    // hits them alike; each round's figures are compared with that round's
    // direct run.
    let mut added: HashMap<&str, [Vec<i64>; 3]> = HashMap::new();
    let mut absolute: HashMap<&str, [Vec<i64>; 3]> = HashMap::new();
    let quantiles = [0.5, 0.99, 0.999];
    for round in 0..rounds {
        let mut direct = [0i64; 3];
        for (name, addr) in &targets {
            let out = dir.join(format!("{round}-{name}"));
            let Some(f) = load(&format!("http://{addr}/"), 5000, "4s", &out) else {
                println!("{name}: load failed");
                continue;
            };
            let q: Vec<i64> = quantiles.iter().map(|&q| f.quantile(q) as i64).collect();
            println!(
                "round {round} {name:>7} @ 5000 req/s: p50 {} µs p99 {} µs p99.9 {} µs \
                 ({:.2} % of the rate, {} failed)",
                q[0],
                q[1],
                q[2],
                f.ratio * 100.0,
                f.failed
            );
            if *name == "direct" {
                direct.copy_from_slice(&q);
            }
            for i in 0..3 {
                absolute.entry(name).or_default()[i].push(q[i]);
                added.entry(name).or_default()[i].push(q[i] - direct[i]);
            }
        }
    }
    println!("median over {rounds} rounds, latency from send at 5000 req/s (added vs direct):");
    for (name, _) in &targets {
        let (Some(abs), Some(add)) = (absolute.get(name), added.get(name)) else {
            continue;
        };
        let cell = |i: usize| {
            format!(
                "{} µs ({:+} µs)",
                median(abs[i].clone()),
                median(add[i].clone())
            )
        };
        println!(
            "  {name:>7}: p50 {}  p99 {}  p99.9 {}",
            cell(0),
            cell(1),
            cell(2)
        );
    }

    // Throughput: the share of the asked rate each target sustains.
    for rate in [20_000u32, 30_000] {
        for (name, addr) in &targets {
            let reference = references
                .iter()
                .find(|r| r.name == *name && r.name == "haproxy");
            let cpu_of = || match reference {
                Some(r) => r.cpu().unwrap_or_default(),
                None => process_cpu(),
            };
            let cpu_before = cpu_of();
            let out = dir.join(format!("{rate}-{name}"));
            let Some(f) = load(&format!("http://{addr}/"), rate, "3s", &out) else {
                println!("{name}: load failed");
                continue;
            };
            let cpu = cpu_of().saturating_sub(cpu_before);
            let cpu = match *name {
                "l4" | "l7" | "haproxy" => format!(
                    ", forwarder CPU {:.1} µs/request",
                    cpu.as_secs_f64() * 1e6 / (f.service_us.len().max(1) as f64)
                ),
                _ => String::new(),
            };
            println!(
                "{name:>7} @ {rate} req/s: {:.2} % of the rate ({} dropped, {} failed), \
                 p50 {} µs p99 {} µs{cpu}",
                f.ratio * 100.0,
                f.dropped,
                f.failed,
                f.quantile(0.5),
                f.quantile(0.99),
            );
        }
    }
    drop(references);
    let _ = std::fs::remove_dir_all(&dir);
    drop((l4, l7));
}

/// CPU time (user + system) of this process so far: the proxies' threads,
/// as the backends and the load generator are other processes.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    micros(usage.ru_utime) + micros(usage.ru_stime)
}
