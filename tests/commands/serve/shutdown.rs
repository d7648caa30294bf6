//! SIGTERM and SIGINT: drain, exit and ignore modes, readiness during the
//! drain, the drain timeout.

use super::*;

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
