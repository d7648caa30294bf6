//! The report's charts, drawn with plotters into inline SVG strings.
//!
//! plotters is built without its font features: its SVG backend writes text
//! as SVG `<text>` elements (escaped by the backend) and leaves glyph
//! rendering to the browser, so only layout estimates are approximate. Every
//! drawing error (or panic inside plotters) becomes an inline "chart
//! unavailable" note rather than failing the report. Legends are HTML, next
//! to the chart, so data labels never overlap the plot.

use std::panic::{AssertUnwindSafe, catch_unwind};

use plotters::prelude::*;

use crate::html::{Rgb, escape, fmt_num};

use super::series::{Bin, LatencyOverTime, Series, Throughput};

/// Width of every chart, px (the SVG scales down with the page).
pub const WIDTH: u32 = 1000;
/// Height of the time charts, px.
pub const HEIGHT: u32 = 300;
/// Height of the histogram, px.
pub const HIST_HEIGHT: u32 = 260;

/// The time axis' title, shared by every chart over time (the swimlanes too).
pub const X_DESC: &str = "seconds since the load started";

const FONT: (&str, u32) = ("sans-serif", 15);
const AXIS: RGBColor = RGBColor(110, 118, 129);
const GRID: RGBColor = RGBColor(225, 228, 232);
const BAR: RGBColor = RGBColor(46, 125, 50);

type DrawResult = Result<(), String>;

/// Runs a drawing function that fills an SVG string. Returns the SVG markup,
/// or an escaped "chart unavailable" note if plotters failed or panicked.
pub fn svg(draw: impl FnOnce(&mut String) -> DrawResult) -> String {
    let mut buf = String::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| draw(&mut buf)));
    match outcome {
        Ok(Ok(())) if buf.contains("</svg>") => buf,
        Ok(Ok(())) => unavailable("the drawing was incomplete"),
        Ok(Err(e)) => unavailable(&e),
        Err(_) => unavailable("the chart library panicked"),
    }
}

