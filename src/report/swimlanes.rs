//! The swimlanes: one lane per pod over the load's time axis, with its
//! phases as coloured bars, ticks for the endpoint and proxy moments and
//! SIGKILL, the failed requests that hit it (binned into pixel columns, so
//! 100k+ failures stay a few kilobytes), and the scenario's actions as
//! vertical markers across every lane.
//!
//! [`build`] turns the timeline and the failures into plain lane data (unit
//! tested); [`draw`] writes it as hand-made SVG whose plot area has the same
//! x extent as the plotters charts, so lanes line up with the throughput
//! chart when both are shown at the same width.

use std::{collections::HashMap, fmt::Write as _};

use rolltest_core::model::{Cause, LifecycleEvent, LifecycleKind, Timeline};

use super::{
    charts,
    html::{escape, fmt_num},
    rollout::{FailurePoint, cause_color, cause_label, cause_slot},
    series::Rgb,
};

/// Width of the SVG, px (the same as the plotters charts).
pub const WIDTH: u32 = charts::WIDTH;
/// Left edge of the plot area, px (plotters: 10 px margin + 64 px y labels).
const LEFT: f64 = 74.0;
/// Right edge of the plot area, px (plotters: 24 px right margin).
const RIGHT: f64 = 976.0;
/// Width of one failure column, px.
pub const BIN_PX: f64 = 2.0;
/// Number of failure columns across the plot.
pub const COLUMNS: usize = ((RIGHT - LEFT) / BIN_PX) as usize + 1;
/// Height of one lane, px.
const LANE_H: f64 = 44.0;
/// The phase bar inside a lane: top offset and height.
const BAR_Y: f64 = 13.0;
const BAR_H: f64 = 14.0;
/// The failure strip: its baseline offset and tallest column.
const STRIP_BASE: f64 = 41.0;
const STRIP_H: f64 = 13.0;
/// Rows of action labels above the lanes, at most.
const ACTION_ROWS: usize = 3;
/// Longest lane label, characters.
const MAX_LABEL: usize = 34;

/// Failure slots per column: one per cause, plus "no cause attributed".
pub const SLOTS: usize = Cause::ALL.len() + 1;

/// What a pod was doing over a span of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Created, not Ready yet (scheduling, image, startup, readiness).
    Starting,
    /// Ready.
    Ready,
    /// Running but not Ready (readiness failed after having been Ready).
    NotReady,
    /// Deletion requested, before the preStop hook or SIGTERM.
    Terminating,
    /// The preStop hook runs.
    PreStop,
    /// SIGTERM sent, the process still runs.
    AfterSigterm,
    /// The container exited; the pod object is not gone yet.
    Exited,
}

impl Phase {
    /// Every phase, in legend order.
    pub const ALL: [Phase; 7] = [
        Phase::Starting,
        Phase::Ready,
        Phase::NotReady,
        Phase::Terminating,
        Phase::PreStop,
        Phase::AfterSigterm,
        Phase::Exited,
    ];

    /// Legend label.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Starting => "starting (created → Ready)",
            Phase::Ready => "ready",
            Phase::NotReady => "not ready",
            Phase::Terminating => "terminating (deletion → preStop / SIGTERM)",
            Phase::PreStop => "preStop hook",
            Phase::AfterSigterm => "after SIGTERM (→ exit)",
            Phase::Exited => "exited (→ pod gone)",
        }
    }

    /// Bar colour.
    pub fn color(self) -> Rgb {
        match self {
            Phase::Starting => (144, 202, 249),
            Phase::Ready => (129, 199, 132),
            Phase::NotReady => (255, 224, 130),
            Phase::Terminating => (206, 147, 216),
            Phase::PreStop => (255, 183, 77),
            Phase::AfterSigterm => (229, 115, 115),
            Phase::Exited => (189, 189, 189),
        }
    }
}

/// One bar: a phase from `start_us` to `end_us` (µs from the load's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Start, µs from the load's start (negative: before it).
    pub start_us: i64,
    /// End.
    pub end_us: i64,
    /// The phase.
    pub phase: Phase,
}

