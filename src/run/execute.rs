//! The one orchestrator: a scenario → its run directory → (cluster ∥ load ∥
//! watchers) on one event stream → the evidence → the finish path. A plain
//! load is a run with no cluster and no actions: it skips the cluster's
//! phases and keeps an aggregate instead of every record.
//!
//! ```text
//! setup: run directory, scenario.toml, manifests, the stream's dispatcher
//!   [cluster] StartingCluster ─► Applying ─► WaitingReady ─► WarmingUp    (cluster::Stage::up)
//!   Loading ─► Acting ─► Settling ─► Tail ─► Draining                     (phase::drive)
//!   [cluster] teardown, stop the embedded cluster                         (cluster::Stage::down)
//! Finishing: correlate (cluster) ─► RunFacts ─► finish::finish            (also `rolltest report`)
//! ```

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use rolltest_core::{
    ExitStatus, correlate,
    model::{RequestRecord, RunClock, Timeline},
    summary::{Aggregate, ClusterFacts, OverrideFacts, RunFacts},
};
use rolltest_loadgen::{
    self as loadgen, LiveCounters, LoadOutcome, LoadRun, LoadSpec, Stop, Target,
};
use tokio::sync::watch;

use super::{
    cluster::{self, Actions, ConnectedFacts, Stage},
    dispatch::Dispatcher,
    finish::{Evidence, apply_attributions, apply_failed_tries, finish},
    phase::{self, ActionEnd, Plan, Window},
    setup::{self, Subject},
};
use crate::{
    error::RunError,
    events::{Events, RunEvent, Tally},
    lint,
    progress::Progress,
    rundir::{self, RecordSink, RecordWriter, RunDir},
    scenario::{ClusterSpec, Scenario},
};

/// How far ahead of "now" the schedule's origin is set, so both generator
/// threads are running when request 0 is due.
const START_MARGIN: Duration = Duration::from_millis(5);

/// The run directory's default: `reports/<scenario>-<start time>`.
fn default_out(scenario: &Scenario, clock: &RunClock) -> PathBuf {
    Path::new("reports").join(format!(
        "{}-{}",
        scenario.slug(),
        clock.started_at_compact()
    ))
}

/// The recorder's sink: keeps each batch once it is on disk (an aggregate
/// for a plain load, however long it runs; every record for a cluster run,
/// whose correlator reads them) and puts its tally on the run's stream.
struct Recorder<S> {
    kept: S,
    events: Events,
}

impl<S: RecordSink> RecordSink for Recorder<S> {
    fn take(&mut self, batch: Vec<RequestRecord>) {
        self.events.send(RunEvent::Requests(Tally::of(&batch)));
        self.kept.take(batch);
    }
}

/// Ctrl-C (never, where no handler can be installed).
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What kind of run, with what its setup found.
enum Mode<'a> {
    /// A plain load to a resolved address.
    Load(SocketAddr),
    /// A run with a `[cluster]`.
    Cluster(&'a ClusterSpec, Subject),
}

/// What the phases hand to the finish.
enum Ran<'a> {
    Load {
        load: LoadOutcome,
        writer: RecordWriter<Recorder<Aggregate>>,
    },
    Cluster {
        cluster: &'a ClusterSpec,
        subject: &'a Subject,
        load: LoadOutcome,
        writer: RecordWriter<Recorder<Vec<RequestRecord>>>,
        /// Where the cluster was, and the load's target URL.
        connected: (ConnectedFacts, String),
    },
}

