//! Drain bookkeeping shared by the accept loop and the connections: a cheap
//! "has the drain started?" check, the open-connection count, and why a
//! connection ended.

use std::{
    fmt,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Waker},
};

use tokio::sync::futures::Notified;

use super::app::App;

/// Watches for the start of the drain from inside a `poll_fn`.
///
/// It is polled on every wake-up of a connection, so it avoids the obvious
/// `select!` on a `Notified` (which takes the `Notify`'s lock on each poll):
/// it reads the atomic flag, and polls the `Notified` only when the task's
/// waker changed (in practice once).
pub(crate) struct DrainWatch<'a> {
    app: &'a App,
    notified: Pin<Box<Notified<'a>>>,
    waker: Option<Waker>,
}

impl<'a> DrainWatch<'a> {
    /// Registers for the drain start. Created before the first check of the
    /// flag, so a drain that starts in between is not missed.
    pub(crate) fn new(app: &'a App) -> Self {
        DrainWatch {
            app,
            notified: Box::pin(app.drain_notified()),
            waker: None,
        }
    }

    /// True once the drain has started; otherwise arranges for `cx` to be
    /// woken when it starts.
    pub(crate) fn poll_started(&mut self, cx: &mut Context<'_>) -> bool {
        if self.app.is_draining() {
            return true;
        }
        let registered = self
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if !registered {
            if self.notified.as_mut().poll(cx).is_ready() {
                return true;
            }
            self.waker = Some(cx.waker().clone());
        }
        false
    }
}

/// One open connection in [`App::open_connections`]; dropping it (when the
/// connection's task ends, however it ends) removes it and, during a drain,
/// wakes the lifecycle task when it was the last one.
pub(crate) struct OpenConnection {
    app: Arc<App>,
}

impl OpenConnection {
    /// Counts a connection that was just accepted.
    pub(crate) fn new(app: &Arc<App>) -> Self {
        app.open_connections.fetch_add(1, Ordering::AcqRel);
        OpenConnection { app: app.clone() }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let before = self.app.open_connections.fetch_sub(1, Ordering::AcqRel);
        if before == 1 && self.app.is_draining() {
            // notify_one keeps a permit, so the wake-up cannot be lost.
            self.app.all_closed.notify_one();
        }
    }
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// The app closed it after it stayed idle for the grace during the drain.
    IdleGrace,
    /// The app closed it after it stayed idle for `--idle-timeout`.
    IdleTimeout,
    /// hyper closed it after writing a `Connection: close` response.
    AfterResponse,
    /// The client closed it.
    ByClient,
    /// An I/O or protocol error ended it.
    Error(hyper::Error),
    /// A socket error while the close was delayed (`--close-delay`).
    Io(std::io::Error),
    /// A request arrived while the app's close was delayed
    /// (`--close-delay`): the connection was reset, as a closed socket's
    /// kernel answers it.
    ResetWithinCloseDelay,
}

impl CloseReason {
    /// Classifies a finished hyper connection.
    pub(crate) fn from_result(result: hyper::Result<()>, sent_close: bool) -> Self {
        match result {
            Ok(()) if sent_close => CloseReason::AfterResponse,
            Ok(()) => CloseReason::ByClient,
            Err(err) => CloseReason::Error(err),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::IdleGrace => f.write_str("idle past the grace"),
            CloseReason::IdleTimeout => f.write_str("idle past the idle timeout"),
            CloseReason::AfterResponse => f.write_str("after a Connection: close response"),
            CloseReason::ByClient => f.write_str("by the client"),
            CloseReason::Error(err) => write!(f, "error: {err}"),
            CloseReason::Io(err) => write!(f, "error: {err}"),
            CloseReason::ResetWithinCloseDelay => {
                f.write_str("reset: a request arrived within the close delay")
            }
        }
    }
}
