//! The generator against real sockets on loopback: classification from the
//! real error source chain, the schedule held, connections grown on demand.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use crate::common::{
    DemoApp, Misbehave, closed_port, misbehaving_server, run_load, run_load_outcome, spec,
    start_load,
};
use rolltest_core::model::{ErrorKind, Outcome};
use rolltest_loadgen::Stop;

use crate::common;

fn kinds(url: &str, timeout: Duration) -> Vec<(Outcome, Option<u16>)> {
    let (records, _) = run_load(url, &spec(20.0, Duration::from_millis(200), timeout));
    assert_eq!(records.len(), 4, "{records:?}");
    records.iter().map(|r| (r.outcome, r.status)).collect()
}

#[test]
fn refused_when_nothing_listens() {
    let url = format!("http://{}/", closed_port());
    for (outcome, _) in kinds(&url, Duration::from_secs(1)) {
        assert_eq!(outcome, Outcome::Failed(ErrorKind::ConnectRefused));
    }
}

#[test]
fn reset_when_the_server_resets() {
    let url = format!("http://{}/", misbehaving_server(Misbehave::Reset));
    for (outcome, status) in kinds(&url, Duration::from_secs(1)) {
        assert_eq!(outcome, Outcome::Failed(ErrorKind::ConnectionReset));
        assert_eq!(status, None);
    }
}

#[test]
fn closed_before_response_counts_as_reset() {
    let url = format!("http://{}/", misbehaving_server(Misbehave::Close));
    let (records, _) = run_load(
        &url,
        &spec(20.0, Duration::from_millis(200), Duration::from_secs(1)),
    );
    for r in &records {
        assert_eq!(
            r.outcome,
            Outcome::Failed(ErrorKind::ConnectionReset),
            "{r:?}"
        );
        let detail = r.detail.as_deref().unwrap_or("");
        assert!(
            detail.contains("closed") || detail.contains("reset"),
            "{detail}"
        );
    }
}

#[test]
fn timeout_when_the_server_stalls() {
    let url = format!("http://{}/", misbehaving_server(Misbehave::Stall));
    let (records, _) = run_load(
        &url,
        &spec(20.0, Duration::from_millis(200), Duration::from_millis(300)),
    );
    for r in &records {
        assert_eq!(r.outcome, Outcome::Failed(ErrorKind::Timeout), "{r:?}");
        let latency = r.latency_us.expect("latency");
        assert!(latency >= 300_000, "timed out after {latency} us");
    }
}

#[test]
fn status_codes_are_kept() {
    let url = format!("http://{}/", misbehaving_server(Misbehave::Status(503)));
    for (outcome, status) in kinds(&url, Duration::from_secs(1)) {
        assert_eq!(outcome, Outcome::Failed(ErrorKind::Http5xx));
        assert_eq!(status, Some(503));
    }
    let url = format!("http://{}/", misbehaving_server(Misbehave::Status(404)));
    for (outcome, status) in kinds(&url, Duration::from_secs(1)) {
        assert_eq!(outcome, Outcome::Failed(ErrorKind::Http4xx));
        assert_eq!(status, Some(404));
    }
}

#[test]
fn holds_the_rate_against_the_demo_app_and_names_the_pod() {
    let app = DemoApp::start(&[]);
    let rate = 500.0;
    let (records, live) = run_load(
        &app.url(),
        &spec(rate, Duration::from_secs(2), Duration::from_secs(2)),
    );
    assert_eq!(records.len(), 1000);
    assert!(
        records.iter().all(|r| r.outcome == Outcome::Ok),
        "{:?}",
        records.iter().find(|r| r.outcome != Outcome::Ok)
    );
    assert!(records.iter().all(|r| r.pod.as_deref() == Some("demo-1")));
    // Sends follow the schedule: the span of actual sends is the schedule's
    // span, give or take scheduling noise (generous bound for a busy CI box).
    let first = records[0].sent_us.unwrap();
    let last = records[999].sent_us.unwrap();
    let span_s = (last - first) as f64 / 1e6;
    let achieved = 999.0 / span_s;
    assert!(
        (achieved - rate).abs() / rate < 0.02,
        "achieved {achieved:.1} req/s"
    );
    // Intended times are exactly the schedule.
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            r.intended_us - records[0].intended_us,
            (i as u64) * 2_000,
            "seq {i}"
        );
    }
    // Keep-alive: a handful of connections, not one per request.
    assert!(live.connections.load(std::sync::atomic::Ordering::Relaxed) < 20);
}

