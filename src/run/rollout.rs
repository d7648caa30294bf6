//! `rolltest run` for a scenario with a `[cluster]`: the rollout under load.
//!
//! ```text
//! manifests ─► lint ─┐
//! [embedded cluster] ─► kube client ─► apply ─► wait ready ─┐
//!                                                           ▼
//!      watchers (pods, slices, events, RS, deployment) ─► timeline ◄─ proxy reports
//!      load generator (own thread) ─► records.csv                 ◄─ actions at offsets
//!                                                           ▼
//!      load until: asked duration, actions done, rollout settled, old pods gone, + tail
//!                                                           ▼
//!      correlator (records × timeline × proxy) ─► causes ─► summary, report, verdict
//! ```
//!
//! One kube-rs code path serves both modes: in embedded mode the cluster is
//! started here and the same client is pointed at its kubeconfig.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use rolltest_minicluster::{
    cluster::{ClusterOptions, EmbeddedCluster},
    kubelet::ImageMap,
    proxy::ProxyMode,
};
use tokio::sync::mpsc;

use rolltest_core::{
    ExitStatus, correlate,
    model::{
        Attribution, LifecycleEvent, LifecycleKind, Outcome, ProxyRecord, RequestRecord, RunClock,
        Severity, Timeline,
    },
    summary::{Aggregate, ClusterFacts, OverrideFacts, PropagationStats, RunFacts, Summary},
    verdict::Verdict,
};

use rolltest_loadgen::{self as loadgen, LiveCounters, Stop};

use super::{
    error::RunError,
    load::START_MARGIN,
    outcome::{print_summary, write_junit},
};
use crate::{
    k8s::{self, KubeSource},
    lint::{self, LintOptions},
    manifest::{self, Manifest},
    progress::Progress,
    report,
    rundir::{self, RunDir},
    scenario::{ClusterMode, ClusterSpec, EmbeddedSpec, Overridden, ProxyKind, Scenario},
    timeline::{self, WatchTarget, proxy::ProxyCollector},
};

/// Where the embedded cluster's kubeconfig is written in the run directory,
/// so `kubectl --kubeconfig DIR/kubeconfig get pods -w` can watch a run.
pub const KUBECONFIG: &str = "kubeconfig";
/// Copies of the manifests as applied (for `compare` and for the record).
pub const MANIFESTS_DIR: &str = "manifests";

/// What the setup found out about the objects under test.
struct Subject {
    deployment: String,
    service: Option<String>,
    docs: Vec<serde_json::Value>,
    manifests: Vec<Manifest>,
}

/// Reads the manifests and picks the Deployment and Service under test.
fn subject(scenario: &Scenario, cluster: &ClusterSpec) -> Result<Subject, RunError> {
    let mut manifests = Vec::new();
    for path in &cluster.manifests {
        manifests.extend(manifest::load_file(path)?);
    }
    let named = |kind: &str| -> Vec<String> {
        manifests
            .iter()
            .filter(|m| m.kind == kind)
            .map(|m| m.name.clone())
            .collect()
    };
    let deployments = named("Deployment");
    let deployment = match (&cluster.deployment, deployments.as_slice()) {
        (Some(d), _) => d.clone(),
        (None, [one]) => one.clone(),
        (None, []) => {
            return Err(RunError::Setup(
                "the manifests hold no Deployment: name the one to test with `deployment = \"...\"` in [cluster]".into(),
            ));
        }
        (None, many) => {
            return Err(RunError::Setup(format!(
                "the manifests hold {} Deployments ({}): name the one to test with `deployment = \"...\"` in [cluster]",
                many.len(),
                many.join(", ")
            )));
        }
    };
    let services = named("Service");
    let service = match &scenario.target.service {
        Some(Some(s)) => Some(s.clone()),
        Some(None) => match services.as_slice() {
            [one] => Some(one.clone()),
            [] => {
                return Err(RunError::Setup(
                    "[target] has no url and the manifests hold no Service to send the load to"
                        .into(),
                ));
            }
            many => {
                return Err(RunError::Setup(format!(
                    "the manifests hold {} Services ({}): name the one to load with `service = \"...\"` in [target]",
                    many.len(),
                    many.join(", ")
                )));
            }
        },
        // A url was given: watch the endpoints of the Service named, else
        // of the only one in the manifests, if any.
        None => match (&scenario.target.service_name, services.as_slice()) {
            (Some(s), _) => Some(s.clone()),
            (None, [one]) => Some(one.clone()),
            _ => None,
        },
    };
    let docs = manifests.iter().map(|m| m.value.clone()).collect();
    Ok(Subject {
        deployment,
        service,
        docs,
        manifests,
    })
}