/// Runs a scenario (with or without a `[cluster]`) into its run directory;
/// with `junit`, also writes JUnit XML there once summary.json is written
/// (whatever the verdict).
pub(super) fn execute(
    scenario: &Scenario,
    out: Option<PathBuf>,
    quiet: bool,
    junit: Option<&Path>,
) -> Result<ExitStatus, RunError> {
    let clock = RunClock::start();
    let subject = match &scenario.cluster {
        Some(c) => Some((c, setup::subject(scenario, c)?)),
        None => None,
    };
    let out = out.unwrap_or_else(|| default_out(scenario, &clock));
    let runtime = match subject {
        // The watchers, actions and the embedded cluster share two workers.
        Some(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rolltest-cluster")
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .map_err(RunError::Runtime)?;
    let mode = match subject {
        Some((c, subject)) => Mode::Cluster(c, subject),
        // A plain load's target resolves before anything is written.
        None => Mode::Load(runtime.block_on(loadgen::resolve(&scenario.target))?),
    };

    let dir = RunDir::create(&out)?;
    dir.write(rundir::SCENARIO, &scenario.text)?;
    dir.write_timeline(&Timeline::default())?;
    if let Mode::Cluster(c, _) = &mode {
        setup::copy_manifests(&dir, c)?;
    }

    let (events, rx) = Events::channel();
    let live = Arc::new(LiveCounters::default());
    let (view_tx, view_rx) = watch::channel(0u32);
    let dispatcher = {
        let _guard = runtime.enter();
        Dispatcher::start(
            rx,
            Progress::new(scenario.load.duration, live.clone(), quiet),
            view_tx,
        )
    };
    let ran = runtime.block_on(async {
        let ran = match &mode {
            Mode::Load(addr) => run_load(scenario, *addr, &dir, clock, &live, &events).await,
            Mode::Cluster(c, subject) => {
                run_cluster(scenario, c, subject, &dir, clock, &live, &events, view_rx).await
            }
        };
        let collected = dispatcher.stop().await;
        ran.map(|ran| (ran, collected))
    });
    // Pods and proxies are gone by now; the runtime has nothing left to do.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let (ran, collected) = ran?;
    let connections = live.connections.load(Ordering::Relaxed);
    let summary = match ran {
        Ran::Load { load, writer } => {
            let aggregate = writer.finish()?.kept;
            let facts = run_facts(scenario, clock, &load, connections, None);
            dir.write_facts(&facts)?;
            finish(&dir, &facts, scenario, Evidence::Load(&aggregate), junit)?
        }
        Ran::Cluster {
            cluster: c,
            subject,
            load,
            writer,
            connected,
        } => {
            let mut records = writer.finish()?.kept;
            let timeline = crate::timeline::finish(collected.events);
            let proxy_mode = c.mode.proxy_mode();
            let input = correlate::Input {
                records: &records,
                timeline: &timeline,
                conns: &load.conns,
                proxy: &collected.proxy,
                proxy_mode,
                load_started_us: load.started_us,
                propagation_allowance_us: c.propagation_allowance_us(),
            };
            let correlation = correlate::Correlation::new(input);
            let attributions = correlation.attribute();
            let retried = correlation.failed_tries();
            let read = correlation.into_facts();
            apply_attributions(&mut records, &attributions);
            apply_failed_tries(&mut records, retried);
            dir.rewrite_records(&records)?;
            dir.write_timeline(&timeline)?;
            let (connected, target) = connected;
            let cluster = cluster_facts(scenario, c, subject, collected.problems, connected);
            let facts = run_facts(scenario, clock, &load, connections, Some((cluster, target)));
            dir.write_facts(&facts)?;
            let evidence = Evidence::Cluster {
                records: &records,
                timeline: &timeline,
                proxy_mode,
                read: Some(read),
            };
            finish(&dir, &facts, scenario, evidence, junit)?
        }
    };
    Ok(summary.verdict.exit_status())
}

/// The generator started, writing to records.csv through the recorder.
struct Started<S> {
    run: LoadRun,
    stop: Arc<Stop>,
    origin: Instant,
    writer: RecordWriter<Recorder<S>>,
}

/// Starts the recorder and the generator: request 0 is due a moment from now.
#[allow(clippy::too_many_arguments)]
fn start_load<S: RecordSink>(
    target: &Target,
    addr: SocketAddr,
    spec: &LoadSpec,
    dir: &RunDir,
    clock: RunClock,
    live: &Arc<LiveCounters>,
    events: &Events,
    kept: impl FnOnce(Instant) -> S,
) -> Result<Started<S>, RunError> {
    let origin = Instant::now() + START_MARGIN;
    let writer = dir.start_writer(Recorder {
        kept: kept(origin),
        events: events.clone(),
    })?;
    let stop = Arc::new(Stop::default());
    let run = loadgen::start(
        target,
        addr,
        spec,
        clock,
        origin,
        writer.sender(),
        stop.clone(),
        live.clone(),
    )?;
    Ok(Started {
        run,
        stop,
        origin,
        writer,
    })
}

/// The line when Ctrl-C stops a run.
fn drain_note(scenario: &Scenario) -> String {
    format!(
        "interrupted: no new requests; waiting up to {} for those in flight",
        humantime::format_duration(scenario.load.timeout)
    )
}

/// What the phases act on: the generator, and in a cluster run its actions
/// and the rollout.
struct RunWindow<'a> {
    run: LoadRun,
    stop: Arc<Stop>,
    /// A cluster run's schedule reaches past the asked duration (by the
    /// settle timeout and the tail); it is stopped, complete, once the
    /// phases are over. A plain load's schedule ends by itself.
    stop_when_complete: bool,
    origin: Instant,
    cluster: Option<(&'a Stage, Actions)>,
    events: &'a Events,
}

impl Window for RunWindow<'_> {
    fn actions_left(&self) -> usize {
        self.cluster.as_ref().map_or(0, |(_, a)| a.left())
    }

    async fn next_action(&mut self) -> ActionEnd {
        match &mut self.cluster {
            Some((_, actions)) => actions.next().await,
            None => ActionEnd::Cancelled,
        }
    }

    fn abort_actions(&mut self) {
        if let Some((_, actions)) = &mut self.cluster {
            actions.abort();
        }
    }

    async fn settle(&mut self, within: Duration) -> Result<String, String> {
        match &self.cluster {
            Some((stage, _)) => stage.settle(self.origin, within, self.events).await,
            None => Ok("no rollout to wait for".into()),
        }
    }

    fn stop_load(&mut self, interrupted: bool) {
        if interrupted {
            self.stop.interrupt.store(true, Ordering::Relaxed);
        } else if self.stop_when_complete {
            self.stop.finish.store(true, Ordering::Relaxed);
        }
    }

    fn load_finished(&self) -> bool {
        self.run.is_finished()
    }
}

/// Waits for the generator's outcome (it has finished by now).
async fn outcome(run: LoadRun) -> Result<LoadOutcome, RunError> {
    Ok(tokio::task::spawn_blocking(move || run.wait())
        .await
        .map_err(RunError::Task)??)
}

/// A plain load: `Loading` for the asked duration, then `Draining`.
async fn run_load<'a>(
    scenario: &Scenario,
    addr: SocketAddr,
    dir: &RunDir,
    clock: RunClock,
    live: &Arc<LiveCounters>,
    events: &Events,
) -> Result<Ran<'a>, RunError> {
    let duration_us = u64::try_from(scenario.load.duration.as_micros()).unwrap_or(u64::MAX);
    let started = start_load(
        &scenario.target,
        addr,
        &scenario.load,
        dir,
        clock,
        live,
        events,
        |origin| Aggregate::new(clock.micros(origin), duration_us),
    )?;
    let plan = Plan {
        asked_end: tokio::time::Instant::from_std(started.origin + scenario.load.duration),
        settle_timeout: Duration::ZERO,
        settle: false,
        tail: Duration::ZERO,
    };
    let mut window = RunWindow {
        run: started.run,
        stop: started.stop,
        stop_when_complete: false,
        origin: started.origin,
        cluster: None,
        events,
    };
    phase::drive(plan, &mut window, ctrl_c(), events, &drain_note(scenario)).await;
    let load = outcome(window.run).await?;
    Ok(Ran::Load {
        load,
        writer: started.writer,
    })
}