/// A moment drawn as a tick on a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickKind {
    /// The EndpointSlice stopped listing the pod as ready (or marked it terminating).
    SliceNotReady,
    /// The pod left the EndpointSlices.
    SliceRemoved,
    /// The proxy applied "not ready" for the pod: no new traffic from here.
    ProxyNotReady,
    /// The proxy dropped the pod from its view.
    ProxyRemoved,
    /// The grace period ran out: SIGKILL.
    Sigkill,
}

impl TickKind {
    /// Every kind, in legend order.
    pub const ALL: [TickKind; 5] = [
        TickKind::SliceNotReady,
        TickKind::SliceRemoved,
        TickKind::ProxyNotReady,
        TickKind::ProxyRemoved,
        TickKind::Sigkill,
    ];

    /// Legend label.
    pub fn label(self) -> &'static str {
        match self {
            TickKind::SliceNotReady => "slice: not ready / terminating",
            TickKind::SliceRemoved => "slice: endpoint removed",
            TickKind::ProxyNotReady => "proxy applied: not ready",
            TickKind::ProxyRemoved => "proxy applied: removed",
            TickKind::Sigkill => "SIGKILL",
        }
    }

    fn color(self) -> &'static str {
        match self {
            TickKind::SliceNotReady | TickKind::SliceRemoved => "#0d47a1",
            TickKind::ProxyNotReady | TickKind::ProxyRemoved => "#212121",
            TickKind::Sigkill => "#b71c1c",
        }
    }

    /// The marker glyph centred on (`x`, `y`), as SVG markup.
    pub fn glyph(self, x: f64, y: f64) -> String {
        let c = self.color();
        match self {
            TickKind::SliceNotReady | TickKind::SliceRemoved => {
                let fill = if self == TickKind::SliceRemoved {
                    c
                } else {
                    "#fff"
                };
                format!(
                    "<path d=\"M{} {}h7l-3.5 5z\" fill=\"{fill}\" stroke=\"{c}\"/>",
                    px(x - 3.5),
                    px(y - 3.0)
                )
            }
            TickKind::ProxyNotReady | TickKind::ProxyRemoved => {
                let fill = if self == TickKind::ProxyRemoved {
                    c
                } else {
                    "#fff"
                };
                format!(
                    "<rect x=\"{}\" y=\"{}\" width=\"5\" height=\"5\" fill=\"{fill}\" stroke=\"{c}\"/>",
                    px(x - 2.5),
                    px(y - 2.5)
                )
            }
            TickKind::Sigkill => format!(
                "<path d=\"M{} {}l6 6m0 -6l-6 6\" stroke=\"{c}\" stroke-width=\"2\"/>",
                px(x - 3.0),
                px(y - 3.0)
            ),
        }
    }
}

/// One tick on a lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// When, µs from the load's start.
    pub at_us: i64,
    /// What.
    pub kind: TickKind,
}

/// One lane: a pod, or the failures whose pod is unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    /// The pod (`None`: the "unknown pod" lane).
    pub pod: Option<String>,
    /// Its phases, in time order.
    pub segments: Vec<Segment>,
    /// Its ticks, in time order.
    pub ticks: Vec<Tick>,
    /// Whether the timeline named the pod at all.
    pub in_timeline: bool,
    /// Failures per pixel column, by slot ([`cause_slot`]).
    pub columns: Vec<[u32; SLOTS]>,
    /// Failures per slot, with the first and last send time (µs from the load's start).
    pub totals: [(u64, i64, i64); SLOTS],
}

impl Lane {
    fn new(pod: Option<String>, in_timeline: bool) -> Self {
        Lane {
            pod,
            segments: Vec::new(),
            ticks: Vec::new(),
            in_timeline,
            columns: Vec::new(),
            totals: [(0, i64::MAX, i64::MIN); SLOTS],
        }
    }

    /// Failed requests on the lane.
    pub fn failures(&self) -> u64 {
        self.totals.iter().map(|t| t.0).sum()
    }
}

