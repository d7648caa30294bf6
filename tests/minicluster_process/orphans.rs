//! No pod process survives rolltest, however it ends: this test executable
//! re-runs itself as the "rolltest" parent (`orphan_parent_helper`).

use super::*;

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
        "orphans::orphan_parent_helper",
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