/// Lint options for the run's manifests: the propagation the run expects.
fn lint_options(cluster: &ClusterSpec) -> LintOptions {
    match &cluster.mode {
        ClusterMode::Embedded(e) => LintOptions {
            propagation: e.propagation.max,
            propagation_source: lint::PropagationSource::Flag,
            ..LintOptions::default()
        },
        ClusterMode::Kubeconfig { .. } => LintOptions::default(),
    }
}

/// `rolltest run --check` for a cluster scenario: the manifests parse, the
/// Deployment and Service are found; returns a line to print and the lint
/// findings.
pub fn check(scenario: &Scenario, cluster: &ClusterSpec) -> Result<String, RunError> {
    let subject = subject(scenario, cluster)?;
    let findings = lint::lint(&subject.manifests, &lint_options(cluster));
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let mode = cluster.mode.name().as_str();
    let flags = cluster.overridden.as_ref().map_or_else(String::new, |o| {
        format!(" ({})", overrides_note(cluster, o))
    });
    Ok(format!(
        "{} objects in {} manifest file(s); deployment {:?}{}; {} action(s); {mode} cluster{flags}; lint: {} finding(s), {errors} error(s)",
        subject.manifests.len(),
        cluster.manifests.len(),
        subject.deployment,
        subject
            .service
            .as_deref()
            .map_or_else(String::new, |s| format!(", service {s:?}")),
        scenario.actions.len(),
        findings.len(),
    ))
}

/// The cluster flags in words: `--context kind-b -n demo`, and `, instead
/// of the scenario's embedded cluster` when they switched the mode.
fn overrides_note(cluster: &ClusterSpec, o: &Overridden) -> String {
    let mut note = o.flags.to_flags();
    if o.scenario_mode != cluster.mode.name() {
        note.push_str(&format!(
            ", instead of the scenario's {} cluster",
            o.scenario_mode.as_str()
        ));
    }
    note
}

fn cluster_options(
    spec: &EmbeddedSpec,
    proxy_events: mpsc::UnboundedSender<rolltest_minicluster::proxy::ProxyEvent>,
) -> ClusterOptions {
    let mut images = ImageMap::new();
    let me = std::env::current_exe()
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    for (image, command) in &spec.images {
        let mut command = command.clone();
        if command[0] == crate::scenario::cluster::ROLLTEST_PLACEHOLDER
            && let Some(me) = &me
        {
            command[0].clone_from(me);
        }
        images.push(image.clone(), command);
    }
    ClusterOptions {
        nodes: spec.nodes,
        proxy: match spec.proxy {
            ProxyKind::L4 => ProxyMode::L4,
            ProxyKind::L7 => ProxyMode::L7 {
                retry_connect_errors: spec.l7_retry,
            },
        },
        propagation: spec.propagation,
        proxy_events: Some(proxy_events),
        images,
        ..ClusterOptions::default()
    }
}

/// What the async part of a run hands back.
struct Observed {
    load: loadgen::LoadOutcome,
    events: Vec<LifecycleEvent>,
    proxy: Vec<ProxyRecord>,
    problems: Vec<String>,
    namespace: String,
    target: String,
    /// The context connected with.
    context: String,
    /// The API server.
    server: String,
    /// Kubeconfig mode: where the kubeconfig came from.
    kubeconfig: Option<String>,
}

