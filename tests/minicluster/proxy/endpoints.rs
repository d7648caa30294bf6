//! Which endpoints the proxy uses and when: ready first, serving-and-
//! terminating as the fallback, changes only after the propagation delay
//! and in batches on the sync period; shutdown.

use super::*;

#[test]
fn an_update_takes_effect_only_after_the_propagation_delay() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let (b, _tb) = pod_server(&rt, "pod-b");
    let delay = Propagation::fixed(ms(300));
    let mut proxy = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        delay,
    );
    let started = Instant::now();
    proxy.apply(vec![ready("pod-a", a), ready("pod-b", b)]);
    assert!(
        started.elapsed() >= ms(290),
        "applied after {:?}",
        started.elapsed()
    );

    let mut http = Http::connect(proxy.addr()).expect("connect");
    let written = Instant::now();
    proxy.proxy.update(vec![ready("pod-b", b)]);
    thread::sleep(ms(100));
    let early: Vec<Option<String>> = (0..6).map(|_| http.get().pod()).collect();
    assert!(
        written.elapsed() < ms(280),
        "too slow to test: {:?}",
        written.elapsed()
    );
    assert!(
        count(&early).contains_key("pod-a"),
        "removed pod gone too early: {early:?}"
    );

    thread::sleep(ms(500).saturating_sub(written.elapsed()));
    let late: Vec<Option<String>> = (0..6).map(|_| http.get().pod()).collect();
    assert_eq!(count(&late).get("pod-b"), Some(&6), "{late:?}");
}

#[test]
fn changes_within_the_sync_period_are_applied_in_one_sync() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let (b, _tb) = pod_server(&rt, "pod-b");
    // Delivered 50 ms after the write, synced at most every 800 ms.
    let sync = Propagation {
        min: ms(50),
        max: ms(850),
    };
    let mut proxy = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        sync,
    );
    // The runner was idle: applied about `min` after the write.
    let written = Instant::now();
    proxy.apply(vec![ready("pod-a", a)]);
    let synced = Instant::now();
    assert!(
        synced - written < ms(600),
        "first change waited {:?}",
        synced - written
    );
    let applied = proxy.applied;

    // Two changes right after that sync: neither is applied before the
    // period is over, then both are, in one step.
    proxy
        .proxy
        .update(vec![ready("pod-a", a), ready("pod-b", b)]);
    thread::sleep(ms(100));
    proxy.proxy.update(vec![ready("pod-b", b)]);
    let mut http = Http::connect(proxy.addr()).expect("connect");
    let mut before = Vec::new();
    while synced.elapsed() < ms(600) {
        before.push(http.get().pod());
        thread::sleep(ms(20));
    }
    assert!(
        before.iter().all(|p| p.as_deref() == Some("pod-a")),
        "a change applied inside the sync period: {before:?}"
    );
    thread::sleep(ms(1400).saturating_sub(synced.elapsed()));
    let after: Vec<Option<String>> = (0..6).map(|_| http.get().pod()).collect();
    assert_eq!(count(&after).get("pod-b"), Some(&6), "{after:?}");
    proxy.drain();
    assert_eq!(
        proxy.applied - applied,
        1,
        "the two pending changes were applied as one sync"
    );
}

#[test]
fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let (old, _told) = pod_server(&rt, "pod-old");
    let (gone, _tgone) = pod_server(&rt, "pod-gone");
    let mut proxy = Harness::start(
        ProxyMode::L7 {
            retry_connect_errors: false,
        },
        Propagation::default(),
    );
    let mut http = Http::connect(proxy.addr()).expect("connect");

    proxy.apply(vec![terminating("pod-old", old, true), ready("pod-a", a)]);
    let pods: Vec<Option<String>> = (0..6).map(|_| http.get().pod()).collect();
    assert_eq!(count(&pods).get("pod-a"), Some(&6), "{pods:?}");

    let not_ready = Endpoint {
        ready: false,
        serving: false,
        ..ready("pod-gone", gone)
    };
    proxy.apply(vec![
        terminating("pod-old", old, true),
        terminating("pod-gone", gone, false),
        not_ready,
    ]);
    let pods: Vec<Option<String>> = (0..6).map(|_| http.get().pod()).collect();
    assert_eq!(count(&pods).get("pod-old"), Some(&6), "{pods:?}");

    proxy.apply(vec![terminating("pod-gone", gone, false)]);
    let response = http.get();
    assert_eq!(response.status, 503);
    assert_eq!(response.header("x-rolltest-proxy"), Some("no-endpoints"));
}

#[test]
fn shutdown_closes_the_listener_and_cuts_live_connections() {
    let rt = runtime();
    let (a, _ta) = pod_server(&rt, "pod-a");
    let mut proxy = Harness::start(ProxyMode::L4, Propagation::default());
    proxy.apply(vec![ready("pod-a", a)]);
    let mut live = Http::connect(proxy.addr()).expect("connect");
    assert_eq!(live.get().pod().as_deref(), Some("pod-a"));
    let addr = proxy.addr();
    proxy.proxy.shutdown();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    assert!(live.request("GET").is_err(), "the live connection was cut");
}
