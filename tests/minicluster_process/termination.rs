//! The kubelet's termination sequence: preStop, SIGTERM, the grace period,
//! SIGKILL, and what each step reports.

use super::*;

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