#[test]
fn no_keepalive_opens_a_connection_per_request() {
    let app = DemoApp::start(&[]);
    let mut s = spec(100.0, Duration::from_millis(300), Duration::from_secs(2));
    s.keepalive = false;
    let (records, live) = run_load(&app.url(), &s);
    assert_eq!(records.len(), 30);
    assert!(records.iter().all(|r| r.outcome == Outcome::Ok));
    assert_eq!(
        live.connections.load(std::sync::atomic::Ordering::Relaxed),
        30
    );
    let mut conns: Vec<_> = records.iter().filter_map(|r| r.conn).collect();
    conns.dedup();
    assert_eq!(conns.len(), 30);
}

/// The correlator joins the generator's connections with the embedded
/// proxy's records by the client address: each recorded local address must
/// be the peer address the server saw, one per connection.
#[test]
fn connections_are_recorded_with_the_address_the_server_sees() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = peers.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            if let Ok(peer) = stream.peer_addr() {
                seen.lock().expect("lock").push(peer);
            }
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    let mut s = spec(50.0, Duration::from_millis(200), Duration::from_secs(2));
    s.keepalive = false;
    let (records, _, outcome) = common::run_load_outcome(&format!("http://{addr}/"), &s);
    assert_eq!(records.len(), 10);
    assert!(
        records.iter().all(|r| r.outcome == Outcome::Ok),
        "{records:?}"
    );
    let mut recorded: Vec<_> = outcome.conns.iter().map(|c| c.local).collect();
    let mut served = peers.lock().expect("lock").clone();
    recorded.sort();
    served.sort();
    assert_eq!(recorded, served);
    // Every record's connection id is one of the recorded connections, opened
    // no later than the request was sent.
    for r in &records {
        let c = outcome
            .conns
            .iter()
            .find(|c| Some(c.conn) == r.conn)
            .expect("connection recorded");
        assert!(
            c.opened_us <= r.sent_us.expect("sent") + 1_000,
            "{c:?} {r:?}"
        );
    }
}

#[test]
fn slow_target_gets_more_connections_not_less_load() {
    // 200 req/s at 100 ms each needs ~20 concurrent requests.
    let app = DemoApp::start(&["--work", "100ms"]);
    let (records, live) = run_load(
        &app.url(),
        &spec(200.0, Duration::from_secs(1), Duration::from_secs(2)),
    );
    assert_eq!(records.len(), 200);
    assert!(records.iter().all(|r| r.outcome == Outcome::Ok));
    let conns = live.connections.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        conns >= 15,
        "only {conns} connections for ~20 concurrent requests"
    );
    // Latency from the schedule is the work time plus a little, not queueing.
    let mut lat: Vec<u64> = records.iter().filter_map(|r| r.latency_us).collect();
    lat.sort();
    assert!(lat[100] < 150_000, "median {} us", lat[100]);
}

#[test]
fn max_in_flight_drops_instead_of_slowing_down() {
    let url = format!("http://{}/", misbehaving_server(Misbehave::Stall));
    let mut s = spec(
        100.0,
        Duration::from_millis(500),
        Duration::from_millis(400),
    );
    s.max_in_flight = 10;
    let (records, live) = run_load(&url, &s);
    assert_eq!(records.len(), 50, "every scheduled request has a record");
    let dropped = records
        .iter()
        .filter(|r| r.outcome == Outcome::Dropped)
        .count();
    assert!(dropped >= 20, "dropped {dropped}");
    assert_eq!(
        live.dropped.load(std::sync::atomic::Ordering::Relaxed) as usize,
        dropped
    );
    // Dropped requests keep their place in the schedule.
    for r in records.iter().filter(|r| r.outcome == Outcome::Dropped) {
        assert!(r.sent_us.is_none());
        assert_eq!(r.intended_us - records[0].intended_us, r.seq * 10_000);
    }
}

