//! The cause groups: failures by (cause, pod), what proves them, and the
//! knob that fixes them, with values taken from the evidence (the fix texts
//! themselves are [`crate::knobs::fix`]'s).
//!
//! Everything here derives from the records (their `pod` and `cause`, or the
//! fresh attributions) and the timeline, never from the proxy records, so a
//! `rolltest report` rebuild from `records.csv` + `timeline.json` gives the
//! same text.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::allowance::AllowanceSource;
use super::facts::{Facts, PodFacts, Window};
use super::route::{span, to_i64};
use super::{Correlation, Input, ProxyMode};
use crate::knobs::fix::{self, secs};
use crate::model::{
    Attribution, Cause, CauseGroup, ErrorKind, LifecycleKind, Outcome, RequestRecord,
};

/// Builds the groups (see [`super::groups`]).
pub(crate) fn build(
    correlation: &Correlation,
    by_seq: &HashMap<u64, &Attribution>,
) -> Vec<CauseGroup> {
    let input = &correlation.input;
    let failed = || {
        input
            .records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
    };
    let missing = failed().any(|r| !by_seq.contains_key(&r.seq) && r.cause.is_none());
    let fresh: Vec<Attribution> = if missing {
        correlation.attribute()
    } else {
        Vec::new()
    };
    let fresh: HashMap<u64, &Attribution> = fresh.iter().map(|a| (a.seq, a)).collect();

    let mut groups: BTreeMap<(Cause, Option<&str>), Vec<&RequestRecord>> = BTreeMap::new();
    for r in failed() {
        let (cause, pod) = match by_seq.get(&r.seq).or_else(|| fresh.get(&r.seq)) {
            Some(a) => (a.cause, a.pod.as_deref()),
            None => (r.cause.unwrap_or(Cause::Unexplained), r.pod.as_deref()),
        };
        let pod = if cause == Cause::Capacity { None } else { pod };
        groups.entry((cause, pod)).or_default().push(r);
    }

    let slack = input.proxy_mode.slack_us();
    let ev = Evidence {
        facts: &correlation.facts,
        input,
        slack: to_i64(slack),
        allowance: correlation.allowance_us(),
        allowance_source: correlation.allowance.source,
        slowest_ok: input
            .records
            .iter()
            .filter(|r| r.outcome == Outcome::Ok)
            .filter_map(|r| r.latency_us)
            .max()
            .map_or(0, to_i64),
    };
    let mut out: Vec<CauseGroup> = groups
        .into_iter()
        .map(|((cause, pod), mut recs)| {
            recs.sort_by_key(|r| (span(r).0, r.seq));
            ev.group(cause, pod, &recs)
        })
        .collect();
    out.sort_by(|a, b| {
        (a.cause, std::cmp::Reverse(a.count), &a.pod).cmp(&(
            b.cause,
            std::cmp::Reverse(b.count),
            &b.pod,
        ))
    });
    out
}

struct Evidence<'a> {
    facts: &'a Facts,
    input: &'a Input<'a>,
    slack: i64,
    allowance: i64,
    allowance_source: AllowanceSource,
    /// The slowest ok request's latency (µs): what a drain must outlast.
    slowest_ok: i64,
}