/// Runs a scenario with a `[cluster]`; with `junit`, also writes JUnit XML
/// there once summary.json is written (whatever the verdict).
pub fn execute(
    scenario: &Scenario,
    cluster: &ClusterSpec,
    out: Option<PathBuf>,
    quiet: bool,
    junit: Option<&Path>,
) -> Result<ExitStatus, RunError> {
    let clock = RunClock::start();
    let subject = subject(scenario, cluster)?;
    let findings = lint::lint(&subject.manifests, &lint_options(cluster));
    let out = out.unwrap_or_else(|| {
        Path::new("reports").join(format!(
            "{}-{}",
            scenario.slug(),
            clock.started_at_compact()
        ))
    });
    let dir = RunDir::create(&out)?;
    dir.write(rundir::SCENARIO, &scenario.text)?;
    dir.write_timeline(&Timeline::default())?;
    copy_manifests(&dir, cluster)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rolltest-cluster")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let asked = scenario.load.duration;
    let live = Arc::new(LiveCounters::default());
    let say = |text: &str| {
        if !quiet {
            eprintln!("{text}");
        }
    };
    if let Some(o) = &cluster.overridden {
        say(&format!(
            "cluster from the flags: {}",
            overrides_note(cluster, o)
        ));
    }

    // Every record goes to records.csv as it arrives (a crash loses
    // nothing) and is kept in memory for the correlator.
    let writer = dir.start_writer(Vec::new())?;
    let observed = runtime.block_on(observe(
        scenario,
        cluster,
        &subject,
        &dir,
        clock,
        live.clone(),
        quiet,
        &say,
        writer.sender(),
    ));
    // Pods and proxies are gone by now; the runtime has nothing left to do.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let mut records = writer.finish()?;
    let observed = observed?;
    let timeline = timeline::finish(observed.events);
    let proxy_mode = cluster.mode.proxy_mode();
    let input = correlate::Input {
        records: &records,
        timeline: &timeline,
        conns: &observed.load.conns,
        proxy: &observed.proxy,
        proxy_mode,
        load_started_us: observed.load.started_us,
        propagation_allowance_us: correlate::DEFAULT_PROPAGATION_ALLOWANCE_US,
    };
    let attributions = correlate::attribute(&input);
    apply_attributions(&mut records, &attributions);
    dir.rewrite_records(&records)?;
    dir.write_timeline(&timeline)?;

    let scheduled_s = observed.load.scheduled as f64 / scenario.load.rate;
    let facts = RunFacts {
        scenario: scenario.name.clone(),
        started_at: clock.started_at(),
        target: observed.target.clone(),
        rate: scenario.load.rate,
        duration_s: if observed.load.interrupted {
            asked.as_secs_f64()
        } else {
            scheduled_s.max(asked.as_secs_f64())
        },
        load_started_us: observed.load.started_us,
        ended_us: observed.load.ended_us,
        interrupted: observed.load.interrupted,
        connections: live.connections.load(Ordering::Relaxed),
        rolltest_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster: Some(ClusterFacts {
            mode: cluster.mode.name().as_str().into(),
            namespace: observed.namespace.clone(),
            deployment: subject.deployment.clone(),
            service: subject.service.clone(),
            proxy: proxy_mode.as_str().into(),
            findings,
            asked_duration_s: asked.as_secs_f64(),
            problems: observed.problems,
            context: Some(observed.context),
            server: Some(observed.server),
            kubeconfig: observed.kubeconfig,
            overrides: cluster.overridden.as_ref().map(|o| OverrideFacts {
                kubeconfig: o.flags.kubeconfig.as_ref().map(|p| p.display().to_string()),
                context: o.flags.context.clone(),
                namespace: o.flags.namespace.clone(),
                scenario_mode: o.scenario_mode.as_str().into(),
            }),
        }),
    };
    dir.write_facts(&facts)?;
    let summary = finish(&dir, &facts, &records, &timeline, scenario, proxy_mode)?;
    write_junit(junit, &summary, &facts, &dir)?;
    Ok(summary.verdict.exit_status())
}

