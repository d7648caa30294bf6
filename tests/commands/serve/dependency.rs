//! `--dependency URL`: a dependency that is down or answers 5xx fails
//! `/healthz` and `/`, never `/livez`.

use super::*;

/// Polls `path` on fresh connections until it answers `want`; returns how
/// long that took.
fn until_status(addr: SocketAddr, path: &str, want: u16, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let status = get_once(addr, path).status;
        if status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{path} still answers {status}, not {want}, after {timeout:?}"
        );
        thread::sleep(ms(20));
    }
}

#[test]
fn dependency_down_fails_healthz_and_root_but_not_livez() {
    // The dependency is another demo app on a fixed (just freed) port, so
    // it can be stopped and started again at the same address.
    let dep_port = free_port();
    let dep_listen = format!("127.0.0.1:{dep_port}");
    let dep_url = format!("http://127.0.0.1:{dep_port}/livez");
    let dep = serve_env(&["--listen", &dep_listen], &[]);
    let mut app = serve(&["--dependency", &dep_url]);
    let addr = app.addr();

    // Up: everything answers 200 (after the first check).
    until_status(addr, "/healthz", 200, WAIT);
    assert_eq!(get_once(addr, "/").status, 200);
    assert_eq!(get_once(addr, "/livez").status, 200);
    app.wait_log("dependency http://127.0.0.1", WAIT);

    // Down: readiness and the work fail within a second, liveness stays.
    drop(dep);
    let took = until_status(addr, "/healthz", 503, WAIT);
    assert!(took < Duration::from_secs(1), "503 only after {took:?}");
    let root = get_once(addr, "/");
    assert_eq!(root.status, 503);
    assert_eq!(
        get_once(addr, "/livez").status,
        200,
        "liveness ignores the dependency"
    );
    app.wait_log(" down: connect", WAIT);

    // Back: 200 again within a second of the dependency listening.
    let _dep = serve_env(&["--listen", &dep_listen], &[]);
    let took = until_status(addr, "/healthz", 200, WAIT);
    assert!(took < Duration::from_secs(1), "200 only after {took:?}");
    assert_eq!(get_once(addr, "/").status, 200);
}

#[test]
fn dependency_answering_5xx_counts_as_down() {
    // A dependency that is up but not ready: its /healthz answers 503.
    let dep = serve(&["--ready-delay", "1h"]);
    let url = format!("http://{}/healthz", dep.addr());
    let mut app = serve(&["--dependency", &url]);
    let addr = app.addr();
    app.wait_log("down: HTTP 503", WAIT);
    assert_eq!(get_once(addr, "/healthz").status, 503);
    assert_eq!(get_once(addr, "/").status, 503);
    assert_eq!(get_once(addr, "/livez").status, 200);
}

#[test]
fn bad_dependency_urls_exit_2() {
    for url in ["https://x/", "http://$(DB_SERVICE_HOST):80/", "not a url"] {
        let (status, log) = run_to_exit(&["--listen", "127.0.0.1:0", "--dependency", url], &[]);
        assert_eq!(status.code(), Some(2), "{url}: {log}");
    }
}
