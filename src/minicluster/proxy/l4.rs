//! L4 forwarding like iptables kube-proxy.
//!
//! Each accepted client connection picks a backend once and is pinned to it
//! until either side closes, as conntrack would keep it: endpoint changes
//! never move a live connection. Bytes are copied both ways; a FIN from one
//! side is passed on as a half-close, a reset or error from one side resets
//! the other (abortive close via `SO_LINGER 0`), so the client sees what it
//! would see through kube-proxy. No usable endpoint or a refused backend
//! resets the new client connection.

use std::{io, net::SocketAddr, pin::pin, sync::Arc, time::Instant};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

use super::{CONNECT_TIMEOUT, ConnectionEnd, Outcome, ProxyEvent, table::Shared};

/// Size of each direction's copy buffer.
const BUFFER: usize = 16 * 1024;

/// Accepts client connections until the task is aborted; aborting it drops
/// the `JoinSet`, which aborts every connection task with it.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    connections.spawn(forward(client, peer, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: back off briefly.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
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
        Some(chosen) => match connect(chosen.addr).await {
            Err(_) => {
                reset(&client);
                (0, 0, ConnectionEnd::ConnectFailed)
            }
            Ok(server) => splice(client, server).await,
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

/// Makes the coming close of `stream` an abortive one (RST).
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Which end of a copy failed.
enum Failed {
    Read,
    Write,
}

/// Copies `from` into `to` until EOF, then half-closes `to`. Counts bytes
/// into `copied`.
async fn pump<R, W>(mut from: R, mut to: W, copied: &mut u64) -> Result<(), Failed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| Failed::Read)?;
        if n == 0 {
            // A failed shutdown means the peer is gone; the other direction
            // will notice.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await.map_err(|_| Failed::Write)?;
        *copied += n as u64;
    }
}

/// Copies both ways until both sides closed or one failed; a failing side
/// gets the other reset. Returns (client→backend bytes, backend→client bytes,
/// how it ended).
async fn splice(mut client: TcpStream, mut server: TcpStream) -> (u64, u64, ConnectionEnd) {
    let (mut up, mut down) = (0u64, 0u64);
    let end = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let mut upstream = pin!(pump(client_read, server_write, &mut up));
        let mut downstream = pin!(pump(server_read, client_write, &mut down));
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                result = &mut upstream, if !up_done => match result {
                    Ok(()) => up_done = true,
                    // Reading the client failed: the client's fault.
                    Err(Failed::Read) => break ConnectionEnd::ClientReset,
                    Err(Failed::Write) => break ConnectionEnd::BackendReset,
                },
                result = &mut downstream, if !down_done => match result {
                    Ok(()) => down_done = true,
                    Err(Failed::Read) => break ConnectionEnd::BackendReset,
                    Err(Failed::Write) => break ConnectionEnd::ClientReset,
                },
            }
            if up_done && down_done {
                break ConnectionEnd::Closed;
            }
        }
    };
    match end {
        ConnectionEnd::BackendReset => reset(&client),
        ConnectionEnd::ClientReset => reset(&server),
        _ => {}
    }
    (up, down, end)
}
