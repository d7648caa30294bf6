//! Probe scheduling for one container, on the kubelet's clock (kubelet
//! `pkg/kubelet/prober/worker.go` `run` and `doProbe`, and the manual
//! readiness trigger of `prober_manager.go` `UpdatePodStatus`):
//!
//! - Each probe has a ticker started with the pod (upstream: the worker
//!   `AddPod` starts when the kubelet first syncs the pod, before the
//!   container exists): it ticks every `periodSeconds` from the pod's start
//!   on this kubelet, across container restarts. A probe attempt happens on a
//!   tick only; a tick before the kubelet's status shows the container
//!   running (`seen_at`, [`STATUS_SYNC`](super::STATUS_SYNC) after its
//!   start) finds nothing to probe.
//! - An attempt inside `initialDelaySeconds` of the container's start is
//!   skipped, so the first run lands on the first tick after the delay.
//! - While a startup probe has not succeeded only it runs; once the container
//!   counts as started, readiness runs at once (the kubelet's manual trigger
//!   on the pod sync that sees it started, itself subject to the initial
//!   delay) and then on its ticks, and liveness on its ticks. Without a
//!   startup probe the container counts as started when the status shows
//!   it running, so readiness runs then: after the app has had the status
//!   sync's few milliseconds to listen, as on a real kubelet, whose first
//!   readiness probe usually succeeds.
//! - A run holds the worker: a tick during it waits (Go's ticker channel
//!   keeps one, drops the rest), so the next run starts as soon as a slow one
//!   ends and a probe slower than its period runs back to back, about every
//!   max(period, its own time).
//! - Liveness and startup stop when the pod terminates (or a kill is under
//!   way) while readiness keeps going.
//!
//! Two upstream details are left out: the random start-up jitter (only after
//! a kubelet restart) and re-triggering readiness on every later pod sync
//! while it is not Success (here it is triggered once, when started; upstream
//! the first result's sync triggers it once more, milliseconds later).

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use super::spec::{ContainerPlan, ProbeAction, ProbeSpec};
use crate::process::{
    ExecContext, ProbeKind, ProbeResult, ProbeState, ProbeStatus, probe_exec, probe_http, probe_tcp,
};

/// One probe of a container.
#[derive(Debug)]
struct Probe {
    spec: ProbeSpec,
    state: ProbeState,
    /// When the next attempt is due (a tick, or the readiness trigger).
    next: Option<Instant>,
    /// When the run in flight started.
    in_flight: Option<Instant>,
}

impl Probe {
    fn new(kind: ProbeKind, spec: &ProbeSpec) -> Self {
        Probe {
            state: ProbeState::new(kind, spec.success_threshold, spec.failure_threshold),
            spec: spec.clone(),
            next: None,
            in_flight: None,
        }
    }

    /// The ticker period (a zero period would spin: at least 1 ms).
    fn period(&self) -> Duration {
        self.spec.period.max(Duration::from_millis(1))
    }
}

/// The probes of one running container.
#[derive(Debug)]
pub struct Probes {
    /// Where every probe's ticker starts: the pod's start on this kubelet.
    ticker_origin: Instant,
    /// The container's start (`initialDelaySeconds` counts from here).
    started_at: Instant,
    startup: Option<Probe>,
    readiness: Option<Probe>,
    liveness: Option<Probe>,
    started: bool,
    stopping: bool,
}

