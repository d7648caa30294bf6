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

use crate::html::{Rgb, fmt_num, palette::SLOTS};

use super::charts;

mod build;
mod draw;
#[cfg(test)]
mod tests;

pub use build::build;
pub use draw::draw;

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

/// A pixel figure with at most one decimal (short, stable SVG).
fn px(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    fmt_num(if r == 0.0 { 0.0 } else { r })
}
