//! Lane data → SVG, with the plot area at the plotters charts' x extent.

use std::fmt::Write as _;

use crate::html::{
    escape, fmt_num, hex,
    palette::{cause_color, cause_label, slot_cause},
};

use super::*;

/// Seconds with two decimals, for tooltips.
pub fn secs2(us: i64) -> String {
    format!("{:.2} s", us as f64 / 1e6)
}

/// A pod name shortened for a lane label: whole when it fits, else the
/// head cut with an ellipsis and the distinctive tail (ReplicaSet hash and
/// pod suffix) kept.
pub fn short_name(pod: &str) -> String {
    let chars: Vec<char> = pod.chars().collect();
    if chars.len() <= MAX_LABEL {
        return pod.to_string();
    }
    // Keep the last two dash-separated parts when they are short enough.
    let tail_len = pod
        .rsplitn(3, '-')
        .take(2)
        .map(|p| p.chars().count() + 1)
        .sum::<usize>()
        .min(MAX_LABEL / 2);
    let head_len = MAX_LABEL - 1 - tail_len;
    let head: String = chars[..head_len].iter().collect();
    let tail: String = chars[chars.len() - tail_len..].iter().collect();
    format!("{head}…{tail}")
}

/// A "nice" tick step (seconds) that gives at most 16 ticks.
fn tick_step(span_s: f64) -> f64 {
    // 1-2-5 steps, as plotters picks for the throughput chart below.
    let mut p = 0.01;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let step = m * p;
            if span_s / step <= 16.0 || step >= 1e9 {
                return step;
            }
        }
        p *= 10.0;
    }
}

