//! Integration tests of `rolltest serve`: each test spawns the real binary,
//! finds its port in the "listening on ADDR" log line, talks raw HTTP/1.1 to
//! it over loopback, and kills it (Drop guard) when done. Every wait is
//! bounded.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::ExitStatusExt,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_rolltest");
/// Upper bound for anything that should happen "soon" (startup, exit).
const WAIT: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------- process

/// A running `rolltest serve`; killed and reaped on drop.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    addr: Option<SocketAddr>,
    spawned_at: Instant,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `rolltest serve ARGS` with a clean pod environment plus `env`.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .env_remove("POD_NAME")
        .env_remove("POD_IP")
        .env_remove("PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let spawned_at = Instant::now();
    let mut child = cmd.spawn().expect("spawn rolltest serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Serve {
        child,
        lines,
        log: Vec::new(),
        addr: None,
        spawned_at,
    }
}

/// Spawns with `--listen 127.0.0.1:0` and waits until it listens.
fn serve(args: &[&str]) -> Serve {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    serve_env(&all, &[])
}

/// Spawns with exactly `args` and `env` and waits until it listens.
fn serve_env(args: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut s = spawn(args, env);
    let line = s.wait_log("listening on ", WAIT);
    s.addr = Some(parse_listening(&line));
    s
}

fn parse_listening(line: &str) -> SocketAddr {
    let rest = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let addr = rest.split_whitespace().next().unwrap_or_default();
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?} in {line:?}: {e}"))
}

impl Serve {
    fn addr(&self) -> SocketAddr {
        self.addr.expect("server address known")
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t")
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits for a log line containing `needle` (lines seen before count).
    fn try_wait_log(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        match self.try_wait_log(needle, timeout) {
            Some(line) => line,
            None => panic!(
                "no log line with {needle:?}; log so far:\n{}",
                self.log_text()
            ),
        }
    }

    /// Waits for a second log line containing `needle`.
    fn wait_second_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log.iter().filter(|l| l.contains(needle)).count() < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!("no second {needle:?} line; log:\n{}", self.log_text()),
            }
        }
    }

    fn log_text(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    fn try_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(ms(5));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.try_exit(timeout) {
            Some(status) => status,
            None => panic!("still running after {timeout:?}; log:\n{}", self.log_text()),
        }
    }

    fn connect(&self) -> Http {
        Http::connect(self.addr()).expect("connect to serve")
    }
}

/// Runs `rolltest serve ARGS` to completion (it must exit on its own).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut s = spawn(args, env);
    let status = s.wait_exit(WAIT);
    // The reader thread ends at EOF: collect everything.
    while let Ok(line) = s.lines.recv_timeout(ms(500)) {
        s.log.push(line);
    }
    (status, s.log.join("\n"))
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

// ------------------------------------------------------------------- HTTP

/// A raw HTTP/1.1 client connection (keep-alive unless the server closes).
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn pod(&self) -> Option<&str> {
        self.header("x-rolltest-pod")
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

impl Http {
    fn connect(addr: SocketAddr) -> io::Result<Http> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(8)))?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream,
            buf: Vec::new(),
        })
    }

    fn send(&mut self, method: &str, path: &str) -> io::Result<()> {
        let body = if method == "POST" { "payload" } else { "" };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: rolltest\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes())
    }

    fn read_response(&mut self) -> io::Result<Resp> {
        self.stream.set_read_timeout(Some(Duration::from_secs(8)))?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or_default();
                let status = status_line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + length {
                    self.fill()?;
                }
                let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + length]).into();
                self.buf.drain(..end + 4 + length);
                return Ok(Resp {
                    status,
                    headers,
                    body,
                });
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn request(&mut self, method: &str, path: &str) -> io::Result<Resp> {
        self.send(method, path)?;
        self.read_response()
    }

    fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Whether the server closes (FIN or reset) this idle connection within
    /// `timeout`; returns when it was seen closed.
    fn closed_within(&mut self, timeout: Duration) -> Option<Instant> {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set timeout");
        let mut chunk = [0u8; 64];
        match self.stream.read(&mut chunk) {
            Ok(0) => Some(Instant::now()),
            Ok(n) => panic!("unexpected {n} bytes on an idle connection"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(_) => Some(Instant::now()),
        }
    }
}

