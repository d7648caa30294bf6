//! The connections of the client thread and the requests on them
//! (single-threaded, so plain `Cell`s and `RefCell`s).
//!
//! **The hot path.** The dispatcher hands each due request to [`Pool::submit`],
//! which takes the most recently used idle connection (LIFO keeps the set of
//! hot connections small) and writes the request's bytes — serialized once,
//! before the run — straight to its socket: no task, no channel and no timer
//! per request. The sockets sit in an epoll set of the pool's own, outside
//! tokio's: [`Pool::process`] takes the ready ones from it without waiting,
//! reads each (`recvmsg` with the kernel's receive timestamp), parses the
//! response from a read buffer all connections share ([`ResponseReader`]),
//! records the request as finished when its last bytes *arrived*, and hands
//! the connection back: to the oldest request waiting for one, else to the
//! idle stack. The dispatcher calls it at each of its ticks, so at high rates
//! the thread wakes once per tick for the sends and the responses together
//! (each wake-up costs about 4 µs of CPU on a VM, more than the request
//! itself); when it ticks seldom it also waits on the set ([`Pool::ready`])
//! and reads responses as they arrive. A request costs one `write` and one
//! `recvmsg`.
//!
//! **Growth.** A request that finds no idle connection waits in a FIFO, and a
//! new connection is opened only while there are more waiting requests than
//! connects already under way (at most [`MAX_CONNECTING`]); the first
//! connection to come free — a new one or one whose response just finished —
//! goes to the oldest waiting request. So the pool grows to the concurrency
//! the target really needs (rate × latency against a slow target, up to
//! `max_in_flight`), instead of opening a connection for every request that
//! arrives while the others are busy: at high rates that storm of connects
//! would itself put the generator behind. Without keep-alive every request
//! opens a connection of its own and it is closed after the response.
//!
//! **Timeouts.** Every request has the same timeout from the moment it was
//! handed over, so the dispatcher checks them every few milliseconds
//! ([`Pool::expire`]): a waiting request past it fails as a timeout, and so
//! does a request on a connection, whose connection is then closed (as
//! dropping a hyper request closes its connection).
//!
//! **Idle timeout.** With `LoadSpec::idle_timeout` a connection that sat in
//! the idle stack longer than that is closed instead of reused, as Go's
//! `Transport.IdleConnTimeout` and browsers do: a client whose idle timeout
//! is shorter than the server's never sends on a connection the server is
//! closing (the keep-alive race). The stack is ordered by the time each
//! connection came back, so the expired ones are at its bottom and are
//! closed there at each checkout, and a checkout never takes one. A
//! connection the server closes while idle is seen by its task (end of
//! stream) and leaves the stack at once.
//!
//! **Errors** come from their real source: the `connect`, `write` or `read`
//! that failed ([`classify`]); a server that closes before a complete
//! response is `connection_reset` ("connection closed before message
//! completed", as hyper says), a malformed response is `other`.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    io::{self, Write},
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    rc::Rc,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use tokio::{io::unix::AsyncFd, net::TcpStream};

use super::{
    LiveCounters,
    classify::{Stage, classify},
    http1::{Progress, Response, ResponseReader},
    sock::{Epoll, Event, enable_rx_timestamps, recv_timestamped},
};
use rolltest_core::model::{ConnRecord, ErrorKind, Outcome, RequestRecord, RunClock};

/// A failed request's kind and detail.
pub type Failure = (ErrorKind, String);

/// One request handed over by the dispatcher.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// Its place in the schedule.
    pub seq: u64,
    /// When it was due (run clock, µs).
    pub intended_us: u64,
    /// When it was handed over (run clock, µs); its timeout runs from here.
    pub sent_us: u64,
}

/// Most connects under way at once (with keep-alive). Beyond it, waiting
/// requests wait for the first connection to come free: a target that stalls
/// for a moment (or accepts slowly) then gets a few more connections, not a
/// storm of thousands that would keep it and the generator behind long after
/// the stall.
const MAX_CONNECTING: usize = 16;

/// The read buffer all connections share (what a read leaves unparsed, an
/// unfinished head or line, waits in the connection's own small buffer).
const READ_BUFFER: usize = 64 * 1024;
/// Largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Events taken from the epoll set per call.
const EVENTS: usize = 256;