impl Probes {
    /// Probes of a container that started at `started_at` and that the
    /// kubelet's status shows running from `seen_at` on (no probe runs
    /// before), in a pod whose probe tickers started at `ticker_origin` (no
    /// later than `started_at`).
    pub fn new(
        c: &ContainerPlan,
        ticker_origin: Instant,
        started_at: Instant,
        seen_at: Instant,
    ) -> Self {
        let seen_at = seen_at.max(started_at);
        let mut probes = Probes {
            ticker_origin: ticker_origin.min(started_at),
            started_at,
            startup: c
                .startup
                .as_ref()
                .map(|s| Probe::new(ProbeKind::Startup, s)),
            readiness: c
                .readiness
                .as_ref()
                .map(|s| Probe::new(ProbeKind::Readiness, s)),
            liveness: c
                .liveness
                .as_ref()
                .map(|s| Probe::new(ProbeKind::Liveness, s)),
            started: false,
            stopping: false,
        };
        if probes.startup.is_some() {
            let next = probes
                .startup
                .as_ref()
                .map(|p| probes.first_attempt(p, seen_at));
            if let Some(p) = probes.startup.as_mut() {
                p.next = next;
            }
        } else {
            probes.mark_started(seen_at);
        }
        probes
    }

    /// The first tick of `p`'s ticker strictly after `t`.
    fn tick_after(&self, p: &Probe, t: Instant) -> Instant {
        let period = p.period();
        let since = t.saturating_duration_since(self.ticker_origin);
        let n = since.as_nanos() / period.as_nanos() + 1;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.ticker_origin + period.saturating_mul(n)
    }

    /// The first tick after `from` on which `p` is out of its initial delay.
    fn first_attempt(&self, p: &Probe, from: Instant) -> Instant {
        let tick = self.tick_after(p, from);
        let eligible = self.started_at + p.spec.initial_delay;
        if tick >= eligible {
            tick
        } else {
            self.tick_after(p, eligible)
        }
    }

    fn mark_started(&mut self, now: Instant) {
        self.started = true;
        let eligible = |p: &Probe| now >= self.started_at + p.spec.initial_delay;
        // Readiness: the manual trigger, unless inside its initial delay.
        let readiness = self.readiness.as_ref().map(|p| {
            if eligible(p) {
                now
            } else {
                self.first_attempt(p, now)
            }
        });
        let liveness = self.liveness.as_ref().map(|p| self.first_attempt(p, now));
        if let Some(p) = self.readiness.as_mut() {
            p.next = readiness;
        }
        if let Some(p) = self.liveness.as_mut() {
            p.next = liveness;
        }
    }

    /// Whether the container counts as started.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Container readiness: started and readiness Success (or no readiness probe).
    pub fn ready(&self) -> bool {
        self.started
            && self
                .readiness
                .as_ref()
                .is_none_or(|p| p.state.status() == ProbeStatus::Success)
    }

    /// Stops liveness and startup probing (deletion or a kill under way).
    pub fn stop_restarting_probes(&mut self) {
        self.stopping = true;
        for p in [&mut self.startup, &mut self.liveness]
            .into_iter()
            .flatten()
        {
            p.next = None;
            p.state.set(ProbeStatus::Success);
        }
    }

    fn probe_mut(&mut self, kind: ProbeKind) -> Option<&mut Probe> {
        match kind {
            ProbeKind::Startup => self.startup.as_mut(),
            ProbeKind::Readiness => self.readiness.as_mut(),
            ProbeKind::Liveness => self.liveness.as_mut(),
        }
    }

    fn active(&self) -> impl Iterator<Item = (ProbeKind, &Probe)> {
        let restarting = !self.stopping;
        [
            (
                ProbeKind::Startup,
                self.startup
                    .as_ref()
                    .filter(|_| restarting && !self.started),
            ),
            (
                ProbeKind::Readiness,
                self.readiness.as_ref().filter(|_| self.started),
            ),
            (
                ProbeKind::Liveness,
                self.liveness
                    .as_ref()
                    .filter(|_| restarting && self.started),
            ),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.filter(|p| p.in_flight.is_none()).map(|p| (k, p)))
    }

    /// When the next probe is due, if any is scheduled.
    pub fn next_due(&self) -> Option<Instant> {
        self.active().filter_map(|(_, p)| p.next).min()
    }