/// An action, drawn across every lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionMark {
    /// Started, µs from the load's start.
    pub start_us: i64,
    /// Finished its API calls, when seen.
    pub end_us: Option<i64>,
    /// "rollout-restart deployment api".
    pub label: String,
    /// The finish detail, when given.
    pub detail: Option<String>,
}

/// Everything the swimlane chart shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Swimlanes {
    /// Lanes, in order of pod creation; the unknown-pod lane last.
    pub lanes: Vec<Lane>,
    /// Actions in start order.
    pub actions: Vec<ActionMark>,
    /// The x axis: 0 to this, µs from the load's start.
    pub span_us: u64,
}

fn rel(e: &LifecycleEvent, origin_us: u64) -> i64 {
    e.when_us()
        .saturating_sub(i64::try_from(origin_us).unwrap_or(i64::MAX))
}

/// Builds the lanes: phases and ticks from the timeline, failures binned
/// into [`COLUMNS`] pixel columns over `0..span_us`.
pub fn build(
    timeline: &Timeline,
    failures: &[FailurePoint],
    origin_us: u64,
    span_us: u64,
) -> Swimlanes {
    let span_us = span_us.max(1);
    // Pods in order of creation (ties and pods without a creation event keep
    // their first appearance).
    let mut by_pod: HashMap<&str, Vec<&LifecycleEvent>> = HashMap::new();
    for e in &timeline.events {
        if let Some(p) = e.pod.as_deref() {
            by_pod.entry(p).or_default().push(e);
        }
    }
    let mut pods: Vec<(i64, String)> = timeline
        .pods()
        .into_iter()
        .map(|p| {
            let evs = by_pod.get(p.as_str()).map_or(&[][..], |v| v.as_slice());
            let created = evs
                .iter()
                .find(|e| matches!(e.kind, LifecycleKind::PodCreated { .. }))
                .map(|e| e.server_us.unwrap_or_else(|| e.when_us()))
                .or_else(|| evs.iter().map(|e| e.when_us()).min())
                .unwrap_or(i64::MAX);
            (created, p)
        })
        .collect();
    pods.sort_by_key(|(created, _)| *created);
    let end = i64::try_from(span_us).unwrap_or(i64::MAX);
    let mut lanes: Vec<Lane> = pods
        .into_iter()
        .map(|(_, pod)| {
            let mut evs: Vec<&LifecycleEvent> = by_pod.remove(pod.as_str()).unwrap_or_default();
            evs.sort_by_key(|e| e.when_us());
            let mut lane = Lane::new(Some(pod), true);
            phases(&mut lane, &evs, origin_us, end);
            lane
        })
        .collect();

    // Failures: pods the timeline never named get a lane after the others
    // (in order of first failure), unknown pods a lane of their own.
    let mut index: HashMap<String, usize> = lanes
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.pod.clone().map(|p| (p, i)))
        .collect();
    let mut unknown: Option<usize> = None;
    let mut order: Vec<usize> = (0..failures.len()).collect();
    order.sort_by_key(|&i| failures[i].sent_us);
    for i in order {
        let f = &failures[i];
        let lane = match &f.pod {
            Some(p) => *index.entry(p.clone()).or_insert_with(|| {
                lanes.push(Lane::new(Some(p.clone()), false));
                lanes.len() - 1
            }),
            None => *unknown.get_or_insert_with(|| {
                lanes.push(Lane::new(None, false));
                lanes.len() - 1
            }),
        };
        let t = i64::try_from(f.sent_us)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(origin_us).unwrap_or(i64::MAX));
        let col = column(t, span_us);
        let slot = cause_slot(f.cause);
        let l = &mut lanes[lane];
        if l.columns.is_empty() {
            l.columns = vec![[0; SLOTS]; COLUMNS];
        }
        l.columns[col][slot] = l.columns[col][slot].saturating_add(1);
        let tot = &mut l.totals[slot];
        *tot = (tot.0 + 1, tot.1.min(t), tot.2.max(t));
    }
    // The unknown-pod lane goes last.
    if let Some(u) = unknown {
        let lane = lanes.remove(u);
        lanes.push(lane);
    }

    let mut actions: Vec<ActionMark> = Vec::new();
    let mut open: HashMap<usize, usize> = HashMap::new();
    let mut evs: Vec<&LifecycleEvent> = timeline.events.iter().collect();
    evs.sort_by_key(|e| e.when_us());
    for e in evs {
        match &e.kind {
            LifecycleKind::ActionStarted {
                index,
                action,
                target,
            } => {
                open.insert(*index, actions.len());
                actions.push(ActionMark {
                    start_us: rel(e, origin_us),
                    end_us: None,
                    label: format!("{action} {target}"),
                    detail: None,
                });
            }
            LifecycleKind::ActionFinished { index, detail, .. } => {
                if let Some(a) = open.remove(index).and_then(|i| actions.get_mut(i)) {
                    a.end_us = Some(rel(e, origin_us));
                    a.detail = detail.clone();
                }
            }
            _ => {}
        }
    }
    Swimlanes {
        lanes,
        actions,
        span_us,
    }
}

