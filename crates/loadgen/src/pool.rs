//! The keep-alive connection pool of the client thread (single-threaded, so
//! plain `RefCell`s).
//!
//! A request takes the most recently used idle connection (LIFO keeps the set
//! of hot connections small). When none is idle it queues as a waiter, and a
//! new connection is opened only while there are more waiters than connects
//! already under way; the first connection to come free — a new one or one
//! returned by a finished request — goes to the oldest waiter. So the pool
//! grows to the concurrency the target really needs (rate × latency against a
//! slow target, up to `max_in_flight`), instead of opening a connection for
//! every request that arrives while the others are busy: at high rates that
//! storm of connects would itself put the generator behind.
//!
//! With an idle timeout (`LoadSpec::idle_timeout`) a connection that sat in
//! the idle stack longer than that is closed instead of reused, as Go's
//! `Transport.IdleConnTimeout` and browsers do: a client whose idle timeout
//! is shorter than the server's never sends on a connection the server is
//! closing (the keep-alive race). The stack is ordered by the time each
//! connection came back, so the expired ones are at its bottom and are
//! dropped there at each checkout, and a checkout never takes one.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    net::SocketAddr,
    rc::Rc,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::oneshot};

use super::{
    LiveCounters,
    classify::{Stage, classify},
};
use rolltest_core::model::{ConnRecord, ErrorKind, RunClock};

/// A failed connect, classified.
pub type ConnectError = (ErrorKind, String);

/// One HTTP/1.1 connection.
pub struct Conn {
    /// The generator's id for it (records carry it).
    pub id: u64,
    /// hyper's request handle.
    pub sender: http1::SendRequest<Full<Bytes>>,
}

type Waiter = oneshot::Sender<Result<Conn, ConnectError>>;

/// A connection in the idle stack and, with an idle timeout, when it came
/// back (without one the clock is not read on the hot path).
struct Idle {
    conn: Conn,
    since: Option<Instant>,
}

/// Most connects under way at once. Beyond it, waiters wait for the first
/// connection to come free: a target that stalls for a moment (or accepts
/// slowly) then gets a few more connections, not a storm of thousands that
/// would keep it and the generator behind long after the stall.
const MAX_CONNECTING: usize = 16;

/// The pool.
pub struct Pool {
    addr: SocketAddr,
    live: Arc<LiveCounters>,
    clock: RunClock,
    /// Every connection opened, with its local address (the correlator joins
    /// them with the embedded proxy's records to learn which pod served them).
    opened: RefCell<Vec<ConnRecord>>,
    /// Oldest at the bottom, most recently returned on top.
    idle: RefCell<Vec<Idle>>,
    /// Close idle connections older than this instead of reusing them.
    idle_timeout: Option<Duration>,
    waiters: RefCell<VecDeque<Waiter>>,
    connecting: Cell<usize>,
}

impl Pool {
    /// An empty pool for connections to `addr`; with `idle_timeout`, idle
    /// connections older than it are closed, not reused.
    pub fn new(
        addr: SocketAddr,
        live: Arc<LiveCounters>,
        clock: RunClock,
        idle_timeout: Option<Duration>,
    ) -> Rc<Self> {
        Rc::new(Pool {
            addr,
            live,
            clock,
            opened: RefCell::new(Vec::new()),
            idle: RefCell::new(Vec::new()),
            idle_timeout,
            waiters: RefCell::new(VecDeque::new()),
            connecting: Cell::new(0),
        })
    }

    /// A connection ready for a request: an idle one, or the first to come free.
    pub async fn checkout(self: &Rc<Self>) -> Result<Conn, ConnectError> {
        loop {
            let candidate = self.pop_idle();
            let mut conn = match candidate {
                Some(conn) => conn,
                None => self.wait().await?,
            };
            if !conn.sender.is_closed() && conn.sender.ready().await.is_ok() {
                return Ok(conn);
            }
            // Closed by the server while idle (or just after its last
            // response): drop it and look again.
        }
    }

