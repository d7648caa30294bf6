//! One pod's life on this kubelet, as one task: resolve the image, start the
//! (first) container, probe it, restart it after crashes or liveness
//! failures (CrashLoopBackOff), and terminate it as the kubelet's
//! `killContainer` does when the pod gets a `deletionTimestamp`, ending with
//! the terminal phase and the final delete. The supervisor steers the task
//! through a [`Desired`] watch: `Terminate` for a graceful delete (again,
//! with a shorter grace, for a later delete that shortens it, and with grace
//! 0 when the object vanished: grace 0, force delete), `Kill` when the
//! kubelet stops.

use std::{
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use super::{
    PodInfo, RELIST, STATUS_SYNC, Shared,
    events::{BackOff, StopWhy, publish},
    lock,
    probes::{Probes, kind_name, run_probe},
    signals::{KubeletSignal, SignalKind},
    spec::{PodPlan, expand, service_env},
    status::{PodView, pods, running, terminated, waiting},
};
use crate::{
    api::record_legacy_event,
    process::{
        ExitInfo, PodProcess, PodSpec, ProbeKind, ProbeStatus, ProcessError, ProcessEvent,
        terminate,
    },
    store::now_rfc3339,
};

/// How long a SIGKILLed process may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What the supervisor wants of a pod task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    /// Keep the pod running.
    Run,
    /// Graceful delete with this grace period (seconds; below 1 counts as 1).
    Terminate {
        /// Grace period.
        grace: i64,
    },
    /// The kubelet stops: SIGKILL the group now.
    Kill,
}

/// How one container instance ended.
enum Outcome {
    /// Exited on its own.
    Exited { success: bool },
    /// Killed for a failed liveness/startup probe (or could not start).
    Restart,
    /// Stopped for the pod's deletion.
    Deleted,
    /// SIGKILLed because the object vanished or the kubelet stops.
    Killed,
}

type StopFuture = Pin<Box<dyn Future<Output = Result<ExitInfo, ProcessError>> + Send>>;

/// Runs the pod until it is deleted, killed or reaches a terminal phase.
pub async fn run_pod(
    shared: Arc<Shared>,
    pod: Arc<Value>,
    plan: PodPlan,
    desired: watch::Receiver<Desired>,
) {
    let mut worker = Worker {
        sh: shared,
        plan,
        pod,
        desired,
        view: PodView::new(),
        backoff: BackOff::default(),
        last_exit: None,
        last_terminated: None,
        instances: 0,
        probe_ticker_origin: Instant::now(),
    };
    worker.main().await;
}

struct Worker {
    sh: Arc<Shared>,
    plan: PodPlan,
    /// The latest object (the involved object of events).
    pod: Arc<Value>,
    desired: watch::Receiver<Desired>,
    view: PodView,
    backoff: BackOff,
    last_exit: Option<ExitInfo>,
    last_terminated: Option<Value>,
    instances: u32,
    /// When the pod's probe tickers started (the pod's start on this
    /// kubelet): they keep their phase across container restarts.
    probe_ticker_origin: Instant,
}

