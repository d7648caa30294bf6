//! Timeline and failures → lane data: each pod's phases and ticks, its
//! failures binned into pixel columns, the actions.

use std::collections::HashMap;

use rolltest_core::model::{LifecycleEvent, LifecycleKind, Timeline};

use crate::{html::palette::cause_slot, report::failure::FailurePoint};

use super::*;

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
pub(super) fn column(t_us: i64, span_us: u64) -> usize {
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
