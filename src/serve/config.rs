//! The demo app's plain configuration, the parsers for its duration flags and
//! the rules that fill in its defaults from the pod environment (`POD_IP`,
//! `PORT`, `POD_NAME`), the way a Kubernetes manifest would hand them over.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use super::{dependency_url::DependencyUrl, error::ServeError};

/// Port used when neither `--listen` nor `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 8080;

/// What the app does when SIGTERM (or SIGINT) arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnSigterm {
    /// Close the listener, finish in-flight requests, close keep-alive
    /// connections politely, then exit 0.
    #[default]
    Drain,
    /// Exit at once with code 143, cutting in-flight requests.
    Exit,
    /// Log the signal and keep serving; only SIGKILL stops the app.
    Ignore,
}

impl fmt::Display for OnSigterm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnSigterm::Drain => "drain",
            OnSigterm::Exit => "exit",
            OnSigterm::Ignore => "ignore",
        })
    }
}

/// How long each request to `/` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkTime {
    /// Always exactly this long (zero: answer at once).
    Fixed(Duration),
    /// Uniformly random between `min` and `max` (inclusive), per request.
    Range {
        /// Shortest work time.
        min: Duration,
        /// Longest work time.
        max: Duration,
    },
}

impl Default for WorkTime {
    fn default() -> Self {
        WorkTime::Fixed(Duration::ZERO)
    }
}

impl WorkTime {
    /// True when requests are answered without any work delay.
    pub fn is_zero(&self) -> bool {
        matches!(self, WorkTime::Fixed(d) if d.is_zero())
    }

    /// The work time of one request; `random` is any uniformly random `u64`.
    pub fn sample(&self, random: u64) -> Duration {
        match *self {
            WorkTime::Fixed(d) => d,
            WorkTime::Range { min, max } => {
                let span = max.saturating_sub(min).as_nanos();
                let span = u64::try_from(span).unwrap_or(u64::MAX);
                let offset = if span == u64::MAX {
                    random
                } else {
                    random % (span + 1)
                };
                min.saturating_add(Duration::from_nanos(offset))
            }
        }
    }
}

impl fmt::Display for WorkTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WorkTime::Fixed(d) => write!(f, "{}", humantime::format_duration(d)),
            WorkTime::Range { min, max } => write!(
                f,
                "{}..{}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        }
    }
}

impl FromStr for WorkTime {
    type Err = DurationArgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_work_time(s)
    }
}

/// A duration flag value that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationArgError(String);

/// Parses a humantime duration such as `500ms`, `2s`, `1m` or `0` (the
/// scenario file's parser, with this module's error type).
pub fn parse_duration(s: &str) -> Result<Duration, DurationArgError> {
    crate::scenario::values::parse_duration(s).map_err(DurationArgError)
}

/// Parses a work time: one duration (`50ms`) or a range `MIN..MAX`
/// (`10ms..200ms`) where MIN <= MAX.
pub fn parse_work_time(s: &str) -> Result<WorkTime, DurationArgError> {
    match s.split_once("..") {
        None => parse_duration(s).map(WorkTime::Fixed),
        Some((min, max)) => {
            let min = parse_duration(min)?;
            let max = parse_duration(max)?;
            if min > max {
                return Err(DurationArgError(format!(
                    "range {s:?} has MIN greater than MAX (expected MIN..MAX, e.g. 10ms..200ms)"
                )));
            }
            Ok(WorkTime::Range { min, max })
        }
    }
}

/// Everything `rolltest serve` can be told, with no command-line parsing
/// attached: the CLI builds it, [`run`](super::run) consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Address to listen on; `None` derives it from `POD_IP`/`PORT`
    /// (see [`resolve_listen_addr`]).
    pub listen: Option<SocketAddr>,
    /// Pod name from the command line; `POD_NAME` wins over it, the hostname
    /// is the fallback (see [`resolve_pod_name`]).
    pub pod_name: Option<String>,
    /// Reaction to SIGTERM and SIGINT.
    pub on_sigterm: OnSigterm,
    /// While draining, how long a keep-alive connection must stay idle
    /// before the app closes it.
    pub idle_grace: Duration,
    /// Close a keep-alive connection once no request has been on it for
    /// this long, draining or not (a server's keep-alive timeout, like
    /// nginx's `keepalive_timeout` or Go's `IdleTimeout`); `None` keeps idle
    /// connections open until the drain.
    pub idle_timeout: Option<Duration>,
    /// How late the app's close of an idle keep-alive connection (idle
    /// timeout, or the drain's idle grace) reaches the client: the app stops
    /// serving it at once but sends its FIN only this much later, and
    /// resets it (RST, no response byte) if a request arrives meanwhile.
    /// Emulates a network's delay on loopback, where the FIN would arrive
    /// within microseconds (see `conn.rs`). Zero: close at once.
    pub close_delay: Duration,
    /// Hard cap on draining; connections still open then are cut.
    pub drain_timeout: Duration,
    /// `/healthz` answers 503 once SIGTERM has arrived.
    pub fail_readiness_on_sigterm: bool,
    /// Time after process start before the app even listens.
    pub startup_delay: Duration,
    /// Time after listening started during which `/healthz` answers 503.
    pub ready_delay: Duration,
    /// Time after listening started during which `/` answers 503 (while
    /// `/healthz` already says ready).
    pub broken_for: Duration,
    /// Exit with code 1 this long after listening started.
    pub crash_after: Option<Duration>,
    /// Time each `/` request takes.
    pub work: WorkTime,
    /// A dependency checked in the background; while it is down `/healthz`
    /// and `/` answer 503 (`/livez` does not care).
    pub dependency: Option<DependencyUrl>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: None,
            pod_name: None,
            on_sigterm: OnSigterm::Drain,
            idle_grace: Duration::from_secs(1),
            idle_timeout: None,
            close_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
            fail_readiness_on_sigterm: false,
            startup_delay: Duration::ZERO,
            ready_delay: Duration::ZERO,
            broken_for: Duration::ZERO,
            crash_after: None,
            work: WorkTime::default(),
            dependency: None,
        }
    }
}

