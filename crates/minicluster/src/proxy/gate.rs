//! The L4 listener's REJECT: while the applied view has no usable endpoint
//! nothing listens on the proxy's address, so a client's `connect()` fails
//! with `ECONNREFUSED`, as kube-proxy's iptables rule for a Service that
//! "has no endpoints" (`-j REJECT`, `icmp-port-unreachable`) makes it fail.
//!
//! A user-space proxy cannot refuse one connection: by the time it could
//! decide, the kernel has completed the handshake and the client's
//! `connect()` has succeeded (accept-then-reset shows the client a reset on
//! its first read or write instead). So the listening socket itself comes
//! and goes: closing it takes it out of LISTEN (`shutdown(SHUT_RD)`, at once;
//! connections not yet accepted are reset), and the kernel answers SYNs
//! with a RST; opening binds and listens on a new socket. A socket bound to
//! the address and never listening holds the port in between (both with
//! `SO_REUSEADDR`). A socket is never listened on twice: tokio's readiness
//! of a socket once shut down stays "closed" for good. The switch happens
//! in the same call that applies the view, as iptables-restore switches the
//! rules.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd},
    sync::{Arc, Mutex},
};

use tokio::{net::TcpSocket, sync::watch};

use super::{LISTEN_BACKLOG, table::Shared};

/// The listener of an L4 proxy, listening only while the view has a usable
/// endpoint.
#[derive(Debug)]
pub(crate) struct Gate {
    /// The address, its port explicit.
    addr: SocketAddr,
    /// Bound to `addr`, never listening: keeps the port while closed.
    _reserve: TcpSocket,
    /// The listening socket, if any; the lock orders the switches.
    state: Mutex<State>,
    /// Hands the accept loop each new listening socket (`None`: closed).
    open: watch::Sender<Option<Arc<std::net::TcpListener>>>,
}

#[derive(Debug)]
struct State {
    listener: Option<Arc<std::net::TcpListener>>,
    /// The proxy stopped: never listen again.
    closed: bool,
}

impl Gate {
    /// Reserves `listen` (port 0 picks one), not listening yet.
    pub(crate) fn bind(
        listen: SocketAddr,
    ) -> io::Result<(Gate, watch::Receiver<Option<Arc<std::net::TcpListener>>>)> {
        let reserve = socket(listen)?;
        reserve.bind(listen)?;
        let addr = reserve.local_addr()?;
        let (open, rx) = watch::channel(None);
        let gate = Gate {
            addr,
            _reserve: reserve,
            state: Mutex::new(State {
                listener: None,
                closed: false,
            }),
            open,
        };
        Ok((gate, rx))
    }

    /// The address (its port explicit).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Listens or not, as `shared`'s current view has a usable endpoint or
    /// not. The view is read under the lock, so the last caller's reading
    /// (the newest view) wins.
    pub(crate) fn follow(&self, shared: &Shared) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let want = shared.view().has_usable() && !state.closed;
        self.switch(&mut state, want);
    }

    /// Stops listening for good (the proxy stops).
    pub(crate) fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closed = true;
        self.switch(&mut state, false);
    }

    fn switch(&self, state: &mut State, want: bool) {
        match (&state.listener, want) {
            (None, true) => {
                // A failure leaves it closed; the next applied view retries.
                if let Ok(listener) = listen(self.addr) {
                    let listener = Arc::new(listener);
                    state.listener = Some(Arc::clone(&listener));
                    self.open.send_replace(Some(listener));
                }
            }
            (Some(listener), false) => {
                // SAFETY: the descriptor is a socket `listener` owns and
                // keeps open for the call; shutdown only changes its state.
                unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
                state.listener = None;
                self.open.send_replace(None);
            }
            _ => {}
        }
    }
}

fn socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// A new socket listening on `addr` (non-blocking, not yet registered with
/// any runtime).
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket(addr)?;
    socket.bind(addr)?;
    let fd = socket.as_fd().try_clone_to_owned()?;
    drop(socket);
    // SAFETY: `fd` is a bound socket this function owns.
    if unsafe { libc::listen(fd.as_raw_fd(), LISTEN_BACKLOG as libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(listener)
}