impl Worker {
    async fn main(&mut self) {
        let c = self.plan.container.clone();
        let log_path = self.sh.work_dir.join(format!(
            "{}_{}_{}.log",
            self.plan.namespace, self.plan.name, c.name
        ));
        let key = (self.plan.namespace.clone(), self.plan.name.clone());
        lock(&self.sh.pods).insert(
            key.clone(),
            PodInfo {
                log_path: log_path.clone(),
                ip: None,
            },
        );
        self.write();
        let Some(command) = self.sh.images.resolve(&c.image).map(<[String]>::to_vec) else {
            let message = format!(
                "no local command for image {}: map it in [cluster.embedded.images]",
                c.image
            );
            let event = format!("Failed to pull image \"{}\": {message}", c.image);
            self.view.state = waiting("ErrImagePull", Some(message));
            self.write();
            self.event("Warning", "Failed", &event, true);
            return self.until_end().await;
        };
        // The sandbox, its network and the container take a real kubelet
        // a while (see `start`); a deletion meanwhile ends the pod unstarted.
        let start_delay = self.sh.pod_start.draw(&self.plan.uid);
        match self.sleep_unless_stopped(start_delay).await {
            Some(Desired::Kill) => return,
            Some(_) => return self.finish(true),
            None => {}
        }
        let ip = match self.sh.ips.allocate_free(self.plan.container.port()) {
            Ok(ip) => IpAddr::V4(ip),
            Err(e) => {
                self.view.state = waiting("RunContainerError", Some(e.to_string()));
                self.write();
                self.event("Warning", "Failed", &format!("Error: {e}"), true);
                return self.until_end().await;
            }
        };
        if let Some(info) = lock(&self.sh.pods).get_mut(&key) {
            info.ip = Some(ip);
        }
        loop {
            let desired = *self.desired.borrow();
            match desired {
                Desired::Kill => return,
                Desired::Terminate { .. } => return self.finish(true),
                Desired::Run => {}
            }
            let started = Instant::now();
            let outcome = match self.spawn(ip, &command, &log_path) {
                Ok(process) => self.run_container(process).await,
                Err(e) => {
                    self.view.state = waiting("RunContainerError", Some(e.to_string()));
                    self.write();
                    self.event("Warning", "Failed", &format!("Error: {e}"), true);
                    Outcome::Restart
                }
            };
            match outcome {
                Outcome::Killed => return,
                Outcome::Deleted => return self.finish(true),
                Outcome::Exited { success } if !self.plan.restart_policy.restarts(success) => {
                    return self.finish(false);
                }
                Outcome::Exited { .. } | Outcome::Restart => {}
            }
            match self.back_off(started.elapsed()).await {
                Some(Desired::Kill) => return,
                Some(_) => return self.finish(true),
                None => {}
            }
        }
    }

    /// Records an event about the pod (or its container), as a real
    /// kubelet's legacy recorder does.
    fn event(&self, type_: &str, reason: &str, message: &str, container: bool) {
        let field_path = format!("spec.containers{{{}}}", self.plan.container.name);
        let fp = container.then_some(field_path.as_str());
        record_legacy_event(
            &self.sh.store,
            &self.pod,
            type_,
            reason,
            message,
            "kubelet",
            &self.plan.node,
            fp,
        );
    }

    /// Sends one moment to the exact record, if it is kept.
    fn signal(&self, at: Instant, kind: SignalKind) {
        if let Some(tx) = &self.sh.signals {
            let _ = tx.send(KubeletSignal {
                at,
                namespace: self.plan.namespace.clone(),
                pod: self.plan.name.clone(),
                uid: self.plan.uid.clone(),
                container: self.plan.container.name.clone(),
                kind,
            });
        }
    }

