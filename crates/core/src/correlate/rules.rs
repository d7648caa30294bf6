//! The cause rules, in priority order: `killed_in_flight` > `endpoint_lag` >
//! `not_ready` > `capacity` > `unexplained`. The first rule that fits wins.
//!
//! Notation: `s` is when the request was sent, `e` when it ended (intended
//! time + latency), `P` the pod it went to (see `route`). Every comparison
//! with a cluster timestamp tolerates [`ProxyMode::slack_us`]: our
//! observation of a failure and the server's timestamp of its cause can be a
//! few ms apart, in either order.

use super::facts::{Facts, PodFacts};
use super::route::{Route, Via, span, to_i64};
use super::{Input, ProxyMode};
use crate::model::{Cause, ErrorKind, ProxyFailure, ProxyOutcome, RequestRecord};

/// How far before the exit's timestamp a request may have been sent and
/// still count as in flight when it came (µs): 10 ms for clock jitter only.
/// Not the full slack: exit stamps are, if anything, late (a watch sees the
/// exit after it happened), so a wider margin would count new connections
/// opened just after the exit (endpoint lag) as cut in flight.
pub(crate) const IN_FLIGHT_LEAD_US: i64 = 10_000;

/// Whether a request sent at `s` and ended at `e` was in flight when its
/// pod's process went at `gone` (`s < gone ≤ e`, `s` up to
/// [`IN_FLIGHT_LEAD_US`] after the exit's stamp, `e` up to `slack` before
/// it). The rule and the evidence's "in flight" count both ask this.
pub(crate) fn in_flight_at(gone: i64, s: i64, e: i64, slack: i64) -> bool {
    s < gone + IN_FLIGHT_LEAD_US && gone <= e + slack
}

/// The rules' context: the timeline's facts and the mode's tolerances.
pub(crate) struct Ctx<'f> {
    pub facts: &'f Facts,
    pub mode: ProxyMode,
    pub slack: i64,
    pub allowance: i64,
    /// Termination exits `(time, pod index)`, sorted.
    exits: Vec<(i64, usize)>,
}

/// What a failure looked like, from the client and the proxy.
#[derive(Debug, Clone, Copy)]
struct Failure {
    kind: ErrorKind,
    /// The pod itself answered with a 5xx (its header, or an L7 backend 5xx).
    pod_5xx: bool,
    /// The L7 proxy's own failure reason.
    l7: Option<ProxyFailure>,
    /// The L4 proxy found no endpoint.
    l4_no_endpoints: bool,
}

impl Failure {
    fn of(r: &RequestRecord, route: &Route) -> Failure {
        let kind = r.outcome.error_kind().unwrap_or(ErrorKind::Other);
        let (l7, backend_5xx, l4_no_endpoints) = match route.proxy.map(|p| p.outcome) {
            Some(ProxyOutcome::Proxy { reason, .. }) => (Some(reason), false, false),
            Some(ProxyOutcome::Backend { status }) => (None, status >= 500, false),
            Some(ProxyOutcome::NoEndpoints) => (None, false, true),
            _ => (None, false, false),
        };
        Failure {
            kind,
            pod_5xx: kind == ErrorKind::Http5xx && (route.via == Via::Header || backend_5xx),
            l7,
            l4_no_endpoints,
        }
    }

    /// The connection broke under the request (reset, closed early, hung).
    fn cut(self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConnectionReset | ErrorKind::Timeout | ErrorKind::Other
        ) || self.l7 == Some(ProxyFailure::BackendGone)
    }

    /// Nobody was listening or the pod turned it away.
    fn turned_away(self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConnectRefused | ErrorKind::ConnectionReset | ErrorKind::Other
        ) || self.pod_5xx
            || matches!(
                self.l7,
                Some(ProxyFailure::ConnectFailed | ProxyFailure::BackendGone)
            )
    }

    /// The proxy had no endpoint at all.
    fn no_endpoints(self) -> bool {
        self.l4_no_endpoints || self.l7 == Some(ProxyFailure::NoEndpoints)
    }
}

impl<'f> Ctx<'f> {
    /// The rules over the timeline's `facts`.
    pub fn new(input: &Input, facts: &'f Facts) -> Ctx<'f> {
        let slack = input.proxy_mode.slack_us();
        let mut exits: Vec<(i64, usize)> = facts
            .pods
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.gone().map(|g| (g, i)))
            .collect();
        exits.sort_unstable();
        Ctx {
            facts,
            mode: input.proxy_mode,
            slack: to_i64(slack),
            allowance: to_i64(input.propagation_allowance_us),
            exits,
        }
    }

