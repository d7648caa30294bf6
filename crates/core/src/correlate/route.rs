//! Which pod served (or would have served) each failed request.
//!
//! In order of trust:
//! 1. the `x-rolltest-pod` response header (the pod itself answered);
//! 2. embedded L4: the proxy record of the request's TCP connection — the
//!    proxy picks a backend per connection and pins it (like conntrack), so
//!    the record whose accept time is the connection's open time names the
//!    pod for every request on it;
//! 3. embedded L7: the proxy record of the request itself (the one on the
//!    same client address whose start is closest to the send time);
//! 4. L4 and external: the last pod that answered on the same keep-alive
//!    connection (kube-proxy pins connections, so it is the same pod).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::{Input, ProxyMode};
use crate::model::{Outcome, ProxyRecord, RequestRecord};

/// How the pod of a request was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The pod's own response header.
    Header,
    /// The embedded proxy's record.
    Proxy,
    /// An earlier response on the same pinned connection.
    ConnHistory,
    /// Unknown.
    Unknown,
}

/// Where one request went.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route<'a> {
    /// The pod, when known.
    pub pod: Option<&'a str>,
    /// How it was found.
    pub via: Via,
    /// The proxy's record of the connection (L4) or request (L7).
    pub proxy: Option<&'a ProxyRecord>,
    /// When the connection was opened (µs), when known.
    pub conn_open: Option<i64>,
    /// The request was the first on its connection (a new connection).
    pub first_on_conn: bool,
}

/// The lookup tables, built once per run.
pub(crate) struct Router<'a> {
    mode: ProxyMode,
    slack: i64,
    conns: HashMap<u64, (SocketAddr, i64)>,
    first: HashMap<u64, (u64, u64)>,
    by_client: HashMap<SocketAddr, Vec<&'a ProxyRecord>>,
    history: HashMap<u64, Vec<(u64, u64, &'a str)>>,
}

impl<'a> Router<'a> {
    /// Indexes the connections, the proxy records and, for connections that
    /// carry a failure without a header, the pods seen on them.
    pub fn new(input: &Input<'a>) -> Router<'a> {
        let slack = i64::try_from(input.proxy_mode.slack_us()).unwrap_or(i64::MAX);
        let conns = input
            .conns
            .iter()
            .map(|c| (c.conn, (c.local, to_i64(c.opened_us))))
            .collect();
        let mut first: HashMap<u64, (u64, u64)> = HashMap::new();
        let mut wanted: HashSet<u64> = HashSet::new();
        for r in input.records {
            let Some(c) = r.conn else { continue };
            let key = (r.sent_us.unwrap_or(r.intended_us), r.seq);
            first
                .entry(c)
                .and_modify(|k| *k = (*k).min(key))
                .or_insert(key);
            if r.pod.is_none() && matches!(r.outcome, Outcome::Failed(_)) {
                wanted.insert(c);
            }
        }
        let mut history: HashMap<u64, Vec<(u64, u64, &'a str)>> = HashMap::new();
        if !wanted.is_empty() && !input.proxy_mode.per_request() {
            for r in input.records {
                if let (Some(c), Some(p)) = (r.conn, r.pod.as_deref())
                    && wanted.contains(&c)
                {
                    let sent = r.sent_us.unwrap_or(r.intended_us);
                    history.entry(c).or_default().push((sent, r.seq, p));
                }
            }
            for v in history.values_mut() {
                v.sort_unstable();
            }
        }
        let mut by_client: HashMap<SocketAddr, Vec<&'a ProxyRecord>> = HashMap::new();
        if input.proxy_mode != ProxyMode::External {
            for p in input.proxy {
                by_client.entry(p.client).or_default().push(p);
            }
            for v in by_client.values_mut() {
                v.sort_by(|a, b| {
                    (a.start_us, a.end_us, &a.pod).cmp(&(b.start_us, b.end_us, &b.pod))
                });
            }
        }
        Router {
            mode: input.proxy_mode,
            slack,
            conns,
            first,
            by_client,
            history,
        }
    }

    /// Where `r` went.
    pub fn route(&self, r: &'a RequestRecord) -> Route<'a> {
        let (s, e) = span(r);
        let key = (r.sent_us.unwrap_or(r.intended_us), r.seq);
        let first_on_conn = r
            .conn
            .and_then(|c| self.first.get(&c))
            .is_none_or(|k| *k == key);
        let conn = r.conn.and_then(|c| self.conns.get(&c)).copied();
        let mut route = Route {
            pod: None,
            via: Via::Unknown,
            proxy: None,
            conn_open: conn
                .map(|c| c.1)
                .or_else(|| r.conn.and_then(|c| self.first.get(&c)).map(|k| to_i64(k.0))),
            first_on_conn,
        };
        route.proxy = match (self.mode, conn) {
            (ProxyMode::L4, Some((local, opened))) => self.l4_record(local, opened, e),
            (mode, Some((local, _))) if mode.per_request() => self.l7_record(local, s, e),
            _ => None,
        };
        if let Some(p) = route.proxy
            && self.mode == ProxyMode::L4
        {
            route.conn_open = Some(to_i64(p.start_us));
        }
        if let Some(pod) = r.pod.as_deref() {
            route.pod = Some(pod);
            route.via = Via::Header;
        } else if let Some(pod) = route.proxy.and_then(|p| p.pod.as_deref()) {
            route.pod = Some(pod);
            route.via = Via::Proxy;
        } else if route.proxy.is_none()
            && let Some(pod) = self.last_pod_on_conn(r)
        {
            route.pod = Some(pod);
            route.via = Via::ConnHistory;
        }
        route
    }

    /// The L4 record of the connection opened at `opened` from `local`: the
    /// first the proxy accepted at or after the connect started (ports are
    /// reused over a run, so time tells connections apart), if it was
    /// accepted before the request ended.
    fn l4_record(&self, local: SocketAddr, opened: i64, e: i64) -> Option<&'a ProxyRecord> {
        let v = self.by_client.get(&local)?;
        let n = v.partition_point(|p| to_i64(p.start_us) < opened - self.slack);
        v.get(n)
            .copied()
            .filter(|p| to_i64(p.start_us) <= e + self.slack)
    }

    /// The L7 record of the request sent at `s` from `local`: of those that
    /// started within `[s - slack, e + slack]`, the one that started closest
    /// to `s`.
    fn l7_record(&self, local: SocketAddr, s: i64, e: i64) -> Option<&'a ProxyRecord> {
        let v = self.by_client.get(&local)?;
        let lo = v.partition_point(|p| to_i64(p.start_us) < s - self.slack);
        let hi = v.partition_point(|p| to_i64(p.start_us) <= e + self.slack);
        v.get(lo..hi)?
            .iter()
            .copied()
            .min_by_key(|p| (to_i64(p.start_us) - s).abs())
    }

    /// The pod of the latest earlier response on the same connection.
    fn last_pod_on_conn(&self, r: &RequestRecord) -> Option<&'a str> {
        let v = self.history.get(&r.conn?)?;
        let key = (r.sent_us.unwrap_or(r.intended_us), r.seq);
        let n = v.partition_point(|h| (h.0, h.1) < key);
        v.get(n.checked_sub(1)?).map(|h| h.2)
    }
}

/// `(s, e)`: sent (or intended) and ended, µs.
pub(crate) fn span(r: &RequestRecord) -> (i64, i64) {
    let s = to_i64(r.sent_us.unwrap_or(r.intended_us));
    let e = to_i64(r.intended_us.saturating_add(r.latency_us.unwrap_or(0)));
    (s, e.max(s))
}

pub(crate) fn to_i64(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}