#[test]
fn send_quantum_groups_requests_and_bounds_their_lateness() {
    let app = DemoApp::start(&[]);
    let mut s = spec(1000.0, Duration::from_millis(300), Duration::from_secs(2));
    s.send_quantum = Some(Duration::from_millis(10));
    let (records, _) = run_load(&app.url(), &s);
    assert_eq!(records.len(), 300);
    let lags: Vec<u64> = records
        .iter()
        .map(|r| r.schedule_lag_us().unwrap())
        .collect();
    // Ticks come every 10 requests: the first of each group waits ~9 ms.
    let max = *lags.iter().max().unwrap();
    assert!(max >= 7_000, "max lag {max} us: requests were not grouped");
    let late = lags.iter().filter(|&&l| l >= 5_000).count();
    assert!(
        late >= 60,
        "only {late} of 300 requests waited for their group"
    );
    // Without the option the same load leaves request by request.
    s.send_quantum = None;
    let (records, _) = run_load(&app.url(), &s);
    let mut lags: Vec<u64> = records
        .iter()
        .map(|r| r.schedule_lag_us().unwrap())
        .collect();
    lags.sort();
    assert!(
        lags[150] < 2_000,
        "median lag {} us with the default quantum",
        lags[150]
    );
}

/// The warm-up probe sends the scenario's request (method and headers
/// included) and returns the status; a closed port is an error.
#[test]
fn probe_sends_the_scenarios_request_and_returns_its_status() {
    let app = DemoApp::start(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut target = common::target(&app.url());
    assert_eq!(
        runtime.block_on(rolltest_loadgen::probe(&target, app.addr)),
        Ok(200)
    );
    target.url = format!("http://{}/nope", app.addr).parse().expect("url");
    target.method = http::Method::DELETE;
    let code = runtime
        .block_on(rolltest_loadgen::probe(&target, app.addr))
        .expect("answered");
    assert!(code >= 400, "DELETE /nope answered {code}");
    let closed = closed_port();
    assert!(
        runtime
            .block_on(rolltest_loadgen::probe(&target, closed))
            .is_err()
    );
}

#[test]
fn a_schedule_run_to_its_end_lasts_its_duration_and_one_finished_early_does_not() {
    let app = DemoApp::start(&[]);
    // 10 req/s for 1 s: the last request is due at 0.9 s and answers within
    // milliseconds, yet the run lasts its whole second.
    let (records, _, outcome) = run_load_outcome(
        &app.url(),
        &spec(10.0, Duration::from_secs(1), Duration::from_secs(1)),
    );
    assert_eq!(records.len(), 10);
    assert!(
        outcome.ended_us - outcome.started_us >= 1_000_000,
        "{outcome:?}"
    );
    // A schedule of a minute, finished after 300 ms (as a rollout ends its
    // load once the disruption settled): it ends then, not a minute later.
    let stop = Arc::new(Stop::default());
    let started = Instant::now();
    let (run, _rx, _) = start_load(
        &app.url(),
        &spec(10.0, Duration::from_secs(60), Duration::from_secs(1)),
        stop.clone(),
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.finish.store(true, Ordering::Relaxed);
    let outcome = run.wait().expect("wait");
    assert!(!outcome.interrupted);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "finished early, yet it took {:?}",
        started.elapsed()
    );
}

/// The distinct connection ids of successful requests sent 250 ms apart to
/// a demo app that keeps idle connections open, with a pool idle timeout.
fn connections_used(idle_timeout: Option<Duration>) -> std::collections::BTreeSet<u64> {
    let app = DemoApp::start(&[]);
    let url = format!("http://{}/", app.addr);
    let mut s = spec(4.0, Duration::from_millis(1500), Duration::from_secs(1));
    s.idle_timeout = idle_timeout;
    let (records, _) = run_load(&url, &s);
    assert_eq!(records.len(), 6, "{records:?}");
    assert!(
        records.iter().all(|r| r.outcome == Outcome::Ok),
        "{records:?}"
    );
    records.iter().filter_map(|r| r.conn).collect()
}

#[test]
fn pool_idle_timeout_closes_connections_idle_longer_instead_of_reusing_them() {
    // Idle 250 ms between requests, more than the 100 ms timeout: every
    // request opens a new connection.
    assert_eq!(connections_used(Some(Duration::from_millis(100))).len(), 6);
    // Under the timeout, or without one, the one connection is reused.
    assert_eq!(connections_used(Some(Duration::from_secs(1))).len(), 1);
    assert_eq!(connections_used(None).len(), 1);
}

/// A server that answers the requests on each connection with every way
/// HTTP/1.1 frames a body, in turn: a `Content-Length` body larger than the
/// generator's read buffer, a chunked body with a trailer, a 204, and a body
/// that runs until the server closes (which ends the connection).
fn framing_server() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let big = vec![b'x'; 100_000];
                for turn in 0..4 {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let response: Vec<u8> = match turn {
                        0 => [
                            &b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\nx-rolltest-pod: p-length\r\n\r\n"[..],
                            &big,
                        ]
                        .concat(),
                        1 => b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\nx-rolltest-pod: p-chunked\r\n\r\n\
                               5;x=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n"
                            .to_vec(),
                        2 => b"HTTP/1.1 204 No Content\r\nx-rolltest-pod: p-empty\r\n\r\n".to_vec(),
                        _ => b"HTTP/1.1 200 OK\r\nx-rolltest-pod: p-close\r\n\r\nbody until the close".to_vec(),
                    };
                    // Written in pieces, so responses also arrive split.
                    for piece in response.chunks(7_000) {
                        if stream.write_all(piece).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Every framing is read whole and the connection reused while the server
/// allows it, whether responses are read as they arrive (a slow schedule)
/// or at the dispatcher's ticks (a fast one).
#[test]
fn responses_framed_every_way_are_read_whole_and_connections_reused_until_the_close() {
    let url = format!("http://{}/", framing_server());
    for (rate, secs) in [(20.0, 1.0), (2000.0, 0.2)] {
        let (records, _) = run_load(
            &url,
            &spec(rate, Duration::from_secs_f64(secs), Duration::from_secs(2)),
        );
        assert_eq!(records.len(), (rate * secs) as usize);
        let mut by_conn: std::collections::BTreeMap<u64, Vec<(u16, String)>> = Default::default();
        for r in &records {
            assert_eq!(r.outcome, Outcome::Ok, "rate {rate}: {r:?}");
            by_conn
                .entry(r.conn.expect("a connection"))
                .or_default()
                .push((r.status.unwrap_or(0), r.pod.clone().unwrap_or_default()));
        }
        let turns = [
            (200, "p-length"),
            (201, "p-chunked"),
            (204, "p-empty"),
            (200, "p-close"),
        ];
        for (conn, seen) in &by_conn {
            // Each connection carried the server's turns in order, at most
            // four (the fourth response ends it).
            assert!(seen.len() <= 4, "rate {rate}: connection {conn}: {seen:?}");
            for (got, want) in seen.iter().zip(turns) {
                assert_eq!(
                    (got.0, got.1.as_str()),
                    want,
                    "rate {rate}: connection {conn}: {seen:?}"
                );
            }
        }
        // Reuse: far fewer connections than requests.
        assert!(
            by_conn.len() * 4 <= records.len() + 4 * 8,
            "rate {rate}: {} connections for {} requests",
            by_conn.len(),
            records.len()
        );
    }
}

/// Ticking every millisecond, the dispatcher reads responses only at its
/// ticks, up to a millisecond after they arrived; each is still timed by
/// its arrival (the kernel's receive timestamp), so against an app that
/// answers at once the median latency stays far below the tick. Timed
/// when read instead, it would be about one tick.
#[test]
fn responses_read_at_ticks_are_timed_by_their_arrival() {
    let app = DemoApp::start(&[]);
    let url = format!("http://{}/", app.addr);
    let mut s = spec(1000.0, Duration::from_secs(1), Duration::from_secs(1));
    s.send_quantum = Some(Duration::from_millis(1));
    let (records, _) = run_load(&url, &s);
    assert_eq!(records.len(), 1000);
    let mut latencies: Vec<u64> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .filter_map(|r| r.latency_us)
        .collect();
    assert!(latencies.len() >= 990, "{} ok", latencies.len());
    latencies.sort_unstable();
    let median = latencies[latencies.len() / 2];
    assert!(median < 500, "median latency {median} µs at 1 ms ticks");
}
