//! The run's timed phases as a state machine: from the start of the load to
//! the last request in flight.
//!
//! ```text
//! Loading ──asked duration over──► Acting ──actions done──► Settling ──settled──► Tail ──► Draining ─► Finishing
//!    │        (actions end as they may)  │ settle_timeout:        │ (only with actions)   │
//!    │                                   │ problem, abort them    │ not settled: problem  │
//!    └──────────── Ctrl-C (any phase before Draining) ─────────────────────────────────► Draining (interrupted)
//! ```
//!
//! A plain load is the same machine with no actions, no rollout to wait for
//! and no tail: `Loading` for the asked duration, then `Draining` while the
//! generator finishes its schedule and the requests in flight. What the
//! phases act on (the generator, the actions, the rollout) is a
//! [`Window`], so the transitions are tested on a fake with paused time.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

use crate::events::{Events, Phase, RunEvent};

/// When the phases end.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    /// The end of the asked duration.
    pub asked_end: Instant,
    /// How long after `asked_end` the actions and the rollout may take.
    pub settle_timeout: Duration,
    /// Whether to wait for the rollout to settle (the run has actions).
    pub settle: bool,
    /// How long the load goes on once settled.
    pub tail: Duration,
}

/// How an action ended, for the terminal and the problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ActionEnd {
    /// It did what it was asked: the line says what.
    Done(String),
    /// It failed: the problem says how.
    Failed(String),
    /// It was aborted (no report).
    Cancelled,
}

/// What the phases act on.
pub(super) trait Window {
    /// Actions not yet ended.
    fn actions_left(&self) -> usize;
    /// Waits for the next action to end (only called while some are left).
    fn next_action(&mut self) -> impl Future<Output = ActionEnd>;
    /// Aborts the actions still running.
    fn abort_actions(&mut self);
    /// Waits (at most `within`) for the rollout to settle: a line on
    /// success, the problem otherwise.
    fn settle(&mut self, within: Duration) -> impl Future<Output = Result<String, String>>;
    /// Ends the schedule now: `interrupted` (Ctrl-C) or complete.
    fn stop_load(&mut self, interrupted: bool);
    /// Whether the generator has finished (schedule and requests in flight).
    fn load_finished(&self) -> bool;
}

/// How the timed phases ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Every phase ran.
    Complete,
    /// Ctrl-C.
    Interrupted,
}

/// How often `Draining` looks whether the generator has finished.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Runs the phases from `Loading` to `Finishing`, sending each phase, action
/// and problem to `events`. `interrupt` resolves on Ctrl-C.
pub(super) async fn drive<W: Window>(
    plan: Plan,
    window: &mut W,
    interrupt: impl Future<Output = ()>,
    events: &Events,
    drain_note: &str,
) -> End {
    let mut interrupt = std::pin::pin!(interrupt);
    let settle_deadline = plan.asked_end + plan.settle_timeout;
    let mut phase = Phase::Loading;
    let mut entered = None;
    let mut end = End::Complete;
    loop {
        if entered != Some(phase) {
            events.phase(phase);
            entered = Some(phase);
        }
        phase = match phase {
            Phase::Loading => tokio::select! {
                () = &mut interrupt => {
                    end = End::Interrupted;
                    Phase::Draining
                }
                () = tokio::time::sleep_until(plan.asked_end) => next(Phase::Loading, &plan, window),
                done = window.next_action(), if window.actions_left() > 0 => {
                    report(events, done);
                    Phase::Loading
                }
            },
            Phase::Acting if window.actions_left() == 0 => next(Phase::Acting, &plan, window),
            Phase::Acting => tokio::select! {
                () = &mut interrupt => {
                    end = End::Interrupted;
                    Phase::Draining
                }
                () = tokio::time::sleep_until(settle_deadline) => {
                    events.problem(format!(
                        "{} action(s) still running after settle_timeout ({})",
                        window.actions_left(),
                        humantime::format_duration(plan.settle_timeout)
                    ));
                    window.abort_actions();
                    next(Phase::Acting, &plan, window)
                }
                done = window.next_action() => {
                    report(events, done);
                    Phase::Acting
                }
            },
            Phase::Settling => {
                let left = settle_deadline.saturating_duration_since(Instant::now());
                tokio::select! {
                    () = &mut interrupt => {
                        end = End::Interrupted;
                        Phase::Draining
                    }
                    settled = window.settle(left.max(Duration::from_secs(1))) => {
                        match settled {
                            Ok(line) => events.note(line),
                            Err(problem) => events.problem(problem),
                        }
                        next(Phase::Settling, &plan, window)
                    }
                }
            }
            Phase::Tail => tokio::select! {
                () = &mut interrupt => {
                    end = End::Interrupted;
                    Phase::Draining
                }
                () = tokio::time::sleep(plan.tail) => Phase::Draining,
            },
            Phase::Draining => {
                window.abort_actions();
                window.stop_load(end == End::Interrupted);
                if end == End::Interrupted {
                    events.note(drain_note);
                }
                while !window.load_finished() {
                    tokio::select! {
                        () = &mut interrupt, if end == End::Complete => {
                            end = End::Interrupted;
                            window.stop_load(true);
                            events.note(drain_note);
                        }
                        () = tokio::time::sleep(DRAIN_POLL) => {}
                    }
                }
                Phase::Finishing
            }
            Phase::Finishing => return end,
            Phase::StartingCluster | Phase::Applying | Phase::WaitingReady | Phase::WarmingUp => {
                Phase::Loading
            }
        };
    }
}

