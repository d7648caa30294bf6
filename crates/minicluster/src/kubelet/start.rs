//! How long a pod takes from its binding to a running container.
//!
//! A real kubelet does not start a bound pod at once: it creates the pod
//! sandbox (the pause container and its network namespace), runs the CNI
//! plugin for the pod's address, then creates and starts the container; with
//! the image already on the node that took 0.54–0.80 s per pod on
//! `scripts/realk8s` (pod created → container started, six pods of a
//! rollout; 0.50–0.64 s in a later run), each pod its own time. The
//! embedded kubelet starts a process in about a millisecond, so without a
//! [`PodStart`] every new pod of a rollout starts (and, its first readiness
//! probe passing, turns Ready) in the same instant, the Deployment
//! controller deletes the old pods in batches a real cluster does not show,
//! and every deletion lands just after a proxy sync and waits out a whole
//! sync period. Hence the default, [`DEFAULT_POD_START`].

use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    str::FromStr,
    time::Duration,
};

use crate::proxy::{Propagation, PropagationParseError};

/// The delay before each pod's sandbox and container start: a duration
/// drawn for each pod between `min` and `max` (uniformly), or exactly `min`
/// when they are equal. [`PodStart::NONE`] (`"0s"`) starts pods at once;
/// the default is [`DEFAULT_POD_START`]. Written like
/// `endpoint_propagation` (`"500ms..900ms"`, `"700ms"`), whose text form,
/// parser and checks it shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Propagation", into = "Propagation")]
pub struct PodStart {
    /// Shortest delay.
    pub min: Duration,
    /// Longest delay (at least `min`).
    pub max: Duration,
}

/// The default start delay, `500ms..800ms`: what `scripts/realk8s`
/// measured from a pod's creation to its container's start with the image
/// on the node (see the module docs).
pub const DEFAULT_POD_START: PodStart = PodStart {
    min: Duration::from_millis(500),
    max: Duration::from_millis(800),
};

impl PodStart {
    /// No delay: a pod's process starts as soon as the kubelet sees it.
    pub const NONE: PodStart = PodStart {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// The delay for the pod with this uid: a fresh draw between `min` and
    /// `max` (each process seeds its own hasher, so runs differ).
    pub fn draw(&self, uid: &str) -> Duration {
        let span = self.max.saturating_sub(self.min);
        if span.is_zero() {
            return self.min;
        }
        let unit = (RandomState::new().hash_one(uid) >> 11) as f64 / (1u64 << 53) as f64;
        self.min + span.mul_f64(unit)
    }
}

impl Default for PodStart {
    /// [`DEFAULT_POD_START`], what a real kubelet takes; not "at once".
    fn default() -> Self {
        DEFAULT_POD_START
    }
}

impl From<Propagation> for PodStart {
    fn from(range: Propagation) -> Self {
        PodStart {
            min: range.min,
            max: range.max,
        }
    }
}

impl From<PodStart> for Propagation {
    fn from(start: PodStart) -> Self {
        Propagation {
            min: start.min,
            max: start.max,
        }
    }
}

impl fmt::Display for PodStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Propagation::from(*self).fmt(f)
    }
}

impl FromStr for PodStart {
    type Err = PropagationParseError;

    /// One humantime duration (`700ms`) or a range `MIN..MAX`
    /// (`500ms..900ms`) with MIN <= MAX.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<Propagation>().map(PodStart::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_duration_or_a_range_and_draws_inside_it() {
        let fixed: PodStart = "700ms".parse().expect("parses");
        assert_eq!(fixed.draw("a"), Duration::from_millis(700));
        let range: PodStart = "500ms..900ms".parse().expect("parses");
        assert_eq!(range.to_string(), "500ms..900ms");
        let draws: Vec<Duration> = (0..200).map(|i| range.draw(&format!("uid-{i}"))).collect();
        assert!(
            draws
                .iter()
                .all(|d| (Duration::from_millis(500)..=Duration::from_millis(900)).contains(d))
        );
        // Spread over the range, not one value.
        let low = draws
            .iter()
            .filter(|d| **d < Duration::from_millis(700))
            .count();
        assert!((40..=160).contains(&low), "{low} of 200 below the middle");
        assert!("900ms..500ms".parse::<PodStart>().is_err());
        assert!("soon".parse::<PodStart>().is_err());
        assert_eq!(PodStart::NONE.draw("a"), Duration::ZERO);
    }
}
