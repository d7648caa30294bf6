//! The embedded kubelet's process layer with real processes on loopback:
//! pod IPs, spawning and signals, lifecycle hooks, the termination sequence,
//! probes, and that no pod process survives rolltest however it ends.
//!
//! The orphan tests re-run this test executable as the "rolltest" parent
//! (`orphan_parent_helper` with `ROLLTEST_ORPHAN_MODE` set), which spawns
//! pods, prints their pids and then returns, panics, or waits to be killed.
//!
//! Here the shared helpers; the tests by subject: `pods` (addresses,
//! spawning, signals, process groups), `termination` (the kubelet's
//! preStop → SIGTERM → grace → SIGKILL), `hooks` (lifecycle hooks and
//! probes), `orphans`. One binary of its own: the orphan tests install signal
//! handlers and use the process-wide child registry.

mod hooks;
mod orphans;
mod pods;
mod termination;

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