/// The phase after `phase` ends, skipping those with nothing to do: no
/// actions left (`Acting`), no rollout to wait for (`Settling`), no tail.
fn next<W: Window>(phase: Phase, plan: &Plan, window: &W) -> Phase {
    let mut candidate = match phase {
        Phase::Loading => Phase::Acting,
        Phase::Acting => Phase::Settling,
        Phase::Settling => Phase::Tail,
        _ => Phase::Draining,
    };
    loop {
        candidate = match candidate {
            Phase::Acting if window.actions_left() == 0 => Phase::Settling,
            Phase::Settling if !plan.settle => Phase::Tail,
            Phase::Tail if plan.tail.is_zero() => Phase::Draining,
            other => return other,
        };
    }
}

fn report(events: &Events, done: ActionEnd) {
    match done {
        ActionEnd::Done(line) => events.send(RunEvent::Action { line }),
        ActionEnd::Failed(problem) => {
            events.send(RunEvent::Action {
                line: problem.clone(),
            });
            events.problem(problem);
        }
        ActionEnd::Cancelled => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake: actions end at fixed offsets, the rollout settles at one, the
    /// generator finishes `drain` after it is stopped.
    struct Fake {
        start: Instant,
        actions: Vec<(Duration, ActionEnd)>,
        settles_at: Option<Duration>,
        drain: Duration,
        stopped: Option<(Instant, bool)>,
        aborted: bool,
    }

    impl Fake {
        fn new(actions: Vec<(Duration, ActionEnd)>, settles_at: Option<Duration>) -> Fake {
            Fake {
                start: Instant::now(),
                actions,
                settles_at,
                drain: Duration::from_millis(300),
                stopped: None,
                aborted: false,
            }
        }
    }

    impl Window for Fake {
        fn actions_left(&self) -> usize {
            self.actions.len()
        }
        async fn next_action(&mut self) -> ActionEnd {
            let (at, _) = self.actions[0];
            tokio::time::sleep_until(self.start + at).await;
            self.actions.remove(0).1
        }
        fn abort_actions(&mut self) {
            if !self.actions.is_empty() {
                self.aborted = true;
            }
            self.actions.clear();
        }
        async fn settle(&mut self, within: Duration) -> Result<String, String> {
            let deadline = Instant::now() + within;
            match self.settles_at {
                Some(at) if self.start + at <= deadline => {
                    tokio::time::sleep_until(self.start + at).await;
                    Ok("settled".into())
                }
                _ => {
                    tokio::time::sleep_until(deadline).await;
                    Err("the rollout did not settle".into())
                }
            }
        }
        fn stop_load(&mut self, interrupted: bool) {
            match &mut self.stopped {
                Some((_, i)) => *i |= interrupted,
                None => self.stopped = Some((Instant::now(), interrupted)),
            }
        }
        fn load_finished(&self) -> bool {
            self.stopped
                .is_some_and(|(at, _)| Instant::now() >= at + self.drain)
        }
    }

    fn plan(start: Instant, settle: bool) -> Plan {
        Plan {
            asked_end: start + Duration::from_secs(10),
            settle_timeout: Duration::from_secs(20),
            settle,
            tail: Duration::from_secs(2),
        }
    }

    /// Runs the machine; returns its end, the phases entered with their
    /// offsets (whole ms), and every other event.
    async fn run(
        fake: &mut Fake,
        plan: Plan,
        interrupt_at: Option<Duration>,
    ) -> (End, Vec<(Phase, u128)>, Vec<RunEvent>) {
        let (events, mut rx) = Events::channel();
        let start = fake.start;
        let interrupt = async move {
            match interrupt_at {
                Some(at) => tokio::time::sleep_until(start + at).await,
                None => std::future::pending().await,
            }
        };
        let mut phases = Vec::new();
        let mut others = Vec::new();
        let end = {
            let drive = drive(plan, fake, interrupt, &events, "interrupted");
            let mut drive = std::pin::pin!(drive);
            loop {
                tokio::select! {
                    end = &mut drive => break end,
                    Some(e) = rx.recv() => match e {
                        RunEvent::Phase(p) => phases.push((p, (Instant::now() - start).as_millis())),
                        other => others.push(other),
                    },
                }
            }
        };
        drop(events);
        while let Some(e) = rx.recv().await {
            match e {
                RunEvent::Phase(p) => phases.push((p, (Instant::now() - start).as_millis())),
                other => others.push(other),
            }
        }
        (end, phases, others)
    }

    #[tokio::test(start_paused = true)]
    async fn a_plain_load_is_loading_then_draining() {
        let mut fake = Fake::new(Vec::new(), None);
        let plan = Plan {
            tail: Duration::ZERO,
            ..plan(fake.start, false)
        };
        let (end, phases, others) = run(&mut fake, plan, None).await;
        assert_eq!(end, End::Complete);
        assert_eq!(
            phases,
            vec![
                (Phase::Loading, 0),
                (Phase::Draining, 10_000),
                (Phase::Finishing, 10_300),
            ]
        );
        assert_eq!(fake.stopped.map(|(_, i)| i), Some(false));
        assert!(others.is_empty(), "{others:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollout_waits_for_its_actions_then_the_settle_then_the_tail() {
        let mut fake = Fake::new(
            vec![
                (Duration::from_secs(3), ActionEnd::Done("drained".into())),
                (Duration::from_secs(14), ActionEnd::Done("scaled".into())),
            ],
            Some(Duration::from_secs(17)),
        );
        let plan = plan(fake.start, true);
        let (end, phases, others) = run(&mut fake, plan, None).await;
        assert_eq!(end, End::Complete);
        assert_eq!(
            phases,
            vec![
                (Phase::Loading, 0),
                (Phase::Acting, 10_000),
                (Phase::Settling, 14_000),
                (Phase::Tail, 17_000),
                (Phase::Draining, 19_000),
                (Phase::Finishing, 19_300),
            ]
        );
        assert_eq!(
            others,
            vec![
                RunEvent::Action {
                    line: "drained".into()
                },
                RunEvent::Action {
                    line: "scaled".into()
                },
                RunEvent::Note("settled".into()),
            ]
        );
        assert!(!fake.aborted);
    }

    #[tokio::test(start_paused = true)]
    async fn actions_past_the_settle_timeout_are_aborted_as_a_problem() {
        let mut fake = Fake::new(
            vec![(Duration::from_secs(60), ActionEnd::Done("late".into()))],
            None,
        );
        let plan = plan(fake.start, true);
        let (end, phases, others) = run(&mut fake, plan, None).await;
        assert_eq!(end, End::Complete);
        assert!(fake.aborted);
        // The settle gets at least a second once the deadline has passed.
        assert_eq!(
            phases,
            vec![
                (Phase::Loading, 0),
                (Phase::Acting, 10_000),
                (Phase::Settling, 30_000),
                (Phase::Tail, 31_000),
                (Phase::Draining, 33_000),
                (Phase::Finishing, 33_300),
            ]
        );
        assert_eq!(
            others,
            vec![
                RunEvent::Problem("1 action(s) still running after settle_timeout (20s)".into()),
                RunEvent::Problem("the rollout did not settle".into()),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_action_is_a_line_and_a_problem() {
        let mut fake = Fake::new(
            vec![(
                Duration::from_secs(1),
                ActionEnd::Failed("action 0 failed".into()),
            )],
            Some(Duration::from_secs(11)),
        );
        let plan = plan(fake.start, true);
        let (_, _, others) = run(&mut fake, plan, None).await;
        assert_eq!(
            others[..2],
            [
                RunEvent::Action {
                    line: "action 0 failed".into()
                },
                RunEvent::Problem("action 0 failed".into()),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ctrl_c_stops_the_load_at_once_and_drains() {
        let mut fake = Fake::new(
            vec![(Duration::from_secs(8), ActionEnd::Done("late".into()))],
            None,
        );
        let plan = plan(fake.start, true);
        let (end, phases, others) = run(&mut fake, plan, Some(Duration::from_secs(5))).await;
        assert_eq!(end, End::Interrupted);
        assert_eq!(
            phases,
            vec![
                (Phase::Loading, 0),
                (Phase::Draining, 5_000),
                (Phase::Finishing, 5_300),
            ]
        );
        assert!(fake.aborted, "actions are aborted");
        assert_eq!(fake.stopped.map(|(_, i)| i), Some(true));
        assert_eq!(others, vec![RunEvent::Note("interrupted".into())]);
    }

    #[tokio::test(start_paused = true)]
    async fn ctrl_c_while_draining_interrupts_the_schedule() {
        let mut fake = Fake::new(Vec::new(), None);
        fake.drain = Duration::from_secs(5);
        let plan = Plan {
            tail: Duration::ZERO,
            ..plan(fake.start, false)
        };
        let (end, phases, _) = run(&mut fake, plan, Some(Duration::from_secs(11))).await;
        assert_eq!(end, End::Interrupted);
        assert_eq!(phases.last(), Some(&(Phase::Finishing, 15_000)));
        assert_eq!(fake.stopped.map(|(_, i)| i), Some(true));
    }
}
