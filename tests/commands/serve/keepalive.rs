//! `--idle-timeout`: the app closes keep-alive connections that stayed idle,
//! the way a server's keep-alive timeout does; requests keep a connection
//! alive, and without the flag an idle connection stays open.

use super::*;

#[test]
fn idle_timeout_closes_an_idle_keepalive_connection_but_not_an_active_one() {
    let s = serve(&["--idle-timeout", "600ms", "--work", "900ms"]);

    // Idle after one request: closed about 600ms after it was answered.
    let mut idle = s.connect();
    assert_eq!(idle.get("/healthz").status, 200);
    let answered = Instant::now();
    let closed_at = idle
        .closed_within(Duration::from_secs(4))
        .expect("idle connection closed by the idle timeout");
    let after = closed_at - answered;
    assert!(
        after >= ms(500),
        "closed {after:?} after the last response, before the timeout"
    );

    // A request every 200ms keeps one connection open past the timeout.
    let mut active = s.connect();
    let start = Instant::now();
    while start.elapsed() < ms(1800) {
        let resp = active.request("GET", "/healthz").unwrap_or_else(|e| {
            panic!("active connection closed after {:?}: {e}", start.elapsed())
        });
        assert_eq!(resp.status, 200);
        thread::sleep(ms(200));
    }

    // A request that takes longer than the timeout is not cut, and the
    // connection is reusable after it.
    let resp = active
        .request("GET", "/")
        .expect("slow request answered on the same connection");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(active.get("/livez").status, 200);
}

#[test]
fn without_idle_timeout_an_idle_connection_stays_open() {
    let s = serve(&[]);
    let mut idle = s.connect();
    assert_eq!(idle.get("/healthz").status, 200);
    assert_eq!(idle.closed_within(ms(1500)), None, "closed while idle");
    assert_eq!(idle.get("/livez").status, 200);
}

#[test]
fn idle_timeout_keeps_running_during_the_drain() {
    // The timeout (400ms) is shorter than the drain's idle grace (5s): the
    // idle connection is closed by the timeout, not after the grace.
    let mut s = serve(&["--idle-timeout", "400ms", "--idle-grace", "5s"]);
    let mut idle = s.connect();
    assert_eq!(idle.get("/healthz").status, 200);
    let answered = Instant::now();
    s.signal(libc::SIGTERM);
    s.wait_log("draining", WAIT);
    let closed_at = idle
        .closed_within(Duration::from_secs(4))
        .expect("closed by the idle timeout before the 5s grace");
    assert!(
        closed_at - answered >= ms(300),
        "{:?}",
        closed_at - answered
    );
    assert_eq!(s.wait_exit(WAIT).code(), Some(0));
    s.wait_log("idle past the idle timeout", WAIT);
}

#[test]
fn close_delay_resets_a_request_sent_after_the_idle_close_and_sends_the_fin_late() {
    // The idle timeout closes at 300ms; its FIN leaves 1s later.
    let s = serve(&["--idle-timeout", "300ms", "--close-delay", "1s"]);

    // Nothing sent: the client sees the close only at timeout + delay.
    let mut idle = s.connect();
    assert_eq!(idle.get("/healthz").status, 200);
    let answered = Instant::now();
    let closed_at = idle
        .closed_within(Duration::from_secs(5))
        .expect("closed after the delay");
    let after = closed_at - answered;
    assert!(
        after >= ms(1200),
        "closed {after:?} after the last response: the delay did not hold the FIN"
    );

    // A request sent in the window (600ms: after the app's close at 300ms,
    // before its FIN at 1.3s) meets a closed socket: reset, no response
    // byte (a plain close would have given EOF, not a reset).
    let mut racing = s.connect();
    assert_eq!(racing.get("/healthz").status, 200);
    thread::sleep(ms(600));
    match racing.request("GET", "/healthz") {
        Ok(resp) => panic!("answered within the close delay: {resp:?}"),
        Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}"),
    }
    assert!(racing.buf.is_empty(), "response bytes before the reset");

    // A connection in use is not affected: requests every 100ms keep it.
    let mut active = s.connect();
    for _ in 0..8 {
        assert_eq!(active.get("/livez").status, 200);
        thread::sleep(ms(100));
    }
}

#[test]
fn close_delay_holds_the_drain_idle_close_too() {
    // No idle timeout: the drain's idle grace (200ms) closes the idle
    // connection, and its FIN leaves 800ms later.
    let mut s = serve(&["--idle-grace", "200ms", "--close-delay", "800ms"]);
    let mut idle = s.connect();
    assert_eq!(idle.get("/healthz").status, 200);
    s.signal(libc::SIGTERM);
    let signalled = Instant::now();
    s.wait_log("draining", WAIT);
    let closed_at = idle
        .closed_within(Duration::from_secs(5))
        .expect("closed after grace + delay");
    assert!(
        closed_at - signalled >= ms(900),
        "{:?}",
        closed_at - signalled
    );
    assert_eq!(s.wait_exit(WAIT).code(), Some(0));
}
