//! The accept loop: accept connections and spawn a task for each until the
//! drain starts, then accept what is already waiting in the backlog (those
//! clients have connected and may have sent a request: resetting them would
//! drop it) and close the listener so further connections are refused.

use std::{future::poll_fn, sync::Arc, task::Poll, time::Duration};

use tokio::net::{TcpListener, TcpStream};

use super::{
    app::App,
    conn::serve_connection,
    drain::{DrainWatch, OpenConnection},
};

/// Pause after an accept error such as EMFILE, so a persistent error does
/// not spin the loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Runs until the drain starts; returns once the listener is closed, with
/// the number of connections accepted from the backlog after the drain began.
pub(crate) async fn accept_loop(app: Arc<App>, listener: TcpListener) -> usize {
    let mut watch = DrainWatch::new(&app);
    loop {
        let next = poll_fn(|cx| {
            if watch.poll_started(cx) {
                return Poll::Ready(None);
            }
            listener.poll_accept(cx).map(Some)
        })
        .await;
        match next {
            None => break,
            Some(Ok((stream, peer))) => spawn_connection(&app, stream, peer),
            Some(Err(err)) => {
                app.log.log(format_args!("accept failed: {err}"));
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
    drop(watch);

    let mut from_backlog = 0;
    loop {
        match poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await {
            Poll::Ready(Ok((stream, peer))) => {
                spawn_connection(&app, stream, peer);
                from_backlog += 1;
            }
            // A connection reset while waiting: try the next one.
            Poll::Ready(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionAborted => {}
            Poll::Ready(Err(_)) | Poll::Pending => break,
        }
    }
    drop(listener);
    from_backlog
}

fn spawn_connection(app: &Arc<App>, stream: TcpStream, peer: std::net::SocketAddr) {
    // Small responses: do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let open = OpenConnection::new(app);
    tokio::spawn(serve_connection(app.clone(), stream, peer, open));
}