/// Treats an unset or blank environment value as absent.
fn non_blank(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// The address to listen on: `listen` when given; else `POD_IP:PORT` when
/// `PORT` is set (`127.0.0.1:PORT` without `POD_IP`); else `POD_IP:8080`
/// when only `POD_IP` is set; else `127.0.0.1:8080`.
pub fn resolve_listen_addr(
    listen: Option<SocketAddr>,
    pod_ip: Option<&str>,
    port: Option<&str>,
) -> Result<SocketAddr, ServeError> {
    if let Some(addr) = listen {
        return Ok(addr);
    }
    let ip = match non_blank(pod_ip) {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(raw) => raw.parse().map_err(|err| ServeError::BadListenAddr {
            origin: "POD_IP",
            value: raw.to_owned(),
            reason: format!("{err}"),
        })?,
    };
    let port = match non_blank(port) {
        None => DEFAULT_PORT,
        Some(raw) => raw.parse().map_err(|err| ServeError::BadListenAddr {
            origin: "PORT",
            value: raw.to_owned(),
            reason: format!("{err} (expected a port number 0-65535)"),
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// The pod name: `POD_NAME` from the environment, else the `--pod-name`
/// flag, else the host name (else `rolltest-serve`).
pub fn resolve_pod_name(env_pod_name: Option<&str>, flag: Option<&str>) -> String {
    non_blank(env_pod_name)
        .or(non_blank(flag))
        .map(str::to_owned)
        .or_else(hostname)
        .unwrap_or_else(|| "rolltest-serve".to_owned())
}

/// The machine's host name, if it can be read.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?
    };
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_durations_and_ranges() {
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_work_time("50ms"), Ok(WorkTime::Fixed(ms(50))));
        assert_eq!(
            parse_work_time("10ms..200ms"),
            Ok(WorkTime::Range {
                min: ms(10),
                max: ms(200)
            })
        );
        assert_eq!(
            parse_work_time("1s..1s"),
            Ok(WorkTime::Range {
                min: ms(1000),
                max: ms(1000)
            })
        );
        assert!(parse_work_time("2s..1s").is_err());
        assert!(parse_work_time("..1s").is_err());
        assert!(parse_work_time("1s..").is_err());
    }

    #[test]
    fn samples_stay_in_range() {
        let work = WorkTime::Range {
            min: ms(10),
            max: ms(20),
        };
        for random in [0, 1, 10_000_000, u64::MAX, 0x9e37_79b9_7f4a_7c15] {
            let d = work.sample(random);
            assert!(d >= ms(10) && d <= ms(20), "{d:?}");
        }
        assert_eq!(WorkTime::Fixed(ms(7)).sample(42), ms(7));
    }

    #[test]
    fn listen_address_defaults_follow_the_pod_environment() {
        let flag: SocketAddr = "127.0.0.9:9".parse().expect("valid address");
        type Case<'a> = (
            Option<SocketAddr>,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
        );
        let cases: [Case<'_>; 6] = [
            (Some(flag), Some("127.0.1.5"), Some("1"), "127.0.0.9:9"),
            (None, Some("127.0.1.5"), Some("8081"), "127.0.1.5:8081"),
            (None, None, Some("0"), "127.0.0.1:0"),
            (None, Some("127.0.1.5"), None, "127.0.1.5:8080"),
            (None, None, None, "127.0.0.1:8080"),
            (None, Some(""), Some(" "), "127.0.0.1:8080"),
        ];
        for (listen, ip, port, want) in cases {
            let got = resolve_listen_addr(listen, ip, port).map(|a| a.to_string());
            assert_eq!(got.ok().as_deref(), Some(want));
        }
        assert!(resolve_listen_addr(None, Some("not-an-ip"), None).is_err());
        assert!(resolve_listen_addr(None, None, Some("70000")).is_err());
    }

    #[test]
    fn pod_name_prefers_env_then_flag_then_hostname() {
        assert_eq!(resolve_pod_name(Some("api-1"), Some("flag")), "api-1");
        assert_eq!(resolve_pod_name(None, Some("flag")), "flag");
        assert!(!resolve_pod_name(None, None).is_empty());
    }
}
