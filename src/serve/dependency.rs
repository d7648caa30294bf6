//! `--dependency URL`: a background task that checks a dependency (a
//! database, another service) with `GET URL` every [`CHECK_EVERY`] and
//! caches the answer in [`App`]. While the last check failed (connect
//! error, no answer within [`CHECK_TIMEOUT`], or a non-2xx status) both
//! `/healthz` and `/` answer 503; `/livez` never looks at it.
//!
//! Until the first check succeeds the dependency counts as down, so a pod
//! never reports ready before it could reach its dependency.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{app::App, dependency_url::DependencyUrl};

/// Time between two checks (each check waits for the previous one).
pub const CHECK_EVERY: Duration = Duration::from_millis(200);
/// A check that takes longer than this fails.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(300);

/// Checks `url` forever, storing the result in `app.dependency_up` and
/// logging each change.
pub(crate) async fn watch(app: Arc<App>, url: DependencyUrl) {
    let mut up: Option<bool> = None;
    loop {
        let result = tokio::time::timeout(CHECK_TIMEOUT, check(&url))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {}",
                    humantime::format_duration(CHECK_TIMEOUT)
                ))
            });
        let now_up = result.is_ok();
        app.dependency_up.store(now_up, Ordering::Release);
        if up != Some(now_up) {
            match result {
                Ok(()) => app.log.log(format_args!(
                    "dependency {url} up (/healthz and / follow readiness again)"
                )),
                Err(why) => app.log.log(format_args!(
                    "dependency {url} down: {why} (/healthz and / answer 503)"
                )),
            }
            up = Some(now_up);
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// One `GET`: `Ok` on a 2xx answer, else why not.
async fn check(url: &DependencyUrl) -> Result<(), String> {
    let stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let request = http::Request::get(url.path_and_query.as_str())
        .header(http::header::HOST, format!("{}:{}", url.host, url.port))
        .header(http::header::CONNECTION, "close")
        .header(http::header::USER_AGENT, "rolltest-serve-dependency-check")
        .body(Empty::new())
        .map_err(|e| format!("request: {e}"))?;
    let result = match sender.send_request(request).await {
        Ok(response) => {
            let status = response.status();
            // Read the body so the exchange completes cleanly.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        }
        Err(e) => Err(format!("request: {e}")),
    };
    conn.abort();
    result
}
