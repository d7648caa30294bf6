//! The embedded kubelet's process layer with real processes on loopback:
//! pod IPs, spawning and signals, lifecycle hooks, the termination sequence,
//! probes, and that no pod process survives rolltest however it ends.
//!
//! The orphan tests re-run this test executable as the "rolltest" parent
//! (`orphan_parent_helper` with `ROLLTEST_ORPHAN_MODE` set), which spawns
//! pods, prints their pids and then returns, panics, or waits to be killed.

use std::os::unix::process::CommandExt;
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use rolltest_minicluster::process::{
    ChildRegistry, ExecContext, Hook, HookOutcome, HttpGetAction, IpAllocator, PodProcess, PodSpec,
    ProcessEvent, ProcessEventKind, probe_exec, probe_http, probe_tcp, run_hook, terminate,
};
use tokio::sync::mpsc::unbounded_channel;

const MODE_ENV: &str = "ROLLTEST_ORPHAN_MODE";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rolltest")
}

fn spec(dir: &Path, name: &str, ip: IpAddr, program: &str, args: &[&str]) -> PodSpec {
    let mut spec = PodSpec::new(
        name,
        "app",
        ip,
        program,
        dir,
        dir.join(format!("{name}.log")),
    );
    spec.args = args.iter().map(|s| s.to_string()).collect();
    spec
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// (state, pgrp) of a process from /proc, `None` if it is gone.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Alive = present and neither zombie nor dead.
fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Live members of a process group.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some((s, g)) if g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

/// Polls `cond` every 20 ms until true or `limit` passes.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `rolltest serve`'s "listening on ADDR" line in its log.
fn listening_addr(log: &Path) -> SocketAddr {
    let mut addr = None;
    let found = eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        addr = text
            .lines()
            .find_map(|l| l.split("listening on ").nth(1))
            .and_then(|a| a.trim().parse().ok());
        addr.is_some()
    });
    assert!(
        found,
        "app never listened: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    addr.expect("checked above")
}

fn serve_pod(
    dir: &Path,
    name: &str,
    ips: &IpAllocator,
    on_sigterm: &str,
) -> (PodProcess, SocketAddr) {
    let ip = ips.allocate().expect("ip");
    let listen = format!("{ip}:0");
    let s = spec(
        dir,
        name,
        IpAddr::V4(ip),
        bin(),
        &["serve", "--listen", &listen, "--on-sigterm", on_sigterm],
    );
    let log = s.log_file.clone();
    let pod = PodProcess::spawn(s).expect("spawn serve");
    let addr = listening_addr(&log);
    (pod, addr)
}

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ProcessEvent>) -> Vec<ProcessEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn kinds(events: &[ProcessEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e.kind {
            ProcessEventKind::Killing => "Killing",
            ProcessEventKind::PreStopStarted => "PreStopStarted",
            ProcessEventKind::PreStopFinished { .. } => "PreStopFinished",
            ProcessEventKind::FailedPreStopHook { .. } => "FailedPreStopHook",
            ProcessEventKind::SigtermSent => "SigtermSent",
            ProcessEventKind::SigkillSent => "SigkillSent",
            ProcessEventKind::Exited(_) => "Exited",
        })
        .collect()
}

fn at(events: &[ProcessEvent], want: &str) -> Instant {
    let i = kinds(events)
        .iter()
        .position(|k| *k == want)
        .unwrap_or_else(|| panic!("no {want} in {events:?}"));
    events[i].at
}

/// A server that answers every connection with `response` (None: accept
/// and never answer). Lives as long as the test process.
fn canned_server(response: Option<&'static str>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.read(&mut buf);
            match response {
                Some(r) => {
                    let _ = stream.write_all(r.as_bytes());
                }
                None => held.push(stream),
            }
        }
    });
    addr
}

fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[test]
fn loopback_ips_are_bindable_and_unique() {
    let ips = IpAllocator::new();
    let a = ips.allocate().expect("first");
    let b = ips.allocate().expect("second");
    // A second allocator (another cluster in this process) never repeats them.
    let c = IpAllocator::new().allocate().expect("third");
    assert!(a.is_loopback() && b.is_loopback() && c.is_loopback());
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
    assert_ne!(a.octets()[2..], [0, 0], "127.0.0.x is left to localhost");
    let listener = TcpListener::bind((a, 0)).expect("a pod address binds without setup");
    let addr = listener.local_addr().expect("addr");
    let _client = std::net::TcpStream::connect(addr).expect("connect");
}