/// Fills each failed record's cause and, where the record had none, its pod.
fn apply_attributions(records: &mut [RequestRecord], attributions: &[Attribution]) {
    let index: HashMap<u64, usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.outcome, Outcome::Failed(_)))
        .map(|(i, r)| (r.seq, i))
        .collect();
    for a in attributions {
        if let Some(&i) = index.get(&a.seq) {
            let r = &mut records[i];
            r.cause = Some(a.cause);
            if r.pod.is_none() {
                r.pod.clone_from(&a.pod);
            }
        }
    }
}

/// Builds summary.json and report.html of a rollout run from its records
/// (pods and causes filled in) and timeline; shared by `run` and `report`.
pub(crate) fn finish(
    dir: &RunDir,
    facts: &RunFacts,
    records: &[RequestRecord],
    timeline: &Timeline,
    scenario: &Scenario,
    proxy_mode: correlate::ProxyMode,
) -> Result<Summary, RunError> {
    let duration_us = (facts.duration_s * 1e6).round() as u64;
    let mut aggregate = Aggregate::new(facts.load_started_us, duration_us);
    for r in records {
        aggregate.add(r);
    }
    let input = correlate::Input {
        records,
        timeline,
        conns: &[],
        proxy: &[],
        proxy_mode,
        load_started_us: facts.load_started_us,
        propagation_allowance_us: correlate::DEFAULT_PROPAGATION_ALLOWANCE_US,
    };
    let causes = correlate::groups(&input, &[]);
    let propagation = correlate::propagation(&input);
    let mut summary = Summary::build(facts, &aggregate, &scenario.limits);
    let cluster = facts.cluster.as_ref();
    summary.lint = cluster.map(|c| c.findings.clone()).unwrap_or_default();
    summary.causes = causes;
    summary.propagation = Some(PropagationStats::new(propagation));
    if let Some(c) = cluster
        && !c.problems.is_empty()
    {
        // The disruption did not go as asked: a passing run proves nothing,
        // but failures already seen are evidence whatever happened after.
        summary.problems.clone_from(&c.problems);
        if summary.verdict == Verdict::Pass {
            summary
                .inconclusive_reasons
                .extend(c.problems.iter().cloned());
            summary.verdict = Verdict::Inconclusive;
        }
    }
    dir.write_summary(&summary)?;
    let failures: Vec<report::FailurePoint> = records
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Failed(kind) => Some(report::FailurePoint {
                sent_us: r.sent_us.unwrap_or(r.intended_us),
                pod: r.pod.clone(),
                cause: r.cause,
                kind,
            }),
            _ => None,
        })
        .collect();
    let propagation = summary
        .propagation
        .as_ref()
        .map(|p| p.pods.clone())
        .unwrap_or_default();
    let rollout = report::Rollout {
        timeline,
        causes: &summary.causes,
        failures: &failures,
        propagation: &propagation,
        findings: &summary.lint,
        load_started_us: facts.load_started_us,
        ended_us: facts.ended_us,
    };
    dir.write(
        rundir::REPORT,
        report::render(&summary, &aggregate, facts, Some(&rollout)),
    )?;
    print_summary(&summary, dir.path());
    Ok(summary)
}

