//! Chart data prepared from an [`Aggregate`]: throughput lines (downsampled
//! for long runs), latency percentiles per time bucket, and the latency
//! histogram's bins. Pure data, no drawing, so it is unit-testable.

use hdrhistogram::Histogram;

use rolltest_core::{
    model::ErrorKind,
    summary::{Aggregate, THROUGHPUT_BUCKET_US, ThroughputBucket},
};

use crate::html::Rgb;

/// Most throughput buckets drawn; longer runs merge adjacent buckets.
pub const MAX_DRAWN_BUCKETS: usize = 1500;
/// Most bars in the latency histogram.
pub const MAX_HISTOGRAM_BINS: usize = 40;

/// Colour of successful requests.
pub const OK_COLOR: Rgb = (46, 125, 50);
/// Colour of dropped requests.
pub const DROPPED_COLOR: Rgb = (120, 120, 120);

/// The colour of an error kind's series (distinct from each other and from ok).
pub fn kind_color(kind: ErrorKind) -> Rgb {
    match kind {
        ErrorKind::ConnectRefused => (142, 36, 170),
        ErrorKind::ConnectionReset => (239, 108, 0),
        ErrorKind::Timeout => (198, 40, 40),
        ErrorKind::HostUnreachable => (121, 85, 72),
        ErrorKind::Http5xx => (21, 101, 192),
        ErrorKind::Http4xx => (0, 151, 167),
        ErrorKind::Other => (109, 76, 65),
    }
}

/// Adjacent throughput buckets merged into one drawn bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// Successful.
    pub ok: u64,
    /// Failed, by [`ErrorKind::index`].
    pub failed: [u64; ErrorKind::ALL.len()],
    /// Dropped.
    pub dropped: u64,
    /// How many source buckets were merged (the last group can be short).
    pub n: u64,
}

/// Throughput buckets after downsampling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downsampled {
    /// Source buckets per drawn bucket (1: not downsampled).
    pub factor: usize,
    /// The drawn buckets, in time order.
    pub buckets: Vec<Merged>,
}

/// Merges runs of `factor` adjacent buckets, with the smallest factor that
/// leaves at most `max` buckets.
pub fn downsample(buckets: &[ThroughputBucket], max: usize) -> Downsampled {
    let factor = buckets.len().div_ceil(max.max(1)).max(1);
    let buckets = buckets
        .chunks(factor)
        .map(|chunk| {
            let mut m = Merged::default();
            for b in chunk {
                m.ok += u64::from(b.ok);
                for (sum, n) in m.failed.iter_mut().zip(b.failed) {
                    *sum += u64::from(n);
                }
                m.dropped += u64::from(b.dropped);
                m.n += 1;
            }
            m
        })
        .collect();
    Downsampled { factor, buckets }
}

/// Which count of a [`Merged`] bucket a throughput series shows.
#[derive(Debug, Clone, Copy)]
enum Count {
    Ok,
    Failed(usize),
    Dropped,
}

impl Count {
    fn of(self, m: &Merged) -> u64 {
        match self {
            Count::Ok => m.ok,
            Count::Failed(i) => m.failed.get(i).copied().unwrap_or(0),
            Count::Dropped => m.dropped,
        }
    }
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Line colour.
    pub color: Rgb,
    /// Contiguous runs of points (a gap between runs means "no data").
    pub segments: Vec<Vec<(f64, f64)>>,
}

/// The throughput chart's data.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// ok, then each error kind that occurred, then dropped if any.
    pub series: Vec<Series>,
    /// Effective (drawn) bucket width, µs.
    pub bucket_us: u64,
    /// Source buckets per drawn bucket.
    pub factor: usize,
    /// x range, seconds from the load's start.
    pub x_range: (f64, f64),
    /// Highest rate of any series, req/s.
    pub max_rate: f64,
}