/// A run with a `[cluster]`: the cluster's phases, the load's with the
/// actions and the settle, the teardown.
#[allow(clippy::too_many_arguments)]
async fn run_cluster<'a>(
    scenario: &Scenario,
    cluster: &'a ClusterSpec,
    subject: &'a Subject,
    dir: &RunDir,
    clock: RunClock,
    live: &Arc<LiveCounters>,
    events: &Events,
    ready_view: watch::Receiver<u32>,
) -> Result<Ran<'a>, RunError> {
    if let Some(o) = &cluster.overridden {
        events.note(format!(
            "cluster from the flags: {}",
            setup::overrides_note(cluster, o)
        ));
    }
    let reach = cluster::reach(cluster, subject, dir, clock, events).await?;
    let ran = async {
        let stage = Stage::up(
            scenario, cluster, subject, &reach, clock, events, ready_view,
        )
        .await?;
        // The load: scheduled for the asked duration plus the longest the
        // rollout may take to settle; stopped once the phases are over.
        let mut spec = scenario.load.clone();
        spec.duration = scenario.load.duration + cluster.settle_timeout + cluster.tail;
        let started = start_load(
            &stage.target,
            stage.addr,
            &spec,
            dir,
            clock,
            live,
            events,
            |_| Vec::new(),
        )?;
        events.note(format!(
            "load: {} req/s to {}; {} action(s)",
            scenario.load.rate,
            stage.target.url,
            scenario.actions.len()
        ));
        let actions = stage.start_actions(&scenario.actions, started.origin, clock);
        let plan = Plan {
            asked_end: tokio::time::Instant::from_std(started.origin + scenario.load.duration),
            settle_timeout: cluster.settle_timeout,
            settle: !scenario.actions.is_empty(),
            tail: cluster.tail,
        };
        let mut window = RunWindow {
            run: started.run,
            stop: started.stop,
            stop_when_complete: true,
            origin: started.origin,
            cluster: Some((&stage, actions)),
            events,
        };
        phase::drive(plan, &mut window, ctrl_c(), events, &drain_note(scenario)).await;
        let RunWindow { run, .. } = window;
        let load = outcome(run).await?;
        let connected = stage.facts.clone();
        let target = stage.target.url.to_string();
        stage.down(events).await;
        Ok(Ran::Cluster {
            cluster,
            subject,
            load,
            writer: started.writer,
            connected: (connected, target),
        })
    }
    .await;
    reach.stop(events).await;
    ran
}

