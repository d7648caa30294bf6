//! Helpers shared by the integration tests: the demo app as a child process,
//! tiny misbehaving servers, and the generator driven in-process.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Child, Command, Output, Stdio},
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use rolltest_core::model::{RequestRecord, RunClock};
use rolltest_loadgen::{self as loadgen, LiveCounters, LoadSpec, Target};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rolltest")
}

/// Runs `rolltest ARGS` in the current directory.
pub fn rolltest(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run rolltest")
}

/// The exit code of a finished `rolltest`.
pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

/// Standard output, then standard error.
pub fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `rolltest serve` on a free loopback port; killed on drop.
pub struct DemoApp {
    pub child: Child,
    pub addr: SocketAddr,
}

impl DemoApp {
    pub fn start(args: &[&str]) -> DemoApp {
        let mut child = Command::new(bin())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("POD_NAME", "demo-1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rolltest serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("demo app did not report its address");
        DemoApp {
            child,
            addr: addr.parse().expect("address"),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a misbehaving test server does with each connection.
#[derive(Clone, Copy)]
pub enum Misbehave {
    /// Read the request, then reset the connection (RST).
    Reset,
    /// Read the request, then close without answering (FIN).
    Close,
    /// Read the request and never answer.
    Stall,
    /// Answer with this status.
    Status(u16),
}

/// A server on 127.0.0.1:0 that misbehaves on every connection. Runs until the test ends.
pub fn misbehaving_server(how: Misbehave) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            read_request(&mut stream);
            match how {
                Misbehave::Reset => {
                    set_linger_zero(&stream);
                    drop(stream);
                }
                Misbehave::Close => drop(stream),
                Misbehave::Stall => held.push(stream),
                Misbehave::Status(code) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    addr
}

fn read_request(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

pub fn target(url: &str) -> Target {
    Target {
        url: url.parse().expect("url"),
        service: None,
        service_name: None,
        method: http::Method::GET,
        headers: Vec::new(),
        body: bytes::Bytes::new(),
    }
}

pub fn spec(rate: f64, duration: Duration, timeout: Duration) -> LoadSpec {
    LoadSpec {
        rate,
        duration,
        timeout,
        max_in_flight: 512,
        keepalive: true,
        idle_timeout: None,
        send_quantum: None,
    }
}

/// Runs the generator in-process and returns every record, sorted by seq.
pub fn run_load(url: &str, spec: &LoadSpec) -> (Vec<RequestRecord>, Arc<LiveCounters>) {
    let (records, live, _) = run_load_outcome(url, spec);
    (records, live)
}

/// [`run_load`], with the generator's outcome (its connections among them).
#[allow(dead_code)]
pub fn run_load_outcome(
    url: &str,
    spec: &LoadSpec,
) -> (Vec<RequestRecord>, Arc<LiveCounters>, loadgen::LoadOutcome) {
    let (run, rx, live) = start_load(url, spec, Arc::new(loadgen::Stop::default()));
    let outcome = run.wait().expect("wait");
    let mut records: Vec<RequestRecord> = rx.try_iter().flatten().collect();
    records.sort_by_key(|r| r.seq);
    (records, live, outcome)
}

/// Starts the generator against `url` (its schedule 5 ms from now), with
/// `stop` to end it early; the records arrive on the receiver.
pub fn start_load(
    url: &str,
    spec: &LoadSpec,
    stop: Arc<loadgen::Stop>,
) -> (
    loadgen::LoadRun,
    mpsc::Receiver<Vec<RequestRecord>>,
    Arc<LiveCounters>,
) {
    let target = target(url);
    let addr: SocketAddr = format!(
        "{}:{}",
        target.url.host().expect("host"),
        target.url.port_u16().unwrap_or(80)
    )
    .parse()
    .expect("addr");
    let (tx, rx) = mpsc::channel();
    let live = Arc::new(LiveCounters::default());
    let run = loadgen::start(
        &target,
        addr,
        spec,
        RunClock::start(),
        Instant::now() + Duration::from_millis(5),
        tx,
        stop,
        live.clone(),
    )
    .expect("start");
    (run, rx, live)
}

/// A kube-rs client for a kubeconfig's text (its current context, or
/// `context`), with kube's automatic retries off so every Status is seen.
pub async fn kube_client(kubeconfig: &str, context: Option<&str>) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).expect("parse kubeconfig");
    let opts = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &opts)
        .await
        .expect("config");
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

/// Runs a scenario with `once` (it returns the run; `verdict` reads its exit
/// code, summary and output), again while the run is inconclusive (exit 4)
/// only because the machine held the generator back: every inconclusive
/// reason in its summary is schedule lag over its limit (another build or
/// test on the 2 cores). Such a run proves nothing either way about the
/// rollout; any other inconclusive reason (dropped requests, a stalled
/// rollout) counts. Three runs at most; each rerun is printed.
pub fn timely<T>(
    what: &str,
    mut once: impl FnMut() -> T,
    verdict: impl Fn(&T) -> (i32, &serde_json::Value, &str),
) -> T {
    let mut run = once();
    for _ in 1..3 {
        let (code, summary, text) = verdict(&run);
        if !inconclusive_on_lag_alone(code, summary) {
            break;
        }
        eprintln!("{what}: inconclusive on schedule lag alone, once more:\n{text}");
        run = once();
    }
    run
}

fn inconclusive_on_lag_alone(code: i32, summary: &serde_json::Value) -> bool {
    let reasons = summary["inconclusive_reasons"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    code == 4
        && !reasons.is_empty()
        && reasons
            .iter()
            .all(|r| r.as_str().is_some_and(|r| r.contains("schedule lag")))
}
