//! Per-pod facts from the timeline and the capacity shortfall intervals.
//!
//! Every time is `LifecycleEvent::when_us()` (the server's `eventTime` where
//! it is precise, else the local observation; the instant itself for the
//! embedded kubelet's exact record), as `i64` µs on the run clock.
//!
//! A pod's termination steps (preStop, SIGTERM, SIGKILL, exit) come from
//! the embedded kubelet's exact record (`EventSource::Kubelet`) when the
//! timeline has one for the pod, else from what any kubelet publishes: the
//! steps the timeline infers from `Killing` and `FailedPreStopHook`, and the
//! exit in the pod status.

use std::collections::HashMap;

use crate::model::{EventSource, LifecycleKind, PodPropagation, Timeline};

/// Where a moment lies, `[lo, hi]` µs on the run clock: an instant when
/// the source is exact (the embedded kubelet's record, a precise
/// `eventTime`), a second when the server cut its timestamp to seconds (a
/// real kubelet's `lastTimestamp`, a container's `finishedAt`), and wider
/// where the moment itself is not published (SIGTERM after a preStop hook of
/// unknown length: between the `Killing` event and the exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// The earliest it can have been.
    pub lo: i64,
    /// The latest it can have been.
    pub hi: i64,
}

impl Window {
    /// An instant.
    #[cfg(test)]
    pub fn at(t: i64) -> Window {
        Window { lo: t, hi: t }
    }

    /// Whether it is an instant (within a millisecond).
    pub fn exact(self) -> bool {
        self.hi - self.lo < 1_000
    }
}

/// What the timeline says about one pod.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodFacts {
    /// The pod's name.
    pub name: String,
    /// `[PodReady, PodNotReady)` intervals; an open one ends at `i64::MAX`.
    pub ready: Vec<(i64, i64)>,
    /// `deletionTimestamp` was set (first observation).
    pub deletion: Option<i64>,
    /// SIGTERM sent as part of termination.
    pub sigterm: Option<Window>,
    /// The preStop hook started / finished.
    pub prestop: (Option<Window>, Option<Window>),
    /// SIGKILL at the grace deadline.
    pub sigkill: Option<Window>,
    /// The container exited as part of termination, with its code / signal.
    pub exit: Option<(Window, Option<i32>, Option<i32>)>,
    /// Exits without a deletion before them (crashes, liveness restarts).
    pub crash_exits: Vec<(Window, Option<i32>)>,
    /// The EndpointSlice stopped listing it as ready, after the deletion.
    pub slice_unready: Option<i64>,
    /// The embedded proxy applied its removal (not ready or gone), after the
    /// deletion.
    pub proxy_removed: Option<i64>,
    /// The steps come from the embedded kubelet's exact record.
    pub exact: bool,
}

impl PodFacts {
    /// When the pod stopped serving new traffic as part of termination: the
    /// earlier of SIGTERM and the exit (an app that drains closes its
    /// listener on SIGTERM; one that ignores it serves until it dies).
    pub fn stop(&self) -> Option<Window> {
        match (self.sigterm, self.gone()) {
            (Some(a), Some(b)) => Some(Window {
                lo: a.lo.min(b.lo),
                hi: a.hi.min(b.hi),
            }),
            (a, b) => a.or(b),
        }
    }

    /// When the process ended as part of termination: the exit, else the
    /// SIGKILL.
    pub fn gone(&self) -> Option<Window> {
        self.exit.map(|e| e.0).or(self.sigkill)
    }

    /// The last moment a proxy may route new traffic to the pod after its
    /// deletion: the embedded proxy's removal, else the slice update plus the
    /// allowance for node proxies to follow it. `None`: never seen removed.
    pub fn routed_until(&self, allowance: i64) -> Option<i64> {
        self.proxy_removed
            .or(self.slice_unready.map(|s| s.saturating_add(allowance)))
    }

    /// The start of the latest ready interval that began at or before `t`.
    pub fn ready_since(&self, t: i64) -> Option<i64> {
        self.ready
            .iter()
            .rev()
            .find(|(start, _)| *start <= t)
            .map(|(start, _)| *start)
    }

    /// Whether the pod has any readiness fact at all.
    pub fn has_readiness(&self) -> bool {
        !self.ready.is_empty()
    }