#[tokio::test]
async fn env_is_cleared_and_logs_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let mut s = spec(dir.path(), "envpod", ip, "env", &[]);
    s.env = vec![("FOO".into(), "bar".into())];
    let pod = PodProcess::spawn(s.clone()).expect("spawn env");
    let exit = tokio::time::timeout(Duration::from_secs(5), pod.wait())
        .await
        .expect("in time")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
    let log = std::fs::read_to_string(&s.log_file).expect("log");
    let keys: BTreeSet<&str> = log.lines().filter_map(|l| l.split('=').next()).collect();
    let mut expected = BTreeSet::from(["FOO"]);
    for k in ["PATH", "HOME"] {
        if std::env::var_os(k).is_some() {
            expected.insert(k);
        }
    }
    assert_eq!(keys, expected, "{log}");
    assert!(log.contains("FOO=bar"));

    let mut s2 = spec(
        dir.path(),
        "envpod",
        ip,
        "sh",
        &["-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
    );
    s2.log_file = s.log_file.clone();
    let pod = PodProcess::spawn(s2).expect("spawn sh");
    let exit = tokio::time::timeout(Duration::from_secs(5), pod.wait())
        .await
        .expect("in time")
        .expect("wait");
    assert_eq!((exit.code, exit.signal), (Some(3), None));
    let log = std::fs::read_to_string(&s.log_file).expect("log");
    assert!(
        log.contains("FOO=bar") && log.contains("to-stdout") && log.contains("to-stderr"),
        "{log}"
    );
}

#[tokio::test]
async fn missing_program_is_a_spawn_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let err = PodProcess::spawn(spec(dir.path(), "nope", ip, "/nonexistent/program", &[]))
        .expect_err("must fail");
    assert!(err.to_string().contains("/nonexistent/program"), "{err}");
}

#[tokio::test]
async fn signals_report_exit_codes_like_kube() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let pod = PodProcess::spawn(spec(dir.path(), "term", ip, "sleep", &["30"])).expect("spawn");
    assert_eq!(pod.pid(), pod.pgid());
    assert!(pod.signal(libc::SIGTERM).expect("signal"));
    let (a, b) = tokio::join!(pod.wait(), pod.wait());
    let exit = a.expect("wait");
    assert_eq!(exit, b.expect("second waiter"));
    assert_eq!((exit.code, exit.signal), (Some(143), Some(libc::SIGTERM)));
    assert!(
        !pod.signal(libc::SIGTERM).expect("after exit"),
        "no signal to a reaped pid"
    );

    let pod = PodProcess::spawn(spec(dir.path(), "kill", ip, "sleep", &["30"])).expect("spawn");
    assert!(pod.kill_group().expect("kill"));
    let exit = tokio::time::timeout(Duration::from_secs(5), pod.wait())
        .await
        .expect("in time")
        .expect("wait");
    assert_eq!((exit.code, exit.signal), (Some(137), Some(libc::SIGKILL)));
}

#[tokio::test]
async fn main_exit_kills_the_rest_of_the_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let s = spec(
        dir.path(),
        "bg",
        ip,
        "sh",
        &["-c", "sleep 30 & echo $!; sleep 0.2"],
    );
    let log = s.log_file.clone();
    let pod = PodProcess::spawn(s).expect("spawn");
    let pgid = pod.pgid();
    let exit = tokio::time::timeout(Duration::from_secs(5), pod.wait())
        .await
        .expect("in time")
        .expect("wait");
    assert!(exit.success());
    let bg: i32 = std::fs::read_to_string(&log)
        .expect("log")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        eventually(Duration::from_secs(2), || !alive(bg)),
        "background sleep {bg} survived"
    );
    assert!(group_members(pgid).is_empty());
}

