//! The demo app's endpoints, flags and start-up.

use super::*;

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
fn bad_flag_values_exit_2_naming_the_flag() {
    let cases: [(&[&str], &str); 6] = [
        (&["--work", "5x"], "--work"),
        (&["--work", "2s..1s"], "--work"),
        (&["--on-sigterm", "bogus"], "--on-sigterm"),
        (&["--idle-grace", "soon"], "--idle-grace"),
        (&["--idle-timeout", "soon"], "--idle-timeout"),
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