/// What hyper says when the server closes before a complete response.
const CLOSED_EARLY: &str = "connection closed before message completed";

/// What the request looks like on the wire, and how to run it.
#[derive(Debug, Clone)]
pub struct Wire {
    /// The request's bytes, written as-is for every request.
    pub request: Bytes,
    /// Its method (a HEAD response has no body).
    pub method: http::Method,
    /// Reuse connections.
    pub keepalive: bool,
}

/// One HTTP/1.1 connection.
struct Conn {
    /// The generator's id for it (records carry it).
    id: u64,
    /// Its key in the pool's table and epoll set.
    key: usize,
    sock: std::net::TcpStream,
    /// The request on it now.
    job: Cell<Option<Job>>,
    reader: RefCell<ResponseReader>,
    /// Bytes read but not parsed yet (an unfinished head or line).
    partial: RefCell<Vec<u8>>,
    /// The rest of a request the socket did not take at once.
    unwritten: RefCell<Bytes>,
    closed: Cell<bool>,
}

/// A connection in the idle stack and, with an idle timeout, when it came
/// back (without one the clock is not read on the hot path).
struct Idle {
    conn: Rc<Conn>,
    since: Option<Instant>,
}

/// The pool's epoll set as tokio sees it while the dispatcher waits on it.
struct EpollRef(RawFd);

impl AsRawFd for EpollRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The pool.
pub struct Pool {
    addr: SocketAddr,
    live: Arc<LiveCounters>,
    clock: RunClock,
    wire: Wire,
    timeout_us: u64,
    timeout_detail: String,
    /// Close idle connections older than this instead of reusing them.
    idle_timeout: Option<Duration>,
    /// Every connection opened, with its local address (the correlator joins
    /// them with the embedded proxy's records to learn which pod served them).
    opened: RefCell<Vec<ConnRecord>>,
    /// The epoll set registered with tokio, while it is (declared before
    /// `epoll`: dropped first).
    watched: RefCell<Option<Rc<AsyncFd<EpollRef>>>>,
    /// The connections' sockets, keyed by their place in `conns`.
    epoll: Epoll,
    /// Every open connection, by key (`None`: a free key, listed in `free`).
    conns: RefCell<Vec<Option<Rc<Conn>>>>,
    free: RefCell<Vec<usize>>,
    /// Oldest at the bottom, most recently returned on top.
    idle: RefCell<Vec<Idle>>,
    /// Requests waiting for a connection, oldest first.
    waiting: RefCell<VecDeque<Job>>,
    connecting: Cell<usize>,
    /// Finished records, handed to the writer in batches.
    batch: RefCell<Vec<RequestRecord>>,
    scratch: RefCell<Vec<u8>>,
    raw_events: RefCell<Vec<libc::epoll_event>>,
    events: RefCell<Vec<Event>>,
}

