//! How the load reaches the pods: the one name for the embedded cluster's
//! service proxy ([`ProxyKind`]: scenarios, `--proxy`, `run.json`) and the
//! correlator's view of the path ([`ProxyMode`]: that proxy, or a real
//! cluster's).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The embedded cluster's service proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// TCP forwarding, connections pinned (kube-proxy, NodePort): one
    /// [`ProxyRecord`](super::ProxyRecord) per client TCP connection.
    L4,
    /// HTTP reverse proxy, a backend per request (ingress): one
    /// [`ProxyRecord`](super::ProxyRecord) per request.
    L7,
    /// [`L7`](Self::L7) with ingress-nginx's defaults: failed tries retried
    /// on the next upstream (up to 3 tries), endpoint changes applied at its
    /// sync rate limit. Records as `L7`, with the retries in
    /// [`ProxyRecord::failed_tries`](super::ProxyRecord::failed_tries).
    #[serde(rename = "ingress-nginx")]
    IngressNginx,
}

impl ProxyKind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [ProxyKind; 3] = [ProxyKind::L4, ProxyKind::L7, ProxyKind::IngressNginx];

    /// The name scenarios, `--proxy` and `run.json` use (`l4`, `l7`,
    /// `ingress-nginx`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::L4 => "l4",
            ProxyKind::L7 => "l7",
            ProxyKind::IngressNginx => "ingress-nginx",
        }
    }

    /// What it stands for, for help texts.
    pub fn about(self) -> &'static str {
        match self {
            ProxyKind::L4 => "TCP forwarding (kube-proxy)",
            ProxyKind::L7 => "HTTP reverse proxy (ingress), no retries",
            ProxyKind::IngressNginx => {
                "HTTP reverse proxy with ingress-nginx's defaults: retries on error and timeout (3 tries), sync rate limit"
            }
        }
    }

    /// A backend per request (an ingress), so one record per request and no
    /// client connection pinned to a pod.
    pub fn per_request(self) -> bool {
        matches!(self, ProxyKind::L7 | ProxyKind::IngressNginx)
    }
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A proxy kind that is not `l4`, `l7` or `ingress-nginx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyKindParseError(pub String);

impl fmt::Display for ProxyKindParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown proxy {:?} (expected l4, l7 or ingress-nginx)",
            self.0
        )
    }
}

impl std::error::Error for ProxyKindParseError {}

impl FromStr for ProxyKind {
    type Err = ProxyKindParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProxyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ProxyKindParseError(s.to_owned()))
    }
}

/// How traffic reached the pods, which decides what the proxy records mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyMode {
    /// Through the embedded cluster's proxy of this kind, which records what
    /// it did.
    Embedded(ProxyKind),
    /// A real cluster: no proxy records; kube-proxy's per-connection pinning
    /// is assumed, and its propagation lag is bounded by
    /// `correlate::Input::propagation_allowance_us`.
    External,
}

impl ProxyMode {
    /// The embedded L4 proxy.
    pub const L4: ProxyMode = ProxyMode::Embedded(ProxyKind::L4);
    /// The embedded L7 proxy.
    pub const L7: ProxyMode = ProxyMode::Embedded(ProxyKind::L7);

    /// Through an embedded proxy that picks a backend per request
    /// ([`ProxyKind::per_request`]).
    pub fn per_request(self) -> bool {
        matches!(self, ProxyMode::Embedded(kind) if kind.per_request())
    }

    /// The name `run.json` stores (`l4`, `l7`, `ingress-nginx`, `external`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Embedded(kind) => kind.as_str(),
            ProxyMode::External => "external",
        }
    }

    /// Parses [`ProxyMode::as_str`]'s names.
    pub fn parse(s: &str) -> Option<ProxyMode> {
        match s {
            "external" => Some(ProxyMode::External),
            _ => s.parse().ok().map(ProxyMode::Embedded),
        }
    }

    /// How far apart the generator's observations and the cluster's
    /// timestamps may be and still describe the same moment, µs.
    ///
    /// Embedded: 100 ms (the kubelet's events carry precise `eventTime`s on
    /// the same machine; the margin covers scheduling of the observers).
    /// External: 500 ms (many events are only observed through watches, which
    /// lag the change by a round trip or more).
    pub fn slack_us(self) -> u64 {
        match self {
            ProxyMode::Embedded(_) => 100_000,
            ProxyMode::External => 500_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let nginx = ProxyMode::Embedded(ProxyKind::IngressNginx);
        for mode in [ProxyMode::L4, ProxyMode::L7, nginx, ProxyMode::External] {
            assert_eq!(ProxyMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(ProxyMode::parse("l5"), None);
        assert_eq!("l7".parse::<ProxyKind>(), Ok(ProxyKind::L7));
        assert!("external".parse::<ProxyKind>().is_err());
        assert_eq!(
            serde_json::from_str::<ProxyKind>("\"ingress-nginx\"").ok(),
            Some(ProxyKind::IngressNginx)
        );
        assert!(nginx.per_request() && ProxyMode::L7.per_request());
        assert!(!ProxyMode::L4.per_request() && !ProxyMode::External.per_request());
        assert_eq!(
            serde_json::from_str::<ProxyKind>("\"l4\"").ok(),
            Some(ProxyKind::L4)
        );
    }
}