#[tokio::test]
async fn dropping_a_pod_kills_its_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let pod = PodProcess::spawn(spec(
        dir.path(),
        "drop",
        ip,
        "sh",
        &["-c", "sleep 30 & sleep 30"],
    ))
    .expect("spawn");
    let pgid = pod.pgid();
    assert!(eventually(Duration::from_secs(2), || group_members(pgid)
        .len()
        == 3));
    assert!(ChildRegistry::global().live_groups().contains(&pgid));
    drop(pod);
    assert!(eventually(Duration::from_secs(2), || group_members(pgid).is_empty()));
    assert!(!ChildRegistry::global().live_groups().contains(&pgid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prestop_sleep_runs_before_sigterm_while_app_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ips = IpAllocator::new();
    let (pod, addr) = serve_pod(dir.path(), "sleepy", &ips, "exit");
    let (tx, mut rx) = unbounded_channel();
    let hook = Hook::Sleep { seconds: 1 };
    let term = terminate(&pod, 30, Some(&hook), &tx);
    let during = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        probe_http(addr, "/", &[], Duration::from_secs(1)).await
    };
    let (exit, served) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(term, during)
    })
    .await
    .expect("terminates in time");
    let exit = exit.expect("terminate");
    assert!(served.success, "app must serve during preStop: {served:?}");
    let events = drain(&mut rx);
    assert_eq!(
        kinds(&events),
        [
            "Killing",
            "PreStopStarted",
            "PreStopFinished",
            "SigtermSent",
            "Exited"
        ]
    );
    assert!(matches!(
        &events[2].kind,
        ProcessEventKind::PreStopFinished {
            outcome: HookOutcome::Ok
        }
    ));
    let gap = at(&events, "SigtermSent") - at(&events, "PreStopStarted");
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_secs(3),
        "{gap:?}"
    );
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    // `--on-sigterm exit` exits 143 itself; no signal killed it.
    assert_eq!((exit.code, exit.signal), (Some(143), None));
}

