//! L4 forwarding like iptables kube-proxy.
//!
//! Each accepted client connection picks a backend once and is pinned to it
//! until either side closes, as conntrack would keep it: endpoint changes
//! never move a live connection. Bytes are copied both ways; a FIN from one
//! side is passed on as a half-close, a reset or error from one side resets
//! the other (abortive close via `SO_LINGER 0`), so the client sees what it
//! would see through kube-proxy. A refused backend resets the new client
//! connection. With no usable endpoint the listener refuses connections
//! (`gate`); one accepted just before the switch is reset. A connection sent
//! to a torn-down pod address is held unanswered, as dropped packets leave
//! a client waiting (see the `proxy` module docs).
//!
//! Cost: per request it makes the minimum a user-space forwarder can (one
//! `recv` and one `send` each way, a short read ends a drain without an
//! extra `recv`), and about 86 % of its CPU is the kernel's loopback send
//! path and the two extra wakeups. On the 2-vCPU VM it adds about what
//! haproxy adds (see `scripts/bench-cluster.sh`). Measured and dropped:
//! a multi-threaded runtime (more CPU, no better tail) and busy-polling the
//! backend after forwarding a request (spinning steals the core the backend
//! needs). Not tried, by reasoning: `SO_BUSY_POLL` (loopback has no NAPI to
//! poll) and `splice(2)` (two syscalls per hop either way, for requests far
//! smaller than a copy worth avoiding).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

use super::{
    CONNECT_TIMEOUT, ConnectionEnd, DROPPED_CONNECT_TIMEOUT, Outcome, ProxyEvent, table::Shared,
};

/// Size of each direction's copy buffer.
const BUFFER: usize = 16 * 1024;