    /// A crash exit (no deletion) whose window meets `[a, b]`.
    pub fn crash_between(&self, a: i64, b: i64) -> Option<&(Window, Option<i32>)> {
        self.crash_exits.iter().find(|x| x.0.lo <= b && x.0.hi >= a)
    }
}

/// Ready endpoints below the desired replicas (or none at all), over
/// `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deficit {
    /// Start (µs).
    pub start: i64,
    /// End (µs, `i64::MAX`: until the end of the run).
    pub end: i64,
    /// The fewest ready endpoints in the interval.
    pub min_ready: u32,
    /// The desired replicas (the most in the interval), when known.
    pub desired: Option<i32>,
}

/// Everything the rules read from the timeline.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    /// Per pod, in order of first appearance.
    pub pods: Vec<PodFacts>,
    index: HashMap<String, usize>,
    /// Capacity shortfall intervals, sorted and disjoint.
    pub deficits: Vec<Deficit>,
    /// The ready endpoint count over time (a step function), sorted.
    ready_count: Vec<(i64, u32)>,
}

impl Facts {
    /// Reads the timeline. `slack` (µs) tolerates events of one termination
    /// observed slightly out of order (a kubelet event's `eventTime` a few
    /// ms before the pod watch saw the deletion).
    pub fn build(timeline: &Timeline, slack: u64) -> Facts {
        let slack = i64::try_from(slack).unwrap_or(i64::MAX);
        let mut events: Vec<(i64, usize)> = timeline
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.when_us(), i))
            .collect();
        events.sort_unstable();

        let mut facts = Facts::default();
        // Raw per-pod lists, resolved against the deletion afterwards.
        let mut raw: Vec<Raw> = Vec::new();
        let mut ready_series: Vec<(i64, u32)> = Vec::new();
        let mut view_series: Vec<(i64, u32)> = Vec::new();
        let mut desired_series: Vec<(i64, i32)> = Vec::new();
        for &(t, i) in &events {
            let e = &timeline.events[i];
            match &e.kind {
                LifecycleKind::ProxyView { ready, .. } => view_series.push((t, *ready)),
                LifecycleKind::EndpointsCount { ready, .. } => ready_series.push((t, *ready)),
                LifecycleKind::DeploymentStatus { replicas, .. } => {
                    desired_series.push((t, *replicas))
                }
                _ => {}
            }
            let Some(pod) = e.pod.as_deref() else {
                continue;
            };
            let idx = facts.pod_index_or_insert(pod);
            if raw.len() <= idx {
                raw.resize_with(idx + 1, Raw::default);
            }
            let (p, r) = (&mut facts.pods[idx], &mut raw[idx]);
            match &e.kind {
                LifecycleKind::PodReady if p.ready.last().is_none_or(|iv| iv.1 != i64::MAX) => {
                    p.ready.push((t, i64::MAX));
                }
                LifecycleKind::PodNotReady => {
                    if let Some(iv) = p.ready.last_mut()
                        && iv.1 == i64::MAX
                    {
                        iv.1 = t;
                    }
                }
                LifecycleKind::DeletionRequested { .. } => {
                    p.deletion = Some(p.deletion.map_or(t, |d| d.min(t)));
                }
                LifecycleKind::SigtermSent => r.steps(e.source).sigterms.push(window(e)),
                LifecycleKind::SigkillSent => r.steps(e.source).sigkills.push(window(e)),
                LifecycleKind::PreStopStarted => r.steps(e.source).prestop_starts.push(window(e)),
                LifecycleKind::PreStopFinished => r.steps(e.source).prestop_ends.push(window(e)),
                LifecycleKind::ContainerExited {
                    exit_code, signal, ..
                } => r
                    .steps(e.source)
                    .exits
                    .push((window(e), *exit_code, *signal)),
                LifecycleKind::EndpointChanged { ready: false, .. }
                | LifecycleKind::EndpointRemoved => r.slice_unready.push(t),
                LifecycleKind::ProxyApplied { present, ready, .. } if !*present || !*ready => {
                    r.proxy_removed.push(t)
                }
                _ => {}
            }
        }
        for (p, r) in facts.pods.iter_mut().zip(raw) {
            r.resolve(p, slack);
        }
        let ready = if view_series.is_empty() {
            ready_series
        } else {
            view_series
        };
        facts.deficits = deficits(&ready, &desired_series);
        facts.ready_count = ready;
        facts
    }

    /// The ready endpoint count at `t` (the last change at or before it),
    /// if any was seen by then.
    pub fn ready_at(&self, t: i64) -> Option<u32> {
        let n = self.ready_count.partition_point(|x| x.0 <= t);
        self.ready_count.get(n.checked_sub(1)?).map(|x| x.1)
    }

    fn pod_index_or_insert(&mut self, pod: &str) -> usize {
        if let Some(&i) = self.index.get(pod) {
            return i;
        }
        let i = self.pods.len();
        self.pods.push(PodFacts {
            name: pod.to_owned(),
            ..PodFacts::default()
        });
        self.index.insert(pod.to_owned(), i);
        i
    }

    /// The facts of one pod, if the timeline names it.
    pub fn pod(&self, name: &str) -> Option<&PodFacts> {
        self.index.get(name).map(|&i| &self.pods[i])
    }

    /// The shortfall interval overlapping `[a, b]`, if any (the latest one).
    pub fn deficit_overlapping(&self, a: i64, b: i64) -> Option<&Deficit> {
        let n = self.deficits.partition_point(|d| d.start <= b);
        let d = self.deficits.get(n.checked_sub(1)?)?;
        (d.end > a).then_some(d)
    }

    /// Deletion → slice → proxy, per deleted pod, by deletion time.
    pub fn propagation(&self) -> Vec<PodPropagation> {
        let mut out: Vec<PodPropagation> = self
            .pods
            .iter()
            .filter_map(|p| {
                let d = p.deletion?;
                Some(PodPropagation {
                    pod: p.name.clone(),
                    deletion_us: to_u64(d),
                    slice_us: p.slice_unready.map(to_u64),
                    proxy_us: p.proxy_removed.map(to_u64),
                })
            })
            .collect();
        out.sort_by(|a, b| a.deletion_us.cmp(&b.deletion_us).then(a.pod.cmp(&b.pod)));
        out
    }
}