impl Evidence<'_> {
    fn group(&self, cause: Cause, pod: Option<&str>, recs: &[&RequestRecord]) -> CauseGroup {
        let mut kinds: BTreeMap<ErrorKind, u64> = BTreeMap::new();
        for r in recs {
            if let Some(k) = r.outcome.error_kind() {
                *kinds.entry(k).or_default() += 1;
            }
        }
        let first = recs.first().map_or(0, |r| span(r).0);
        let last = recs.last().map_or(0, |r| span(r).0);
        let facts = pod.and_then(|p| self.facts.pod(p));
        let (evidence, fix) = match (cause, facts) {
            (Cause::EndpointLag, Some(p)) => self.endpoint_lag(p, recs),
            (Cause::KilledInFlight, Some(p)) => self.killed(p, recs),
            (Cause::NotReady, Some(p)) => self.not_ready(p, recs),
            (Cause::Capacity, _) => self.capacity(recs),
            (Cause::KeepaliveRace, Some(p)) => self.keepalive_race(p, recs),
            (Cause::Unexplained, _) => self.unexplained(pod, recs),
            (_, None) => self.unknown_pod(cause, pod, recs),
        };
        CauseGroup {
            cause,
            pod: pod.map(str::to_owned),
            count: recs.len() as u64,
            first_us: super::facts::to_u64(first),
            last_us: super::facts::to_u64(last),
            kinds,
            evidence,
            fix,
        }
    }

    /// Seconds from the load's start, 2 decimals.
    fn at(&self, t: i64) -> String {
        secs(t - to_i64(self.input.load_started_us))
    }

    /// A moment in words: "at 4.03 s", or "between 4.00 s and 5.10 s"
    /// where the cluster does not publish it more precisely.
    fn when(&self, w: Window) -> String {
        if w.exact() {
            format!("at {}", self.at(w.lo))
        } else {
            format!("between {} and {}", self.at(w.lo), self.at(w.hi))
        }
    }

    fn span_text(&self, recs: &[&RequestRecord]) -> String {
        let first = recs.first().map_or(0, |r| span(r).0);
        let last = recs.last().map_or(0, |r| span(r).0);
        if recs.len() <= 1 {
            format!("at {}", self.at(first))
        } else {
            format!("between {} and {}", self.at(first), self.at(last))
        }
    }

    fn endpoint_lag(&self, p: &PodFacts, recs: &[&RequestRecord]) -> (String, String) {
        let mut ev = format!("pod {}", p.name);
        match (p.sigterm, p.gone()) {
            (Some(t), Some(x)) if t != x => {
                let _ = write!(
                    ev,
                    " got SIGTERM {} and exited {}",
                    self.when(t),
                    self.when(x)
                );
            }
            (_, Some(x)) => {
                let _ = write!(ev, " exited {}", self.when(x));
            }
            (Some(t), None) => {
                let _ = write!(ev, " got SIGTERM {} and stopped listening", self.when(t));
            }
            (None, None) => match p.deletion {
                Some(d) => {
                    let _ = write!(ev, " was deleted at {} and stopped serving", self.at(d));
                }
                None => ev.push_str(" stopped serving"),
            },
        }
        match (p.proxy_removed, p.slice_unready) {
            (Some(t), _) => {
                let _ = write!(ev, "; the proxy still routed to it until {}", self.at(t));
            }
            (None, Some(t)) => {
                let why = match self.allowance_source {
                    AllowanceSource::Measured => {
                        "measured: the failures a stale route causes stopped that long after the slowest EndpointSlice update"
                    }
                    AllowanceSource::Scenario => "the scenario's propagation_allowance",
                    AllowanceSource::Default => "the default: nothing in the run to measure it on",
                };
                let _ = write!(
                    ev,
                    "; the EndpointSlice marked it not ready at {} and node proxies may route to it for {} more (until {}; {why})",
                    self.at(t),
                    secs(self.allowance),
                    self.at(t.saturating_add(self.allowance))
                );
            }
            (None, None) => ev.push_str("; no endpoint update removing it was seen"),
        }
        let _ = write!(ev, "; {} {}", kinds_phrase(recs), self.span_text(recs));
        (ev, self.prestop_fix(p))
    }

    /// The preStop fix, sized by [`fix::pre_stop_seconds`] from the slowest
    /// propagation measured over every pod (else this pod's).
    fn prestop_fix(&self, p: &PodFacts) -> String {
        let external = self.input.proxy_mode == ProxyMode::External;
        let total = |q: &PodFacts| -> Option<(i64, i64)> {
            let d = q.deletion?;
            // Two watches deliver the deletion and the slice update, so the
            // slice may be seen a moment before the deletion it follows:
            // that is no propagation at all, never a negative one.
            if external {
                let s = (q.slice_unready? - d).max(0);
                Some((s, s + self.allowance))
            } else {
                let t = (q.proxy_removed.or(q.slice_unready)? - d).max(0);
                Some((t, t))
            }
        };
        let slowest = self
            .facts
            .pods
            .iter()
            .filter_map(total)
            .max_by_key(|x| x.1)
            .or_else(|| total(p));
        let Some((measured, _)) = slowest else {
            return fix::PRE_STOP_UNMEASURED.into();
        };
        if external {
            fix::pre_stop_external(measured, self.allowance)
        } else {
            fix::pre_stop(measured)
        }
    }

    fn killed(&self, p: &PodFacts, recs: &[&RequestRecord]) -> (String, String) {
        let gone = p.gone();
        let in_flight = recs
            .iter()
            .filter(|r| {
                let (s, e) = span(r);
                gone.is_some_and(|g| super::rules::in_flight_at(g, s, e, self.slack))
            })
            .count();
        let pinned = recs.len() - in_flight;
        let mut steps = Vec::new();
        if let Some(d) = p.deletion {
            steps.push(format!("deleted at {}", self.at(d)));
        }
        match p.prestop {
            (Some(a), Some(b)) => {
                steps.push(format!("preStop {}–{}", self.at(a.lo), self.at(b.hi)))
            }
            (Some(a), None) => steps.push(format!("preStop started {}", self.when(a))),
            _ => {}
        }
        if let Some(t) = p.sigterm {
            steps.push(format!("SIGTERM {}", self.when(t)));
        }
        if let Some(k) = p.sigkill {
            steps.push(format!("SIGKILL {} (grace period over)", self.when(k)));
        }
        if let Some((x, code, signal)) = p.exit {
            let how = match (code, signal) {
                (_, Some(sig)) => format!(" (signal {sig})"),
                (Some(c), None) => format!(" (exit code {c})"),
                (None, None) => String::new(),
            };
            let after = p
                .sigterm
                .filter(|t| t.exact() && x.exact() && x.lo >= t.lo)
                .map(|t| format!(", {} ms after SIGTERM", (x.lo - t.lo) / 1000))
                .unwrap_or_default();
            steps.push(format!("exited {}{how}{after}", self.when(x)));
        }
        let mut ev = format!("pod {}: {}", p.name, steps.join(", "));
        let mut parts = Vec::new();
        if in_flight > 0 {
            parts.push(format!(
                "{} in flight when it exited",
                plural(in_flight as u64, "request was", "requests were")
            ));
        }
        if pinned > 0 {
            parts.push(format!(
                "{} sent on keep-alive connections pinned to it and cut after it exited",
                plural(pinned as u64, "request", "requests")
            ));
        }
        let _ = write!(ev, "; {} ({})", parts.join(", "), kinds_phrase(recs));

        // Grace ≥ preStop + drain + 1 s: the drain must outlast the slowest
        // request the app serves (the longest ok or failed latency seen).
        // The hooks' length where known; on a real cluster only their start
        // is published, and start → exit bounds them.
        let measured = self
            .facts
            .pods
            .iter()
            .filter_map(|q| Some(q.prestop.1?.hi - q.prestop.0?.lo))
            .max();
        let bound = self
            .facts
            .pods
            .iter()
            .filter_map(|q| Some(q.gone()?.lo - q.prestop.0?.hi))
            .max();
        let prestop = match (measured, bound) {
            (Some(us), _) => fix::PreStop::Measured(us.max(0)),
            (None, Some(us)) => fix::PreStop::AtMost(us.max(0)),
            (None, None) => fix::PreStop::Measured(0),
        };
        let drain = recs
            .iter()
            .filter_map(|r| r.latency_us)
            .map(to_i64)
            .fold(self.slowest_ok, i64::max);
        let fix = fix::grace_and_drain(p.sigkill.is_some(), prestop, drain);
        (ev, fix)
    }

    /// keepalive_race: how long each connection had lived and idled before
    /// the raced request, and what the pod was doing.
    fn keepalive_race(&self, p: &PodFacts, recs: &[&RequestRecord]) -> (String, String) {
        // Each connection's requests, sorted: (sent, seq, ended).
        let wanted: std::collections::HashSet<u64> = recs.iter().filter_map(|r| r.conn).collect();
        let mut conns: HashMap<u64, Vec<(i64, u64, i64)>> = HashMap::new();
        for q in self.input.records {
            if let Some(c) = q.conn.filter(|c| wanted.contains(c))
                && q.outcome != Outcome::Dropped
            {
                let (s, e) = span(q);
                conns.entry(c).or_default().push((s, q.seq, e));
            }
        }
        for v in conns.values_mut() {
            v.sort_unstable();
        }
        let mut idle: Vec<i64> = Vec::new();
        let mut age: Vec<i64> = Vec::new();
        for r in recs {
            let Some(v) = r.conn.and_then(|c| conns.get(&c)) else {
                continue;
            };
            let s = span(r).0;
            let n = v.partition_point(|q| (q.0, q.1) < (s, r.seq));
            let (Some(first), Some(prev)) = (v.first(), n.checked_sub(1).and_then(|i| v.get(i)))
            else {
                continue;
            };
            age.push(s - first.0);
            idle.push(s - prev.2);
        }
        let range = |v: &[i64]| -> String {
            match (v.iter().min(), v.iter().max()) {
                (Some(a), Some(b)) if b - a >= 10_000 => format!("{}–{}", secs(*a), secs(*b)),
                (Some(a), _) => secs(*a),
                _ => "?".to_owned(),
            }
        };
        let draining = p.sigterm.map(|t| t.lo).or(p.deletion);
        let first = recs.first().map_or(0, |r| span(r).0);
        let draining = draining.filter(|&t| first >= t - self.slack);
        let mut ev = format!(
            "{} {} on reused keep-alive connections to pod {}: the server closed each as the request was written (no response byte); the connections had idled {} before it and lived {}",
            kinds_phrase(recs),
            self.span_text(recs),
            p.name,
            range(&idle),
            range(&age),
        );
        match draining {
            Some(t) => {
                let _ = write!(
                    ev,
                    "; the pod was draining (terminating since {}) and had not exited",
                    self.at(t)
                );
            }
            None => ev.push_str("; the pod kept running, Ready, with no exit and no termination"),
        }
        let fix = fix::keepalive(idle.iter().copied().min().unwrap_or(0), draining.is_some());
        (ev, fix)
    }

    /// Containers the liveness probe restarted between `from` and `to` (µs):
    /// (pod, restarts), by pod. A liveness probe that fails while the
    /// process is fine (it checks a dependency) turns an outage into
    /// restarts, each a cold start and, from the second on, a
    /// CrashLoopBackOff wait: the pods stay out of service longer than the
    /// outage (the kubelet restarts a container whose liveness probe failed
    /// failureThreshold times).
    fn liveness_restarts(&self, from: i64, to: i64) -> Vec<(String, u32)> {
        let mut failed: BTreeMap<&str, bool> = BTreeMap::new();
        let mut restarts: BTreeMap<String, u32> = BTreeMap::new();
        for e in &self.input.timeline.events {
            let (Some(pod), t) = (e.pod.as_deref(), e.when_us()) else {
                continue;
            };
            match &e.kind {
                LifecycleKind::ProbeFailed { probe, .. } if probe == "liveness" => {
                    failed.insert(pod, true);
                }
                LifecycleKind::ContainerStarted { restart_count }
                    if *restart_count > 0
                        && t >= from
                        && t <= to
                        && failed.get(pod).copied().unwrap_or(false) =>
                {
                    *restarts.entry(pod.to_owned()).or_default() += 1;
                }
                _ => {}
            }
        }
        restarts.into_iter().collect()
    }

    /// The evidence and fix of liveness restarts during `recs`, if any.
    fn liveness_note(&self, recs: &[&RequestRecord]) -> Option<(String, String)> {
        let first = recs.first().map_or(0, |r| span(r).0);
        let last = recs.last().map_or(0, |r| span(r).1);
        let restarts = self.liveness_restarts(first - self.slack, last + self.slack);
        if restarts.is_empty() {
            return None;
        }
        let n: u32 = restarts.iter().map(|(_, c)| c).sum();
        let pods: Vec<&str> = restarts.iter().map(|(p, _)| p.as_str()).collect();
        Some((
            format!(
                "; meanwhile the liveness probe restarted {} ({}), each a cold start and then a CrashLoopBackOff wait",
                plural(u64::from(n), "container", "containers"),
                pods.join(", ")
            ),
            fix::LIVENESS.to_owned(),
        ))
    }

    fn not_ready(&self, p: &PodFacts, recs: &[&RequestRecord]) -> (String, String) {
        let first = recs.first().map_or(0, |r| span(r).0);
        let last = recs.last().map_or(0, |r| span(r).0);
        let since = p.ready_since(first + self.slack);
        let mut ev = match since {
            Some(t) => format!("pod {} became Ready at {}", p.name, self.at(t)),
            None => format!("pod {} counted as Ready", p.name),
        };
        if let Some((x, code)) = p
            .crash_exits
            .iter()
            .find(|(x, _)| x.lo <= last + self.slack && since.is_none_or(|t| x.hi >= t))
        {
            let code = code
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default();
            let _ = write!(
                ev,
                "; its container exited {}{code} without a deletion",
                self.when(*x)
            );
        }
        let _ = write!(
            ev,
            "; {} {} while it counted as Ready",
            kinds_phrase(recs),
            self.span_text(recs)
        );
        // The liveness probe went on to restart this very pod: it is the
        // probe to fix (readiness and minReadySeconds would not help).
        let restarted = self
            .liveness_restarts(first - self.slack, i64::MAX)
            .iter()
            .any(|(pod, _)| *pod == p.name);
        if restarted {
            ev.push_str("; the liveness probe restarted it afterwards");
            return (ev, fix::LIVENESS_ONLY.to_owned());
        }
        let new_pod = self.created_during_load(&p.name);
        // An old pod whose readiness probe did take it out, late.
        let left = since
            .and_then(|t| p.ready.iter().find(|iv| iv.0 == t))
            .map(|iv| iv.1)
            .filter(|&end| end != i64::MAX && end >= first);
        if let (false, Some(end)) = (new_pod, left) {
            let _ = write!(
                ev,
                "; its readiness probe took it out of the endpoints at {}",
                self.at(end)
            );
            return (ev, fix::readiness_detection(end - first));
        }
        let window = since.map_or(0, |t| last - t);
        let mut fix = fix::readiness(window, new_pod);
        if let Some((more, first_fix)) = self.liveness_note(recs) {
            ev.push_str(&more);
            fix.insert_str(0, &first_fix);
        }
        (ev, fix)
    }

    /// Whether the pod was created after the load started (a rollout's or a
    /// replacement's new pod, not one that was serving before).
    fn created_during_load(&self, pod: &str) -> bool {
        self.input
            .timeline
            .for_pod(pod)
            .find(|e| matches!(e.kind, LifecycleKind::PodCreated { .. }))
            .is_some_and(|e| e.when_us() >= to_i64(self.input.load_started_us))
    }

    /// What took the ready endpoints of a shortfall `[start, end)` away, as
    /// the fix for it: pods deleted then, by the last action before (a
    /// rollout, a drain, pod deletes), or none deleted at all (an outage).
    fn capacity_fix(&self, start: i64, end: i64) -> &'static str {
        // A deletion takes the pod out of the endpoints at once; one within
        // the allowance before the shortfall began started it.
        let from = start - self.allowance - self.slack;
        let deleted = self
            .facts
            .pods
            .iter()
            .any(|p| p.deletion.is_some_and(|d| d >= from && d <= end));
        if !deleted {
            return fix::OUTAGE;
        }
        let action = self
            .input
            .timeline
            .events
            .iter()
            .filter(|e| e.when_us() <= end)
            .filter_map(|e| match &e.kind {
                LifecycleKind::ActionStarted { action, .. } => Some(action.as_str()),
                _ => None,
            })
            .next_back();
        match action {
            Some("rollout-restart" | "set-image") => fix::STRATEGY,
            Some("drain-node") => fix::PDB,
            Some("delete-pod") => fix::REPLICAS,
            _ => fix::STRATEGY_AND_PDB,
        }
    }

    fn capacity(&self, recs: &[&RequestRecord]) -> (String, String) {
        let mut tally: BTreeMap<(i64, i64), (u64, u32, Option<i32>)> = BTreeMap::new();
        let mut none = 0u64;
        for r in recs {
            let (s, e) = span(r);
            match self
                .facts
                .deficit_overlapping(s - self.slack, e + self.slack)
            {
                Some(d) => {
                    tally
                        .entry((d.start, d.end))
                        .or_insert((0, d.min_ready, d.desired))
                        .0 += 1;
                }
                None => none += 1,
            }
        }
        let top = tally
            .iter()
            .max_by_key(|(k, v)| (v.0, std::cmp::Reverse(k.0)));
        let mut ev = match top {
            Some((&(start, end), &(_, ready, desired))) => {
                let until = if end == i64::MAX {
                    "the end of the run".to_owned()
                } else {
                    self.at(end)
                };
                let what = match desired {
                    Some(d) => format!("only {ready} of {d} desired endpoints were ready"),
                    None => format!("only {ready} endpoints were ready"),
                };
                format!("between {} and {until} {what}", self.at(start))
            }
            None => "the proxy had no ready endpoint".to_owned(),
        };
        let _ = write!(ev, "; {} {}", kinds_phrase(recs), self.span_text(recs));
        let others = tally.len().saturating_sub(1);
        if others > 0 || (none > 0 && top.is_some()) {
            let _ = write!(
                ev,
                " ({} other shortfall interval(s), {} with no ready endpoint in the proxy)",
                others, none
            );
        }
        let mut fix = match top {
            Some((&(start, end), _)) => self.capacity_fix(start, end).to_owned(),
            None => fix::STRATEGY_AND_PDB.to_owned(),
        };
        if let Some((more, first_fix)) = self.liveness_note(recs) {
            ev.push_str(&more);
            if fix == fix::OUTAGE {
                // No disruption took the pods: the liveness probe is the one
                // knob the evidence implicates.
                fix = fix::OUTAGE_AFTER_LIVENESS.to_owned();
            }
            fix.insert_str(0, &first_fix);
        }
        (ev, fix)
    }

    fn unexplained(&self, pod: Option<&str>, recs: &[&RequestRecord]) -> (String, String) {
        let on = pod.map(|p| format!(" on pod {p}")).unwrap_or_default();
        let ev = format!(
            "{}{on} {}: no pod exit, endpoint lag, readiness failure or capacity shortfall in the timeline accounts for them",
            kinds_phrase(recs),
            self.span_text(recs)
        );
        let fix = "read the app's logs at those times; if the timeline misses events (a watch disconnected), rerun".to_owned();
        (ev, fix)
    }

    /// A pod the timeline never names (its events were not observed).
    fn unknown_pod(
        &self,
        cause: Cause,
        pod: Option<&str>,
        recs: &[&RequestRecord],
    ) -> (String, String) {
        let ev = format!(
            "{} {} on pod {} ({}); the timeline has no events for that pod",
            kinds_phrase(recs),
            self.span_text(recs),
            pod.unwrap_or("?"),
            cause.as_str()
        );
        (
            ev,
            "rerun with the pod watchers working to see its lifecycle".into(),
        )
    }
}