/// One request on a fresh connection.
fn get_once(addr: SocketAddr, path: &str) -> Resp {
    Http::connect(addr)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
        .get(path)
}

fn timed_get(addr: SocketAddr, path: &str) -> (Resp, Duration) {
    let mut conn = Http::connect(addr).expect("connect");
    let start = Instant::now();
    let resp = conn.get(path);
    (resp, start.elapsed())
}

// ------------------------------------------------------------------ tests

#[test]
fn every_response_names_the_pod_and_unknown_paths_are_404() {
    let s = serve_env(
        &["--listen", "127.0.0.1:0", "--pod-name", "from-flag"],
        &[("POD_NAME", "api-7")],
    );
    let mut conn = s.connect();
    for (path, status) in [
        ("/", 200),
        ("/healthz", 200),
        ("/livez", 200),
        ("/nope", 404),
    ] {
        let resp = conn.get(path);
        assert_eq!(resp.status, status, "{path}: {resp:?}");
        assert_eq!(
            resp.pod(),
            Some("api-7"),
            "{path}: POD_NAME wins over --pod-name"
        );
        assert!(!resp.closes(), "{path}: keep-alive while serving");
    }
    let root = conn.get("/");
    assert!(root.body.contains("api-7"), "{root:?}");
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let resp = conn.request(method, "/").expect("request");
        assert_eq!(resp.status, 200, "{method} /");
        assert_eq!(resp.pod(), Some("api-7"));
    }
}

#[test]
fn pod_name_falls_back_to_the_flag_then_the_hostname() {
    let s = serve(&["--pod-name", "web-3"]);
    assert_eq!(get_once(s.addr(), "/livez").pod(), Some("web-3"));

    let s = serve(&[]);
    let pod = get_once(s.addr(), "/livez").pod().map(str::to_owned);
    let pod = pod.expect("pod header without POD_NAME or --pod-name");
    assert!(!pod.is_empty());
    if let Ok(hostname) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        assert_eq!(pod, hostname.trim());
    }
}

#[test]
fn listen_address_defaults_to_pod_ip_and_port() {
    // POD_IP is used (not the 127.0.0.1 default), and PORT=0 picks a port.
    let s = serve_env(&[], &[("POD_IP", "127.0.0.2"), ("PORT", "0")]);
    let addr = s.addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.2");
    assert_ne!(addr.port(), 0);
    assert_eq!(get_once(addr, "/").status, 200);

    // PORT alone: 127.0.0.1.
    let s = serve_env(&[], &[("PORT", "0")]);
    assert_eq!(s.addr().ip().to_string(), "127.0.0.1");
    assert_eq!(get_once(s.addr(), "/healthz").status, 200);

    // A chosen PORT is honoured.
    let port = free_port();
    let s = serve_env(&[], &[("POD_IP", "127.0.0.1"), ("PORT", &port.to_string())]);
    assert_eq!(s.addr().port(), port);
}

#[test]
fn bad_pod_environment_is_bad_input() {
    let (status, log) = run_to_exit(&[], &[("POD_IP", "not-an-ip"), ("PORT", "0")]);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("POD_IP"), "{log}");
}

#[test]
fn drain_finishes_the_request_in_flight_and_refuses_new_connections() {
    let mut s = serve(&["--work", "1s"]);
    let addr = s.addr();
    let mut in_flight = s.connect();
    in_flight.send("GET", "/").expect("send");
    thread::sleep(ms(200));
    let sigterm_at = Instant::now();
    s.signal(libc::SIGTERM);
    s.wait_log("draining", WAIT);

    let refused = Http::connect(addr).err().map(|e| e.kind());
    assert_eq!(refused, Some(io::ErrorKind::ConnectionRefused));

    let resp = in_flight
        .read_response()
        .expect("in-flight request completes");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.closes(),
        "drain answers with Connection: close: {resp:?}"
    );
    assert!(
        in_flight.closed_within(ms(2000)).is_some(),
        "closed after the response"
    );

    let status = s.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", s.log_text());
    assert!(sigterm_at.elapsed() >= ms(700), "waited for the 1s request");
    s.wait_log("exit 0", WAIT);
}

