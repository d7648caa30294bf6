//! The cause rules, in priority order, the first that fits wins:
//!
//! 1. `killed_in_flight`, 2. `keepalive_race`, 3. `endpoint_lag`,
//! 4. `capacity` (a Ready pod overloaded), 5. `not_ready`, for a request
//!    whose pod is known;
//! 1. `capacity` (no endpoint ready at all), 2. time-window
//!    `killed_in_flight`, 3. `endpoint_lag`, 4. `not_ready`, for one whose
//!    pod is not (a real cluster's new connections);
//!
//! Then `capacity`, else `unexplained`.
//!
//! A pod's termination steps are windows ([`Window`]): an instant from the
//! embedded kubelet's record, a second from a real kubelet's timestamps,
//! wider where a moment is not published. Each rule reads the bound that
//! makes it possible ("could the pod have exited while the request was on
//! it?"): `lo` for "after", `hi` for "before".
//!
//! Notation: `s` is when the request was sent, `e` when it ended (intended
//! time + latency), `P` the pod it went to (see `route`). Every comparison
//! with a cluster timestamp tolerates [`ProxyMode::slack_us`]: our
//! observation of a failure and the server's timestamp of its cause can be a
//! few ms apart, in either order.

use std::collections::HashMap;

use super::facts::{Facts, PodFacts, Window};
use super::route::{Route, Via, span, to_i64};
use super::{Input, ProxyMode};
use crate::model::{Cause, ErrorKind, Outcome, ProxyFailure, ProxyOutcome, RequestRecord};

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
pub(crate) fn in_flight_at(gone: Window, s: i64, e: i64, slack: i64) -> bool {
    s < gone.hi + IN_FLIGHT_LEAD_US && gone.lo <= e + slack
}

/// How close before a request a crash exit of its pod must be to account
/// for a reset on a reused connection (µs): the client learns of the closed
/// connection about this late at most on a busy machine.
const CRASH_NEAR_US: i64 = 200_000;

/// The rules' context: the timeline's facts and the mode's tolerances.
pub(crate) struct Ctx<'f> {
    pub facts: &'f Facts,
    pub mode: ProxyMode,
    pub slack: i64,
    pub allowance: i64,
    /// Termination exits `(earliest, latest, pod index)`, sorted.
    exits: Vec<(i64, i64, usize)>,
    /// Per pod, when it answered a request without failing (sent times,
    /// sorted): an overloaded pod serves some, a broken one none.
    served: HashMap<&'f str, Vec<i64>>,
}

/// What a failure looked like, from the client and the proxy.
#[derive(Debug, Clone, Copy)]
struct Failure {
    kind: ErrorKind,
    /// A response head arrived before the failure.
    answered: bool,
    /// The request got a connection (the generator records none when the
    /// connect itself failed or timed out): only then can it have been in
    /// flight on a pod.
    connected: bool,
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
            answered: r.status.is_some(),
            connected: r.conn.is_some(),
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

    /// A new connection found nobody at the address: the connect timed out
    /// (packets dropped) or the host was unreachable (ARP gave up).
    fn unanswered(self) -> bool {
        matches!(self.kind, ErrorKind::Timeout | ErrorKind::HostUnreachable)
    }

    /// The proxy had no endpoint at all.
    fn no_endpoints(self) -> bool {
        self.l4_no_endpoints || self.l7 == Some(ProxyFailure::NoEndpoints)
    }
}