impl Pool {
    /// An empty pool for `wire`'s requests to `addr`; each request times out
    /// `timeout` after it was handed over; with `idle_timeout`, idle
    /// connections older than it are closed, not reused.
    pub fn new(
        addr: SocketAddr,
        wire: Wire,
        timeout: Duration,
        idle_timeout: Option<Duration>,
        live: Arc<LiveCounters>,
        clock: RunClock,
    ) -> io::Result<Rc<Self>> {
        Ok(Rc::new(Pool {
            addr,
            live,
            clock,
            wire,
            timeout_us: u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX),
            timeout_detail: format!(
                "no complete response within {}",
                humantime::format_duration(timeout)
            ),
            idle_timeout,
            opened: RefCell::new(Vec::new()),
            watched: RefCell::new(None),
            epoll: Epoll::new()?,
            conns: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            idle: RefCell::new(Vec::new()),
            waiting: RefCell::new(VecDeque::new()),
            connecting: Cell::new(0),
            batch: RefCell::new(Vec::with_capacity(1024)),
            scratch: RefCell::new(vec![0u8; READ_BUFFER]),
            raw_events: RefCell::new(Vec::with_capacity(EVENTS)),
            events: RefCell::new(Vec::with_capacity(EVENTS)),
        }))
    }

    /// Sends `job` now on an idle connection, or queues it for the first
    /// connection to come free (opening one when needed).
    pub fn submit(self: &Rc<Self>, job: Job) {
        if self.wire.keepalive
            && let Some(conn) = self.pop_idle()
        {
            self.send(&conn, job);
            return;
        }
        self.waiting.borrow_mut().push_back(job);
        self.connect_for_waiting();
    }

    /// Reads every response that has arrived (each timed by when it
    /// arrived), finishes writes the sockets can take now, and hands the
    /// connections that came free to waiting requests or the idle stack.
    /// Never waits.
    pub fn process(self: &Rc<Self>) {
        let mut events = std::mem::take(&mut *self.events.borrow_mut());
        loop {
            let more = {
                let mut raw = self.raw_events.borrow_mut();
                self.epoll.ready(&mut raw, &mut events).unwrap_or(false)
            };
            if events.is_empty() {
                break;
            }
            // Turns receive timestamps (wall clock) into run-clock time.
            let now = (Instant::now(), SystemTime::now());
            for event in &events {
                let conn = self
                    .conns
                    .borrow()
                    .get(event.key as usize)
                    .and_then(Option::clone);
                let Some(conn) = conn else { continue };
                if event.write && !conn.closed.get() {
                    self.write_more(&conn);
                }
                if event.read && !conn.closed.get() {
                    self.read(&conn, now);
                }
            }
            if !more {
                break;
            }
        }
        *self.events.borrow_mut() = events;
    }

    /// Waits until a connection's socket has something to read or can take
    /// the rest of a write (call [`Pool::process`] then). The first call
    /// registers the pool's epoll set with tokio: from then on, every arrival
    /// wakes the thread, so a dispatcher that ticks often enough does not call
    /// this and reads at its ticks instead (see `client::dispatch`). Where the
    /// set cannot be registered, it never returns: responses are then read
    /// at the dispatcher's next wake-up (still timed by their arrival).
    pub async fn ready(&self) {
        if self.wait_ready().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    async fn wait_ready(&self) -> io::Result<()> {
        let watched = self.watched.borrow().clone();
        let fd = match watched {
            Some(fd) => fd,
            None => {
                let raw = EpollRef(self.epoll.as_raw_fd());
                // SAFETY: the epoll descriptor stays open until `epoll` is
                // dropped, after `watched` (field order), and never changes.
                let fd = Rc::new(
                    unsafe { AsyncFd::register_with_interest(raw, tokio::io::Interest::READABLE) }
                        .map_err(io::Error::from)?,
                );
                *self.watched.borrow_mut() = Some(fd.clone());
                fd
            }
        };
        let mut guard = fd.readable().await?;
        // Whatever is ready now is read by `process` before the next wait;
        // anything that becomes ready later wakes the set again.
        guard.clear_ready();
        Ok(())
    }

    /// Fails every request past its timeout (waiting or on a connection) at
    /// run-clock `now_us`, closing the connections they were on.
    pub fn expire(self: &Rc<Self>, now_us: u64) {
        loop {
            let front = self.waiting.borrow().front().copied();
            match front {
                Some(job) if now_us.saturating_sub(job.sent_us) >= self.timeout_us => {
                    self.waiting.borrow_mut().pop_front();
                    self.finish(job, None, None, None, Some(self.timeout_failure()), now_us);
                }
                _ => break,
            }
        }
        let late: Vec<Rc<Conn>> = self
            .conns
            .borrow()
            .iter()
            .flatten()
            .filter(|conn| {
                conn.job
                    .get()
                    .is_some_and(|job| now_us.saturating_sub(job.sent_us) >= self.timeout_us)
            })
            .cloned()
            .collect();
        for conn in late {
            self.fail_and_close(&conn, self.timeout_failure(), now_us);
        }
    }

    fn timeout_failure(&self) -> Failure {
        (ErrorKind::Timeout, self.timeout_detail.clone())
    }

    /// The records finished since the last call.
    pub fn take_batch(&self) -> Vec<RequestRecord> {
        std::mem::take(&mut *self.batch.borrow_mut())
    }

    /// Records a request the dispatcher did not send.
    pub fn record_dropped(&self, record: RequestRecord) {
        self.live.dropped.fetch_add(1, Ordering::Relaxed);
        self.batch.borrow_mut().push(record);
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

    /// The connections opened so far (taken: the list starts empty again).
    pub fn take_opened(&self) -> Vec<ConnRecord> {
        std::mem::take(&mut *self.opened.borrow_mut())
    }

    /// Closes every connection and forgets waiting requests (at the end).
    pub fn clear(&self) {
        let open: Vec<Rc<Conn>> = self.conns.borrow().iter().flatten().cloned().collect();
        for conn in &open {
            self.close(conn);
        }
        self.idle.borrow_mut().clear();
        self.waiting.borrow_mut().clear();
        self.watched.borrow_mut().take();
    }

    /// Starts connects while more requests wait than connects are under way
    /// (all of them without keep-alive: one connection per request).
    fn connect_for_waiting(self: &Rc<Self>) {
        let waiting = self.waiting.borrow().len();
        let want = if self.wire.keepalive {
            waiting.min(MAX_CONNECTING)
        } else {
            waiting
        };
        while self.connecting.get() < want {
            self.connecting.set(self.connecting.get() + 1);
            let pool = self.clone();
            tokio::task::spawn_local(async move {
                let result = pool.connect().await;
                pool.connecting.set(pool.connecting.get().saturating_sub(1));
                match result {
                    Ok(conn) => pool.release(&conn),
                    Err(failure) => {
                        // The error goes to the oldest waiting request; the
                        // others get connects of their own.
                        let job = pool.waiting.borrow_mut().pop_front();
                        if let Some(job) = job {
                            let now_us = pool.clock.now_micros();
                            pool.finish(job, None, None, None, Some(failure), now_us);
                        }
                        pool.connect_for_waiting();
                    }
                }
            });
        }
    }

    /// A connection free for a request: to the oldest waiting one, else to
    /// the idle stack (without keep-alive: closed).
    fn release(self: &Rc<Self>, conn: &Rc<Conn>) {
        let next = self.waiting.borrow_mut().pop_front();
        match next {
            Some(job) => self.send(conn, job),
            None if self.wire.keepalive => self.push_idle(conn.clone()),
            None => self.close(conn),
        }
    }

    /// Writes `job`'s request on `conn`; its response is read by [`Pool::process`].
    fn send(self: &Rc<Self>, conn: &Rc<Conn>, job: Job) {
        // The reader and `partial` are already at a response's start: a
        // connection is only reused after a complete response with nothing
        // after it.
        conn.job.set(Some(job));
        let request = &self.wire.request;
        let written = match (&conn.sock).write(request) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(e) => {
                self.write_failed(conn, &e);
                return;
            }
        };
        if written < request.len() {
            // The socket's buffer is full (a large body): the rest goes as
            // the socket drains.
            *conn.unwritten.borrow_mut() = request.slice(written..);
            if let Err(e) = self
                .epoll
                .watch_write(conn.sock.as_raw_fd(), conn.key as u64, true)
            {
                self.write_failed(conn, &e);
            }
        }
    }

    /// Writes what the socket takes of the rest of a request.
    fn write_more(self: &Rc<Self>, conn: &Rc<Conn>) {
        let rest = conn.unwritten.borrow().clone();
        if rest.is_empty() {
            return;
        }
        match (&conn.sock).write(&rest) {
            Ok(n) if n == rest.len() => {
                *conn.unwritten.borrow_mut() = Bytes::new();
                if let Err(e) =
                    self.epoll
                        .watch_write(conn.sock.as_raw_fd(), conn.key as u64, false)
                {
                    self.write_failed(conn, &e);
                }
            }
            Ok(n) => *conn.unwritten.borrow_mut() = rest.slice(n..),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => self.write_failed(conn, &e),
        }
    }

    /// The request on `conn` failed as it was written: it is recorded with
    /// the write's error and the connection closed.
    fn write_failed(self: &Rc<Self>, conn: &Rc<Conn>, error: &io::Error) {
        let now_us = self.clock.now_micros();
        self.fail_and_close(conn, classify(Stage::Exchange, error), now_us);
    }

    /// Fails the request on `conn` (if any) with `failure` at run-clock
    /// `at_us`, keeping the status and pod header if its head had arrived,
    /// and closes the connection.
    fn fail_and_close(&self, conn: &Rc<Conn>, failure: Failure, at_us: u64) {
        if let Some(job) = conn.job.take() {
            let (status, pod) = {
                let mut reader = conn.reader.borrow_mut();
                (reader.status(), reader.take_pod())
            };
            self.finish(job, Some(conn.id), status, pod, Some(failure), at_us);
        }
        self.close(conn);
    }

    /// Reads what has arrived on `conn` and parses it; `now` is the
    /// (monotonic, wall) clock pair that turns receive timestamps into
    /// run-clock time.
    fn read(self: &Rc<Self>, conn: &Rc<Conn>, now: (Instant, SystemTime)) {
        let mut scratch = std::mem::take(&mut *self.scratch.borrow_mut());
        loop {
            let (n, arrived) = match recv_timestamped(conn.sock.as_raw_fd(), &mut scratch) {
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let now_us = self.clock.now_micros();
                    self.closed_by_peer(conn, Some(e), now_us);
                    break;
                }
            };
            let at_us = self.clock.micros(arrival(arrived, now));
            if n == 0 {
                self.closed_by_peer(conn, None, at_us);
                break;
            }
            let mut partial = std::mem::take(&mut *conn.partial.borrow_mut());
            let data: &[u8] = if partial.is_empty() {
                &scratch[..n]
            } else {
                partial.extend_from_slice(&scratch[..n]);
                &partial
            };
            match self.consume(conn, data, at_us) {
                Some(used) if used < data.len() => {
                    let rest = data[used..].to_vec();
                    *conn.partial.borrow_mut() = rest;
                }
                Some(_) => {
                    partial.clear();
                    *conn.partial.borrow_mut() = partial;
                }
                None => break,
            }
            if n < scratch.len() {
                break;
            }
        }
        *self.scratch.borrow_mut() = scratch;
    }

    /// Parses `data` (what arrived on `conn`, complete at `at_us`): records
    /// a complete response and frees the connection. Returns how many bytes
    /// were used (the rest is an unfinished head or line), or `None` when
    /// the connection was closed.
    fn consume(self: &Rc<Self>, conn: &Rc<Conn>, data: &[u8], at_us: u64) -> Option<usize> {
        let Some(job) = conn.job.get() else {
            // Bytes nobody asked for: not HTTP we can follow.
            self.close(conn);
            return None;
        };
        let progress = conn.reader.borrow_mut().feed(data);
        match progress {
            Ok(Progress::More(used)) => Some(used),
            Ok(Progress::Done(response, used)) => {
                conn.job.set(None);
                let reusable = response.reusable;
                self.complete(job, conn, response, at_us);
                // Reused only when the server keeps it open, nothing
                // followed the response and the request was written whole.
                if !reusable
                    || !self.wire.keepalive
                    || used < data.len()
                    || !conn.unwritten.borrow().is_empty()
                {
                    self.close(conn);
                    return None;
                }
                self.release(conn);
                Some(used)
            }
            Err(e) => {
                self.fail_and_close(conn, (ErrorKind::Other, e.to_string()), at_us);
                None
            }
        }
    }

    /// The most recently returned idle connection, after closing those idle
    /// longer than the idle timeout.
    fn pop_idle(&self) -> Option<Rc<Conn>> {
        let expired: Vec<Idle> = {
            let mut idle = self.idle.borrow_mut();
            match self.idle_timeout {
                Some(timeout)
                    if idle
                        .first()
                        .and_then(|oldest| oldest.since)
                        .is_some_and(|since| since.elapsed() > timeout) =>
                {
                    let now = Instant::now();
                    let n = idle.partition_point(|c| {
                        c.since
                            .is_some_and(|since| now.duration_since(since) > timeout)
                    });
                    idle.drain(..n).collect()
                }
                _ => Vec::new(),
            }
        };
        for old in expired {
            self.close(&old.conn);
        }
        self.idle.borrow_mut().pop().map(|idle| idle.conn)
    }

    fn push_idle(&self, conn: Rc<Conn>) {
        self.idle.borrow_mut().push(Idle {
            conn,
            since: self.idle_timeout.map(|_| Instant::now()),
        });
    }

    /// Closes `conn`: it leaves the epoll set and every list, and its socket
    /// closes when the last reference goes.
    fn close(&self, conn: &Rc<Conn>) {
        if conn.closed.replace(true) {
            return;
        }
        self.epoll.remove(conn.sock.as_raw_fd());
        if let Some(slot) = self.conns.borrow_mut().get_mut(conn.key) {
            *slot = None;
            self.free.borrow_mut().push(conn.key);
        }
        self.idle
            .borrow_mut()
            .retain(|c| !Rc::ptr_eq(&c.conn, conn));
    }

    fn complete(&self, job: Job, conn: &Conn, response: Response, at_us: u64) {
        self.finish(
            job,
            Some(conn.id),
            Some(response.status),
            response.pod,
            None,
            at_us,
        );
    }

    /// Records a finished request, finished at run-clock `end_us`.
    fn finish(
        &self,
        job: Job,
        conn: Option<u64>,
        status: Option<u16>,
        pod: Option<String>,
        error: Option<Failure>,
        end_us: u64,
    ) {
        let end_us = end_us.max(job.sent_us);
        let outcome = match (&error, status) {
            (Some((kind, _)), _) => Outcome::Failed(*kind),
            (None, Some(code)) if code >= 500 => Outcome::Failed(ErrorKind::Http5xx),
            (None, Some(code)) if code >= 400 => Outcome::Failed(ErrorKind::Http4xx),
            (None, _) => Outcome::Ok,
        };
        let counter = if outcome == Outcome::Ok {
            &self.live.ok
        } else {
            &self.live.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.batch.borrow_mut().push(RequestRecord {
            seq: job.seq,
            intended_us: job.intended_us,
            sent_us: Some(job.sent_us),
            latency_us: Some(end_us.saturating_sub(job.intended_us)),
            status,
            outcome,
            detail: error.map(|(_, detail)| detail),
            pod,
            conn,
            cause: None,
            failed_tries: Vec::new(),
        });
        self.live.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Opens a new connection into the pool's table and epoll set (in no
    /// other list until released).
    async fn connect(self: &Rc<Self>) -> Result<Rc<Conn>, Failure> {
        let opened_us = self.clock.now_micros();
        let timeout = Duration::from_micros(self.timeout_us);
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(classify(Stage::Connect, &e)),
            Err(_) => return Err(self.timeout_failure()),
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let sock = stream
            .into_std()
            .map_err(|e| classify(Stage::Connect, &e))?;
        enable_rx_timestamps(sock.as_raw_fd());
        let key = match self.free.borrow_mut().pop() {
            Some(key) => key,
            None => {
                let mut conns = self.conns.borrow_mut();
                conns.push(None);
                conns.len() - 1
            }
        };
        if let Err(e) = self.epoll.add(sock.as_raw_fd(), key as u64) {
            self.free.borrow_mut().push(key);
            return Err(classify(Stage::Connect, &e));
        }
        let id = self.live.connections.fetch_add(1, Ordering::Relaxed);
        if let Some(local) = local {
            self.opened.borrow_mut().push(ConnRecord {
                conn: id,
                local,
                opened_us,
            });
        }
        let conn = Rc::new(Conn {
            id,
            key,
            sock,
            job: Cell::new(None),
            reader: RefCell::new(ResponseReader::new(&self.wire.method, MAX_HEAD)),
            partial: RefCell::new(Vec::new()),
            unwritten: RefCell::new(Bytes::new()),
            closed: Cell::new(false),
        });
        if let Some(slot) = self.conns.borrow_mut().get_mut(key) {
            *slot = Some(conn.clone());
        }
        Ok(conn)
    }

    /// The read side ended: end of stream (`error` None) or an error, at
    /// run-clock `at_us`. A request on it fails with the real cause (or
    /// completes, when its body ran until the close); the connection is closed.
    fn closed_by_peer(&self, conn: &Rc<Conn>, error: Option<io::Error>, at_us: u64) {
        let body_ended = match error {
            None => conn.reader.borrow_mut().close(),
            Some(_) => None,
        };
        if let Some(response) = body_ended
            && let Some(job) = conn.job.take()
        {
            self.complete(job, conn, response, at_us);
        } else if conn.job.get().is_some() {
            let cause =
                error.unwrap_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, CLOSED_EARLY));
            self.fail_and_close(conn, classify(Stage::Exchange, &cause), at_us);
            return;
        }
        self.close(conn);
    }
}

/// When bytes the kernel timestamped `arrived` (wall clock) arrived, on the
/// monotonic clock, from a (monotonic, wall) pair read at about the same
/// time; without a timestamp, the pair's monotonic time.
fn arrival(arrived: Option<SystemTime>, (mono, wall): (Instant, SystemTime)) -> Instant {
    match arrived {
        None => mono,
        Some(at) => match wall.duration_since(at) {
            Ok(before) => mono.checked_sub(before).unwrap_or(mono),
            Err(after) => mono + after.duration(),
        },
    }
}