/// Requests per second per (possibly merged) bucket as step lines, x in
/// seconds from the load's start (the aggregate's origin). `None` when nothing was scheduled.
pub fn throughput(agg: &Aggregate, duration_us: u64) -> Option<Throughput> {
    if agg.throughput.is_empty() {
        return None;
    }
    let ds = downsample(&agg.throughput, MAX_DRAWN_BUCKETS);
    let width_us = THROUGHPUT_BUCKET_US * ds.factor as u64;
    let mut pick = vec![("ok".to_string(), OK_COLOR, Count::Ok)];
    for kind in ErrorKind::ALL {
        let i = kind.index();
        if ds.buckets.iter().any(|m| m.failed[i] > 0) {
            pick.push((kind.as_str().into(), kind_color(kind), Count::Failed(i)));
        }
    }
    if ds.buckets.iter().any(|m| m.dropped > 0) {
        pick.push(("dropped".into(), DROPPED_COLOR, Count::Dropped));
    }
    let mut max_rate = 0.0f64;
    let series = pick
        .into_iter()
        .map(|(label, color, which)| {
            let rates = ds.buckets.iter().enumerate().map(|(i, m)| {
                let x0 = i as u64 * width_us;
                let x1 = x0 + m.n * THROUGHPUT_BUCKET_US;
                let rate = which.of(m) as f64 * 1e6 / (m.n * THROUGHPUT_BUCKET_US) as f64;
                max_rate = max_rate.max(rate);
                (secs(x0), secs(x1), rate)
            });
            let segments = match which {
                Count::Ok => vec![rates.flat_map(|(x0, x1, r)| [(x0, r), (x1, r)]).collect()],
                _ => nonzero_steps(rates),
            };
            Series {
                label,
                color,
                segments,
            }
        })
        .collect();
    let drawn_end = agg.throughput.len() as u64 * THROUGHPUT_BUCKET_US;
    let end = drawn_end.max(duration_us);
    Some(Throughput {
        series,
        bucket_us: width_us,
        factor: ds.factor,
        x_range: (0.0, secs(end)),
        max_rate,
    })
}

/// Step lines for the runs of non-zero buckets only, each rising from and
/// falling back to zero, so error series do not cover the x axis.
fn nonzero_steps(buckets: impl Iterator<Item = (f64, f64, f64)>) -> Vec<Vec<(f64, f64)>> {
    let mut segments = Vec::new();
    let mut open: Option<Vec<(f64, f64)>> = None;
    let mut end = 0.0;
    for (x0, x1, rate) in buckets {
        if rate > 0.0 {
            let seg = open.get_or_insert_with(|| vec![(x0, 0.0)]);
            seg.push((x0, rate));
            seg.push((x1, rate));
        } else if let Some(mut seg) = open.take() {
            seg.push((x0, 0.0));
            segments.push(seg);
        }
        end = x1;
    }
    if let Some(mut seg) = open {
        seg.push((end, 0.0));
        segments.push(seg);
    }
    segments
}

/// Latency percentiles over time.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyOverTime {
    /// max, p99 and p50 (top to bottom, drawn in that order so p99 stays
    /// visible where it equals max), ms, at bucket midpoints (seconds from the load's start); gaps
    /// where a bucket had no successful request.
    pub series: Vec<Series>,
    /// Bucket width, µs.
    pub bucket_us: u64,
    /// x range, seconds from the load's start.
    pub x_range: (f64, f64),
    /// Smallest and largest plotted value, ms.
    pub y_range: (f64, f64),
    /// Successful requests per non-empty bucket, on average (rounded down).
    pub per_bucket: u64,
}

/// Colours of max, p99 and p50.
pub const LATENCY_COLORS: [Rgb; 3] = [(229, 115, 115), (239, 108, 0), (21, 101, 192)];