#[test]
fn drain_closes_an_idle_keepalive_connection_only_after_the_grace() {
    let mut s = serve(&["--idle-grace", "700ms"]);
    let mut idle = s.connect();
    assert_eq!(idle.get("/healthz").status, 200);
    let mut reused = s.connect();
    assert_eq!(reused.get("/healthz").status, 200);

    let sigterm_at = Instant::now();
    s.signal(libc::SIGTERM);
    s.wait_log("draining", WAIT);

    // Within the grace the connection stays open and still serves.
    assert_eq!(idle.closed_within(ms(250)), None, "closed before the grace");
    let resp = reused.get("/livez");
    assert_eq!(resp.status, 200);
    assert!(resp.closes(), "{resp:?}");

    let closed_at = idle
        .closed_within(Duration::from_secs(3))
        .expect("idle connection closed after the grace");
    let after = closed_at - sigterm_at;
    assert!(
        after >= ms(700),
        "closed {after:?} after SIGTERM, before the grace"
    );

    assert_eq!(s.wait_exit(WAIT).code(), Some(0));
    s.wait_log("idle past the grace", WAIT);
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut s = serve(&[]);
    let _idle = s.connect();
    s.signal(libc::SIGINT);
    s.wait_log("SIGINT received", WAIT);
    assert_eq!(s.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn exit_mode_cuts_the_request_in_flight_with_143() {
    let mut s = serve(&["--on-sigterm", "exit", "--work", "3s"]);
    let mut conn = s.connect();
    conn.send("GET", "/").expect("send");
    thread::sleep(ms(200));
    let sigterm_at = Instant::now();
    s.signal(libc::SIGTERM);
    let result = conn.read_response();
    assert!(result.is_err(), "no response expected: {result:?}");
    let status = s.wait_exit(WAIT);
    assert_eq!(status.code(), Some(143), "{}", s.log_text());
    assert!(
        sigterm_at.elapsed() < Duration::from_secs(2),
        "did not wait for the work"
    );
}

#[test]
fn ignore_mode_keeps_serving_until_sigkill() {
    let mut s = serve(&["--on-sigterm", "ignore"]);
    let addr = s.addr();
    s.signal(libc::SIGTERM);
    s.wait_log("ignoring", WAIT);
    s.signal(libc::SIGTERM);
    s.wait_second_log("ignoring", WAIT);

    let resp = get_once(addr, "/");
    assert_eq!(resp.status, 200);
    assert!(!resp.closes());
    assert!(s.try_exit(ms(300)).is_none(), "exited after SIGTERM");

    s.signal(libc::SIGKILL);
    let status = s.wait_exit(WAIT);
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

/// /healthz on a keep-alive connection opened before SIGTERM, asked during
/// the drain.
fn healthz_during_drain(extra: &[&str]) -> Resp {
    let mut args = vec!["--idle-grace", "3s"];
    args.extend_from_slice(extra);
    let mut s = serve(&args);
    let mut conn = s.connect();
    assert_eq!(conn.get("/healthz").status, 200);
    s.signal(libc::SIGTERM);
    s.wait_log("draining", WAIT);
    let resp = conn.get("/healthz");
    assert_eq!(s.wait_exit(WAIT).code(), Some(0));
    resp
}

#[test]
fn fail_readiness_on_sigterm_turns_healthz_503_while_draining() {
    let failing = healthz_during_drain(&["--fail-readiness-on-sigterm"]);
    assert_eq!(failing.status, 503, "{failing:?}");
    assert!(failing.closes());
    assert_eq!(failing.pod().map(str::is_empty), Some(false));

    let default = healthz_during_drain(&[]);
    assert_eq!(default.status, 200, "readiness stays up without the flag");
    assert!(default.closes());
}

#[test]
fn ready_delay_answers_503_then_200() {
    let mut s = serve(&["--ready-delay", "600ms"]);
    let listening_seen = Instant::now();
    let addr = s.addr();
    assert_eq!(get_once(addr, "/healthz").status, 503);
    assert_eq!(
        get_once(addr, "/livez").status,
        200,
        "alive while not ready"
    );

    let mut conn = s.connect();
    let deadline = Instant::now() + WAIT;
    loop {
        let status = conn.get("/healthz").status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "never became ready");
        thread::sleep(ms(25));
    }
    assert!(listening_seen.elapsed() >= ms(450), "ready too soon");
    s.wait_log("ready (", WAIT);
}

#[test]
fn startup_delay_refuses_connections_until_listening() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().expect("addr");
    let mut s = spawn(&["--listen", &listen, "--startup-delay", "700ms"], &[]);
    s.wait_log("starting", WAIT);
    let refused = Http::connect(addr).err().map(|e| e.kind());
    assert_eq!(refused, Some(io::ErrorKind::ConnectionRefused));

    let deadline = Instant::now() + WAIT;
    let mut conn = loop {
        match Http::connect(addr) {
            Ok(conn) => break conn,
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
        }
        assert!(Instant::now() < deadline, "never listened");
        thread::sleep(ms(20));
    };
    assert!(
        s.spawned_at.elapsed() >= ms(700),
        "listened before the delay"
    );
    assert_eq!(conn.get("/").status, 200);
    s.wait_log("listening on", WAIT);
}

#[test]
fn broken_for_fails_root_while_readiness_says_ok() {
    let mut s = serve(&["--broken-for", "600ms"]);
    let listening_seen = Instant::now();
    let mut conn = s.connect();
    assert_eq!(conn.get("/").status, 503);
    assert_eq!(conn.get("/healthz").status, 200);

    let deadline = Instant::now() + WAIT;
    loop {
        assert_eq!(conn.get("/healthz").status, 200, "readiness throughout");
        let status = conn.get("/").status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "never recovered");
        thread::sleep(ms(25));
    }
    assert!(listening_seen.elapsed() >= ms(450), "recovered too soon");
    s.wait_log("broken period over", WAIT);
}

