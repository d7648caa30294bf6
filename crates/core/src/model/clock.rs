//! One clock for the whole run: every request record (and, later, every
//! lifecycle event) is an offset in microseconds from the same origin, so the
//! correlator can join them without converting between clocks.

use std::time::{Duration, Instant, SystemTime};

/// The run's time origin, as a monotonic instant and the wall time it stands for.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    origin: Instant,
    wall_origin: SystemTime,
}

impl RunClock {
    /// Starts the clock now.
    pub fn start() -> Self {
        Self {
            origin: Instant::now(),
            wall_origin: SystemTime::now(),
        }
    }

    /// Starts the clock at a given monotonic instant (which must be no later than now).
    pub fn starting_at(origin: Instant) -> Self {
        let behind = Instant::now().saturating_duration_since(origin);
        Self {
            origin,
            wall_origin: SystemTime::now() - behind,
        }
    }

    /// The monotonic origin.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Microseconds from the origin to `t` (0 for instants before it).
    pub fn micros(&self, t: Instant) -> u64 {
        duration_micros(t.saturating_duration_since(self.origin))
    }

    /// Microseconds from the origin to now.
    pub fn now_micros(&self) -> u64 {
        self.micros(Instant::now())
    }

    /// The instant at `offset` after the origin.
    pub fn at(&self, offset: Duration) -> Instant {
        self.origin + offset
    }

    /// A wall-clock time (a server's timestamp) as microseconds on the run
    /// clock: negative before the origin, saturating at the `i64` range.
    pub fn wall_to_run_us(&self, t: SystemTime) -> i64 {
        match t.duration_since(self.wall_origin) {
            Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |us| -us),
        }
    }

    /// The wall-clock start, RFC 3339 with milliseconds, UTC.
    pub fn started_at(&self) -> String {
        humantime::format_rfc3339_millis(self.wall_origin).to_string()
    }

    /// The wall-clock start, as a compact UTC stamp for directory names.
    pub fn started_at_compact(&self) -> String {
        format_timestamp_compact(self.wall_origin)
    }
}

/// `20261124T234704Z`: sortable and safe in file names.
pub fn format_timestamp_compact(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.chars().filter(|c| *c != '-' && *c != ':').collect()
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_micros_from_origin() {
        let clock = RunClock::start();
        let later = clock.at(Duration::from_millis(1500));
        assert_eq!(clock.micros(later), 1_500_000);
        assert_eq!(clock.micros(clock.origin()), 0);
    }

    #[test]
    fn wall_times_map_onto_the_run_clock() {
        let clock = RunClock::start();
        let later = clock.wall_origin + Duration::from_micros(2_500_000);
        assert_eq!(clock.wall_to_run_us(later), 2_500_000);
        let earlier = clock.wall_origin - Duration::from_micros(1_000);
        assert_eq!(clock.wall_to_run_us(earlier), -1_000);
    }

    #[test]
    fn compact_stamp_has_no_separators() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format_timestamp_compact(t), "20231114T221320Z");
    }
}
