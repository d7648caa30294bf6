//! The embedded cluster's service proxy over real loopback sockets: backend
//! choice (ready first, serving-and-terminating as the fallback), the
//! propagation delay, L4 pinning and resets, L7 per-request spreading,
//! 502/503 answers and retries, and the attribution records.
//!
//! Backends are small in-test HTTP servers that name their pod in
//! `x-rolltest-pod`, plus real `rolltest serve` processes where it matters.
//! Clients are blocking raw HTTP/1.1 connections so resets are visible.
//!
//! Here the backends, the harness and the client; the tests by subject:
//! `endpoints` (backend choice, the propagation delay, shutdown), `l4`, `l7`,
//! and `bench` (ignored: direct vs L4 vs L7 under load).

mod bench;
mod endpoints;
mod l4;
mod l7;

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
use std::sync::Arc;

use rolltest_minicluster::{
    process::IpAllocator,
    proxy::{
        ConnectionEnd, Endpoint, IngressNginx, Outcome, Propagation, ProxyEvent, ProxyMode,
        ProxyReason, ServiceProxy, SyncRunner, UpstreamError,
    },
};
use tokio::{io::AsyncReadExt, runtime::Runtime, sync::mpsc, task::JoinHandle};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

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
        let proxy = ServiceProxy::start(listen, mode, propagation, tx).expect("start");
        Harness {
            proxy,
            events,
            served: Vec::new(),
            applied: 0,
        }
    }

    /// A proxy on the pods' `network` (torn-down addresses are dead).
    fn start_on(mode: ProxyMode, network: Arc<IpAllocator>) -> Harness {
        let (tx, events) = mpsc::unbounded_channel();
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let runner = SyncRunner::start(Propagation::default()).expect("runner");
        let proxy = ServiceProxy::start_on(listen, mode, &runner, tx, network).expect("start");
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