    /// Waits out the PLEG relist after an exit at `exited` (the status shows
    /// it only then); `false` when the kubelet stops meanwhile.
    async fn relist(&mut self, exited: Instant) -> bool {
        let sleep = tokio::time::sleep_until((exited + RELIST).into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                changed = self.desired.changed() => {
                    if changed.is_err() || *self.desired.borrow() == Desired::Kill {
                        return false;
                    }
                }
            }
        }
    }

    fn write(&mut self) {
        if let Some(pod) = self.view.write(&self.sh.store, &self.plan) {
            self.pod = pod;
        }
    }

    /// Waits for a Terminate (then finishes) or Kill.
    async fn until_end(&mut self) {
        loop {
            let desired = *self.desired.borrow_and_update();
            match desired {
                Desired::Kill => return,
                Desired::Terminate { .. } => return self.finish(true),
                Desired::Run => {}
            }
            if self.desired.changed().await.is_err() {
                return;
            }
        }
    }

    /// Terminal phase from the last exit, then (for a deleted pod) the
    /// final delete with the uid precondition. Nothing of the pod runs any
    /// more: its sandbox goes, and its address with it (`StopPodSandbox`).
    fn finish(&mut self, delete: bool) {
        let success = self.last_exit.is_some_and(|e| e.success());
        self.view.phase = if success { "Succeeded" } else { "Failed" };
        self.view.ready = false;
        self.write();
        if let Some(ip) = self.view.pod_ip {
            self.sh.ips.tear_down(ip);
        }
        if delete && let Some(pods) = pods() {
            let plan = &self.plan;
            let _ = self
                .sh
                .store
                .delete(pods, &plan.namespace, &plan.name, Some(&plan.uid));
        }
    }

    fn spawn(
        &self,
        ip: IpAddr,
        command: &[String],
        log: &std::path::Path,
    ) -> Result<Arc<PodProcess>, ProcessError> {
        let c = &self.plan.container;
        let (program, base_args) = command.split_first().ok_or_else(|| ProcessError::Spawn {
            program: String::new(),
            what: format!("{}/{}", self.plan.name, c.name),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        })?;
        let mut spec = PodSpec::new(
            &self.plan.name,
            &c.name,
            ip,
            program,
            &self.sh.work_dir,
            log,
        );
        let services = if self.plan.enable_service_links {
            service_env(&self.services())
        } else {
            Vec::new()
        };
        let env = c.env_with_services(&self.plan, ip, services);
        // The manifest's args get Kubernetes' $(VAR) expansion; the
        // image's own command words are not the manifest's, so stay as is.
        spec.args = base_args
            .iter()
            .cloned()
            .chain(c.args.iter().map(|a| expand(a, &env)))
            .collect();
        spec.env = env;
        PodProcess::spawn(spec).map(Arc::new)
    }

    /// The Services of the pod's namespace now, by name (what a container
    /// started now gets as environment variables).
    fn services(&self) -> Vec<Arc<Value>> {
        let Some(kind) = crate::resources::ResourceKind::find("", "v1", "services") else {
            return Vec::new();
        };
        let (mut items, _) = self.sh.store.list(kind, Some(&self.plan.namespace));
        items.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        items
    }

    /// CrashLoopBackOff before a restart: 0 the first time, then 10 s
    /// doubling to 5 min, reset after 10 min of running. Returns the
    /// Terminate/Kill that cut it short.
    async fn back_off(&mut self, ran_for: Duration) -> Option<Desired> {
        let delay = self.backoff.next(ran_for);
        if delay.is_zero() {
            return None;
        }
        let (name, pod) = (&self.plan.container.name, &self.plan.name);
        let message = format!(
            "back-off {}s restarting failed container={name} pod={pod}_{}({})",
            delay.as_secs(),
            self.plan.namespace,
            self.plan.uid
        );
        let event = format!("Back-off restarting failed container {name} in pod {pod}");
        self.view.state = waiting("CrashLoopBackOff", Some(message));
        self.write();
        self.event("Warning", "BackOff", &event, true);
        self.sleep_unless_stopped(delay).await
    }

    /// Waits `delay` (none: at once); returns the Terminate/Kill that cut it
    /// short.
    async fn sleep_unless_stopped(&mut self, delay: Duration) -> Option<Desired> {
        if delay.is_zero() {
            return None;
        }
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return None,
                changed = self.desired.changed() => {
                    let d = if changed.is_err() { Desired::Kill } else { *self.desired.borrow_and_update() };
                    if d != Desired::Run {
                        return Some(d);
                    }
                }
            }
        }
    }

    /// Runs one container instance until it exits or is stopped.
    async fn run_container(&mut self, process: Arc<PodProcess>) -> Outcome {
        let c = self.plan.container.clone();
        lock(&self.sh.live).insert(self.plan.uid.clone(), process.clone());
        if self.instances > 0 {
            self.view.restart_count += 1;
        }
        self.instances += 1;
        let started_at = now_rfc3339();
        let container_id = format!("rolltest://{}", process.pid());
        // The status shows the container running only after the sync that
        // follows its start, and the readiness probe is triggered then.
        let seen_at = process.started_at() + STATUS_SYNC;
        let mut probes = Probes::new(&c, self.probe_ticker_origin, process.started_at(), seen_at);
        let pod_ip = process.spec().pod_ip;
        // Until then the status keeps what it showed (waiting, or the last
        // termination of a restarted container); `None` once shown.
        let mut show_at = Some(seen_at);
        self.event(
            "Normal",
            "Pulled",
            &format!("Container image \"{}\" already present on machine", c.image),
            true,
        );
        self.event(
            "Normal",
            "Created",
            &format!("Created container: {}", c.name),
            true,
        );
        self.event(
            "Normal",
            "Started",
            &format!("Started container {}", c.name),
            true,
        );

        let ctx = process.exec_context();
        let (events_tx, mut events_rx) = mpsc::unbounded_channel::<ProcessEvent>();
        let mut wait: StopFuture = {
            let p = process.clone();
            Box::pin(async move { p.wait().await })
        };
        let mut stop: Option<StopFuture> = None;
        let mut why: Option<StopWhy> = None;
        let mut deleting = false;
        // The grace of the deletion's kill under way, to restart it when a
        // later delete shortens it.
        let mut kill_grace: Option<i64> = None;
        let mut tasks: JoinSet<(ProbeKind, bool, String)> = JoinSet::new();
        let start_stop = |grace: i64| -> StopFuture {
            let (p, tx, hook) = (process.clone(), events_tx.clone(), c.pre_stop.clone());
            Box::pin(async move { terminate(&p, grace, hook.as_ref(), &tx).await })
        };
        let mut first = true;
        let result = loop {
            // The desired state as of now (first pass) or after a change.
            let desired = if first {
                first = false;
                Some(*self.desired.borrow_and_update())
            } else {
                None
            };
            let changed = match desired {
                Some(d) => Some(d),
                None => {
                    // No probe is due before the status shows the container.
                    let due = show_at.or_else(|| probes.next_due());
                    tokio::select! {
                        r = &mut wait, if stop.is_none() => break r,
                        r = maybe(stop.as_mut().map(|s| s.as_mut())) => break r,
                        Some(ev) = events_rx.recv() => {
                            self.process_event(&ev, why);
                            None
                        }
                        changed = self.desired.changed() => Some(if changed.is_err() {
                            Desired::Kill
                        } else {
                            *self.desired.borrow_and_update()
                        }),
                        _ = sleep_until(due) => {
                            if show_at.take().is_some() {
                                self.show_running(&started_at, &container_id, pod_ip, &probes);
                                self.write();
                            }
                            for (kind, spec) in probes.take_due(Instant::now()) {
                                let ctx = ctx.clone();
                                tasks.spawn(async move {
                                    let r = run_probe(&spec, pod_ip, &ctx).await;
                                    (kind, r.success, r.message)
                                });
                            }
                            None
                        }
                        Some(Ok((kind, success, message))) = tasks.join_next() => {
                            if let Some((w, grace)) = self.on_probe(&mut probes, kind, success, &message, why.is_some()) {
                                why = Some(w);
                                stop = Some(start_stop(grace));
                            }
                            None
                        }
                    }
                }
            };
            match changed {
                Some(Desired::Kill) => {
                    tasks.abort_all();
                    let _ = process.kill_group();
                    let _ = tokio::time::timeout(KILL_WAIT, process.wait()).await;
                    lock(&self.sh.live).remove(&self.plan.uid);
                    return Outcome::Killed;
                }
                Some(Desired::Terminate { grace }) if !deleting => {
                    deleting = true;
                    probes.stop_restarting_probes();
                    if stop.is_none() {
                        why = Some(StopWhy::Delete);
                        stop = Some(start_stop(grace));
                        kill_grace = Some(grace.max(1));
                    }
                }
                Some(Desired::Terminate { grace })
                    if kill_grace.is_some_and(|g| grace.max(1) < g) =>
                {
                    // A shorter grace: the kubelet's pod worker cancels the
                    // kill under way and kills anew with the shorter one
                    // (pod_workers.go: gracePeriodShortened cancels the
                    // terminating sync). Dropping the old sequence stops
                    // waiting for its preStop hook and its deadline.
                    stop = Some(start_stop(grace));
                    kill_grace = Some(grace.max(1));
                }
                _ => {}
            }
        };
        tasks.abort_all();
        lock(&self.sh.live).remove(&self.plan.uid);
        while let Ok(ev) = events_rx.try_recv() {
            self.process_event(&ev, why);
        }
        let exit = result.unwrap_or_else(|e| {
            self.event(
                "Warning",
                "Failed",
                &format!("Error stopping container: {e}"),
                true,
            );
            let _ = process.kill_group();
            ExitInfo {
                code: None,
                signal: None,
                at: Instant::now(),
            }
        });
        if why.is_none() {
            // A crash: no Event (a real kubelet has none for an exit), only
            // the exact record.
            self.signal(
                exit.at,
                SignalKind::Exited {
                    code: exit.code,
                    signal: exit.signal,
                },
            );
        }
        // The exit shows in the status after the next relist.
        if !self.relist(exit.at).await {
            return Outcome::Killed;
        }
        if show_at.is_some() {
            // It ran and ended between two looks at it: the status goes
            // from what it showed straight to the termination.
            self.show_running(&started_at, &container_id, pod_ip, &probes);
        }
        self.last_exit = Some(exit);
        let state = terminated(&exit, &started_at, Some(&container_id));
        self.last_terminated = Some(state.clone());
        self.view.state = state;
        self.view.ready = false;
        self.write();
        match why {
            _ if deleting => Outcome::Deleted,
            Some(_) => Outcome::Restart,
            None => Outcome::Exited {
                success: exit.success(),
            },
        }
    }

    /// The pod's view of a running container (not written).
    fn show_running(
        &mut self,
        started_at: &str,
        container_id: &str,
        pod_ip: IpAddr,
        probes: &Probes,
    ) {
        self.view.phase = "Running";
        self.view.pod_ip = Some(pod_ip);
        self.view
            .start_time
            .get_or_insert_with(|| started_at.to_owned());
        self.view.state = running(started_at);
        self.view.last_state = self
            .last_terminated
            .clone()
            .unwrap_or_else(|| serde_json::json!({}));
        self.view.container_id = Some(container_id.to_owned());
        self.view.started = probes.started();
        self.view.ready = probes.ready();
    }

    /// Publishes a step of the termination sequence: a real kubelet's Event
    /// for it, if any, and its moment in the exact record.
    fn process_event(&self, ev: &ProcessEvent, why: Option<StopWhy>) {
        let c = &self.plan.container;
        let pod = format!(
            "{}_{}({})",
            self.plan.name, self.plan.namespace, self.plan.uid
        );
        let (event, exact) = publish(&ev.kind, why, &c.name, c.pre_stop.as_ref(), &pod);
        if let Some((type_, reason, message)) = event {
            self.event(type_, reason, &message, true);
        }
        if let Some(kind) = exact {
            self.signal(ev.at, kind);
        }
    }

    /// Handles one finished probe; returns a stop to start if it calls for a kill.
    fn on_probe(
        &mut self,
        probes: &mut Probes,
        kind: ProbeKind,
        success: bool,
        message: &str,
        stopping: bool,
    ) -> Option<(StopWhy, i64)> {
        if stopping && kind != ProbeKind::Readiness {
            probes.finished(kind, success, Instant::now());
            return None;
        }
        if !success {
            let text = format!("{} probe failed: {message}", kind_name(kind));
            self.event("Warning", "Unhealthy", &text, true);
        }
        let flip = probes.finished(kind, success, Instant::now());
        let c = &self.plan.container;
        match (kind, flip) {
            (ProbeKind::Liveness | ProbeKind::Startup, Some(ProbeStatus::Failure)) => {
                probes.stop_restarting_probes();
                let spec = if kind == ProbeKind::Liveness {
                    &c.liveness
                } else {
                    &c.startup
                };
                let grace = spec
                    .as_ref()
                    .and_then(|s| s.termination_grace)
                    .unwrap_or(self.plan.grace_seconds);
                Some((StopWhy::Probe(kind), grace))
            }
            (_, Some(_)) => {
                self.view.started = probes.started();
                self.view.ready = probes.ready();
                self.write();
                None
            }
            (_, None) => None,
        }
    }
}

/// Awaits `f` if there is one, else never completes.
async fn maybe<F: Future + Unpin>(f: Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
