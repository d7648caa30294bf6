//! One connection's task: serve HTTP/1 with hyper until the drain starts,
//! then close the connection without racing the client.
//!
//! hyper's own `graceful_shutdown()` closes an idle HTTP/1 connection at
//! once, which races with a client that is sending its next request on it
//! right then: that request is lost (reset or EOF) though the app meant to
//! serve it. So during the drain this task:
//!
//! - lets a busy connection finish: its response carries `Connection: close`
//!   (see `app.rs`) and hyper closes after writing it;
//! - closes an idle connection only once it has been idle for the grace,
//!   counted from the later of its last request and the drain start.
//!
//! With `--idle-timeout` the task also closes a connection, draining or
//! not, once no request has been on it for that long (counted from the end
//! of its last request, or from the accept): a server's keep-alive timeout,
//! which a client reusing the connection can race with. A connection with
//! a request in flight is never closed by it.

use std::{
    future::poll_fn,
    net::SocketAddr,
    pin::pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{
    app::{App, ConnState, handle},
    drain::{CloseReason, DrainWatch, OpenConnection},
};

/// Serves one accepted connection to its end; `open` is released when the
/// task ends, and a close during the drain is logged.
pub(crate) async fn serve_connection(
    app: Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    open: OpenConnection,
) {
    let state = Arc::new(ConnState::new(&app));
    let service = {
        let app = app.clone();
        let state = state.clone();
        service_fn(move |req| handle(app.clone(), state.clone(), req))
    };
    let mut conn = pin!(app.http.serve_connection(TokioIo::new(stream), service));

    // Serving: poll hyper, learn about the drain with an atomic load, and
    // watch the idle timeout when there is one.
    let mut idle = app
        .idle_timeout
        .map(|timeout| (timeout, Box::pin(tokio::time::sleep(timeout))));
    let served = {
        let mut watch = DrainWatch::new(&app);
        poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Serving::Ended(result));
            }
            if watch.poll_started(cx) {
                return Poll::Ready(Serving::Drain);
            }
            if let Some((timeout, sleep)) = idle.as_mut() {
                // Each wake-up of the timer looks at the connection again:
                // idle past the timeout closes it, otherwise the timer moves.
                while sleep.as_mut().poll(cx).is_ready() {
                    let now = Instant::now();
                    let close_at = idle_close_at(&app, &state, *timeout, now);
                    if close_at <= now {
                        return Poll::Ready(Serving::IdleTimeout);
                    }
                    sleep.as_mut().reset(close_at.into());
                }
            }
            Poll::Pending
        })
        .await
    };
    let reason = match served {
        Serving::Ended(result) => Some(CloseReason::from_result(result, state.sent_close())),
        Serving::Drain => None,
        Serving::IdleTimeout => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
            Some(CloseReason::IdleTimeout)
        }
    };

    // Draining: wait for the response in flight or for the idle grace.
    let reason = match reason {
        Some(reason) => reason,
        None => loop {
            let now = std::time::Instant::now();
            let idle_since = state.last_activity(&app).max(app.drain_started());
            let grace_at = idle_since + app.idle_grace;
            // The idle timeout keeps running during the drain.
            let timeout_at = app
                .idle_timeout
                .map(|timeout| idle_close_at(&app, &state, timeout, now));
            let (close_at, why) = match timeout_at {
                Some(at) if at < grace_at => (at, CloseReason::IdleTimeout),
                _ => (grace_at, CloseReason::IdleGrace),
            };
            if !state.is_busy() && close_at <= now {
                conn.as_mut().graceful_shutdown();
                let _ = conn.as_mut().await;
                break why;
            }
            // Busy: its response will close the connection; look again
            // after a grace in case the client keeps it open somehow.
            let wake_at = if state.is_busy() {
                now + app.idle_grace
            } else {
                close_at
            };
            tokio::select! {
                result = conn.as_mut() => {
                    break CloseReason::from_result(result, state.sent_close());
                }
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        },
    };

    if app.is_draining() {
        let left = app
            .open_connections
            .load(std::sync::atomic::Ordering::Acquire)
            .saturating_sub(1);
        let in_flight = app.in_flight.load(std::sync::atomic::Ordering::Acquire);
        app.log.log(format_args!(
            "connection from {peer} closed during drain ({reason}); \
             {left} connections left, {in_flight} requests in flight"
        ));
    }
    drop(open);
}

/// How the serving phase of a connection ended.
enum Serving {
    /// hyper finished the connection (client close, error, `Connection: close`).
    Ended(hyper::Result<()>),
    /// The drain started.
    Drain,
    /// `--idle-timeout` passed with no request on the connection.
    IdleTimeout,
}

/// When the idle timeout closes this connection: `timeout` after its last
/// request ended (or after the accept), or, while a request is in flight,
/// no earlier than `timeout` from `now` (looked at again then).
fn idle_close_at(app: &App, state: &ConnState, timeout: Duration, now: Instant) -> Instant {
    if state.is_busy() {
        now + timeout
    } else {
        state.last_activity(app) + timeout
    }
}