/// max, p99 and p50 per latency bucket. `None` without successful requests.
pub fn latency_over_time(agg: &Aggregate, duration_us: u64) -> Option<LatencyOverTime> {
    let w = agg.latency_bucket_us.max(1);
    // The quantile of each line; None is the maximum.
    let stats = [("max", None), ("p99", Some(0.99)), ("p50", Some(0.5))];
    let mut y_range: Option<(f64, f64)> = None;
    let mut series = Vec::new();
    for ((label, quantile), color) in stats.into_iter().zip(LATENCY_COLORS) {
        let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut last: Option<usize> = None;
        for (i, h) in agg.latency_over_time.iter().enumerate() {
            if h.is_empty() {
                continue;
            }
            let x = secs(i as u64 * w + w / 2);
            let v = quantile.map_or_else(|| h.max(), |q| h.value_at_quantile(q));
            let y = v.max(1) as f64 / 1000.0;
            y_range = Some(y_range.map_or((y, y), |(lo, hi)| (lo.min(y), hi.max(y))));
            match (last, segments.last_mut()) {
                (Some(prev), Some(seg)) if prev + 1 == i => seg.push((x, y)),
                _ => segments.push(vec![(x, y)]),
            }
            last = Some(i);
        }
        series.push(Series {
            label: label.into(),
            color,
            segments,
        });
    }
    let y_range = y_range?;
    let filled = agg.latency_over_time.iter().filter(|h| !h.is_empty());
    let (n, total) = filled.fold((0u64, 0u64), |(n, t), h| (n + 1, t + h.len()));
    let drawn_end = agg.latency_over_time.len() as u64 * w;
    let end = drawn_end.max(duration_us);
    Some(LatencyOverTime {
        series,
        bucket_us: w,
        x_range: (0.0, secs(end)),
        y_range,
        per_bucket: total / n.max(1),
    })
}

/// One histogram bar: values in `lo_us..hi_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin {
    /// Lower edge (inclusive), µs.
    pub lo_us: u64,
    /// Upper edge (exclusive), µs.
    pub hi_us: u64,
    /// Requests in the bin.
    pub count: u64,
}

/// At most `max_bins` log-spaced bins from the histogram's min to its max.
/// Edges are whole microseconds, so the binning is exact and stable.
/// Empty for an empty histogram.
pub fn histogram_bins(h: &Histogram<u64>, max_bins: usize) -> Vec<Bin> {
    if h.is_empty() {
        return Vec::new();
    }
    let lo = h.min().max(1);
    let end = h.max().max(lo) + 1;
    let n = max_bins.max(1);
    let ratio = end as f64 / lo as f64;
    let mut edges: Vec<u64> = (0..=n)
        .map(|k| (lo as f64 * ratio.powf(k as f64 / n as f64)).round() as u64)
        .collect();
    edges[0] = lo;
    edges[n] = end;
    edges.dedup();
    let mut bins: Vec<Bin> = edges
        .windows(2)
        .map(|e| Bin {
            lo_us: e[0],
            hi_us: e[1],
            count: 0,
        })
        .collect();
    let last = bins.len().saturating_sub(1);
    for v in h.iter_recorded() {
        let value = v.value_iterated_to().clamp(lo, end - 1);
        let i = edges
            .partition_point(|&e| e <= value)
            .saturating_sub(1)
            .min(last);
        if let Some(bin) = bins.get_mut(i) {
            bin.count += v.count_at_value();
        }
    }
    bins
}

