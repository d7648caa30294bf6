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
use http::Uri;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::app::App;

/// Time between two checks (each check waits for the previous one).
pub const CHECK_EVERY: Duration = Duration::from_millis(200);
/// A check that takes longer than this fails.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(300);

/// A `--dependency` value that is not a usable `http://HOST:PORT/PATH` URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DependencyUrlError(String);

/// A checked dependency URL: plain `http`, with a host (an explicit port or
/// 80) and a path (default `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyUrl {
    host: String,
    port: u16,
    path_and_query: String,
}

impl std::fmt::Display for DependencyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "http://{}:{}{}",
            self.host, self.port, self.path_and_query
        )
    }
}

/// Parses `--dependency`: `http://HOST[:PORT][/PATH]`. An unexpanded
/// Kubernetes reference such as `http://$(DB_SERVICE_HOST)/` is rejected
/// (it is not a valid URL), so a manifest mistake shows up at start.
pub fn parse_dependency_url(s: &str) -> Result<DependencyUrl, DependencyUrlError> {
    let bad =
        |why: &str| DependencyUrlError(format!("{s:?}: {why} (expected http://HOST:PORT/PATH)"));
    let uri: Uri = s.trim().parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// is supported"));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(bad(if host.contains("$(") {
            "the host holds an unexpanded $(VAR) reference"
        } else {
            "bad host"
        }));
    }
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let path_and_query = if path_and_query.is_empty() {
        "/".to_string()
    } else {
        path_and_query
    };
    Ok(DependencyUrl {
        host,
        port: uri.port_u16().unwrap_or(80),
        path_and_query,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_with_defaults() {
        let u = parse_dependency_url("http://127.0.0.1:9000/livez").expect("url");
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("127.0.0.1", 9000, "/livez")
        );
        let u = parse_dependency_url("http://db.local").expect("url");
        assert_eq!((u.port, u.path_and_query.as_str()), (80, "/"));
        assert_eq!(u.to_string(), "http://db.local:80/");
    }

    #[test]
    fn rejects_unusable_urls() {
        for bad in [
            "",
            "https://x/",
            "127.0.0.1:80",
            "http://$(DB_SERVICE_HOST):80/",
            "http:///x",
        ] {
            assert!(parse_dependency_url(bad).is_err(), "{bad:?} accepted");
        }
    }
}