    /// The most recently returned idle connection, after closing (dropping)
    /// those idle longer than the idle timeout.
    fn pop_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        if let Some(timeout) = self.idle_timeout
            && idle
                .first()
                .and_then(|oldest| oldest.since)
                .is_some_and(|since| since.elapsed() > timeout)
        {
            let now = Instant::now();
            let expired = idle.partition_point(|c| {
                c.since
                    .is_some_and(|since| now.duration_since(since) > timeout)
            });
            idle.drain(..expired);
        }
        idle.pop().map(|idle| idle.conn)
    }

    async fn wait(self: &Rc<Self>) -> Result<Conn, ConnectError> {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push_back(tx);
        if self.connecting.get() < self.waiters.borrow().len().min(MAX_CONNECTING) {
            self.connecting.set(self.connecting.get() + 1);
            let pool = self.clone();
            tokio::task::spawn_local(async move { pool.connect_for_waiters().await });
        }
        rx.await
            .unwrap_or_else(|_| Err((ErrorKind::Other, "the connection pool closed".into())))
    }

    async fn connect_for_waiters(self: Rc<Self>) {
        let result = self.connect().await;
        self.connecting.set(self.connecting.get().saturating_sub(1));
        match result {
            Ok(conn) => self.checkin(conn),
            Err(error) => {
                // The error goes to the oldest waiter still waiting; every
                // waiter has a connect of its own under way, so none starves.
                let mut error = Err(error);
                loop {
                    let waiter = self.waiters.borrow_mut().pop_front();
                    let Some(waiter) = waiter else { break };
                    match waiter.send(error) {
                        Ok(()) => break,
                        Err(back) => error = back,
                    }
                }
            }
        }
    }

    /// Returns a connection after a complete response: to the oldest waiter,
    /// else to the idle stack.
    pub fn checkin(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut conn = Ok(conn);
        loop {
            let waiter = self.waiters.borrow_mut().pop_front();
            let Some(waiter) = waiter else { break };
            match waiter.send(conn) {
                Ok(()) => return,
                // That request timed out meanwhile: try the next waiter.
                Err(back) => conn = back,
            }
        }
        if let Ok(conn) = conn {
            self.push_idle(conn);
        }
    }

    /// Opens up to `n` connections into the idle stack, concurrently (before
    /// the first request is due); failures are left for the requests to record.
    pub async fn warm_up(self: &Rc<Self>, n: usize) {
        let pending: Vec<_> = (0..n)
            .map(|_| {
                let pool = self.clone();
                tokio::task::spawn_local(async move { pool.connect().await })
            })
            .collect();
        for handle in pending {
            if let Ok(Ok(conn)) = handle.await {
                self.push_idle(conn);
            }
        }
    }

    fn push_idle(&self, conn: Conn) {
        self.idle.borrow_mut().push(Idle {
            conn,
            since: self.idle_timeout.map(|_| Instant::now()),
        });
    }

    /// The connections opened so far (taken: the list starts empty again).
    pub fn take_opened(&self) -> Vec<ConnRecord> {
        std::mem::take(&mut *self.opened.borrow_mut())
    }

    /// Drops every idle connection.
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
        self.waiters.borrow_mut().clear();
    }

    /// Opens a new connection (not pooled until checked in).
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        let opened_us = self.clock.now_micros();
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| classify(Stage::Connect, &e))?;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| classify(Stage::Connect, &e))?;
        tokio::task::spawn_local(async move {
            // Ends when either side closes; its error is seen by the request.
            let _ = connection.await;
        });
        let id = self.live.connections.fetch_add(1, Ordering::Relaxed);
        if let Some(local) = local {
            self.opened.borrow_mut().push(ConnRecord {
                conn: id,
                local,
                opened_us,
            });
        }
        Ok(Conn { id, sender })
    }
}