fn unavailable(why: &str) -> String {
    format!("<p class=\"note\">chart unavailable: {}</p>\n", escape(why))
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn color(c: Rgb) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

/// Throughput over time: one overlaid (not stacked) step line per series.
pub fn throughput(t: &Throughput) -> String {
    svg(|buf| {
        let root = SVGBackend::with_string(buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let y_max = nice_ceil(t.max_rate.max(1.0) * 1.08);
        let (x0, x1) = x_span(t.x_range);
        let mut chart = ChartBuilder::on(&root)
            .margin_top(12)
            .margin_left(10)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(X_DESC)
            .y_desc("requests / s")
            .x_labels(16)
            .y_labels(8)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style(FONT)
            .axis_desc_style(FONT)
            .axis_style(AXIS)
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(err)?;
        draw_lines(&mut chart, &t.series)?;
        root.present().map_err(err)
    })
}

/// Latency percentiles over time on a log y axis (ms).
pub fn latency_over_time(l: &LatencyOverTime) -> String {
    svg(|buf| {
        let root = SVGBackend::with_string(buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (lo, hi) = log_span(l.y_range);
        let (x0, x1) = x_span(l.x_range);
        let mut chart = ChartBuilder::on(&root)
            .margin_top(12)
            .margin_left(10)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                x0..x1,
                (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(X_DESC)
            .y_desc("latency (ms, log)")
            .x_labels(16)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style(FONT)
            .axis_desc_style(FONT)
            .axis_style(AXIS)
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(err)?;
        draw_lines(&mut chart, &l.series)?;
        root.present().map_err(err)
    })
}

/// Bars of the latency histogram on a log x axis (ms), linear count.
pub fn histogram(bins: &[Bin]) -> String {
    svg(|buf| {
        let root = SVGBackend::with_string(buf, (WIDTH, HIST_HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let lo = bins.first().map_or(1, |b| b.lo_us) as f64 / 1000.0;
        let hi = bins.last().map_or(2, |b| b.hi_us) as f64 / 1000.0;
        let hi = hi.max(lo * 1.001);
        // A little room either side so the outer bars do not touch the axes,
        // more for a narrow range so the axis spans at least a factor of 2.
        let pad = (hi / lo).powf(0.02).max((2.0 / (hi / lo)).sqrt());
        let (lo, hi) = (lo / pad, hi * pad);
        let max = bins.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
        // Log counts, so a tail of a few slow requests stays visible next to
        // the main mode; bars rise from just below 1.
        let (y_lo, y_hi) = (0.7, nice_ceil(max * 1.6));
        let mut chart = ChartBuilder::on(&root)
            .margin_top(12)
            .margin_left(10)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
                (y_lo..y_hi).log_scale().with_key_points(count_ticks(y_hi)),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log)")
            .y_desc("requests (log)")
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style(FONT)
            .axis_desc_style(FONT)
            .axis_style(AXIS)
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(err)?;
        // A bar at least 3 px wide keeps a 1 px gap either side; a narrower
        // one (a run whose latencies all fall in a sliver of the axis) is
        // drawn in pixels, at least 1 px wide, so it shows and never gets
        // a negative width.
        let corners = |b: &Bin| {
            let (lo_ms, hi_ms) = (b.lo_us as f64 / 1000.0, b.hi_us as f64 / 1000.0);
            (
                (lo_ms, hi_ms),
                chart.backend_coord(&(lo_ms, y_lo)),
                chart.backend_coord(&(hi_ms, b.count as f64)),
            )
        };
        let (wide, narrow): (Vec<_>, Vec<_>) = bins
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b, corners(b)))
            .partition(|(_, (_, bottom_left, top_right))| top_right.0 - bottom_left.0 >= 3);
        chart
            .draw_series(wide.iter().map(|(b, ((lo_ms, hi_ms), _, _))| {
                let mut bar =
                    Rectangle::new([(*lo_ms, y_lo), (*hi_ms, b.count as f64)], BAR.filled());
                bar.set_margin(0, 0, 1, 1);
                bar
            }))
            .map_err(err)?;
        for (_, (_, (x0, y0), (x1, y1))) in narrow {
            root.draw(&Rectangle::new(
                [(x0, y1), (x1.max(x0 + 1), y0)],
                BAR.filled(),
            ))
            .map_err(err)?;
        }
        root.present().map_err(err)
    })
}

/// Draws each series' segments as 2 px lines; a lone point gets a dot.
fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    series: &[Series],
) -> DrawResult
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for s in series {
        let style = color(s.color).stroke_width(2);
        for seg in &s.segments {
            if let [only] = seg.as_slice() {
                chart
                    .draw_series(std::iter::once(Circle::new(
                        *only,
                        3,
                        color(s.color).filled(),
                    )))
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(LineSeries::new(seg.iter().copied(), style))
                    .map_err(err)?;
            }
        }
    }
    Ok(())
}

/// A non-empty x range.
fn x_span((a, b): (f64, f64)) -> (f64, f64) {
    if b > a { (a, b) } else { (a, a + 1.0) }
}

/// A log range around the data with some headroom, never touching zero.
fn log_span((lo, hi): (f64, f64)) -> (f64, f64) {
    let lo = lo.max(0.001);
    let hi = hi.max(lo);
    (lo / 1.6, hi * 1.6)
}

/// Tick values for a log axis: 1-2-5 steps per decade (only powers of ten
/// when that is too many, finer steps when the range is narrow).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let pick = |mantissas: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        if !(lo > 0.0 && hi > lo && lo.is_finite() && hi.is_finite()) {
            return out;
        }
        let first = lo.log10().floor() as i32;
        let last = hi.log10().ceil() as i32;
        for e in first..=last {
            for m in mantissas {
                // Round to a few significant digits so 0.1 * 3 prints as 0.3.
                let v = round_sig(m * 10f64.powi(e));
                if v >= lo && v <= hi {
                    out.push(v);
                }
            }
        }
        out
    };
    let ticks = pick(&[1.0, 2.0, 5.0]);
    if ticks.len() > 12 {
        let decades = pick(&[1.0]);
        if decades.len() > 12 {
            return decades.into_iter().step_by(2).collect();
        }
        return decades;
    }
    if ticks.len() < 3 {
        let fine = pick(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]);
        if fine.len() < 2 && lo > 0.0 && hi > lo {
            // Too narrow for round numbers: label the middle.
            return vec![round_sig((lo * hi).sqrt())];
        }
        return fine;
    }
    ticks
}

