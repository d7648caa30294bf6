//! Probe scheduling for one container (kubelet `prober/worker.go`): while a
//! startup probe has not succeeded only it runs; once started, readiness
//! runs at once (the "trigger immediately" rule) and then every period, and
//! liveness from `initialDelaySeconds` on; liveness and startup stop when
//! the pod terminates (or a kill is under way) while readiness keeps going.
//! Each probe has at most one run in flight; the next is due a period after
//! the previous one finished.

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
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
    next: Option<Instant>,
    in_flight: bool,
}

impl Probe {
    fn new(kind: ProbeKind, spec: &ProbeSpec) -> Self {
        Probe {
            state: ProbeState::new(kind, spec.success_threshold, spec.failure_threshold),
            spec: spec.clone(),
            next: None,
            in_flight: false,
        }
    }
}

/// The probes of one running container.
#[derive(Debug)]
pub struct Probes {
    started_at: Instant,
    startup: Option<Probe>,
    readiness: Option<Probe>,
    liveness: Option<Probe>,
    started: bool,
    stopping: bool,
}

impl Probes {
    /// Probes of a container that started at `started_at`.
    pub fn new(c: &ContainerPlan, started_at: Instant) -> Self {
        let mut probes = Probes {
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
        match &mut probes.startup {
            Some(p) => p.next = Some(started_at + p.spec.initial_delay),
            None => probes.mark_started(started_at),
        }
        probes
    }

    fn mark_started(&mut self, now: Instant) {
        self.started = true;
        let from = self.started_at;
        for p in [&mut self.readiness, &mut self.liveness]
            .into_iter()
            .flatten()
        {
            p.next = Some(now.max(from + p.spec.initial_delay));
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
        .filter_map(|(k, p)| p.filter(|p| !p.in_flight).map(|p| (k, p)))
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
                p.in_flight = true;
                p.next = None;
                Some((k, p.spec.clone()))
            })
            .collect()
    }

    /// Records a finished run; returns the new status iff it flipped. Results
    /// of probes stopped meanwhile are dropped.
    pub fn finished(
        &mut self,
        kind: ProbeKind,
        success: bool,
        now: Instant,
    ) -> Option<ProbeStatus> {
        let stopping = self.stopping;
        let p = self.probe_mut(kind)?;
        p.in_flight = false;
        if stopping && kind != ProbeKind::Readiness {
            return None;
        }
        p.next = Some(now + p.spec.period);
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

    #[test]
    fn startup_gates_readiness_and_readiness_runs_at_once() {
        let c = plan(serde_json::json!({"name": "app",
            "startupProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1},
            "readinessProbe": {"tcpSocket": {"port": 1}},
            "livenessProbe": {"tcpSocket": {"port": 1}, "initialDelaySeconds": 5}}));
        let t0 = Instant::now();
        let mut p = Probes::new(&c, t0);
        assert!(!p.started() && !p.ready());
        let due = p.take_due(t0);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, ProbeKind::Startup);
        assert_eq!(
            p.finished(ProbeKind::Startup, true, t0),
            Some(ProbeStatus::Success)
        );
        assert!(p.started() && !p.ready());
        // Readiness is due immediately, liveness only after its delay.
        let due: Vec<_> = p.take_due(t0).into_iter().map(|(k, _)| k).collect();
        assert_eq!(due, vec![ProbeKind::Readiness]);
        assert_eq!(p.next_due(), Some(t0 + Duration::from_secs(5)));
        p.finished(ProbeKind::Readiness, true, t0);
        assert!(p.ready());
        p.stop_restarting_probes();
        // Only readiness is left, a period later.
        assert_eq!(p.next_due(), Some(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn no_probes_means_ready_at_once() {
        let p = Probes::new(&plan(serde_json::json!({"name": "app"})), Instant::now());
        assert!(p.started() && p.ready());
        assert_eq!(p.next_due(), None);
    }
}