fn copy_manifests(dir: &RunDir, cluster: &ClusterSpec) -> Result<(), RunError> {
    let target = dir.file(MANIFESTS_DIR);
    std::fs::create_dir_all(&target).map_err(|source| {
        RunError::RunDir(rundir::RunDirError::Write {
            path: target.clone(),
            source,
        })
    })?;
    for path in &cluster.manifests {
        let name = path.file_name().map_or_else(
            || "manifest.yaml".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        // Two files of the same name from different folders keep both.
        let mut dest = target.join(&name);
        let mut n = 2;
        while dest.exists() {
            dest = target.join(format!("{n}-{name}"));
            n += 1;
        }
        std::fs::copy(path, &dest).map_err(|source| {
            RunError::RunDir(rundir::RunDirError::Write { path: dest, source })
        })?;
    }
    Ok(())
}

/// Seconds from the load's start, for progress lines.
fn secs_since(origin: Instant) -> f64 {
    Instant::now()
        .saturating_duration_since(origin)
        .as_secs_f64()
}

#[allow(clippy::too_many_arguments)]
async fn observe(
    scenario: &Scenario,
    cluster: &ClusterSpec,
    subject: &Subject,
    dir: &RunDir,
    clock: RunClock,
    live: Arc<LiveCounters>,
    quiet: bool,
    say: &(dyn Fn(&str) + Sync),
    records: loadgen::RecordSender,
) -> Result<Observed, RunError> {
    let (proxy_tx, proxy_rx) = mpsc::unbounded_channel();
    let embedded = match &cluster.mode {
        ClusterMode::Embedded(spec) => {
            say(&format!(
                "starting the embedded cluster: {} node(s), {} proxy, endpoint propagation {}",
                spec.nodes,
                match spec.proxy {
                    ProxyKind::L4 => "l4",
                    ProxyKind::L7 => "l7",
                },
                spec.propagation
            ));
            let options = cluster_options(spec, proxy_tx);
            let c = EmbeddedCluster::start(&options)
                .await
                .map_err(|e| RunError::Cluster(e.to_string()))?;
            drop(options);
            let kubeconfig = c.kubeconfig();
            dir.write(KUBECONFIG, &kubeconfig)?;
            say(&format!(
                "  watch it: kubectl --kubeconfig {} get pods -w",
                dir.file(KUBECONFIG).display()
            ));
            Some((c, kubeconfig))
        }
        ClusterMode::Kubeconfig { .. } => {
            drop(proxy_tx);
            None
        }
    };
    let result = observe_cluster(
        scenario,
        cluster,
        subject,
        clock,
        live,
        quiet,
        say,
        records,
        embedded.as_ref(),
        proxy_rx,
    )
    .await;
    if let Some((c, _)) = embedded {
        say("stopping the embedded cluster");
        c.shutdown().await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn observe_cluster(
    scenario: &Scenario,
    cluster: &ClusterSpec,
    subject: &Subject,
    clock: RunClock,
    live: Arc<LiveCounters>,
    quiet: bool,
    say: &(dyn Fn(&str) + Sync),
    records: loadgen::RecordSender,
    embedded: Option<&(EmbeddedCluster, String)>,
    proxy_rx: mpsc::UnboundedReceiver<rolltest_minicluster::proxy::ProxyEvent>,
) -> Result<Observed, RunError> {
    let source = match (&cluster.mode, embedded) {
        (_, Some((_, kubeconfig))) => {
            KubeSource::text(kubeconfig.clone()).with_namespace(cluster.namespace.clone())
        }
        (ClusterMode::Kubeconfig { path, context }, None) => KubeSource::file(path.clone())
            .with_context(context.clone())
            .with_namespace(cluster.namespace.clone()),
        (ClusterMode::Embedded(_), None) => {
            return Err(RunError::Setup("the embedded cluster did not start".into()));
        }
    };
    let kubeconfig = embedded.is_none().then(|| source.describe());
    let k = k8s::connect(&source).await?;
    say(&format!(
        "cluster {} ({}, context {}), namespace {}: applying {} object(s) (server-side apply, field manager rolltest)",
        k.server,
        k.version,
        k.context,
        k.namespace,
        subject.docs.len()
    ));
    if embedded.is_some() && k8s::ensure_namespace(&k).await? {
        say(&format!("  created namespace {}", k.namespace));
    }
    let applied = k8s::apply(&k, &subject.docs).await?;
    let progress_line = move |line: &str| {
        if !quiet {
            eprintln!("  {line}");
        }
    };
    let ready = k8s::wait_ready(
        &k,
        &subject.deployment,
        subject.service.as_deref(),
        cluster.ready_timeout,
        Some(&progress_line),
    )
    .await?;
    say(&format!(
        "deployment {} ready: {} replica(s){}",
        subject.deployment,
        ready.replicas,
        ready.service.as_ref().map_or_else(String::new, |s| format!(
            ", service {} with {} ready endpoint(s)",
            s.name, s.ready_endpoints
        ))
    ));

    let mut target = scenario.target.clone();
    if target.service.is_some() {
        let Some(service) = &subject.service else {
            return Err(RunError::Setup("no Service to send the load to".into()));
        };
        let key = format!("{}/{}", k.namespace, service);
        let addr = embedded
            .map(|(c, _)| c.service_addresses())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.service == key)
            .min_by_key(|a| (a.node_port, a.port))
            .map(|a| a.listen)
            .ok_or_else(|| {
                RunError::Setup(format!(
                    "the embedded cluster has no proxy listening for service {key}"
                ))
            })?;
        target.resolve_service(addr);
    }
    let target_text = target.url.to_string();

    // Watchers and the proxy's reports feed one channel of lifecycle events.
    // The embedded proxy's count of ready endpoints is published for the
    // start of the load (below).
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<LifecycleEvent>();
    let (view_tx, mut view_rx) = tokio::sync::watch::channel(0u32);
    let events_task = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(e) = ev_rx.recv().await {
            if let LifecycleKind::ProxyView { ready, .. } = e.kind {
                let _ = view_tx.send(ready);
            }
            v.push(e);
        }
        v
    });
    let (rec_tx, mut rec_rx) = mpsc::unbounded_channel::<ProxyRecord>();
    let records_task = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(r) = rec_rx.recv().await {
            v.push(r);
        }
        v
    });
    let collector = tokio::spawn(
        ProxyCollector::new(clock)
            .only_pods(format!("{}-", subject.deployment))
            .run(proxy_rx, ev_tx.clone(), rec_tx),
    );
    let watch = timeline::start(
        k.client.clone(),
        &k.namespace,
        WatchTarget {
            deployment: subject.deployment.clone(),
            pod_selector: ready.selector.clone(),
            service: subject.service.clone(),
            infer_steps_from_killing: embedded.is_none(),
        },
        clock,
        ev_tx.clone(),
    );

    // The load: scheduled for the asked duration plus the longest the
    // rollout may take to settle; stopped (`finish`) once it has.
    // Load starts once traffic can flow: in embedded mode when the proxy's
    // own (lagging) view has every replica, so the first requests do not
    // meet a proxy that has not heard of the pods yet; in every mode once
    // the target answers.
    if let (Some(_), ClusterMode::Embedded(spec)) = (embedded, &cluster.mode) {
        let want = u32::try_from(ready.replicas).unwrap_or(0);
        let wait = spec.propagation.max + Duration::from_secs(5);
        let seen = matches!(
            tokio::time::timeout(wait, view_rx.wait_for(|r| *r >= want)).await,
            Ok(Ok(_))
        );
        if !seen {
            say(&format!(
                "  the proxy lists {} of {want} ready endpoint(s) after {}; starting anyway",
                *view_rx.borrow(),
                humantime::format_duration(wait)
            ));
        }
    }
    let addr = loadgen::resolve(&target).await?;
    warm_up(
        addr,
        &target,
        scenario.load.timeout,
        cluster.ready_timeout,
        &progress_line,
    )
    .await?;
    let mut spec = scenario.load.clone();
    spec.duration = scenario.load.duration + cluster.settle_timeout + cluster.tail;
    let origin = Instant::now() + START_MARGIN;
    let stop = Arc::new(Stop::default());
    let load = loadgen::start(
        &target,
        addr,
        &spec,
        clock,
        origin,
        records,
        stop.clone(),
        live.clone(),
    )?;
    let progress = Progress::start(scenario.load.duration, live, quiet);
    progress.notifier(quiet)(&format!(
        "load: {} req/s to {target_text}; {} action(s)",
        scenario.load.rate,
        scenario.actions.len()
    ));

    // Drains leave their nodes cordoned, as kubectl does, also when they
    // fail or are cut short; teardown gives back every node cordoned during
    // the run, so it notes which ones were cordoned before.
    let drains = scenario
        .actions
        .iter()
        .any(|a| matches!(a.kind, crate::scenario::ActionKind::DrainNode { .. }));
    let cordoned_before = if cluster.teardown && drains {
        Some(k8s::unschedulable_nodes(&k).await?)
    } else {
        None
    };
    let mut actions = tokio::task::JoinSet::new();
    for action in scenario.actions.clone() {
        let k = k.clone();
        let tx = ev_tx.clone();
        let deployment = subject.deployment.clone();
        let due = tokio::time::Instant::from_std(origin + action.at);
        actions.spawn(async move {
            tokio::time::sleep_until(due).await;
            let r = k8s::run_action(&k, &action, &deployment, &tx, &clock).await;
            (action, r)
        });
    }

    let mut problems = Vec::new();
    let note = progress.notifier(quiet);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let interrupted = async {
        // Phase 1: the asked duration, reporting actions as they finish.
        let end_of_asked = tokio::time::Instant::from_std(origin + scenario.load.duration);
        let settle_deadline = end_of_asked + cluster.settle_timeout;
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return true,
                () = tokio::time::sleep_until(end_of_asked) => break,
                Some(done) = actions.join_next(), if !actions.is_empty() => {
                    note_action(&note, origin, done, &mut problems);
                }
            }
        }
        // Phase 2: every action done.
        while !actions.is_empty() {
            tokio::select! {
                _ = &mut ctrl_c => return true,
                () = tokio::time::sleep_until(settle_deadline) => {
                    problems.push(format!(
                        "{} action(s) still running after settle_timeout ({})",
                        actions.len(),
                        humantime::format_duration(cluster.settle_timeout)
                    ));
                    actions.abort_all();
                    break;
                }
                Some(done) = actions.join_next() => note_action(&note, origin, done, &mut problems),
            }
        }
        // Phase 3: the rollout complete and every old pod gone.
        let left = settle_deadline.saturating_duration_since(tokio::time::Instant::now());
        if !scenario.actions.is_empty() {
            tokio::select! {
                _ = &mut ctrl_c => return true,
                settled = k8s::wait_settled(&k, &subject.deployment, left.max(Duration::from_secs(1)), Some(&note)) => {
                    match settled {
                        Ok(s) => note(&format!(
                            "{:.2} s: rollout settled: {} pod(s) of the current template, every old pod gone",
                            secs_since(origin),
                            s.pods.len()
                        )),
                        Err(e) => problems.push(format!("the rollout did not settle: {e}")),
                    }
                }
            }
        }
        // Phase 4: the tail.
        tokio::select! {
            _ = &mut ctrl_c => return true,
            () = tokio::time::sleep(cluster.tail) => {}
        }
        false
    }
    .await;
    if interrupted {
        stop.interrupt.store(true, Ordering::Relaxed);
        note("interrupted: no new requests; cleaning up");
    } else {
        stop.finish.store(true, Ordering::Relaxed);
    }
    actions.abort_all();
    let outcome = tokio::task::spawn_blocking(move || load.wait())
        .await
        .map_err(|_| RunError::Setup("the load generator's thread was lost".into()))??;
    progress.finish();

    for e in watch.stop().await {
        problems.push(format!("lifecycle watch: {e}"));
    }
    if cluster.teardown {
        say("teardown: deleting what was applied");
        if let Err(e) = k8s::teardown(&k, &applied, Duration::from_secs(60)).await {
            say(&format!("teardown failed: {e}"));
        }
        if let Some(before) = &cordoned_before {
            match k8s::unschedulable_nodes(&k).await {
                Ok(now) => {
                    for node in now.iter().filter(|n| !before.contains(n)) {
                        if let Err(e) = k8s::uncordon(&k, node).await {
                            say(&format!("uncordon {node} failed: {e}"));
                        }
                    }
                }
                Err(e) => say(&format!("cannot list nodes to uncordon them: {e}")),
            }
        }
    }
    drop(ev_tx);
    // The proxies report until the cluster stops; their view after the load
    // is of no interest: a moment for the last connections' reports, then
    // the collector goes (and with it the last senders of both channels).
    tokio::time::sleep(Duration::from_millis(100)).await;
    collector.abort();
    let _ = collector.await;
    let events = match tokio::time::timeout(Duration::from_secs(2), events_task).await {
        Ok(Ok(v)) => v,
        _ => Vec::new(),
    };
    let proxy = match tokio::time::timeout(Duration::from_secs(2), records_task).await {
        Ok(Ok(v)) => v,
        _ => Vec::new(),
    };
    Ok(Observed {
        load: outcome,
        events,
        proxy,
        problems,
        namespace: k.namespace.clone(),
        target: target_text,
        context: k.context.clone(),
        server: k.server.clone(),
        kubeconfig,
    })
}

