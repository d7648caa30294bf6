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
//!
//! `--close-delay` (zero by default) models the network between the app and
//! its clients for these two closes of an idle connection. On a real path
//! the server's FIN takes the one-way delay to reach the client, which
//! meanwhile still sees an open connection and may write a request on it;
//! that request reaches a socket the server has closed, whose kernel
//! answers RST: the client loses it with no response byte. On loopback the
//! FIN arrives within microseconds and the race all but never shows. With
//! a delay D the app stops serving the connection when it decides to close
//! it (hyper hands the socket back), keeps the socket open without reading
//! for D, then closes it (FIN); if a request arrives within D the socket is
//! closed with SO_LINGER 0 (RST) instead, as the kernel of a closed socket
//! would answer it.

use std::{
    future::poll_fn,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::HttpService, service::service_fn};
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
    // Not pinned in place: an idle close with a delay takes the socket back
    // (`into_parts`), which needs the connection by value.
    let mut conn = app.http.serve_connection(TokioIo::new(stream), service);

    // Serving: poll hyper, learn about the drain with an atomic load, and
    // watch the idle timeout when there is one.
    let mut idle = app
        .idle_timeout
        .map(|timeout| (timeout, Box::pin(tokio::time::sleep(timeout))));
    let served = {
        let mut watch = DrainWatch::new(&app);
        poll_fn(|cx| {
            if let Poll::Ready(result) = Pin::new(&mut conn).poll(cx) {
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
            // Moves the connection out: the drain loop below is skipped.
            return finish(
                &app,
                peer,
                open,
                close_idle(conn, app.close_delay, CloseReason::IdleTimeout).await,
            );
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
                break close_idle(conn, app.close_delay, why).await;
            }
            // Busy: its response will close the connection; look again
            // after a grace in case the client keeps it open somehow.
            let wake_at = if state.is_busy() {
                now + app.idle_grace
            } else {
                close_at
            };
            tokio::select! {
                result = &mut conn => {
                    break CloseReason::from_result(result, state.sent_close());
                }
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        },
    };
    finish(&app, peer, open, reason);
}

/// Logs a close during the drain and releases the connection's count.
fn finish(app: &App, peer: SocketAddr, open: OpenConnection, reason: CloseReason) {
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

/// Closes an idle connection for `why`: at once (hyper's graceful shutdown,
/// a FIN) without a close delay; with one, as a FIN that reaches the client
/// `delay` late (see the module docs): the socket is held open unread for
/// `delay`, then closed, or reset as soon as a request arrives.
async fn close_idle<S>(
    mut conn: http1::Connection<TokioIo<TcpStream>, S>,
    delay: Duration,
    why: CloseReason,
) -> CloseReason
where
    S: HttpService<Incoming, ResBody = Full<Bytes>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if delay.is_zero() {
        Pin::new(&mut conn).graceful_shutdown();
        let _ = conn.await;
        return why;
    }
    let parts = conn.into_parts();
    let stream = parts.io.into_inner();
    if !parts.read_buf.is_empty() {
        // Bytes of a request already read but not yet parsed.
        return reset(stream);
    }
    let deadline = tokio::time::Instant::now() + delay;
    let mut sink = [0u8; 512];
    loop {
        let readable = tokio::time::timeout_at(deadline, stream.readable()).await;
        match readable {
            // D passed without a request: the FIN leaves now.
            Err(_) => return why,
            Ok(Err(_)) => return why,
            Ok(Ok(())) => {}
        }
        match stream.try_read(&mut sink) {
            // The client closed first.
            Ok(0) => return CloseReason::ByClient,
            Ok(_) => return reset(stream),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return CloseReason::Io(err),
        }
    }
}

/// Closes `stream` with a reset (SO_LINGER 0): a request reached it after
/// the app had closed it.
fn reset(stream: TcpStream) -> CloseReason {
    let _ = stream.set_zero_linger();
    drop(stream);
    CloseReason::ResetWithinCloseDelay
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