/// The pixel column of a time (µs from the load's start), clamped.
fn column(t_us: i64, span_us: u64) -> usize {
    let frac = t_us as f64 / span_us as f64;
    let c = (frac * (COLUMNS - 1) as f64).floor();
    if c.is_nan() || c < 0.0 {
        0
    } else {
        (c as usize).min(COLUMNS - 1)
    }
}

/// Ends the current phase at `at` (pushing its segment) and starts `next`;
/// nothing happens when `next` is the current phase.
fn switch(lane: &mut Lane, cur: &mut Option<(i64, Phase)>, at: i64, next: Option<Phase>) {
    if let Some((start, phase)) = *cur {
        if next == Some(phase) {
            return;
        }
        if at > start {
            lane.segments.push(Segment {
                start_us: start,
                end_us: at,
                phase,
            });
        }
    }
    *cur = next.map(|p| (at, p));
}

/// Walks one pod's events (sorted) into phase segments and ticks.
fn phases(lane: &mut Lane, evs: &[&LifecycleEvent], origin_us: u64, end: i64) {
    let mut current: Option<(i64, Phase)> = None;
    let mut terminating = false;
    let mut slice_ready = true;
    let mut proxy_ready = true;
    for e in evs {
        let at = rel(e, origin_us);
        let phase_now = current.map(|c| c.1);
        match &e.kind {
            LifecycleKind::PodCreated { .. } if current.is_none() => {
                switch(lane, &mut current, at, Some(Phase::Starting));
            }
            LifecycleKind::ContainerStarted { restart_count }
                if *restart_count > 0 && !terminating =>
            {
                switch(lane, &mut current, at, Some(Phase::Starting));
            }
            LifecycleKind::PodReady if !terminating => {
                switch(lane, &mut current, at, Some(Phase::Ready));
            }
            LifecycleKind::PodNotReady if !terminating => {
                let next = if phase_now == Some(Phase::Ready) || phase_now.is_none() {
                    Phase::NotReady
                } else {
                    phase_now.unwrap_or(Phase::NotReady)
                };
                switch(lane, &mut current, at, Some(next));
            }
            LifecycleKind::DeletionRequested { .. } if !terminating => {
                terminating = true;
                if phase_now != Some(Phase::Exited) {
                    switch(lane, &mut current, at, Some(Phase::Terminating));
                }
            }
            LifecycleKind::PreStopStarted if phase_now != Some(Phase::Exited) => {
                terminating = true;
                switch(lane, &mut current, at, Some(Phase::PreStop));
            }
            LifecycleKind::PreStopFinished if phase_now == Some(Phase::PreStop) => {
                switch(lane, &mut current, at, Some(Phase::Terminating));
            }
            LifecycleKind::SigtermSent if phase_now != Some(Phase::Exited) => {
                terminating = true;
                switch(lane, &mut current, at, Some(Phase::AfterSigterm));
            }
            LifecycleKind::SigkillSent => {
                lane.ticks.push(Tick {
                    at_us: at,
                    kind: TickKind::Sigkill,
                });
            }
            LifecycleKind::ContainerExited { .. } => {
                switch(lane, &mut current, at, Some(Phase::Exited));
            }
            LifecycleKind::PodDeleted => {
                switch(lane, &mut current, at, None);
            }
            LifecycleKind::EndpointChanged {
                ready, terminating, ..
            } => {
                let down = !*ready || *terminating;
                if down && slice_ready {
                    lane.ticks.push(Tick {
                        at_us: at,
                        kind: TickKind::SliceNotReady,
                    });
                }
                slice_ready = !down;
            }
            LifecycleKind::EndpointRemoved => {
                lane.ticks.push(Tick {
                    at_us: at,
                    kind: TickKind::SliceRemoved,
                });
                slice_ready = false;
            }
            LifecycleKind::ProxyApplied { present, ready, .. } => {
                if !*present {
                    lane.ticks.push(Tick {
                        at_us: at,
                        kind: TickKind::ProxyRemoved,
                    });
                    proxy_ready = false;
                } else if !*ready {
                    if proxy_ready {
                        lane.ticks.push(Tick {
                            at_us: at,
                            kind: TickKind::ProxyNotReady,
                        });
                    }
                    proxy_ready = false;
                } else {
                    proxy_ready = true;
                }
            }
            _ => {}
        }
    }
    switch(lane, &mut current, end.max(0), None);
    lane.ticks.sort_by_key(|t| t.at_us);
}