    /// The probes due at `now`, marked in flight.
    pub fn take_due(&mut self, now: Instant) -> Vec<(ProbeKind, ProbeSpec)> {
        let due: Vec<ProbeKind> = self
            .active()
            .filter(|(_, p)| p.next.is_some_and(|n| n <= now))
            .map(|(k, _)| k)
            .collect();
        due.into_iter()
            .filter_map(|k| {
                let p = self.probe_mut(k)?;
                p.in_flight = Some(now);
                p.next = None;
                Some((k, p.spec.clone()))
            })
            .collect()
    }

    /// Records a finished run; returns the new status iff it flipped. Results
    /// of probes stopped meanwhile are dropped. The next run is the next
    /// tick, or `now` if a tick came while this one ran.
    pub fn finished(
        &mut self,
        kind: ProbeKind,
        success: bool,
        now: Instant,
    ) -> Option<ProbeStatus> {
        let stopping = self.stopping;
        let next = {
            let p = match kind {
                ProbeKind::Startup => self.startup.as_ref(),
                ProbeKind::Readiness => self.readiness.as_ref(),
                ProbeKind::Liveness => self.liveness.as_ref(),
            }?;
            let ran_from = p.in_flight.unwrap_or(now);
            let tick = self.tick_after(p, ran_from);
            if tick <= now { now } else { tick }
        };
        let p = self.probe_mut(kind)?;
        p.in_flight = None;
        if stopping && kind != ProbeKind::Readiness {
            return None;
        }
        p.next = Some(next);
        let flip = p.state.record(success);
        if kind == ProbeKind::Startup && flip == Some(ProbeStatus::Success) {
            p.next = None;
            self.mark_started(now);
        }
        flip
    }
}

/// Runs one probe of a container whose IP is `pod_ip`.
pub async fn run_probe(spec: &ProbeSpec, pod_ip: IpAddr, ctx: &ExecContext) -> ProbeResult {
    match &spec.action {
        ProbeAction::Http(h) => {
            let addr = SocketAddr::new(h.host.unwrap_or(pod_ip), h.port);
            probe_http(addr, &h.path, &h.headers, spec.timeout).await
        }
        ProbeAction::Tcp { host, port } => {
            probe_tcp(SocketAddr::new(host.unwrap_or(pod_ip), *port), spec.timeout).await
        }
        ProbeAction::Exec { command } => probe_exec(command, ctx, spec.timeout).await,
        ProbeAction::Unsupported(message) => ProbeResult {
            success: false,
            message: message.clone(),
        },
    }
}