/// "41 requests refused, 3 reset, 2 answered 503".
fn kinds_phrase(recs: &[&RequestRecord]) -> String {
    let mut counts: BTreeMap<(usize, String), u64> = BTreeMap::new();
    for r in recs {
        let Some(k) = r.outcome.error_kind() else {
            continue;
        };
        let label = match (k, r.status) {
            (ErrorKind::ConnectRefused, _) => "refused".to_owned(),
            (ErrorKind::ConnectionReset, _) => "reset".to_owned(),
            (ErrorKind::Timeout, _) => "timed out".to_owned(),
            (ErrorKind::HostUnreachable, _) => "found no route to the host".to_owned(),
            (ErrorKind::Http5xx | ErrorKind::Http4xx, Some(s)) => format!("answered {s}"),
            (ErrorKind::Http5xx, None) => "answered 5xx".to_owned(),
            (ErrorKind::Http4xx, None) => "answered 4xx".to_owned(),
            (ErrorKind::Other, _) => "failed otherwise".to_owned(),
        };
        *counts.entry((k.index(), label)).or_default() += 1;
    }
    let mut out = String::new();
    for (i, ((_, label), n)) in counts.iter().enumerate() {
        if i == 0 {
            let _ = write!(out, "{} {label}", plural(*n, "request", "requests"));
        } else {
            let _ = write!(out, ", {n} {label}");
        }
    }
    out
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
