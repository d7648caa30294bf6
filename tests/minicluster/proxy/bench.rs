//! Direct vs L4 vs L7 under load (ignored; `scripts/bench-cluster.sh`).

use super::*;

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

/// rolltest's one median (`rolltest_core::stats::median`), in whole µs.
fn median(mut values: Vec<i64>) -> i64 {
    values.sort_unstable();
    let sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    rolltest_core::stats::median(&sorted).map_or(0, |m| m.round() as i64)
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