/// `Readiness`, `Liveness` or `Startup` (event messages).
pub fn kind_name(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Readiness => "Readiness",
        ProbeKind::Liveness => "Liveness",
        ProbeKind::Startup => "Startup",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::kubelet::spec::PodPlan;

    fn plan(containers: serde_json::Value) -> ContainerPlan {
        let pod = serde_json::json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": [containers]}});
        PodPlan::from_pod(&pod).map(|p| p.container).expect("plan")
    }

    const S: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn startup_runs_on_its_ticks_then_readiness_at_once_and_liveness_on_a_tick() {
        let c = plan(serde_json::json!({"name": "app",
            "startupProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1},
            "readinessProbe": {"tcpSocket": {"port": 1}},
            "livenessProbe": {"tcpSocket": {"port": 1}, "initialDelaySeconds": 5}}));
        let t0 = Instant::now();
        let start = t0 + ms(300);
        let mut p = Probes::new(&c, t0, start, start + ms(10));
        assert!(!p.started() && !p.ready());
        // No startup probe before the first tick of the pod's ticker.
        assert!(p.take_due(start).is_empty());
        assert_eq!(p.next_due(), Some(t0 + S));
        let due = p.take_due(t0 + S);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, ProbeKind::Startup);
        let t1 = t0 + ms(1_100);
        assert_eq!(
            p.finished(ProbeKind::Startup, true, t1),
            Some(ProbeStatus::Success)
        );
        assert!(p.started() && !p.ready());
        // Readiness is triggered at once; liveness waits for the first tick
        // of its 10 s ticker past its 5 s delay.
        let due: Vec<_> = p.take_due(t1).into_iter().map(|(k, _)| k).collect();
        assert_eq!(due, vec![ProbeKind::Readiness]);
        assert_eq!(p.next_due(), Some(t0 + 10 * S));
        p.finished(ProbeKind::Readiness, true, t1);
        assert!(p.ready());
        p.stop_restarting_probes();
        // Only readiness is left, on its next tick.
        assert_eq!(p.next_due(), Some(t0 + 10 * S));
    }

    #[test]
    fn readiness_runs_when_the_status_shows_the_container_running_not_at_its_start() {
        let c = plan(serde_json::json!({"name": "app",
            "readinessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1}}));
        let t0 = Instant::now();
        let start = t0 + ms(400);
        let seen = start + ms(10);
        let mut p = Probes::new(&c, t0, start, seen);
        assert!(!p.ready());
        // Nothing at the start itself: the app may not listen yet.
        assert!(p.take_due(start).is_empty());
        assert!(p.take_due(seen - ms(1)).is_empty());
        // The manual trigger of the sync that shows it running.
        assert_eq!(p.next_due(), Some(seen));
        let due: Vec<_> = p.take_due(seen).into_iter().map(|(k, _)| k).collect();
        assert_eq!(due, vec![ProbeKind::Readiness]);
        // Liveness on the pod's ticker (1 s after the pod's start), not at once.
        assert_eq!(p.next_due(), Some(t0 + S));
        p.finished(ProbeKind::Readiness, true, seen + ms(2));
        assert!(p.ready());
    }

    #[test]
    fn inside_the_initial_delay_the_first_probe_is_the_next_tick() {
        let c = plan(serde_json::json!({"name": "app",
            "readinessProbe": {"tcpSocket": {"port": 1}, "initialDelaySeconds": 3, "periodSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 1}, "initialDelaySeconds": 3, "periodSeconds": 2}}));
        let t0 = Instant::now();
        let start = t0 + ms(500);
        let mut p = Probes::new(&c, t0, start, start + ms(10));
        // The trigger at start is inside the delay (which ends at 3.5 s):
        // both run on the tick at 4 s, not at 3.5 s.
        assert!(p.take_due(start).is_empty());
        assert_eq!(p.next_due(), Some(t0 + 4 * S));
        assert!(p.take_due(t0 + ms(3_600)).is_empty());
        assert_eq!(p.take_due(t0 + 4 * S).len(), 2);
    }

    #[test]
    fn a_slow_probe_runs_back_to_back_and_a_quick_one_on_the_ticks() {
        let c = plan(serde_json::json!({"name": "app",
            "readinessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1}}));
        let t0 = Instant::now();
        let mut p = Probes::new(&c, t0, t0, t0);
        assert_eq!(p.take_due(t0).len(), 1);
        // It ran 2.5 periods: the tick that came meanwhile runs it at once.
        p.finished(ProbeKind::Readiness, false, t0 + ms(2_500));
        assert_eq!(p.next_due(), Some(t0 + ms(2_500)));
        assert_eq!(p.take_due(t0 + ms(2_500)).len(), 1);
        // A quick run waits for the next tick (3 s), not a period after it.
        p.finished(ProbeKind::Readiness, false, t0 + ms(2_700));
        assert_eq!(p.next_due(), Some(t0 + 3 * S));
        assert!(p.take_due(t0 + ms(2_900)).is_empty());
    }

    #[test]
    fn no_probes_means_ready_at_once() {
        let now = Instant::now();
        let p = Probes::new(&plan(serde_json::json!({"name": "app"})), now, now, now);
        assert!(p.started() && p.ready());
        assert_eq!(p.next_due(), None);
    }
}
