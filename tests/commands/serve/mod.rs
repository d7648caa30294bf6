//! Integration tests of `rolltest serve`: each test spawns the real binary,
//! finds its port in the "listening on ADDR" log line, talks raw HTTP/1.1 to
//! it over loopback, and kills it (Drop guard) when done. Every wait is
//! bounded. Here the process and HTTP helpers; the tests by subject: `app`
//! (endpoints, flags, start-up), `keepalive` (`--idle-timeout`), `shutdown` (the SIGTERM modes and the
//! drain), `dependency` (`--dependency`).

mod app;
mod dependency;
mod keepalive;
mod shutdown;

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