    /// The cause of one failed request and the pod it is charged to.
    pub fn classify<'r>(
        &'r self,
        r: &RequestRecord,
        route: &Route<'r>,
    ) -> (Cause, Option<&'r str>) {
        let f = Failure::of(r, route);
        let (s, e) = span(r);
        if let Some(pod) = route.pod {
            if let Some(p) = self.facts.pod(pod) {
                if self.killed_in_flight(p, route, f, s, e) {
                    return (Cause::KilledInFlight, Some(pod));
                }
                if self.endpoint_lag(p, route, f, s) {
                    return (Cause::EndpointLag, Some(pod));
                }
                if self.not_ready(p, route, f, s) {
                    return (Cause::NotReady, Some(pod));
                }
            } else if f.pod_5xx || (route.via == Via::Proxy && f.turned_away()) {
                // A pod the timeline never mentions (its events were missed)
                // answered or refused: it was routed to, so it counted as
                // Ready.
                return (Cause::NotReady, Some(pod));
            }
        } else if !f.no_endpoints() && route.proxy.is_none() {
            if let Some(p) = self.inferred_killed(f, s, e) {
                return (Cause::KilledInFlight, Some(p));
            }
            if let Some(p) = self.inferred_lag(f, s) {
                return (Cause::EndpointLag, Some(p));
            }
            if let Some(p) = self.inferred_crash(f, s) {
                return (Cause::NotReady, Some(p));
            }
        }
        if self.capacity(f, s, e) {
            return (Cause::Capacity, route.pod);
        }
        (Cause::Unexplained, route.pod)
    }

    /// `killed_in_flight`: P's process ended as part of termination while the
    /// request was on it.
    ///
    /// Kubernetes: after the deletion the kubelet runs preStop, then sends
    /// SIGTERM to PID 1 only, then SIGKILL at the grace deadline. An app that
    /// exits on SIGTERM without draining, or is SIGKILLed, drops whatever it
    /// was serving: `s < exit ≤ e` (`s` up to [`IN_FLIGHT_LEAD_US`] after
    /// the exit's stamp, `e` up to the slack before it: the failure is often
    /// seen before the exit is) and the request broke (reset, closed early,
    /// timed out; L7: the backend went away).
    ///
    /// Also: kube-proxy pins established connections (conntrack) even after
    /// the endpoint is removed, so a request sent on a keep-alive connection
    /// opened to P before its SIGTERM, and cut after P's deletion, was cut by
    /// P closing or resetting that connection while terminating. The L7
    /// proxy's pooled backend connections behave the same (`BackendGone`
    /// after the deletion).
    fn killed_in_flight(&self, p: &PodFacts, route: &Route, f: Failure, s: i64, e: i64) -> bool {
        if !f.cut() {
            return false;
        }
        if let Some(gone) = p.gone()
            && in_flight_at(gone, s, e, self.slack)
        {
            return true;
        }
        let Some(deleted) = p.deletion else {
            return false;
        };
        if s < deleted - self.slack {
            return false;
        }
        if f.l7 == Some(ProxyFailure::BackendGone) {
            return true;
        }
        let reused = !route.first_on_conn && matches!(route.via, Via::Proxy | Via::ConnHistory);
        let opened_before_stop = match (route.conn_open, p.stop()) {
            (Some(open), Some(stop)) => open < stop + self.slack,
            _ => true,
        };
        !self.mode.per_request() && reused && opened_before_stop
    }

    /// `endpoint_lag`: a new connection (L4, external) or request (L7) was
    /// routed to P after P stopped serving and before the proxy applied P's
    /// removal.
    ///
    /// Kubernetes: the EndpointSlice marks P `ready=false` at the DELETE, in
    /// parallel with preStop; every node's proxy applies it some time later.
    /// If P stops listening (SIGTERM to an app that closes its listener, or
    /// its exit) before that, new traffic still routed to it is refused or
    /// reset (L7: 502). A preStop sleep longer than the propagation keeps P
    /// serving until no proxy routes to it.
    fn endpoint_lag(&self, p: &PodFacts, route: &Route, f: Failure, s: i64) -> bool {
        if route.via == Via::ConnHistory || !(f.turned_away() || f.kind == ErrorKind::Timeout) {
            return false;
        }
        if f.kind == ErrorKind::Timeout && route.via != Via::Proxy {
            return false;
        }
        let Some(stop) = p.stop().or(p.deletion) else {
            return false;
        };
        let routed = match (self.mode, route.proxy) {
            (ProxyMode::Embedded(_), Some(rec)) => to_i64(rec.start_us),
            _ => s,
        };
        let until = p.routed_until(self.allowance).unwrap_or(i64::MAX);
        routed >= stop - self.slack && routed <= until.saturating_add(self.slack)
    }

    /// `not_ready`: P answered 5xx itself, or refused or reset, while it
    /// counted as Ready and had not been told to stop.
    ///
    /// Kubernetes: only Ready pods get traffic; Ready comes from the
    /// readiness probe (or from the container running, without one). A probe
    /// that passes before the app can serve, an app that crashes after Ready
    /// (the condition flips only after `failureThreshold × periodSeconds`),
    /// or a readiness that ignores a dead dependency all route traffic to a
    /// pod that fails it. "Counted as Ready": a Ready interval began at or
    /// before `s`, or the timeline has no readiness facts for P (it was
    /// routed to, so something counted it as Ready). During preStop the pod
    /// serves normally, so only SIGTERM or the exit end "not terminating".
    fn not_ready(&self, p: &PodFacts, route: &Route, f: Failure, s: i64) -> bool {
        if !(f.pod_5xx || (route.via != Via::Unknown && f.turned_away())) {
            return false;
        }
        if p.stop().is_some_and(|stop| s >= stop - self.slack) {
            return false;
        }
        !p.has_readiness() || p.ready_since(s + self.slack).is_some()
    }

    /// `capacity`: the proxy had no endpoint, or the request timed out or got
    /// a 5xx (or, with no endpoint ready, was refused or reset) while fewer
    /// endpoints were ready than the Deployment's desired replicas.
    ///
    /// Kubernetes: a rolling update with `maxUnavailable > 0`, or a drain
    /// without a PodDisruptionBudget, takes ready pods away before their
    /// replacements are Ready; the rest are overloaded, and with none left
    /// kube-proxy rejects connections (an ingress answers 503).
    fn capacity(&self, f: Failure, s: i64, e: i64) -> bool {
        if f.no_endpoints() {
            return true;
        }
        let Some(d) = self
            .facts
            .deficit_overlapping(s - self.slack, e + self.slack)
        else {
            return false;
        };
        match f.kind {
            ErrorKind::Timeout | ErrorKind::Http5xx => true,
            ErrorKind::ConnectRefused | ErrorKind::ConnectionReset => d.min_ready == 0,
            _ => false,
        }
    }

    /// Time-window `killed_in_flight` when P is unknown: the request was in
    /// flight across some pod's termination exit and broke (reset or
    /// timeout). The exit closest to the failure wins.
    fn inferred_killed(&self, f: Failure, s: i64, e: i64) -> Option<&str> {
        if !matches!(f.kind, ErrorKind::ConnectionReset | ErrorKind::Timeout) {
            return None;
        }
        let lo = self.exits.partition_point(|x| x.0 <= s - IN_FLIGHT_LEAD_US);
        let hi = self.exits.partition_point(|x| x.0 <= e + self.slack);
        let &(_, i) = self.exits.get(lo..hi)?.last()?;
        Some(self.facts.pods[i].name.as_str())
    }

    /// Time-window `not_ready` when P is unknown: refused or reset at `s`
    /// after some pod X's container exited without a deletion (a crash)
    /// while X still counted as Ready: until its Ready condition fell, plus
    /// the propagation allowance (or open, if it never fell). The latest
    /// crash wins.
    fn inferred_crash(&self, f: Failure, s: i64) -> Option<&str> {
        if !matches!(
            f.kind,
            ErrorKind::ConnectRefused | ErrorKind::ConnectionReset
        ) {
            return None;
        }
        self.facts
            .pods
            .iter()
            .flat_map(|p| p.crash_exits.iter().map(move |x| (x.0, p)))
            .filter(|&(x, p)| {
                let Some(since) = p.ready_since(x) else {
                    return false;
                };
                let end = p
                    .ready
                    .iter()
                    .find(|iv| iv.0 == since)
                    .map_or(i64::MAX, |iv| iv.1.saturating_add(self.allowance));
                s >= x - self.slack && s <= end.saturating_add(self.slack)
            })
            .map(|(x, p)| (x, p.name.as_str()))
            .max()
            .map(|(_, name)| name)
    }

    /// Time-window `endpoint_lag` when P is unknown: refused, reset or 502 at
    /// `s` inside `[X's SIGTERM (or deletion), X's proxy removal (or slice
    /// update + allowance)]` for some pod X. Of several windows, the one that
    /// opened last (the pod that stopped most recently) wins.
    ///
    /// A timeout fits too once X has exited: after its exit the kubelet
    /// tears X's sandbox down, and a new connection a stale proxy still
    /// sends to X's address goes unanswered (packets dropped), so the client
    /// times out where a live address would have refused. Before the exit
    /// X still serves, and a timeout then is not X's lag.
    fn inferred_lag(&self, f: Failure, s: i64) -> Option<&str> {
        let timeout = f.kind == ErrorKind::Timeout;
        let fits = matches!(
            f.kind,
            ErrorKind::ConnectRefused | ErrorKind::ConnectionReset
        ) || timeout
            || (f.kind == ErrorKind::Http5xx && f.l7 != Some(ProxyFailure::NoEndpoints));
        if !fits {
            return None;
        }
        self.facts
            .pods
            .iter()
            .filter(|p| !timeout || p.gone().is_some_and(|g| s >= g - self.slack))
            .filter_map(|p| {
                let start = p.stop().or(p.deletion)?;
                let end = p.routed_until(self.allowance)?;
                (s >= start - self.slack && s <= end.saturating_add(self.slack))
                    .then_some((start, p.name.as_str()))
            })
            .max()
            .map(|(_, name)| name)
    }
}