/// The swimlane chart as SVG.
pub fn draw(s: &Swimlanes) -> String {
    let span = s.span_us as f64;
    let x_of = |t: i64| -> f64 { (LEFT + (t as f64 / span) * (RIGHT - LEFT)).clamp(LEFT, RIGHT) };
    let rows = s.actions.len().clamp(1, ACTION_ROWS);
    let top = 6.0 + rows as f64 * 14.0;
    let lanes_h = s.lanes.len() as f64 * LANE_H;
    let axis_y = top + lanes_h + 2.0;
    let height = axis_y + 40.0;
    let mut o = String::with_capacity(16 * 1024);
    let _ = write!(
        o,
        "<svg class=\"lanes\" width=\"{WIDTH}\" height=\"{h}\" viewBox=\"0 0 {WIDTH} {h}\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"{WIDTH}\" height=\"{h}\" fill=\"#fff\"/>\n",
        h = px(height)
    );
    // Lane stripes.
    for (i, _) in s.lanes.iter().enumerate() {
        if i % 2 == 1 {
            let _ = writeln!(
                o,
                "<rect x=\"0\" y=\"{}\" width=\"{WIDTH}\" height=\"{}\" fill=\"#f6f8fa\"/>",
                px(top + i as f64 * LANE_H),
                px(LANE_H)
            );
        }
    }
    // Grid and axis.
    let span_s = span / 1e6;
    let step = tick_step(span_s);
    let _ = writeln!(
        o,
        "<g stroke=\"#e1e4e8\">{}</g>",
        (0..)
            .map(|k| k as f64 * step)
            .take_while(|v| *v <= span_s + 1e-9)
            .map(|v| {
                let x = px(x_of((v * 1e6).round() as i64));
                format!("<path d=\"M{x} {}V{}\"/>", px(top), px(axis_y))
            })
            .collect::<String>()
    );
    let _ = writeln!(
        o,
        "<path d=\"M{} {y}H{}\" stroke=\"#6e7681\"/>",
        px(LEFT),
        px(RIGHT),
        y = px(axis_y)
    );
    let mut labels = String::new();
    let mut k = 0u32;
    loop {
        let v = f64::from(k) * step;
        if v > span_s + 1e-9 {
            break;
        }
        let x = px(x_of((v * 1e6).round() as i64));
        let _ = write!(
            labels,
            "<path d=\"M{x} {}v4\" stroke=\"#6e7681\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(axis_y),
            px(axis_y + 16.0),
            fmt_num((v * 1000.0).round() / 1000.0)
        );
        k += 1;
    }
    let _ = writeln!(
        o,
        "<g fill=\"#59636e\">{labels}<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{}</text></g>",
        px((LEFT + RIGHT) / 2.0),
        px(axis_y + 34.0),
        escape(charts::X_DESC)
    );

    let max_col = s
        .lanes
        .iter()
        .flat_map(|l| l.columns.iter())
        .map(|c| c.iter().map(|n| u64::from(*n)).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    for (i, lane) in s.lanes.iter().enumerate() {
        draw_lane(&mut o, lane, top + i as f64 * LANE_H, max_col, &x_of);
    }

    // Actions across every lane, labels staggered over the rows above.
    for (i, a) in s.actions.iter().enumerate() {
        let x0 = x_of(a.start_us);
        let row_y = 16.0 + (i % rows) as f64 * 14.0;
        let mut title = format!("{} – started {}", a.label, secs2(a.start_us));
        if let Some(e) = a.end_us {
            let x1 = x_of(e);
            let _ = writeln!(
                o,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#37474f\" fill-opacity=\"0.07\"/>",
                px(x0),
                px(top),
                px((x1 - x0).max(0.0)),
                px(lanes_h)
            );
            let _ = write!(title, ", API calls done {}", secs2(e));
        }
        if let Some(d) = &a.detail {
            let _ = write!(title, ": {d}");
        }
        let anchor = if x0 > RIGHT - 220.0 { "end" } else { "start" };
        let tx = if anchor == "end" { x0 - 3.0 } else { x0 + 3.0 };
        let _ = writeln!(
            o,
            "<g><title>{}</title><path d=\"M{x} {}V{}\" stroke=\"#37474f\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" font-weight=\"600\" fill=\"#37474f\">▶ {}</text></g>",
            escape(&title),
            px(row_y - 10.0),
            px(axis_y),
            px(tx),
            px(row_y),
            escape(&a.label),
            x = px(x0),
        );
    }
    for (i, lane) in s.lanes.iter().enumerate() {
        draw_label(&mut o, lane, top + i as f64 * LANE_H);
    }
    o.push_str("</svg>\n");
    o
}

/// A lane's label, drawn after everything else on it with a white halo so
/// that ticks near the axis' start never hide it; the full name and the
/// phase times in its tooltip.
fn draw_label(o: &mut String, lane: &Lane, y: f64) {
    let full = lane.pod.as_deref().unwrap_or("unknown pod");
    let label = match &lane.pod {
        Some(p) if lane.in_timeline => short_name(p),
        Some(p) => format!("{} (no lifecycle events seen)", short_name(p)),
        None => "unknown pod (no x-rolltest-pod header or proxy record)".to_string(),
    };
    let mut title = full.to_string();
    for seg in &lane.segments {
        let _ = write!(
            title,
            "\n{}: {} → {}",
            seg.phase.label(),
            secs2(seg.start_us),
            secs2(seg.end_us)
        );
    }
    let n = lane.failures();
    if n > 0 {
        let _ = write!(title, "\n{n} failed requests");
    }
    let _ = writeln!(
        o,
        "<text x=\"6\" y=\"{}\" fill=\"#1f2328\" stroke=\"#fff\" stroke-width=\"3\" \
         stroke-opacity=\"0.85\" paint-order=\"stroke\"><title>{}</title>{}</text>",
        px(y + 10.5),
        escape(&title),
        escape(&label)
    );
}

fn draw_lane(o: &mut String, lane: &Lane, y: f64, max_col: u64, x_of: &impl Fn(i64) -> f64) {
    let full = lane.pod.as_deref().unwrap_or("unknown pod");
    o.push_str("<g>\n");
    for seg in &lane.segments {
        let (x0, x1) = (x_of(seg.start_us), x_of(seg.end_us));
        if x1 - x0 <= 0.0 {
            continue;
        }
        let _ = writeln!(
            o,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}: {} → {}</title></rect>",
            px(x0),
            px(y + BAR_Y),
            px((x1 - x0).max(0.5)),
            px(BAR_H),
            hex(seg.phase.color()),
            escape(seg.phase.label()),
            secs2(seg.start_us),
            secs2(seg.end_us)
        );
    }
    // Gone, yet still listed by the slice or the proxy: a dashed line from
    // the pod's last phase to its last tick.
    if let (Some(seg), Some(tick)) = (lane.segments.last(), lane.ticks.last())
        && tick.at_us > seg.end_us
    {
        let (x0, x1) = (x_of(seg.end_us), x_of(tick.at_us));
        if x1 - x0 >= 1.0 {
            let _ = writeln!(
                o,
                "<path d=\"M{} {y}H{}\" stroke=\"#6e7681\" stroke-dasharray=\"3 2\"><title>gone at {}, still routed to until {}</title></path>",
                px(x0),
                px(x1),
                secs2(seg.end_us),
                secs2(tick.at_us),
                y = px(y + BAR_Y + BAR_H / 2.0),
            );
        }
    }
    o.push_str("</g>\n");
    for t in &lane.ticks {
        let x = x_of(t.at_us);
        let width = if t.kind == TickKind::Sigkill { 2 } else { 1 };
        let _ = writeln!(
            o,
            "<g><title>{}: {}</title><path d=\"M{} {}v{}\" stroke=\"{}\" stroke-width=\"{width}\"/>{}</g>",
            escape(t.kind.label()),
            secs2(t.at_us),
            px(x),
            px(y + BAR_Y - 2.0),
            px(BAR_H + 4.0),
            t.kind.color(),
            t.kind.glyph(x, y + BAR_Y - 3.0)
        );
    }
    if lane.columns.is_empty() {
        return;
    }
    // One path per cause: a column per non-empty pixel bin, stacked by cause
    // (in slot order), height ∝ failures in the column.
    let mut paths: Vec<String> = vec![String::new(); SLOTS];
    for (c, counts) in lane.columns.iter().enumerate() {
        let total: u64 = counts.iter().map(|n| u64::from(*n)).sum();
        if total == 0 {
            continue;
        }
        let h = (STRIP_H * total as f64 / max_col as f64).max(2.0);
        let x = LEFT + c as f64 * BIN_PX;
        let mut cum = 0u64;
        for (slot, n) in counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let lo = (h * cum as f64 / total as f64).round();
            cum += u64::from(*n);
            let hi = (h * cum as f64 / total as f64).round().max(lo + 1.0);
            let _ = write!(
                paths[slot],
                "M{} {}h{}v{}h-{}z",
                px(x),
                px(y + STRIP_BASE - hi),
                px(BIN_PX),
                px(hi - lo),
                px(BIN_PX)
            );
        }
    }
    for (slot, d) in paths.iter().enumerate() {
        if d.is_empty() {
            continue;
        }
        let (count, first, last) = lane.totals[slot];
        let cause = slot_cause(slot);
        let _ = writeln!(
            o,
            "<path d=\"{d}\" fill=\"{}\"><title>{count} failed requests on {}, cause {}, sent {} → {}</title></path>",
            hex(cause_color(cause)),
            escape(full),
            cause_label(cause),
            secs2(first),
            secs2(last)
        );
    }
}
