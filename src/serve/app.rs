//! The HTTP side of the demo app: the state shared by every connection (all
//! atomics, so the request path takes no lock), routing and responses.
//!
//! | path       | answer                                                        |
//! | ---------- | ------------------------------------------------------------- |
//! | `/`        | 200 after the work time; 503 while `--broken-for` lasts or the `--dependency` is down |
//! | `/healthz` | readiness: 200 when ready and the `--dependency` is up, else 503 |
//! | `/livez`   | liveness: 200 whenever the process can answer at all           |
//! | other      | 404                                                           |
//!
//! Every response carries `x-rolltest-pod`; once the drain has started it also
//! carries `Connection: close`, which makes hyper close the connection right
//! after writing it.

use std::{
    cell::Cell,
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{
    HeaderValue, Request, Response, StatusCode,
    header::{CONNECTION, CONTENT_TYPE, HeaderName},
};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1};
use tokio::sync::Notify;

use super::{config::WorkTime, error::ServeError, log::Logger};

/// The header that names the pod which answered.
pub const POD_HEADER: &str = "x-rolltest-pod";

const POD_HEADER_NAME: HeaderName = HeaderName::from_static(POD_HEADER);
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// State shared by the lifecycle task, the accept loop and every connection.
pub(crate) struct App {
    /// Lifecycle logger (never used per request).
    pub(crate) log: Logger,
    /// The hyper HTTP/1 settings every connection is served with.
    pub(crate) http: http1::Builder,
    /// While draining, how long a connection must stay idle before it is closed.
    pub(crate) idle_grace: Duration,
    /// `--idle-timeout`: a connection idle this long is closed, draining or
    /// not (see `conn.rs`).
    pub(crate) idle_timeout: Option<Duration>,
    /// `--close-delay`: how late the app's close of an idle connection
    /// reaches the client (see `conn.rs`).
    pub(crate) close_delay: Duration,
    /// Reference point for the nanosecond timestamps below.
    epoch: Instant,
    pod_header: HeaderValue,
    root_body: Bytes,
    work: WorkTime,
    /// `/healthz` answers 200 while set.
    pub(crate) ready: AtomicBool,
    /// `/` answers 503 while set.
    pub(crate) broken: AtomicBool,
    /// The `--dependency` answered its last check (always true without one).
    pub(crate) dependency_up: AtomicBool,
    /// Set once the drain has started; never cleared.
    draining: AtomicBool,
    /// When the drain started, in nanoseconds since `epoch`.
    drain_started: AtomicU64,
    /// Woken (all waiters) when the drain starts.
    drain_notify: Notify,
    /// Connections accepted and not yet closed.
    pub(crate) open_connections: AtomicUsize,
    /// Requests being handled right now, over all connections.
    pub(crate) in_flight: AtomicUsize,
    /// Woken when the last open connection closes during the drain.
    pub(crate) all_closed: Notify,
}

impl App {
    /// The shared state for a pod named `pod`.
    pub(crate) fn new(
        pod: &str,
        log: Logger,
        work: WorkTime,
        idle_grace: Duration,
        idle_timeout: Option<Duration>,
        close_delay: Duration,
    ) -> Result<Self, ServeError> {
        let pod_header =
            HeaderValue::from_str(pod).map_err(|_| ServeError::BadPodName(pod.to_owned()))?;
        let mut http = http1::Builder::new();
        // No header-read timeout (hyper's default of 30s needs a timer and
        // would close idle keep-alive connections, racing with clients
        // that reuse them); idle connections are closed by the drain, or by
        // `--idle-timeout` in the connection's task when it is set.
        http.keep_alive(true).header_read_timeout(None);
        Ok(App {
            log,
            http,
            idle_grace,
            idle_timeout,
            close_delay,
            epoch: Instant::now(),
            pod_header,
            root_body: Bytes::from(format!("hello from {pod}\n")),
            work,
            ready: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            dependency_up: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            drain_started: AtomicU64::new(0),
            drain_notify: Notify::new(),
            open_connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            all_closed: Notify::new(),
        })
    }

    /// Nanoseconds since the app's epoch (saturating; u64 covers 584 years).
    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant_at(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    /// True once the drain has started.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// When the drain started (meaningful only once [`App::is_draining`]).
    pub(crate) fn drain_started(&self) -> Instant {
        self.instant_at(self.drain_started.load(Ordering::Acquire))
    }

    /// Starts the drain: every later response says `Connection: close`, and
    /// the accept loop and all connections are woken to react.
    pub(crate) fn begin_drain(&self) {
        self.drain_started
            .store(self.nanos_since_epoch(Instant::now()), Ordering::Release);
        self.draining.store(true, Ordering::Release);
        self.drain_notify.notify_waiters();
    }

    /// A registration for the drain-start wake-up. Create it before checking
    /// [`App::is_draining`] so no wake-up can be missed.
    pub(crate) fn drain_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.drain_notify.notified()
    }

