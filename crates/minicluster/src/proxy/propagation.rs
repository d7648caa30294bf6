//! The propagation delay between the control plane writing an endpoint set
//! and the proxy using it, and the task that applies updates in order.
//!
//! Each update gets its own delay, drawn uniformly from
//! [`Propagation`]`{min, max}` and counted from the moment
//! [`ServiceProxy::update`](super::ServiceProxy::update) was called.
//!
//! **Ordering rule:** updates apply in the order they were written. When a
//! later update's draw would make it due before the previous one, it applies
//! right after the previous one instead (its due time is raised to the
//! previous due time), so the proxy never goes back to an older view and no
//! update is skipped: every update is applied and reported.

use std::{fmt, str::FromStr, sync::Arc, time::Duration, time::Instant};

use tokio::sync::mpsc;

use super::{Endpoint, table::Shared};

/// The range the propagation delay is drawn from, uniformly, per update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Propagation {
    /// Shortest delay.
    pub min: Duration,
    /// Longest delay (a `max` below `min` is treated as `min`).
    pub max: Duration,
}

impl Propagation {
    /// Always exactly `delay`.
    pub fn fixed(delay: Duration) -> Propagation {
        Propagation {
            min: delay,
            max: delay,
        }
    }

    /// A delay drawn from `min..=max`; `random` is any uniformly random `u64`.
    pub fn sample(&self, random: u64) -> Duration {
        let span = self.max.saturating_sub(self.min).as_nanos();
        let span = u64::try_from(span).unwrap_or(u64::MAX);
        let offset = match span.checked_add(1) {
            Some(modulus) => random % modulus,
            None => random,
        };
        self.min.saturating_add(Duration::from_nanos(offset))
    }
}

impl fmt::Display for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", humantime::format_duration(self.min))
        } else {
            write!(
                f,
                "{}..{}",
                humantime::format_duration(self.min),
                humantime::format_duration(self.max)
            )
        }
    }
}

/// A propagation delay that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad propagation delay {input:?}: {reason} (expected e.g. 500ms or 1s..3s)")]
pub struct PropagationParseError {
    input: String,
    reason: String,
}

impl FromStr for Propagation {
    type Err = PropagationParseError;

    /// Parses one humantime duration (`500ms`) or a range `MIN..MAX`
    /// (`1s..3s`) with MIN <= MAX.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| PropagationParseError {
            input: s.to_owned(),
            reason,
        };
        let one = |part: &str| {
            let part = part.trim();
            if part.is_empty() {
                return Err(error("empty duration".to_owned()));
            }
            humantime::parse_duration(part).map_err(|e| error(e.to_string()))
        };
        match s.split_once("..") {
            None => one(s).map(Propagation::fixed),
            Some((min, max)) => {
                let (min, max) = (one(min)?, one(max)?);
                if min > max {
                    return Err(error("MIN is greater than MAX".to_owned()));
                }
                Ok(Propagation { min, max })
            }
        }
    }
}

/// xorshift64*: small, fast and plenty for drawing delays.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> XorShift {
        // The state must never be zero.
        XorShift(if seed == 0 {
            0x2545_F491_4F6C_DD1D
        } else {
            seed
        })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// An endpoint set handed to the proxy, with the moment it was written.
#[derive(Debug)]
pub(crate) struct Update {
    pub(crate) written: Instant,
    pub(crate) endpoints: Arc<[Endpoint]>,
}

/// Applies updates in order, each after its drawn delay (see the module
/// docs for the ordering rule). Ends when the proxy is dropped.
pub(crate) async fn run_applier(
    mut updates: mpsc::UnboundedReceiver<Update>,
    propagation: Propagation,
    seed: u64,
    shared: Arc<Shared>,
) {
    let mut rng = XorShift::new(seed);
    let mut previous_due: Option<Instant> = None;
    while let Some(update) = updates.recv().await {
        let drawn = update.written + propagation.sample(rng.next_u64());
        let due = previous_due.map_or(drawn, |previous| drawn.max(previous));
        previous_due = Some(due);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        shared.apply(update.endpoints);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_a_range_and_a_single_delay() {
        assert_eq!(
            "1s..3s".parse(),
            Ok(Propagation {
                min: ms(1000),
                max: ms(3000)
            })
        );
        assert_eq!("500ms".parse(), Ok(Propagation::fixed(ms(500))));
        assert_eq!(
            " 0 .. 1m ".parse(),
            Ok(Propagation {
                min: ms(0),
                max: ms(60_000)
            })
        );
        assert_eq!(
            "1s..3s".parse::<Propagation>().map(|p| p.to_string()),
            Ok("1s..3s".to_owned())
        );
        assert_eq!(
            "500ms".parse::<Propagation>().map(|p| p.to_string()),
            Ok("500ms".to_owned())
        );
    }

    #[test]
    fn rejects_bad_delays() {
        for bad in ["", "..", "3s..1s", "1s..", "fast", "1s..2s..3s", "-1s"] {
            let err = bad.parse::<Propagation>();
            assert!(err.is_err(), "{bad:?} parsed as {err:?}");
        }
        let msg = "3s..1s".parse::<Propagation>().err().map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("MIN is greater than MAX")));
    }

    #[test]
    fn samples_stay_in_range_and_spread() {
        let p = Propagation {
            min: ms(100),
            max: ms(200),
        };
        let mut rng = XorShift::new(7);
        let draws: Vec<Duration> = (0..1000).map(|_| p.sample(rng.next_u64())).collect();
        assert!(draws.iter().all(|d| (ms(100)..=ms(200)).contains(d)));
        assert!(draws.iter().any(|d| *d < ms(120)));
        assert!(draws.iter().any(|d| *d > ms(180)));
        assert_eq!(Propagation::fixed(ms(5)).sample(u64::MAX), ms(5));
        let inverted = Propagation {
            min: ms(5),
            max: ms(1),
        };
        assert_eq!(inverted.sample(12345), ms(5));
    }

    #[test]
    fn same_seed_same_draws() {
        let (mut a, mut b) = (XorShift::new(42), XorShift::new(42));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        let mut zero = XorShift::new(0);
        assert_ne!(zero.next_u64(), 0);
    }

    #[tokio::test]
    async fn later_updates_never_overtake_earlier_ones() {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(events_tx));
        let (tx, rx) = mpsc::unbounded_channel();
        // A wide range so some later draws fall before earlier ones.
        let p = Propagation {
            min: ms(0),
            max: ms(60),
        };
        let task = tokio::spawn(run_applier(rx, p, 3, Arc::clone(&shared)));
        let written = Instant::now();
        for i in 0..20u16 {
            let ep = Endpoint {
                pod: format!("p{i}"),
                addr: std::net::SocketAddr::from(([127, 0, 1, 1], i + 1)),
                ready: true,
                serving: true,
                terminating: false,
            };
            tx.send(Update {
                written,
                endpoints: vec![ep].into(),
            })
            .ok();
        }
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let next = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
            match next.ok().flatten() {
                Some(super::super::ProxyEvent::Applied { endpoints, .. }) => {
                    seen.push(endpoints[0].pod.clone());
                }
                Some(_) => {}
                None => break,
            }
        }
        let expected: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
        assert_eq!(seen, expected);
        task.abort();
    }
}
