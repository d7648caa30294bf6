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