    fn respond(&self, conn: &ConnState, status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(POD_HEADER_NAME, self.pod_header.clone());
        headers.insert(CONTENT_TYPE, TEXT_PLAIN);
        if self.is_draining() {
            headers.insert(CONNECTION, CLOSE);
            conn.sent_close.store(true, Ordering::Relaxed);
        }
        response
    }
}

/// What one connection's task knows about its requests.
pub(crate) struct ConnState {
    /// Requests on this connection being handled right now.
    in_flight: AtomicUsize,
    /// Start or end of the last request, in nanoseconds since the app epoch.
    last_activity: AtomicU64,
    /// A response with `Connection: close` was built on this connection.
    sent_close: AtomicBool,
}

impl ConnState {
    /// State of a connection accepted just now.
    pub(crate) fn new(app: &App) -> Self {
        ConnState {
            in_flight: AtomicUsize::new(0),
            last_activity: AtomicU64::new(app.nanos_since_epoch(Instant::now())),
            sent_close: AtomicBool::new(false),
        }
    }

    /// True while a request on this connection is being handled.
    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When a request on this connection last started or ended.
    pub(crate) fn last_activity(&self, app: &App) -> Instant {
        app.instant_at(self.last_activity.load(Ordering::Acquire))
    }

    /// True once a `Connection: close` response was built on this connection.
    pub(crate) fn sent_close(&self) -> bool {
        self.sent_close.load(Ordering::Relaxed)
    }
}

/// Counts a request as in flight (globally and on its connection) for as
/// long as it lives, even if hyper drops the request future.
struct InFlight<'a> {
    app: &'a App,
    conn: &'a ConnState,
}

impl<'a> InFlight<'a> {
    fn enter(app: &'a App, conn: &'a ConnState) -> Self {
        app.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.last_activity
            .store(app.nanos_since_epoch(Instant::now()), Ordering::Release);
        InFlight { app, conn }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.conn.last_activity.store(
            self.app.nanos_since_epoch(Instant::now()),
            Ordering::Release,
        );
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.app.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers one request. Never fails: every outcome is an HTTP response.
pub(crate) async fn handle(
    app: Arc<App>,
    conn: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _in_flight = InFlight::enter(&app, &conn);
    let (status, body) = match req.uri().path() {
        "/" => work(&app, req).await,
        "/healthz" => {
            if !app.dependency_up.load(Ordering::Relaxed) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from_static(b"dependency down\n"),
                )
            } else if app.ready.load(Ordering::Relaxed) {
                (StatusCode::OK, Bytes::from_static(b"ready\n"))
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from_static(b"not ready\n"),
                )
            }
        }
        "/livez" => (StatusCode::OK, Bytes::from_static(b"alive\n")),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    };
    Ok(app.respond(&conn, status, body))
}

/// The `/` endpoint: read and discard the body, spend the work time, answer.
async fn work(app: &App, req: Request<Incoming>) -> (StatusCode, Bytes) {
    if app.broken.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"broken\n"),
        );
    }
    if !app.dependency_up.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"dependency down\n"),
        );
    }
    // Reading the body to its end keeps the connection reusable.
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    if !app.work.is_zero() {
        tokio::time::sleep(app.work.sample(next_random())).await;
    }
    (StatusCode::OK, app.root_body.clone())
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

/// A seed from the clock and the process id, mixed with splitmix64 (never 0).
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 { 1 } else { z }
}

/// The next number of a per-thread xorshift64 generator: plenty for
/// spreading work times, no dependency, no lock.
fn next_random() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_moves_and_spreads() {
        let values: Vec<u64> = (0..64).map(|_| next_random()).collect();
        assert!(values.iter().all(|&v| v != 0));
        let mut sorted = values.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), values.len());
        let low = values.iter().filter(|&&v| v % 2 == 0).count();
        assert!((8..=56).contains(&low), "{low}");
    }

    #[test]
    fn rejects_pod_names_that_are_not_header_values() {
        let log = Logger::new("x");
        let err = App::new(
            "bad\nname",
            log,
            WorkTime::default(),
            Duration::ZERO,
            None,
            Duration::ZERO,
        )
        .err();
        assert!(matches!(err, Some(ServeError::BadPodName(_))));
    }
}
