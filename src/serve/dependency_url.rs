//! The `--dependency` URL: what [`parse_dependency_url`] accepts, checked at
//! start so a manifest mistake shows up before the first check.

use http::Uri;

/// A `--dependency` value that is not a usable `http://HOST:PORT/PATH` URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DependencyUrlError(String);

/// A checked dependency URL: plain `http`, with a host (an explicit port or
/// 80) and a path (default `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyUrl {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) path_and_query: String,
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