#[test]
fn crash_after_exits_1() {
    let mut s = serve(&["--crash-after", "400ms"]);
    assert_eq!(
        get_once(s.addr(), "/").status,
        200,
        "serves before crashing"
    );
    let status = s.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", s.log_text());
    assert!(s.spawned_at.elapsed() >= ms(400));
    s.wait_log("crashing", WAIT);
}

#[test]
fn work_time_delays_root_only() {
    let s = serve(&["--work", "300ms"]);
    let (resp, took) = timed_get(s.addr(), "/");
    assert_eq!(resp.status, 200);
    assert!(took >= ms(300), "took {took:?}");
    let (resp, took) = timed_get(s.addr(), "/healthz");
    assert_eq!(resp.status, 200);
    assert!(took < ms(300), "/healthz took {took:?}");
}

#[test]
fn work_range_draws_each_request_within_the_range() {
    let s = serve(&["--work", "100ms..300ms"]);
    let addr = s.addr();
    let handles: Vec<_> = (0..8)
        .map(|_| thread::spawn(move || timed_get(addr, "/")))
        .collect();
    let mut took = Vec::new();
    for handle in handles {
        let (resp, elapsed) = handle.join().expect("request thread");
        assert_eq!(resp.status, 200);
        took.push(elapsed);
    }
    for t in &took {
        assert!(
            *t >= ms(100) && *t <= ms(550),
            "{t:?} outside 100ms..300ms (+slack)"
        );
    }
    let spread = took.iter().max().copied().unwrap_or_default()
        - took.iter().min().copied().unwrap_or_default();
    assert!(spread >= ms(20), "work times not random: {took:?}");
}

#[test]
fn drain_timeout_cuts_a_long_request() {
    let mut s = serve(&["--work", "5s", "--drain-timeout", "400ms"]);
    let mut conn = s.connect();
    conn.send("GET", "/").expect("send");
    thread::sleep(ms(200));
    let sigterm_at = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(WAIT);
    let took = sigterm_at.elapsed();
    assert_eq!(status.code(), Some(0), "{}", s.log_text());
    assert!(
        took >= ms(400) && took < ms(3000),
        "exited {took:?} after SIGTERM"
    );
    assert!(
        conn.read_response().is_err(),
        "the cut request got no response"
    );
    s.wait_log("drain timeout", WAIT);
}

