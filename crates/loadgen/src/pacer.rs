//! The schedule, as a pure function: request `seq` is due at `seq / rate`
//! after the load's origin, whatever happened before (open model). Due times
//! are computed from the origin each time, never by adding intervals, so they
//! cannot drift however long the run (vegeta's pacer, oha's absolute schedule).

use std::time::Duration;

/// A constant-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacer {
    rate: f64,
}

impl Pacer {
    /// A schedule of `rate` requests per second (`rate` > 0, checked by the scenario).
    pub fn new(rate: f64) -> Self {
        Pacer { rate }
    }

    /// When request `seq` is due, as an offset from the origin (rounded to the nanosecond).
    pub fn due(&self, seq: u64) -> Duration {
        let nanos = (seq as f64 * 1e9 / self.rate).round();
        Duration::from_nanos(nanos as u64)
    }

    /// How many requests are due strictly before `end`: the size of a run of that length.
    pub fn count_before(&self, end: Duration) -> u64 {
        let estimate = (end.as_secs_f64() * self.rate).ceil().max(0.0) as u64;
        // Settle rounding at the boundary with the same arithmetic as `due`.
        let mut n = estimate.saturating_sub(1);
        while self.due(n) < end {
            n += 1;
        }
        while n > 0 && self.due(n - 1) >= end {
            n -= 1;
        }
        n
    }

    /// The interval of a periodic dispatch tick: every due time when requests
    /// are at least `quantum` apart, else every `k` due times with `k` the
    /// whole number of requests per `quantum` (so requests leave in small
    /// groups, each at most one tick late, instead of costing one wake-up each).
    /// `None` when requests are further apart than `longest` (then the
    /// dispatcher arms a one-shot timer per request, capped so it can notice a stop).
    pub fn tick(&self, quantum: Duration, longest: Duration) -> Option<Duration> {
        let per_quantum = (quantum.as_secs_f64() * self.rate).floor().max(1.0);
        let tick = Duration::from_secs_f64(per_quantum / self.rate);
        (tick <= longest).then_some(tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn due_times_table() {
        // (rate, seq, due in ns)
        let table: &[(f64, u64, u64)] = &[
            (1.0, 0, 0),
            (1.0, 10, 10_000 * MS),
            (200.0, 1, 5 * MS),
            (200.0, 199, 995 * MS),
            (3.0, 1, 333_333_333), // rounded, not truncated
            (3.0, 2, 666_666_667),
            (3.0, 3, 1_000_000_000),
            (0.5, 1, 2_000 * MS),
            (40_000.0, 40_000, 1_000 * MS),
        ];
        for &(rate, seq, ns) in table {
            assert_eq!(
                Pacer::new(rate).due(seq),
                Duration::from_nanos(ns),
                "rate {rate} seq {seq}"
            );
        }
    }

    #[test]
    fn counts_table() {
        // (rate, run length, requests in the run)
        let table: &[(f64, Duration, u64)] = &[
            (200.0, Duration::from_secs(40), 8_000),
            (1.0, Duration::from_secs(1), 1),
            (1.0, Duration::from_millis(1001), 2),
            (3.0, Duration::from_secs(1), 3),
            (0.5, Duration::from_secs(3), 2),
            (1000.0, Duration::from_millis(500), 500),
            (7.0, Duration::ZERO, 0),
        ];
        for &(rate, len, n) in table {
            assert_eq!(
                Pacer::new(rate).count_before(len),
                n,
                "rate {rate} len {len:?}"
            );
        }
    }

    #[test]
    fn no_drift_over_a_day_at_high_rate() {
        let p = Pacer::new(20_000.0);
        let day = 86_400 * 20_000u64;
        assert_eq!(p.due(day), Duration::from_secs(86_400));
        // Consecutive gaps stay within a nanosecond of the interval.
        for seq in [1u64, 1_000_003, day - 1] {
            let gap = p.due(seq + 1) - p.due(seq);
            let err = gap.as_nanos() as i128 - 50_000;
            assert!(err.abs() <= 1, "gap {gap:?} at {seq}");
        }
    }

    #[test]
    fn tick_table() {
        let q = Duration::from_micros(100);
        let longest = Duration::from_millis(20);
        // (rate, tick)
        let table: &[(f64, Option<Duration>)] = &[
            (1_000.0, Some(Duration::from_millis(1))),
            (10_000.0, Some(Duration::from_micros(100))),
            (20_000.0, Some(Duration::from_micros(100))),
            (25_000.0, Some(Duration::from_micros(80))),
            (40_000.0, Some(Duration::from_micros(100))),
            (50.0, Some(Duration::from_millis(20))),
            (49.0, None),
            (1.0, None),
        ];
        for &(rate, tick) in table {
            assert_eq!(Pacer::new(rate).tick(q, longest), tick, "rate {rate}");
        }
    }
}