/// A run-clock time as `u64` (negative times clamp to 0).
pub(crate) fn to_u64(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

/// A pod's termination steps from one kind of source.
#[derive(Debug, Default)]
struct Steps {
    sigterms: Vec<Window>,
    sigkills: Vec<Window>,
    prestop_starts: Vec<Window>,
    prestop_ends: Vec<Window>,
    exits: Vec<(Window, Option<i32>, Option<i32>)>,
}

impl Steps {
    fn is_empty(&self) -> bool {
        self.sigterms.is_empty()
            && self.sigkills.is_empty()
            && self.prestop_starts.is_empty()
            && self.prestop_ends.is_empty()
            && self.exits.is_empty()
    }
}

/// Events of one pod before they are resolved against its deletion.
#[derive(Debug, Default)]
struct Raw {
    /// What a kubelet publishes, real or embedded: steps inferred from its
    /// Events (`Killing`, `FailedPreStopHook`), exits from the pod status.
    inferred: Steps,
    /// The embedded kubelet's exact record (`EventSource::Kubelet`).
    exact: Steps,
    slice_unready: Vec<i64>,
    proxy_removed: Vec<i64>,
}

impl Raw {
    fn steps(&mut self, source: EventSource) -> &mut Steps {
        match source {
            EventSource::Kubelet => &mut self.exact,
            _ => &mut self.inferred,
        }
    }

    /// Keeps the first of each termination step at or after the deletion
    /// (minus `slack`); exits before it are crashes. Without a deletion
    /// nothing is termination: a SIGTERM then is a liveness restart. The
    /// steps come from the embedded kubelet's exact record when the pod has
    /// one, else from what a kubelet publishes.
    fn resolve(self, p: &mut PodFacts, slack: i64) {
        let exact = !self.exact.is_empty();
        let steps = if exact { self.exact } else { self.inferred };
        p.exact = exact;
        let Some(d) = p.deletion else {
            p.crash_exits = steps.exits.iter().map(|e| (e.0, e.1)).collect();
            return;
        };
        let from = d.saturating_sub(slack);
        let first = |v: &[Window]| v.iter().copied().find(|w| w.hi >= from);
        let first_t = |v: &[i64]| v.iter().copied().find(|&t| t >= from);
        p.sigterm = first(&steps.sigterms);
        p.sigkill = first(&steps.sigkills);
        p.prestop = (first(&steps.prestop_starts), first(&steps.prestop_ends));
        p.slice_unready = first_t(&self.slice_unready);
        p.proxy_removed = first_t(&self.proxy_removed);
        p.exit = steps.exits.iter().copied().find(|e| e.0.hi >= from);
        p.crash_exits = steps
            .exits
            .iter()
            .filter(|e| e.0.hi < from)
            .map(|e| (e.0, e.1))
            .collect();
        // Seconds timestamps can reach back before the deletion they follow
        // (the exit's finishedAt second began earlier): no step of the
        // termination precedes the deletion, and the exit none of the steps.
        if !exact {
            let floor = |w: &mut Window, t: i64| w.lo = w.lo.max(t).min(w.hi);
            for w in [
                &mut p.sigterm,
                &mut p.sigkill,
                &mut p.prestop.0,
                &mut p.prestop.1,
            ]
            .into_iter()
            .flatten()
            {
                floor(w, d);
            }
            let after = [p.sigterm, p.prestop.0, p.prestop.1, p.sigkill]
                .into_iter()
                .flatten()
                .map(|w| w.lo)
                .fold(d, i64::max);
            if let Some(e) = &mut p.exit {
                floor(&mut e.0, after);
            }
        }
        // A real kubelet publishes no SIGTERM after a preStop hook: it comes
        // when the hook ends (FailedPreStopHook says when it failed), and
        // before the exit; no earlier than the deletion either way.
        if p.sigterm.is_none()
            && !exact
            && let (Some(start), Some(gone)) = (p.prestop.1.or(p.prestop.0), p.gone())
        {
            p.sigterm = Some(Window {
                lo: start.lo.max(d).min(gone.hi),
                hi: gone.hi,
            });
        }
    }
}

/// Where an event's transition lies (see `LifecycleEvent::window`).
fn window(e: &crate::model::LifecycleEvent) -> Window {
    let (lo, hi) = e.window();
    Window { lo, hi }
}

/// The intervals where the ready count (a step function) was below the
/// desired replicas (another one), or zero.
fn deficits(ready: &[(i64, u32)], desired: &[(i64, i32)]) -> Vec<Deficit> {
    let mut out: Vec<Deficit> = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (mut cur_ready, mut cur_desired): (Option<u32>, Option<i32>) = (None, None);
    while i < ready.len() || j < desired.len() {
        let t = match (ready.get(i), desired.get(j)) {
            (Some(a), Some(b)) => a.0.min(b.0),
            (Some(a), None) => a.0,
            (None, Some(b)) => b.0,
            (None, None) => break,
        };
        while let Some(&(rt, v)) = ready.get(i)
            && rt == t
        {
            cur_ready = Some(v);
            i += 1;
        }
        while let Some(&(dt, v)) = desired.get(j)
            && dt == t
        {
            cur_desired = Some(v);
            j += 1;
        }
        let short = match cur_ready {
            Some(r) => r == 0 || cur_desired.is_some_and(|d| i64::from(r) < i64::from(d)),
            None => false,
        };
        let open = out.last_mut().filter(|d| d.end == i64::MAX);
        match (short, open) {
            (true, Some(d)) => {
                d.min_ready = d.min_ready.min(cur_ready.unwrap_or(0));
                d.desired = d.desired.max(cur_desired);
            }
            (true, None) => out.push(Deficit {
                start: t,
                end: i64::MAX,
                min_ready: cur_ready.unwrap_or(0),
                desired: cur_desired,
            }),
            (false, Some(d)) => d.end = t,
            (false, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deficits_follow_ready_below_desired() {
        let ready = [(0, 3), (10, 2), (20, 3), (30, 0), (40, 3)];
        let desired = [(0, 3)];
        let d = deficits(&ready, &desired);
        assert_eq!(
            d,
            vec![
                Deficit {
                    start: 10,
                    end: 20,
                    min_ready: 2,
                    desired: Some(3)
                },
                Deficit {
                    start: 30,
                    end: 40,
                    min_ready: 0,
                    desired: Some(3)
                },
            ]
        );
    }

    #[test]
    fn the_exact_record_wins_over_the_inferred_steps() {
        use crate::model::LifecycleEvent;
        let ev = |at_us, source, kind| LifecycleEvent {
            at_us,
            server_us: None,
            server_precision_us: None,
            pod: Some("api-1".into()),
            source,
            kind,
        };
        let exit = |code| LifecycleKind::ContainerExited {
            exit_code: Some(code),
            signal: None,
            reason: None,
        };
        let mut timeline = Timeline {
            events: vec![
                ev(
                    100,
                    EventSource::Pod,
                    LifecycleKind::DeletionRequested { grace_seconds: 30 },
                ),
                ev(110, EventSource::Kubelet, LifecycleKind::SigtermSent),
                ev(130, EventSource::Event, LifecycleKind::SigtermSent),
                ev(200, EventSource::Kubelet, exit(143)),
                ev(1_200, EventSource::Pod, exit(143)),
            ],
        };
        let f = Facts::build(&timeline, 0);
        let p = f.pod("api-1").expect("pod");
        assert_eq!(
            (p.sigterm, p.exit.map(|e| e.0)),
            (Some(Window::at(110)), Some(Window::at(200)))
        );
        assert!(p.exact);
        // Without the exact record: what a real kubelet lets it infer.
        timeline.events.retain(|e| e.source != EventSource::Kubelet);
        let f = Facts::build(&timeline, 0);
        let p = f.pod("api-1").expect("pod");
        assert_eq!(
            (p.sigterm, p.exit.map(|e| e.0)),
            (Some(Window::at(130)), Some(Window::at(1_200)))
        );
        assert!(!p.exact);
    }

    #[test]
    fn after_a_prestop_hook_sigterm_is_an_interval_up_to_the_exit() {
        use crate::model::LifecycleEvent;
        let s: i64 = 1_000_000;
        let ev = |at: i64, server_us, source, kind| LifecycleEvent {
            at_us: u64::try_from(at).expect("a time on the run clock"),
            server_us,
            server_precision_us: (source == EventSource::Event).then_some(1_000_000),
            pod: Some("api-1".into()),
            source,
            kind,
        };
        let timeline = Timeline {
            events: vec![
                ev(
                    4 * s + 20_000,
                    None,
                    EventSource::Pod,
                    LifecycleKind::DeletionRequested { grace_seconds: 30 },
                ),
                // Killing (lastTimestamp 4 s, seen at 4.03 s): the hook starts.
                ev(
                    4 * s + 30_000,
                    Some(4 * s),
                    EventSource::Event,
                    LifecycleKind::PreStopStarted,
                ),
                // finishedAt 7 s, seen at 7.9 s (the relist).
                ev(
                    7 * s + 900_000,
                    Some(7 * s),
                    EventSource::Pod,
                    LifecycleKind::ContainerExited {
                        exit_code: Some(0),
                        signal: None,
                        reason: None,
                    },
                ),
            ],
        };
        let f = Facts::build(&timeline, 0);
        let p = f.pod("api-1").expect("pod");
        // Its second began before the deletion, which it follows.
        assert_eq!(
            p.prestop.0,
            Some(Window {
                lo: 4 * s + 20_000,
                hi: 4 * s + 30_000
            })
        );
        assert_eq!(
            p.exit.map(|e| e.0),
            Some(Window {
                lo: 7 * s,
                hi: 7 * s + 900_000
            })
        );
        // SIGTERM: after the deletion and the hook's start, by the exit.
        assert_eq!(
            p.sigterm,
            Some(Window {
                lo: 4 * s + 20_000,
                hi: 7 * s + 900_000
            })
        );
        assert!(!p.sigterm.expect("sigterm").exact());

        // finishedAt 4 s for an exit seen at 4.5 s, after a deletion seen at
        // 4.02 s: the exit's window starts at the deletion, not before it.
        let mut early = timeline.clone();
        for e in &mut early.events {
            if matches!(e.kind, LifecycleKind::ContainerExited { .. }) {
                e.at_us = 4_500_000;
                e.server_us = Some(4 * s);
            }
        }
        let f = Facts::build(&early, 0);
        let p = f.pod("api-1").expect("pod");
        assert_eq!(
            p.exit.map(|e| e.0),
            Some(Window {
                lo: 4 * s + 20_000,
                hi: 4 * s + 500_000
            })
        );
    }

    #[test]
    fn zero_ready_is_a_deficit_without_desired() {
        let d = deficits(&[(5, 1), (7, 0)], &[]);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].start, d[0].end, d[0].min_ready), (7, i64::MAX, 0));
    }
}