impl<'f> Ctx<'f> {
    /// The rules over the timeline's `facts`; `allowance` (µs) is how long
    /// node proxies may follow an EndpointSlice update.
    pub fn new(input: &Input<'f>, facts: &'f Facts, allowance: i64) -> Ctx<'f> {
        let slack = input.proxy_mode.slack_us();
        let mut exits: Vec<(i64, i64, usize)> = facts
            .pods
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.gone().map(|g| (g.lo, g.hi, i)))
            .collect();
        exits.sort_unstable();
        let mut served: HashMap<&'f str, Vec<i64>> = HashMap::new();
        for r in input.records {
            if let (Outcome::Ok, Some(pod)) = (r.outcome, r.pod.as_deref()) {
                served.entry(pod).or_default().push(span(r).0);
            }
        }
        for v in served.values_mut() {
            v.sort_unstable();
        }
        Ctx {
            facts,
            mode: input.proxy_mode,
            slack: to_i64(slack),
            allowance,
            exits,
            served,
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
                if self.keepalive_race(p, route, f, s, e) {
                    return (Cause::KeepaliveRace, Some(pod));
                }
                if self.endpoint_lag(p, route, f, s) {
                    return (Cause::EndpointLag, Some(pod));
                }
                if self.overloaded(p, f, s, e) {
                    return (Cause::Capacity, Some(pod));
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
            if self.nothing_ready(f, s) {
                return (Cause::Capacity, None);
            }
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
            (Some(open), Some(stop)) => open < stop.hi + self.slack,
            _ => true,
        };
        // Pinned to a pod that had exited (or whose exit was never seen):
        // what answers there is a dead address or nothing. While the pod
        // still ran, a reset on an idle connection is the pod closing it
        // (its drain): `keepalive_race`'s, with its own fix.
        let exited = p.gone().is_none_or(|g| s >= g.lo - self.slack);
        !self.mode.per_request() && reused && opened_before_stop && exited
    }

    /// `keepalive_race`: the request was written on a reused keep-alive
    /// connection that the server closed at that moment, and it was reset
    /// before any response byte, while P still ran: no exit of P (in
    /// flight, pinned or a crash) accounts for it.
    ///
    /// HTTP/1.1: a server closes an idle keep-alive connection after its
    /// idle timeout (Node.js 5 s by default), or every idle one when it
    /// drains on SIGTERM; a client that picks that connection from its pool
    /// as the close is on the wire writes into a closed socket and gets a
    /// reset (or EOF) with no response. Nothing in Kubernetes is involved;
    /// clients that retry idempotent requests on such a reset (Go's
    /// net/http, browsers) never show it.
    fn keepalive_race(&self, p: &PodFacts, route: &Route, f: Failure, s: i64, e: i64) -> bool {
        if self.mode.per_request()
            || f.kind != ErrorKind::ConnectionReset
            || f.answered
            || route.first_on_conn
            || !matches!(route.via, Via::Proxy | Via::ConnHistory)
        {
            return false;
        }
        if p.crash_between(s - CRASH_NEAR_US, e + self.slack).is_some() {
            return false;
        }
        // Still running: not past its exit (the pinned-connection case of
        // killed_in_flight took those).
        p.gone().is_none_or(|g| s < g.lo - self.slack)
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
        if route.via == Via::ConnHistory || !(f.turned_away() || f.unanswered()) {
            return false;
        }
        if f.unanswered() && route.via != Via::Proxy {
            return false;
        }
        let Some(stop) = p.stop().map(|w| w.lo).or(p.deletion) else {
            return false;
        };
        let routed = match (self.mode, route.proxy) {
            (ProxyMode::Embedded(_), Some(rec)) => to_i64(rec.start_us),
            _ => s,
        };
        let until = p.routed_until(self.allowance).unwrap_or(i64::MAX);
        routed >= stop - self.slack && routed <= until.saturating_add(self.slack)
    }

    /// `capacity` before `not_ready`: a Ready pod that had already served
    /// requests since it became Ready answered 5xx or timed out while fewer
    /// endpoints were ready than desired. It was overloaded with the
    /// missing pods' share; a pod that was not ready to serve fails from
    /// its first request on (`not_ready`).
    fn overloaded(&self, p: &PodFacts, f: Failure, s: i64, e: i64) -> bool {
        if !(f.pod_5xx || f.kind == ErrorKind::Timeout) {
            return false;
        }
        if p.stop().is_some_and(|stop| s >= stop.lo - self.slack) {
            return false;
        }
        let Some(d) = self
            .facts
            .deficit_overlapping(s - self.slack, e + self.slack)
        else {
            return false;
        };
        if d.desired.is_none() {
            return false;
        }
        let since = p.ready_since(s + self.slack).unwrap_or(i64::MIN);
        self.served.get(p.name.as_str()).is_some_and(|v| {
            let n = v.partition_point(|&t| t < since);
            v.get(n).is_some_and(|&t| t < s)
        })
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
        if p.stop().is_some_and(|stop| s >= stop.lo - self.slack) {
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
            ErrorKind::Timeout | ErrorKind::HostUnreachable | ErrorKind::Http5xx => true,
            ErrorKind::ConnectRefused | ErrorKind::ConnectionReset => d.min_ready == 0,
            _ => false,
        }
    }

    /// `capacity` first for a request no pod can be named for: no endpoint
    /// was ready when it was sent, so nothing could have served it, however
    /// fast the proxies followed.
    ///
    /// Kubernetes: with no ready endpoint kube-proxy installs a REJECT rule
    /// for the Service (new connections are refused); until it syncs, they
    /// still go to the old pods' addresses. Either way the shortfall is the
    /// cause (a drain without a PodDisruptionBudget, `maxUnavailable` with
    /// one replica).
    fn nothing_ready(&self, f: Failure, s: i64) -> bool {
        matches!(
            f.kind,
            ErrorKind::ConnectRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::Timeout
                | ErrorKind::HostUnreachable
        ) && !f.answered
            && self.facts.ready_at(s) == Some(0)
    }

    /// Time-window `killed_in_flight` when P is unknown: the request was in
    /// flight across some pod's termination exit and broke (reset or
    /// timeout). The exit closest to the failure wins. A request that never
    /// got a connection (its connect timed out: the address was already
    /// dead) was in flight nowhere.
    fn inferred_killed(&self, f: Failure, s: i64, e: i64) -> Option<&str> {
        if !f.connected || !matches!(f.kind, ErrorKind::ConnectionReset | ErrorKind::Timeout) {
            return None;
        }
        let hi = self.exits.partition_point(|x| x.0 <= e + self.slack);
        let &(_, _, i) = self.exits[..hi]
            .iter()
            .rev()
            .find(|x| x.1 > s - IN_FLIGHT_LEAD_US)?;
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
            .flat_map(|p| p.crash_exits.iter().map(move |x| (x.0.lo, p)))
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
    /// A timeout or "no route to host" fits too once X has exited: after
    /// its exit the kubelet tears X's sandbox down, and a new connection a
    /// stale proxy still sends to X's address goes unanswered (packets
    /// dropped, or ARP gives up: `EHOSTUNREACH`), so the client times out
    /// where a live address would have refused. Before the exit X still
    /// serves, and a timeout then is not X's lag.
    fn inferred_lag(&self, f: Failure, s: i64) -> Option<&str> {
        let unanswered = f.unanswered();
        let fits = matches!(
            f.kind,
            ErrorKind::ConnectRefused | ErrorKind::ConnectionReset
        ) || unanswered
            || (f.kind == ErrorKind::Http5xx && f.l7 != Some(ProxyFailure::NoEndpoints));
        if !fits {
            return None;
        }
        self.facts
            .pods
            .iter()
            .filter(|p| !unanswered || p.gone().is_some_and(|g| s >= g.lo - self.slack))
            .filter_map(|p| {
                let start = p.stop().map(|w| w.lo).or(p.deletion)?;
                let end = p.routed_until(self.allowance)?;
                (s >= start - self.slack && s <= end.saturating_add(self.slack))
                    .then_some((start, p.name.as_str()))
            })
            .max()
            .map(|(_, name)| name)
    }
}