/// The facts of a run, for run.json: `cluster` (with the load's target
/// URL, resolved from the Service) for a cluster run.
fn run_facts(
    scenario: &Scenario,
    clock: RunClock,
    load: &LoadOutcome,
    connections: u64,
    cluster: Option<(ClusterFacts, String)>,
) -> RunFacts {
    let asked = scenario.load.duration.as_secs_f64();
    // A cluster run's schedule reaches past the asked duration until the
    // rollout settled: its length is what was scheduled.
    let duration_s = match &cluster {
        Some(_) if !load.interrupted => (load.scheduled as f64 / scenario.load.rate).max(asked),
        _ => asked,
    };
    let (cluster, target) = match cluster {
        Some((facts, target)) => (Some(facts), target),
        None => (None, scenario.target.url.to_string()),
    };
    RunFacts {
        scenario: scenario.name.clone(),
        started_at: clock.started_at(),
        target,
        rate: scenario.load.rate,
        duration_s,
        load_started_us: load.started_us,
        ended_us: load.ended_us,
        interrupted: load.interrupted,
        connections,
        rolltest_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster,
    }
}

/// The cluster part of a run's facts.
fn cluster_facts(
    scenario: &Scenario,
    cluster: &ClusterSpec,
    subject: &Subject,
    problems: Vec<String>,
    connected: ConnectedFacts,
) -> ClusterFacts {
    ClusterFacts {
        mode: cluster.mode.name().as_str().into(),
        namespace: connected.namespace,
        deployment: subject.deployment.clone(),
        service: subject.service.clone(),
        proxy: cluster.mode.proxy_mode().as_str().into(),
        findings: lint::lint(&subject.manifests, &setup::lint_options(cluster)),
        asked_duration_s: scenario.load.duration.as_secs_f64(),
        problems,
        context: Some(connected.context),
        server: Some(connected.server),
        kubeconfig: connected.kubeconfig,
        overrides: cluster.overridden.as_ref().map(|o| OverrideFacts {
            kubeconfig: o.flags.kubeconfig.as_ref().map(|p| p.display().to_string()),
            context: o.flags.context.clone(),
            namespace: o.flags.namespace.clone(),
            scenario_mode: o.scenario_mode.as_str().into(),
        }),
    }
}
