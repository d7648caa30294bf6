//! Lifecycle hooks (exec, httpGet, sleep) and probes (httpGet, tcpSocket,
//! exec).

use super::*;

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
