//! What the generator is asked to do: where the load goes ([`Target`]) and
//! its shape ([`LoadSpec`]). A scenario's `[target]` and `[load]` validate
//! into these.

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port/path`. When `service` is set this is a placeholder
    /// (`http://service.invalid/PATH`) until the cluster is up and
    /// [`Target::resolve_service`] fills in the Service's address.
    pub url: http::Uri,
    /// Embedded mode without `url`: the Service to send to (`Some(None)`:
    /// the only Service in the manifests).
    pub service: Option<Option<String>>,
    /// `[target].service` as written: the Service under test (whose
    /// endpoints are watched), also when `url` says where the load goes.
    pub service_name: Option<String>,
    /// Method of every request.
    pub method: http::Method,
    /// Extra headers sent with every request.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Body sent with every request (empty for none).
    pub body: bytes::Bytes,
}

/// The load's shape.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Requests per second.
    pub rate: f64,
    /// How long requests are scheduled for.
    pub duration: std::time::Duration,
    /// Per-request timeout from the moment it is sent.
    pub timeout: std::time::Duration,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
    /// Reuse connections (HTTP keep-alive).
    pub keepalive: bool,
    /// Close a pooled keep-alive connection that stayed idle longer than
    /// this instead of reusing it: a client's idle-connection timeout (Go's
    /// `Transport.IdleConnTimeout`, a load balancer's idle timeout). Keeping
    /// it below the server's keep-alive timeout avoids the keep-alive race.
    /// `None`: reuse a connection however long it was idle.
    pub idle_timeout: Option<std::time::Duration>,
    /// Requests closer together than this leave in groups, one group per
    /// tick of this length: each is at most this late, and the generator (and
    /// the target) wake once per group instead of once per request. Smaller is
    /// more precise, larger costs less CPU per request at high rates. `None`:
    /// automatic, see [`LoadSpec::send_quantum`].
    pub send_quantum: Option<std::time::Duration>,
}

/// Automatic send quantum up to [`AUTO_QUANTUM_MAX_RATE`]: schedule lag p50
/// stays well under 0.1 ms.
pub const PRECISE_SEND_QUANTUM: std::time::Duration = std::time::Duration::from_micros(100);
/// Automatic send quantum above [`AUTO_QUANTUM_MAX_RATE`]: groups of two or
/// more requests, one wake-up per group, each request at most 0.2 ms late.
pub const COARSE_SEND_QUANTUM: std::time::Duration = std::time::Duration::from_micros(200);
/// Highest rate that gets the precise quantum automatically (up to it, 100 µs
/// groups hold at most one request: every request has its own wake-up anyway).
pub const AUTO_QUANTUM_MAX_RATE: f64 = 10_000.0;

impl LoadSpec {
    /// The send quantum in force: the configured one, else 100 µs up to
    /// 10k req/s and 200 µs above (measured on a 2-core VM against nginx,
    /// `scripts/bench-load.sh`: at 20k req/s 100 µs groups cost 6.1 µs of CPU
    /// per request and 200 µs groups 4.9 µs, with schedule lag p99 0.06 and
    /// 0.16 ms; 1 ms groups 3.4–4.1 µs for lag p99 0.96 ms).
    pub fn send_quantum(&self) -> std::time::Duration {
        self.send_quantum
            .unwrap_or(if self.rate <= AUTO_QUANTUM_MAX_RATE {
                PRECISE_SEND_QUANTUM
            } else {
                COARSE_SEND_QUANTUM
            })
    }

    /// How many requests the schedule holds: every `i` with `i / rate < duration`.
    pub fn scheduled_requests(&self) -> u64 {
        crate::pacer::Pacer::new(self.rate).count_before(self.duration)
    }
}

impl Target {
    /// What every request asks for: the url's path and query (`/` if none).
    pub fn path_and_query(&self) -> &str {
        self.url.path_and_query().map_or("/", |p| p.as_str())
    }

    /// Points a `service` target at the Service's address.
    pub fn resolve_service(&mut self, addr: std::net::SocketAddr) {
        let path = self.path_and_query().to_string();
        if let Ok(url) = format!("http://{addr}{path}").parse() {
            self.url = url;
            self.service = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_quantum_is_precise_up_to_10k_then_coarse() {
        let mut spec = LoadSpec {
            rate: 10_000.0,
            duration: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            max_in_flight: 1,
            keepalive: true,
            idle_timeout: None,
            send_quantum: None,
        };
        assert_eq!(spec.send_quantum(), PRECISE_SEND_QUANTUM);
        spec.rate = 10_001.0;
        assert_eq!(spec.send_quantum(), COARSE_SEND_QUANTUM);
        spec.send_quantum = Some(std::time::Duration::from_micros(50));
        assert_eq!(spec.send_quantum(), std::time::Duration::from_micros(50));
    }
}