/// Microseconds to seconds.
pub fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tb(ok: u32, reset: u32, dropped: u32) -> ThroughputBucket {
        let mut failed = [0; ErrorKind::ALL.len()];
        failed[ErrorKind::ConnectionReset.index()] = reset;
        ThroughputBucket {
            ok,
            failed,
            dropped,
        }
    }

    #[test]
    fn short_runs_are_not_downsampled() {
        let src: Vec<_> = (0..1500).map(|i| tb(i % 7, 0, 0)).collect();
        let ds = downsample(&src, MAX_DRAWN_BUCKETS);
        assert_eq!(ds.factor, 1);
        assert_eq!(ds.buckets.len(), 1500);
        assert_eq!(ds.buckets[8].ok, 1);
        assert!(ds.buckets.iter().all(|m| m.n == 1));
    }

    #[test]
    fn long_runs_merge_adjacent_buckets_and_keep_totals() {
        // A 10-minute run: 6,000 buckets of 100 ms.
        let src: Vec<_> = (0..6001)
            .map(|i| tb(20, u32::from(i == 4000), i % 2))
            .collect();
        let ds = downsample(&src, MAX_DRAWN_BUCKETS);
        assert_eq!(ds.factor, 5);
        assert!(ds.buckets.len() <= MAX_DRAWN_BUCKETS);
        assert_eq!(ds.buckets.len(), 1201);
        assert_eq!(ds.buckets[0].ok, 100);
        assert_eq!(ds.buckets[0].n, 5);
        // The last group holds the one left-over bucket.
        assert_eq!(ds.buckets[1200].n, 1);
        let total_ok: u64 = ds.buckets.iter().map(|m| m.ok).sum();
        let total_dropped: u64 = ds.buckets.iter().map(|m| m.dropped).sum();
        assert_eq!(total_ok, 20 * 6001);
        assert_eq!(total_dropped, 3000);
        assert_eq!(
            ds.buckets[800].failed[ErrorKind::ConnectionReset.index()],
            1
        );
    }

    #[test]
    fn downsample_edge_cases() {
        assert_eq!(downsample(&[], 10).buckets, Vec::new());
        let ds = downsample(&[tb(1, 0, 0), tb(2, 0, 0), tb(3, 0, 0)], 0);
        assert_eq!(ds.factor, 3);
        assert_eq!(ds.buckets.len(), 1);
        assert_eq!(ds.buckets[0].ok, 6);
    }

    #[test]
    fn merged_rates_stay_per_second() {
        let mut agg = Aggregate::new(2_000_000, 600_000_000);
        agg.throughput = (0..6000).map(|_| tb(20, 0, 0)).collect();
        let t = throughput(&agg, 600_000_000).expect("data");
        assert_eq!(t.factor, 4);
        assert_eq!(t.bucket_us, 400_000);
        assert_eq!(t.series.len(), 1);
        assert!((t.max_rate - 200.0).abs() < 1e-9);
        // x counts from the load's start, not from the run clock's origin.
        assert_eq!(t.x_range, (0.0, 600.0));
        assert_eq!(t.series[0].segments[0].len(), 3000);
    }

    #[test]
    fn error_lines_only_where_nonzero() {
        let mut agg = Aggregate::new(0, 1_000_000);
        agg.throughput = vec![
            tb(20, 0, 0),
            tb(18, 2, 0),
            tb(19, 1, 0),
            tb(20, 0, 0),
            tb(19, 0, 1),
        ];
        let t = throughput(&agg, 1_000_000).expect("data");
        let labels: Vec<_> = t.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["ok", "connection_reset", "dropped"]);
        assert_eq!(t.series[0].segments.len(), 1);
        assert_eq!(t.series[0].segments[0].len(), 10);
        assert_eq!(
            t.series[1].segments,
            vec![vec![
                (0.1, 0.0),
                (0.1, 20.0),
                (0.2, 20.0),
                (0.2, 10.0),
                (0.3, 10.0),
                (0.3, 0.0)
            ]]
        );
        // Open at the end: closed at the last bucket's end.
        assert_eq!(
            t.series[2].segments,
            vec![vec![(0.4, 0.0), (0.4, 10.0), (0.5, 10.0), (0.5, 0.0)]]
        );
        assert_eq!(t.x_range, (0.0, 1.0));
    }

    #[test]
    fn histogram_bins_are_bounded_and_complete() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("hist");
        for v in 1..=5000u64 {
            h.record(v * 400).expect("record");
        }
        let bins = histogram_bins(&h, MAX_HISTOGRAM_BINS);
        assert!(bins.len() <= MAX_HISTOGRAM_BINS && bins.len() > 30);
        assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), 5000);
        assert!(bins.windows(2).all(|w| w[0].hi_us == w[1].lo_us));
        assert!(bins[0].lo_us <= 400);

        let mut one = Histogram::<u64>::new(3).expect("hist");
        one.record(1000).expect("record");
        one.record(1000).expect("record");
        let bins = histogram_bins(&one, MAX_HISTOGRAM_BINS);
        assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), 2);
        assert!(histogram_bins(&Histogram::<u64>::new(3).expect("hist"), 40).is_empty());
    }
}