/// A pixel figure with at most one decimal (short, stable SVG).
fn px(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    fmt_num(if r == 0.0 { 0.0 } else { r })
}

fn hex((r, g, b): Rgb) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

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
        let cause = super::rollout::slot_cause(slot);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rolltest_core::model::{ErrorKind, EventSource};

    fn ev(at_ms: u64, pod: &str, kind: LifecycleKind) -> LifecycleEvent {
        LifecycleEvent {
            at_us: at_ms * 1000,
            server_us: None,
            pod: Some(pod.into()),
            source: EventSource::Pod,
            kind,
        }
    }

    fn timeline() -> Timeline {
        let created = || LifecycleKind::PodCreated {
            replicaset: None,
            template_hash: None,
        };
        let mut t = Timeline {
            events: vec![
                ev(1_000, "new", created()),
                ev(0, "old", created()),
                ev(100, "old", LifecycleKind::PodReady),
                ev(3_000, "new", LifecycleKind::PodReady),
                ev(
                    4_000,
                    "old",
                    LifecycleKind::DeletionRequested { grace_seconds: 30 },
                ),
                ev(4_000, "old", LifecycleKind::PreStopStarted),
                ev(
                    4_010,
                    "old",
                    LifecycleKind::EndpointChanged {
                        ready: false,
                        serving: true,
                        terminating: true,
                    },
                ),
                ev(
                    4_020,
                    "old",
                    LifecycleKind::EndpointChanged {
                        ready: false,
                        serving: false,
                        terminating: true,
                    },
                ),
                ev(
                    5_500,
                    "old",
                    LifecycleKind::ProxyApplied {
                        present: true,
                        ready: false,
                        serving: true,
                        terminating: true,
                    },
                ),
                ev(5_000, "old", LifecycleKind::PreStopFinished),
                ev(5_000, "old", LifecycleKind::SigtermSent),
                ev(
                    6_000,
                    "old",
                    LifecycleKind::ContainerExited {
                        exit_code: Some(0),
                        signal: None,
                        reason: None,
                    },
                ),
                ev(6_500, "old", LifecycleKind::PodDeleted),
            ],
        };
        t.events.push(LifecycleEvent {
            at_us: 3_900_000,
            server_us: None,
            pod: None,
            source: EventSource::Action,
            kind: LifecycleKind::ActionStarted {
                index: 0,
                action: "delete-pod".into(),
                target: "pod old".into(),
            },
        });
        t.sort();
        t
    }

    #[test]
    fn phases_follow_the_lifecycle() {
        let s = build(&timeline(), &[], 0, 10_000_000);
        let names: Vec<_> = s.lanes.iter().map(|l| l.pod.as_deref()).collect();
        assert_eq!(names, [Some("old"), Some("new")], "ordered by creation");
        let old: Vec<_> = s.lanes[0]
            .segments
            .iter()
            .map(|g| (g.start_us / 1000, g.end_us / 1000, g.phase))
            .collect();
        assert_eq!(
            old,
            [
                (0, 100, Phase::Starting),
                (100, 4_000, Phase::Ready),
                (4_000, 5_000, Phase::PreStop),
                (5_000, 6_000, Phase::AfterSigterm),
                (6_000, 6_500, Phase::Exited),
            ]
        );
        // Only the first "down" of the slice is a tick; the proxy's not-ready too.
        let ticks: Vec<_> = s.lanes[0]
            .ticks
            .iter()
            .map(|t| (t.at_us / 1000, t.kind))
            .collect();
        assert_eq!(
            ticks,
            [
                (4_010, TickKind::SliceNotReady),
                (5_500, TickKind::ProxyNotReady)
            ]
        );
        // The new pod is Ready to the end of the axis.
        assert_eq!(
            s.lanes[1].segments.last(),
            Some(&Segment {
                start_us: 3_000_000,
                end_us: 10_000_000,
                phase: Phase::Ready
            })
        );
        assert_eq!(s.actions.len(), 1);
        assert_eq!(s.actions[0].label, "delete-pod pod old");
        assert_eq!(s.actions[0].end_us, None);
    }

    #[test]
    fn failures_are_binned_per_lane_and_cause() {
        let f = |ms: u64, pod: Option<&str>, cause| FailurePoint {
            sent_us: 2_000_000 + ms * 1000,
            pod: pod.map(str::to_string),
            cause,
            kind: ErrorKind::ConnectRefused,
        };
        let mut failures = vec![
            f(0, Some("old"), Some(Cause::EndpointLag)),
            f(1, Some("old"), Some(Cause::EndpointLag)),
            f(2, Some("old"), Some(Cause::KilledInFlight)),
            f(3, None, None),
            f(4, Some("stranger"), Some(Cause::Capacity)),
            // Before the load's start and after the axis: clamped.
            FailurePoint {
                sent_us: 0,
                ..f(0, Some("new"), Some(Cause::NotReady))
            },
            f(99_000, Some("new"), Some(Cause::NotReady)),
        ];
        failures.reverse();
        let s = build(&timeline(), &failures, 1_000_000, 10_000_000);
        let names: Vec<_> = s.lanes.iter().map(|l| l.pod.as_deref()).collect();
        assert_eq!(names, [Some("old"), Some("new"), Some("stranger"), None]);
        let old = &s.lanes[0];
        assert_eq!(old.failures(), 3);
        let col = column(1_000_000, 10_000_000);
        assert_eq!(old.columns[col][cause_slot(Some(Cause::EndpointLag))], 2);
        assert_eq!(old.columns[col][cause_slot(Some(Cause::KilledInFlight))], 1);
        assert_eq!(
            old.totals[cause_slot(Some(Cause::EndpointLag))],
            (2, 1_000_000, 1_001_000)
        );
        let new = &s.lanes[1];
        assert_eq!(new.columns[0][cause_slot(Some(Cause::NotReady))], 1);
        assert_eq!(
            new.columns[COLUMNS - 1][cause_slot(Some(Cause::NotReady))],
            1
        );
        assert!(!s.lanes[2].in_timeline);
        assert_eq!(s.lanes[3].totals[cause_slot(None)].0, 1);
        let svg = draw(&s);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("unknown pod"));
        assert!(svg.contains("2 failed requests on old, cause endpoint_lag"));
    }

    #[test]
    fn long_names_are_shortened_keeping_the_tail() {
        assert_eq!(short_name("api-6f7c9d84b5-k2x8p"), "api-6f7c9d84b5-k2x8p");
        let long = "payments-gateway-internal-canary-7d9f8c6b5d-x2k9q";
        let s = short_name(long);
        assert_eq!(s.chars().count(), MAX_LABEL);
        assert!(s.ends_with("-7d9f8c6b5d-x2k9q"), "{s}");
        assert!(s.starts_with("payments-gateway"), "{s}");
        let odd = "a".repeat(80);
        assert_eq!(short_name(&odd).chars().count(), MAX_LABEL);
    }
}