/// Ticks of a log count axis from 1 to `hi`: 1-2-5 steps, or powers of ten
/// when that gives more than eight.
fn count_ticks(hi: f64) -> Vec<f64> {
    let ticks = log_ticks(1.0, hi);
    if ticks.len() > 8 {
        log_ticks(1.0, hi)
            .into_iter()
            .filter(|v| v.log10().fract() == 0.0)
            .collect()
    } else {
        ticks
    }
}

fn round_sig(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let mag = 10f64.powi(v.abs().log10().floor() as i32 - 3);
    (v / mag).round() * mag
}

/// The smallest "nice" number (1, 2, 2.5, 5 × 10ⁿ) at or above `v`.
pub fn nice_ceil(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powi(v.log10().floor() as i32);
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return round_sig(m * p);
        }
    }
    round_sig(10.0 * p)
}

/// An axis tick label: stable, short, no float noise.
fn tick(v: f64) -> String {
    fmt_num(round_sig(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{html::Rgb, report::series::Series};

    #[test]
    fn log_ticks_are_one_two_five() {
        assert_eq!(log_ticks(0.5, 30.0), vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0]);
        assert_eq!(log_ticks(0.001, 1e6).len(), 10);
        assert_eq!(log_ticks(0.7, 1.4), vec![0.8, 1.0]);
        assert_eq!(log_ticks(0.9, 1.1), vec![0.995]);
        assert!(log_ticks(0.0, 1.0).is_empty());
        assert_eq!(tick(0.1 * 3.0), "0.3");
    }

    #[test]
    fn nice_ceil_rounds_up() {
        assert_eq!(nice_ceil(216.0), 250.0);
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(1.0), 1.0);
        assert_eq!(nice_ceil(7.3), 10.0);
    }

    fn line(label: &str, color: Rgb, pts: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            color,
            segments: vec![pts],
        }
    }

    #[test]
    fn charts_render_text_without_font_features() {
        let t = Throughput {
            series: vec![line("ok", (0, 128, 0), vec![(0.0, 10.0), (1.0, 12.0)])],
            bucket_us: 100_000,
            factor: 1,
            x_range: (0.0, 1.0),
            max_rate: 12.0,
        };
        let out = throughput(&t);
        assert!(out.starts_with("<svg"), "{out}");
        assert!(out.contains("<text"));
        assert!(out.contains(X_DESC));
        assert!(out.contains("<polyline"));
    }

    #[test]
    fn plotters_escapes_svg_text() {
        let out = svg(|buf| {
            let root = SVGBackend::with_string(buf, (200, 100)).into_drawing_area();
            root.draw(&Text::new("<script>&\"'", (10, 10), FONT))
                .map_err(err)?;
            root.present().map_err(err)
        });
        assert!(out.contains("&lt;script&gt;&amp;&quot;&apos;"), "{out}");
        assert!(!out.contains("<script"));
    }

    #[test]
    fn failures_become_a_note() {
        let out = svg(|_| Err("<boom>".into()));
        assert_eq!(
            out,
            "<p class=\"note\">chart unavailable: &lt;boom&gt;</p>\n"
        );
        let out = svg(|_| panic!("inside plotters"));
        assert!(out.contains("chart unavailable"));
    }

    /// Every bar's `<rect>` width in an SVG (plotters writes `width="N"`).
    fn rect_widths(svg: &str) -> Vec<i64> {
        svg.split("<rect ")
            .skip(1)
            .filter_map(|r| r.split("width=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect()
    }

    #[test]
    fn histogram_bars_in_a_sliver_of_the_axis_show_and_never_go_negative() {
        // Every request took 10 ms: 8 bins of 1 µs, each far under a pixel.
        let sliver: Vec<Bin> = (0..8)
            .map(|i| Bin {
                lo_us: 10_000 + i,
                hi_us: 10_001 + i,
                count: if i == 0 { 387 } else { 0 },
            })
            .collect();
        let widths = rect_widths(&histogram(&sliver));
        // The background, then the one bar, 1 px wide.
        assert_eq!(widths.len(), 2, "{widths:?}");
        assert_eq!(widths[1], 1);
        // Wide bars keep their 1 px gaps: 10 ms → 20 ms spans many pixels.
        let wide = [Bin {
            lo_us: 10_000,
            hi_us: 20_000,
            count: 5,
        }];
        let widths = rect_widths(&histogram(&wide));
        assert!(widths.iter().all(|w| *w > 2), "{widths:?}");
    }
}