#[test]
fn bad_flag_values_exit_2_naming_the_flag() {
    let cases: [(&[&str], &str); 5] = [
        (&["--work", "5x"], "--work"),
        (&["--work", "2s..1s"], "--work"),
        (&["--on-sigterm", "bogus"], "--on-sigterm"),
        (&["--idle-grace", "soon"], "--idle-grace"),
        (&["--listen", "localhost"], "--listen"),
    ];
    for (args, flag) in cases {
        let (status, log) = run_to_exit(args, &[]);
        assert_eq!(status.code(), Some(2), "{args:?}: {log}");
        assert!(
            log.contains(flag),
            "{args:?}: message must name {flag}: {log}"
        );
    }
}

#[test]
fn a_port_in_use_is_a_run_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let addr = taken.local_addr().expect("local addr").to_string();
    let (status, log) = run_to_exit(&["--listen", &addr], &[]);
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("cannot listen on"), "{log}");
}

// ------------------------------------------------------- --dependency

/// Polls `path` on fresh connections until it answers `want`; returns how
/// long that took.
fn until_status(addr: SocketAddr, path: &str, want: u16, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let status = get_once(addr, path).status;
        if status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{path} still answers {status}, not {want}, after {timeout:?}"
        );
        thread::sleep(ms(20));
    }
}

#[test]
fn dependency_down_fails_healthz_and_root_but_not_livez() {
    // The dependency is another demo app on a fixed (just freed) port, so
    // it can be stopped and started again at the same address.
    let dep_port = free_port();
    let dep_listen = format!("127.0.0.1:{dep_port}");
    let dep_url = format!("http://127.0.0.1:{dep_port}/livez");
    let dep = serve_env(&["--listen", &dep_listen], &[]);
    let mut app = serve(&["--dependency", &dep_url]);
    let addr = app.addr();

    // Up: everything answers 200 (after the first check).
    until_status(addr, "/healthz", 200, WAIT);
    assert_eq!(get_once(addr, "/").status, 200);
    assert_eq!(get_once(addr, "/livez").status, 200);
    app.wait_log("dependency http://127.0.0.1", WAIT);

    // Down: readiness and the work fail within a second, liveness stays.
    drop(dep);
    let took = until_status(addr, "/healthz", 503, WAIT);
    assert!(took < Duration::from_secs(1), "503 only after {took:?}");
    let root = get_once(addr, "/");
    assert_eq!(root.status, 503);
    assert_eq!(
        get_once(addr, "/livez").status,
        200,
        "liveness ignores the dependency"
    );
    app.wait_log(" down: connect", WAIT);

    // Back: 200 again within a second of the dependency listening.
    let _dep = serve_env(&["--listen", &dep_listen], &[]);
    let took = until_status(addr, "/healthz", 200, WAIT);
    assert!(took < Duration::from_secs(1), "200 only after {took:?}");
    assert_eq!(get_once(addr, "/").status, 200);
}

#[test]
fn dependency_answering_5xx_counts_as_down() {
    // A dependency that is up but not ready: its /healthz answers 503.
    let dep = serve(&["--ready-delay", "1h"]);
    let url = format!("http://{}/healthz", dep.addr());
    let mut app = serve(&["--dependency", &url]);
    let addr = app.addr();
    app.wait_log("down: HTTP 503", WAIT);
    assert_eq!(get_once(addr, "/healthz").status, 503);
    assert_eq!(get_once(addr, "/").status, 503);
    assert_eq!(get_once(addr, "/livez").status, 200);
}

#[test]
fn bad_dependency_urls_exit_2() {
    for url in ["https://x/", "http://$(DB_SERVICE_HOST):80/", "not a url"] {
        let (status, log) = run_to_exit(&["--listen", "127.0.0.1:0", "--dependency", url], &[]);
        assert_eq!(status.code(), Some(2), "{url}: {log}");
    }
}