/// Requests in a row that must answer below 500 before the load starts.
const WARM_UP_IN_A_ROW: u32 = 3;

/// Sends single requests to the target, built as the load builds them
/// ([`loadgen::probe`]), until [`WARM_UP_IN_A_ROW`] in a row answer below
/// 500 (each within the load's own request timeout, the whole bounded by
/// `timeout`): proves the URL reaches the app before any request is counted.
async fn warm_up(
    addr: std::net::SocketAddr,
    target: &rolltest_loadgen::Target,
    request_timeout: Duration,
    timeout: Duration,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), RunError> {
    let started = Instant::now();
    let mut in_a_row = 0;
    let mut last = String::from("no answer yet");
    let mut reported = Instant::now();
    while in_a_row < WARM_UP_IN_A_ROW {
        if started.elapsed() > timeout {
            return Err(RunError::NotServing(format!(
                "the target {} never answered {WARM_UP_IN_A_ROW} requests in a row below 500 within {} (last: {last}); check [target]",
                target.url,
                humantime::format_duration(timeout)
            )));
        }
        let status = match tokio::time::timeout(request_timeout, loadgen::probe(target, addr)).await
        {
            Ok(Ok(code)) => Some(code),
            Ok(Err(e)) => {
                last = e;
                None
            }
            Err(_) => {
                last = "timed out".into();
                None
            }
        };
        match status {
            Some(code) if code < 500 => in_a_row += 1,
            Some(code) => {
                last = format!("HTTP {code}");
                in_a_row = 0;
            }
            None => in_a_row = 0,
        }
        if in_a_row < WARM_UP_IN_A_ROW {
            if reported.elapsed() > Duration::from_secs(5) {
                progress(&format!(
                    "waiting for the target {} to answer ({last})",
                    target.url
                ));
                reported = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(if status.is_some() {
                20
            } else {
                200
            }))
            .await;
        }
    }
    Ok(())
}

type ActionDone = Result<
    (
        crate::scenario::Action,
        Result<k8s::ActionReport, k8s::K8sError>,
    ),
    tokio::task::JoinError,
>;

fn note_action(
    note: &(dyn Fn(&str) + Sync),
    origin: Instant,
    done: ActionDone,
    problems: &mut Vec<String>,
) {
    match done {
        Ok((action, Ok(report))) => {
            note(&format!(
                "{:.2} s: {} {}: {}",
                secs_since(origin),
                action.kind.name(),
                report.target,
                report.detail
            ));
        }
        Ok((action, Err(e))) => {
            let text = format!(
                "action {} ({}) failed: {e}",
                action.index,
                action.kind.name()
            );
            note(&text);
            problems.push(text);
        }
        Err(e) if e.is_cancelled() => {}
        Err(e) => problems.push(format!("an action's task failed: {e}")),
    }
}