#[tokio::test]
async fn sigterm_ignored_means_sigkill_at_the_grace_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    // `exec`-free `sh` is PID 1 here and ignores TERM; its `sleep` child is
    // in the group and must die by the group SIGKILL.
    let pod = PodProcess::spawn(spec(
        dir.path(),
        "stubborn",
        ip,
        "sh",
        &["-c", "trap '' TERM; sleep 30; :"],
    ))
    .expect("spawn");
    let pgid = pod.pgid();
    assert!(eventually(Duration::from_secs(2), || group_members(pgid)
        .len()
        == 2));
    let (tx, mut rx) = unbounded_channel();
    let exit = tokio::time::timeout(Duration::from_secs(10), terminate(&pod, 2, None, &tx))
        .await
        .expect("in time")
        .expect("terminate");
    let events = drain(&mut rx);
    assert_eq!(
        kinds(&events),
        ["Killing", "SigtermSent", "SigkillSent", "Exited"]
    );
    let grace = at(&events, "SigkillSent") - at(&events, "SigtermSent");
    assert!(
        grace >= Duration::from_millis(1900) && grace < Duration::from_millis(3500),
        "{grace:?}"
    );
    assert_eq!((exit.code, exit.signal), (Some(137), Some(libc::SIGKILL)));
    assert!(eventually(Duration::from_secs(2), || group_members(pgid).is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prestop_longer_than_grace_gets_two_more_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ips = IpAllocator::new();
    let (pod, _addr) = serve_pod(dir.path(), "overrun", &ips, "ignore");
    let pgid = pod.pgid();
    let (tx, mut rx) = unbounded_channel();
    let hook = Hook::Exec {
        command: strings(&["sleep", "10"]),
    };
    let exit = tokio::time::timeout(
        Duration::from_secs(10),
        terminate(&pod, 1, Some(&hook), &tx),
    )
    .await
    .expect("in time")
    .expect("terminate");
    let events = drain(&mut rx);
    assert_eq!(
        kinds(&events),
        [
            "Killing",
            "PreStopStarted",
            "PreStopFinished",
            "SigtermSent",
            "SigkillSent",
            "Exited"
        ]
    );
    assert!(matches!(
        &events[2].kind,
        ProcessEventKind::PreStopFinished {
            outcome: HookOutcome::TimedOut
        }
    ));
    let start = at(&events, "Killing");
    let term = at(&events, "SigtermSent") - start;
    let kill = at(&events, "SigkillSent") - at(&events, "SigtermSent");
    assert!(
        term >= Duration::from_millis(950) && term < Duration::from_millis(2000),
        "SIGTERM at {term:?}"
    );
    assert!(
        kill >= Duration::from_millis(1950) && kill < Duration::from_millis(3500),
        "SIGKILL after {kill:?}"
    );
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    // The hook's `sleep 10` ran in the container's group and died with it.
    assert!(eventually(Duration::from_secs(2), || group_members(pgid).is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_exec_prestop_is_reported_and_shutdown_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ips = IpAllocator::new();
    let (pod, _addr) = serve_pod(dir.path(), "failhook", &ips, "exit");
    let (tx, mut rx) = unbounded_channel();
    let hook = Hook::Exec {
        command: strings(&["sh", "-c", "echo boom; exit 3"]),
    };
    // Shared and spawned, as the kubelet will: the future must be Send.
    let pod = std::sync::Arc::new(pod);
    let task = tokio::spawn({
        let pod = pod.clone();
        async move { terminate(&pod, 5, Some(&hook), &tx).await }
    });
    let exit = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("in time")
        .expect("task")
        .expect("terminate");
    let events = drain(&mut rx);
    assert_eq!(
        kinds(&events),
        [
            "Killing",
            "PreStopStarted",
            "PreStopFinished",
            "FailedPreStopHook",
            "SigtermSent",
            "Exited"
        ]
    );
    let ProcessEventKind::FailedPreStopHook { message } = &events[3].kind else {
        unreachable!()
    };
    assert!(
        message.contains("exited with 3") && message.contains("boom"),
        "{message}"
    );
    assert_eq!(exit.code, Some(143));
}

#[tokio::test]
async fn exec_hook_gets_the_container_env_and_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let mut s = spec(dir.path(), "hookenv", ip, "sleep", &["30"]);
    s.env = vec![("GREETING".into(), "hi".into())];
    let pod = PodProcess::spawn(s).expect("spawn");
    let out = dir.path().join("hook.out");
    let script = format!(
        "echo \"$GREETING $(ps -o pgid= -p $$ | tr -d ' ')\" > {}",
        out.display()
    );
    let hook = Hook::Exec {
        command: strings(&["sh", "-c", &script]),
    };
    let result = run_hook(&hook, &pod.exec_context(), Duration::from_secs(5)).await;
    assert_eq!(result.outcome, HookOutcome::Ok);
    let written = std::fs::read_to_string(&out).unwrap_or_default();
    // `ps` may be missing in minimal images; the env part is what matters most.
    assert!(written.starts_with("hi"), "{written}");
    if let Some(pg) = written.split_whitespace().nth(1) {
        assert_eq!(pg, pod.pgid().to_string());
    }
    pod.kill_group().expect("kill");
}

#[tokio::test]
async fn http_and_sleep_hooks() {
    let ok = canned_server(Some("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"));
    let bad = canned_server(Some("HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"));
    let ctx = ExecContext {
        pod_ip: Some(ok.ip()),
        ..ExecContext::default()
    };
    let get = |port, host| {
        Hook::HttpGet(HttpGetAction {
            host,
            port,
            path: "/stop".into(),
            headers: vec![("X-Test".into(), "1".into())],
        })
    };
    let r = run_hook(&get(ok.port(), None), &ctx, Duration::from_secs(2)).await;
    assert_eq!(r.outcome, HookOutcome::Ok);
    let r = run_hook(
        &get(bad.port(), Some(bad.ip())),
        &ctx,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        matches!(&r.outcome, HookOutcome::Failed { message } if message.contains("500")),
        "{r:?}"
    );
    let r = run_hook(
        &Hook::Sleep { seconds: 5 },
        &ctx,
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(r.outcome, HookOutcome::TimedOut);
    assert!(r.duration >= Duration::from_millis(200) && r.duration < Duration::from_secs(2));
}

#[tokio::test]
async fn http_probe_results_and_messages() {
    let ok = canned_server(Some(
        "HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    ));
    let unavailable = canned_server(Some(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    ));
    let silent = canned_server(None);
    let closed = closed_port();
    let t = Duration::from_millis(500);
    assert!(probe_http(ok, "/ready", &[], t).await.success);
    let r = probe_http(unavailable, "/ready", &[], t).await;
    assert_eq!(
        (r.success, r.message.as_str()),
        (false, "HTTP probe failed with statuscode: 503")
    );
    let r = probe_http(closed, "/ready", &[], t).await;
    assert!(!r.success);
    assert_eq!(
        r.message,
        format!("Get \"http://{closed}/ready\": dial tcp {closed}: connect: connection refused")
    );
    let started = Instant::now();
    let r = probe_http(silent, "/ready", &[], t).await;
    assert!(
        !r.success && r.message.contains("context deadline exceeded"),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn tcp_and_exec_probes() {
    let open = canned_server(None);
    let closed = closed_port();
    let t = Duration::from_millis(500);
    assert!(probe_tcp(open, t).await.success);
    let r = probe_tcp(closed, t).await;
    assert_eq!(
        r.message,
        format!("dial tcp {closed}: connect: connection refused")
    );

    let ctx = ExecContext {
        env: vec![("X".into(), "y".into())],
        ..ExecContext::default()
    };
    let r = probe_exec(&strings(&["sh", "-c", "echo $X"]), &ctx, t).await;
    assert!(r.success && r.message.trim() == "y", "{r:?}");
    let r = probe_exec(&strings(&["sh", "-c", "echo nope; exit 1"]), &ctx, t).await;
    assert_eq!((r.success, r.message.trim()), (false, "nope"));
    let started = Instant::now();
    let r = probe_exec(&strings(&["sleep", "5"]), &ctx, Duration::from_millis(300)).await;
    assert_eq!(
        (r.success, r.message.as_str()),
        (false, "command 'sleep 5' timed out")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---- no orphans ----------------------------------------------------------

/// The "rolltest" parent for the orphan tests; does nothing unless
/// `ROLLTEST_ORPHAN_MODE` is set.
#[test]
fn orphan_parent_helper() {
    let Ok(mode) = std::env::var(MODE_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let guard = ChildRegistry::global().guard();
    let dir = std::env::temp_dir();
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    let pids = rt.block_on(async {
        let a = PodProcess::spawn(spec(&dir, "orphan-a", ip, "sleep", &["30"])).expect("spawn a");
        let b = PodProcess::spawn(spec(
            &dir,
            "orphan-b",
            ip,
            "sh",
            &["-c", "sleep 30 & sleep 30"],
        ))
        .expect("spawn b");
        let (ga, gb) = (a.pgid(), b.pgid());
        assert!(eventually(Duration::from_secs(3), || group_members(gb)
            .len()
            == 3));
        // Forget the handles: only the guard, panic hook, signal handler,
        // PDEATHSIG or watchdog may kill them.
        std::mem::forget(a);
        std::mem::forget(b);
        let mut pids = group_members(ga);
        pids.extend(group_members(gb));
        (pids, ga, gb)
    });
    let (pids, ga, gb) = pids;
    let pids: Vec<i32> = pids;
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    println!("PIDS {} GROUPS {ga} {gb} LEADERS {ga} {gb}", list.join(","));
    let _ = std::io::stdout().flush();
    match mode.as_str() {
        "return" => drop(guard),
        "panic" => panic!("deliberate panic with live pods"),
        "graceful-sigint" => {
            // Like `rolltest run`: tokio handles Ctrl-C after the cluster's
            // guard exists. Its handler chains to ours, so the pods die and
            // the process carries on to a graceful end.
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let mut sigint = signal(SignalKind::interrupt()).expect("register SIGINT");
                println!("HANDLER-READY");
                let _ = std::io::stdout().flush();
                tokio::time::timeout(Duration::from_secs(10), sigint.recv())
                    .await
                    .expect("SIGINT arrives");
            });
            let dead = eventually(Duration::from_secs(2), || pids.iter().all(|&p| !alive(p)));
            assert!(dead, "pods must die on SIGINT before the guard drops");
            drop(guard);
        }
        _ => std::thread::sleep(Duration::from_secs(30)),
    }
}

struct Parent {
    status: std::process::ExitStatus,
    pids: Vec<i32>,
    groups: Vec<i32>,
}

/// Runs the helper in `mode`, sends `signal` once pods are up, and returns
/// its exit and the pod pids it reported.
fn run_parent(mode: &str, signal: Option<i32>, no_watchdog: bool) -> Parent {
    run_parent_when(mode, signal, no_watchdog, None)
}

/// [`run_parent`], sending the signal only after a line containing
/// `wait_for` (printed after the PIDS line).
fn run_parent_when(
    mode: &str,
    signal: Option<i32>,
    no_watchdog: bool,
    wait_for: Option<&str>,
) -> Parent {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([
        "orphan_parent_helper",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(MODE_ENV, mode)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if no_watchdog {
        cmd.env("ROLLTEST_NO_WATCHDOG", "1");
    }
    // A shell starting the tests in the background (no job control) leaves
    // SIGINT ignored, and the child would inherit that: give it the default
    // dispositions a terminal user's process has.
    // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn helper");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test NAME ... " on the same line first.
            if let Some(i) = line.find("PIDS ") {
                let _ = tx.send(line[i..].to_string());
            } else if line.contains("HANDLER-READY") {
                let _ = tx.send(line);
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if wait_for.is_some_and(|w| !line.contains(w)) => {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(_) => line,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("helper ({mode}) never got ready");
                }
            }
        }
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("helper ({mode}) never reported its pods");
        }
    };
    let mut words = line.split_whitespace();
    let pids: Vec<i32> = words
        .nth(1)
        .unwrap_or("")
        .split(',')
        .filter_map(|p| p.parse().ok())
        .collect();
    let groups: Vec<i32> = words
        .skip(1)
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(pids.len() >= 3, "{line}");
    if let Some(sig) = signal {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
    }
    let mut status = None;
    let exited = eventually(Duration::from_secs(10), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let status = status.unwrap_or_else(|| child.wait().expect("wait helper"));
    Parent {
        status,
        pids,
        groups,
    }
}

fn assert_all_gone(what: &str, parent: &Parent) {
    let gone = eventually(Duration::from_secs(3), || {
        parent.pids.iter().all(|&p| !alive(p))
            && parent.groups.iter().all(|&g| group_members(g).is_empty())
    });
    if !gone {
        let survivors: Vec<i32> = parent.pids.iter().copied().filter(|&p| alive(p)).collect();
        for &g in &parent.groups {
            // SAFETY: cleaning up what the failed test left behind.
            unsafe { libc::kill(-g, libc::SIGKILL) };
        }
        panic!("{what}: pods survived: {survivors:?}");
    }
}

#[test]
fn no_orphans_when_the_guard_drops() {
    let p = run_parent("return", None, false);
    assert_eq!(p.status.code(), Some(0));
    assert_all_gone("return", &p);
}

#[test]
fn no_orphans_after_a_panic() {
    let p = run_parent("panic", None, false);
    assert_eq!(
        p.status.code(),
        Some(101),
        "the test harness reports the panic"
    );
    assert_all_gone("panic", &p);
}

#[test]
fn no_orphans_after_sigterm_and_the_parent_still_dies_by_it() {
    let p = run_parent("wait", Some(libc::SIGTERM), false);
    assert_eq!(p.status.signal(), Some(libc::SIGTERM), "{:?}", p.status);
    assert_all_gone("sigterm", &p);
}

#[test]
fn no_orphans_after_sigint() {
    let p = run_parent("wait", Some(libc::SIGINT), false);
    assert_eq!(p.status.signal(), Some(libc::SIGINT), "{:?}", p.status);
    assert_all_gone("sigint", &p);
}

#[test]
fn sigint_chains_to_a_later_tokio_handler_for_a_graceful_stop() {
    let p = run_parent_when(
        "graceful-sigint",
        Some(libc::SIGINT),
        false,
        Some("HANDLER-READY"),
    );
    assert_eq!(
        p.status.code(),
        Some(0),
        "tokio's handler ran and the helper ended normally: {:?}",
        p.status
    );
    assert_all_gone("graceful sigint", &p);
}

#[test]
fn no_orphans_after_sigkill_of_the_parent() {
    let p = run_parent("wait", Some(libc::SIGKILL), false);
    assert_eq!(p.status.signal(), Some(libc::SIGKILL));
    assert_all_gone("sigkill", &p);
}

/// The finding behind the watchdog: PDEATHSIG kills the direct children of
/// a SIGKILLed parent, but a grandchild is re-parented and survives.
#[test]
fn pdeathsig_alone_kills_direct_children_but_not_grandchildren() {
    let p = run_parent("wait", Some(libc::SIGKILL), true);
    assert_eq!(p.status.signal(), Some(libc::SIGKILL));
    let leaders = p.groups.clone();
    assert!(
        eventually(Duration::from_secs(3), || leaders
            .iter()
            .all(|&l| !alive(l))),
        "PDEATHSIG must kill the direct children"
    );
    let survivors: Vec<i32> = p.groups.iter().flat_map(|&g| group_members(g)).collect();
    for &g in &p.groups {
        // SAFETY: cleaning up the grandchild this test proves survives.
        unsafe { libc::kill(-g, libc::SIGKILL) };
    }
    assert_all_gone("cleanup", &p);
    // `sh -c 'sleep 30 & sleep 30'`: the foreground sleep is a direct child
    // of sh, not of rolltest, so both sleeps survive sh's death.
    assert!(
        !survivors.is_empty(),
        "expected the grandchildren to survive without the watchdog"
    );
}