/// Accepts client connections on each listening socket `open` hands over
/// (none while the gate is closed) until the task is aborted; aborting it
/// drops the `JoinSet`, which aborts every connection task with it.
pub(crate) async fn serve(
    mut open: watch::Receiver<Option<Arc<std::net::TcpListener>>>,
    shared: Arc<Shared>,
) {
    let mut connections = JoinSet::new();
    // A socket of its own for the runtime to register: the gate keeps the
    // other to shut it down.
    let current = |open: &mut watch::Receiver<Option<Arc<std::net::TcpListener>>>| {
        open.borrow_and_update()
            .as_ref()
            .and_then(|l| l.try_clone().ok())
            .and_then(|l| TcpListener::from_std(l).ok())
    };
    let mut listener = current(&mut open);
    loop {
        tokio::select! {
            // The gate's sender lives as long as `shared`.
            Ok(()) = open.changed() => listener = current(&mut open),
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((client, peer)) => {
                    connections.spawn(forward(client, peer, Arc::clone(&shared)));
                }
                // Out of file descriptors, or the gate just closed: back off
                // briefly.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The next connection on `listener`; never, without one.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Forwards one client connection and reports it.
async fn forward(client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let start = Instant::now();
    let _ = client.set_nodelay(true);
    let backend = shared.pick(None);
    let (to_backend, to_client, end) = match &backend {
        None => {
            reset(&client);
            (0, 0, ConnectionEnd::NoEndpoints)
        }
        Some(chosen) if shared.torn_down(chosen.addr) => {
            hold(&client).await;
            (0, 0, ConnectionEnd::ConnectFailed)
        }
        Some(chosen) => match connect(chosen.addr).await {
            Err(_) => {
                reset(&client);
                (0, 0, ConnectionEnd::ConnectFailed)
            }
            Ok(server) => relay(client, server).await,
        },
    };
    shared.emit(ProxyEvent::Served {
        client: peer,
        pod: backend.as_ref().map(|b| b.pod.clone()),
        backend: backend.as_ref().map(|b| b.addr),
        start,
        end: Instant::now(),
        outcome: Outcome::Connection {
            to_backend,
            to_client,
            end,
        },
    });
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// What a client sees when its SYN goes to an address nobody answers: no
/// answer. Whatever it sends is read and dropped (the client cannot tell)
/// until it closes or [`DROPPED_CONNECT_TIMEOUT`] passes; then it is reset,
/// as a connect that ran out of SYN retries fails.
async fn hold(client: &TcpStream) {
    let _ = tokio::time::timeout(DROPPED_CONNECT_TIMEOUT, async {
        let mut sink = [0u8; 1024];
        loop {
            if client.readable().await.is_err() {
                return;
            }
            match client.try_read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
    reset(client);
}

/// Makes the coming close of `stream` an abortive one (RST).
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Which end of a copy failed.
#[derive(Debug, Clone, Copy)]
enum Failed {
    Read,
    Write,
}

/// One direction of a connection: what was read from one side and is not
/// yet written to the other.
struct Flow {
    buf: Box<[u8]>,
    /// `buf[pos..len]` still has to be written.
    pos: usize,
    len: usize,
    /// The source reached EOF.
    eof: bool,
    /// EOF was passed on as a half-close: nothing more to do.
    done: bool,
    /// Bytes written to the sink.
    copied: u64,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            buf: vec![0u8; BUFFER].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            done: false,
            copied: 0,
        }
    }

    /// Moves bytes from `from` to `to` until one of them would block.
    /// Ready(Ok) once `from` reached EOF and `to` was half-closed.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
    ) -> Poll<Result<(), Failed>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.pos < self.len {
                let chunk = &self.buf[self.pos..self.len];
                let n =
                    ready!(Pin::new(&mut *to).poll_write(cx, chunk)).map_err(|_| Failed::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(Failed::Write));
                }
                self.pos += n;
                self.copied += n as u64;
            }
            if self.eof {
                // A failed shutdown means the peer is gone; the other
                // direction will notice.
                let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            // A short read clears the socket's readiness (edge-triggered
            // epoll), so a drained socket costs no extra `recv`.
            let mut read = ReadBuf::new(&mut self.buf);
            ready!(Pin::new(&mut *from).poll_read(cx, &mut read)).map_err(|_| Failed::Read)?;
            let n = read.filled().len();
            if n == 0 {
                self.eof = true;
            } else {
                (self.pos, self.len) = (0, n);
            }
        }
    }
}

/// Copies both ways until both sides closed or one failed; a failing side
/// gets the other reset. Returns (client→backend bytes, backend→client bytes,
/// how it ended).
///
/// Both directions are driven by one hand-written future in the
/// connection's task: a wakeup for either socket costs one poll, no
/// `select!` bookkeeping, and nothing else is allocated per request.
async fn relay(mut client: TcpStream, mut server: TcpStream) -> (u64, u64, ConnectionEnd) {
    let (mut up, mut down) = (Flow::new(), Flow::new());
    let end = std::future::poll_fn(|cx| {
        let upstream = match up.poll(cx, &mut client, &mut server) {
            // Reading the client failed: the client's fault.
            Poll::Ready(Err(Failed::Read)) => return Poll::Ready(ConnectionEnd::ClientReset),
            Poll::Ready(Err(Failed::Write)) => return Poll::Ready(ConnectionEnd::BackendReset),
            other => other,
        };
        let downstream = match down.poll(cx, &mut server, &mut client) {
            Poll::Ready(Err(Failed::Read)) => return Poll::Ready(ConnectionEnd::BackendReset),
            Poll::Ready(Err(Failed::Write)) => return Poll::Ready(ConnectionEnd::ClientReset),
            other => other,
        };
        if upstream.is_ready() && downstream.is_ready() {
            Poll::Ready(ConnectionEnd::Closed)
        } else {
            Poll::Pending
        }
    })
    .await;
    match end {
        ConnectionEnd::BackendReset => reset(&client),
        ConnectionEnd::ClientReset => reset(&server),
        _ => {}
    }
    (up.copied, down.copied, end)
}
