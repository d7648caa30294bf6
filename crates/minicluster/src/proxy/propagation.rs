//! The propagation delay between the control plane writing an endpoint set
//! and the proxy using it, and the task that applies updates in batches the
//! way kube-proxy does.
//!
//! kube-proxy (kubernetes/kubernetes pkg/proxy/iptables/proxier.go) does not
//! apply each EndpointSlice change on its own: a change marks the proxy's
//! state dirty and asks its sync runner for a run
//! (pkg/proxy/runner/bounded_frequency_runner.go, `Run`); the runner starts a
//! run at once when at least `minSyncPeriod` has passed since the previous
//! run ended, and otherwise coalesces every request that comes meanwhile
//! into one run when that period is over. Each run (`syncProxyRules`) writes
//! the rules for every pending change at once.
//!
//! A [`Propagation`] `MIN..MAX` is modelled on that:
//!
//! - **MIN** is the fixed part of the delay: the watch delivering the slice
//!   to the proxy plus the run's own time (iptables-restore). An update
//!   reaches the runner MIN after it was written.
//! - **MAX − MIN** is the sync period (`minSyncPeriod`): a sync runs at once
//!   when the previous one is at least that long ago, else when it is; each
//!   sync applies the newest endpoint set that has reached the runner, so
//!   every change pending then becomes the view in one step (one
//!   [`ProxyEvent::Applied`](super::ProxyEvent::Applied)).
//!
//! So each change is applied between MIN and MAX after its write, changes
//! close together are applied together, and a single duration (`500ms`:
//! no sync period) applies each update exactly that long after its write.
//! Updates apply in write order and the proxy never goes back to an older
//! view.
//!
//! The default ([`DEFAULT_PROPAGATION`](crate::cluster::DEFAULT_PROPAGATION),
//! `40ms..1040ms`) follows what `scripts/realk8s` measured on a kind-like
//! cluster (kube-proxy in iptables mode with kind's `minSyncPeriod: 1s`):
//! EndpointSlice change → the rule gone, median 0.54 s, max 0.90 s, i.e. a
//! sync period of 1 s plus about 40 ms of delivery and iptables-restore.

use std::{collections::VecDeque, fmt, str::FromStr, sync::Arc, time::Duration, time::Instant};

use tokio::time::sleep_until;

use tokio::sync::mpsc;

use super::{Endpoint, table::Shared};

/// How late the proxy applies endpoint changes: `min` after the write the
/// change reaches the proxy's sync runner, which syncs at most once per
/// `max - min` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Propagation {
    /// Shortest delay: watch delivery plus the sync's own time.
    pub min: Duration,
    /// Longest delay: `min` plus the sync period (a `max` below `min` is
    /// treated as `min`).
    pub max: Duration,
}

impl Propagation {
    /// Always exactly `delay`.
    pub fn fixed(delay: Duration) -> Propagation {
        Propagation {
            min: delay,
            max: delay,
        }
    }

    /// The proxy's sync period (`minSyncPeriod`): `max - min`.
    pub fn sync_period(&self) -> Duration {
        self.max.saturating_sub(self.min)
    }
}

impl fmt::Display for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", humantime::format_duration(self.min))
        } else {
            write!(
                f,
                "{}..{}",
                humantime::format_duration(self.min),
                humantime::format_duration(self.max)
            )
        }
    }
}

/// A delay or delay range (`endpoint_propagation`, `pod_start`) that could
/// not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad delay {input:?}: {reason} (expected a duration, e.g. 500ms, or a range MIN..MAX, e.g. 1s..3s)"
)]
pub struct PropagationParseError {
    input: String,
    reason: String,
}

impl FromStr for Propagation {
    type Err = PropagationParseError;

    /// Parses one humantime duration (`500ms`) or a range `MIN..MAX`
    /// (`1s..3s`) with MIN <= MAX.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| PropagationParseError {
            input: s.to_owned(),
            reason,
        };
        let one = |part: &str| {
            let part = part.trim();
            if part.is_empty() {
                return Err(error("empty duration".to_owned()));
            }
            humantime::parse_duration(part).map_err(|e| error(e.to_string()))
        };
        match s.split_once("..") {
            None => one(s).map(Propagation::fixed),
            Some((min, max)) => {
                let (min, max) = (one(min)?, one(max)?);
                if min > max {
                    return Err(error("MIN is greater than MAX".to_owned()));
                }
                Ok(Propagation { min, max })
            }
        }
    }
}

/// As its text (`"1s..2s"`, `"1500ms"`), the form scenario files write.
impl serde::Serialize for Propagation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// From its text, validated while deserializing (a bad range is reported
/// at its key).
impl<'de> serde::Deserialize<'de> for Propagation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An endpoint set handed to a listener, with the moment it was written.
#[derive(Debug)]
pub(crate) struct Update {
    /// The listener it is for.
    pub(crate) target: Arc<Shared>,
    pub(crate) written: Instant,
    pub(crate) endpoints: Arc<[Endpoint]>,
}

/// The sync runner of one proxy: every listener it feeds (each Service
/// port's ClusterIP and NodePort listeners, every Service) is synced in the
/// same runs, as kube-proxy writes the rules of every Service in one
/// `syncProxyRules`. So the two listeners of a NodePort Service switch to a
/// new endpoint set together, and a run applies every change pending then.
///
/// It runs on its own thread (a single-threaded Tokio runtime), like the
/// listeners; the thread ends once the runner and every listener holding a
/// clone of it are dropped, dropping the updates still pending.
#[derive(Debug, Clone)]
pub struct SyncRunner {
    updates: mpsc::UnboundedSender<Update>,
    propagation: Propagation,
}

impl SyncRunner {
    /// Starts a runner that applies changes `propagation` late, in batches
    /// on its sync period (see the module docs).
    pub fn start(propagation: Propagation) -> std::io::Result<SyncRunner> {
        // Built here, dropped on the runner's own thread when it ends.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let (updates, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("proxy-sync".into())
            .spawn(move || runtime.block_on(run_syncs(rx, propagation)))?;
        Ok(SyncRunner {
            updates,
            propagation,
        })
    }

    /// The delays it applies changes with.
    pub fn propagation(&self) -> Propagation {
        self.propagation
    }

    /// Hands the runner a listener's new endpoint set, written at `written`.
    /// Calls must come in write order.
    pub(crate) fn send(&self, target: &Arc<Shared>, written: Instant, endpoints: Arc<[Endpoint]>) {
        // Fails only once the runner has ended: nothing is left to update.
        let _ = self.updates.send(Update {
            target: Arc::clone(target),
            written,
            endpoints,
        });
    }
}

/// Runs syncs until every sender is gone (see the module docs): a run
/// starts when the oldest pending update has reached the runner (`min`
/// after its write) and the period since the previous run is over, and
/// gives each listener the newest endpoint set that reached the runner for
/// it by then.
async fn run_syncs(mut updates: mpsc::UnboundedReceiver<Update>, propagation: Propagation) {
    let period = propagation.sync_period();
    // When the next run may start (the previous one plus the period).
    let mut next_sync: Option<Instant> = None;
    // Updates received and not applied yet, in write order.
    let mut pending: VecDeque<Update> = VecDeque::new();
    loop {
        let oldest = match pending.front() {
            Some(update) => update.written,
            None => match updates.recv().await {
                Some(update) => {
                    let written = update.written;
                    pending.push_back(update);
                    written
                }
                None => return,
            },
        };
        // The oldest reaches the runner `min` after its write; the run
        // starts then, or when the period since the previous run is over.
        let arrives = oldest + propagation.min;
        let sync_at = next_sync.map_or(arrives, |next| arrives.max(next));
        let deadline = sleep_until(sync_at.into());
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                update = updates.recv() => match update {
                    Some(update) => pending.push_back(update),
                    None => return,
                },
            }
        }
        while let Ok(update) = updates.try_recv() {
            pending.push_back(update);
        }
        // Every update written at least `min` ago has reached the runner:
        // each listener gets the newest of its own.
        let now = Instant::now();
        let reached = pending
            .iter()
            .take_while(|u| u.written + propagation.min <= now)
            .count();
        let mut newest: Vec<(Arc<Shared>, Arc<[Endpoint]>)> = Vec::new();
        for update in pending.drain(..reached) {
            match newest
                .iter_mut()
                .find(|(target, _)| Arc::ptr_eq(target, &update.target))
            {
                Some(slot) => slot.1 = update.endpoints,
                None => newest.push((update.target, update.endpoints)),
            }
        }
        for (target, endpoints) in newest {
            if !target.is_closed() {
                target.apply(endpoints);
            }
        }
        next_sync = Some(Instant::now() + period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_a_range_and_a_single_delay() {
        assert_eq!(
            "1s..3s".parse(),
            Ok(Propagation {
                min: ms(1000),
                max: ms(3000)
            })
        );
        assert_eq!("500ms".parse(), Ok(Propagation::fixed(ms(500))));
        assert_eq!(
            " 0 .. 1m ".parse(),
            Ok(Propagation {
                min: ms(0),
                max: ms(60_000)
            })
        );
        assert_eq!(
            "1s..3s".parse::<Propagation>().map(|p| p.to_string()),
            Ok("1s..3s".to_owned())
        );
        assert_eq!(
            "500ms".parse::<Propagation>().map(|p| p.to_string()),
            Ok("500ms".to_owned())
        );
    }

    #[test]
    fn rejects_bad_delays() {
        for bad in ["", "..", "3s..1s", "1s..", "fast", "1s..2s..3s", "-1s"] {
            let err = bad.parse::<Propagation>();
            assert!(err.is_err(), "{bad:?} parsed as {err:?}");
        }
        let msg = "3s..1s".parse::<Propagation>().err().map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("MIN is greater than MAX")));
    }

    #[test]
    fn the_sync_period_is_the_width_of_the_range() {
        let p: Propagation = "40ms..1040ms".parse().expect("range");
        assert_eq!(p.sync_period(), ms(1000));
        assert_eq!(Propagation::fixed(ms(500)).sync_period(), Duration::ZERO);
        let inverted = Propagation {
            min: ms(5),
            max: ms(1),
        };
        assert_eq!(inverted.sync_period(), Duration::ZERO);
    }

    fn endpoint(pod: &str, port: u16) -> Endpoint {
        Endpoint {
            pod: pod.to_owned(),
            addr: std::net::SocketAddr::from(([127, 0, 1, 1], port)),
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    fn send(
        tx: &mpsc::UnboundedSender<Update>,
        target: &Arc<Shared>,
        pod: &str,
        port: u16,
    ) -> Instant {
        let written = Instant::now();
        tx.send(Update {
            target: Arc::clone(target),
            written,
            endpoints: vec![endpoint(pod, port)].into(),
        })
        .ok();
        written
    }

    /// The next applied view's pod and when it was applied.
    async fn next_applied(
        events: &mut mpsc::UnboundedReceiver<super::super::ProxyEvent>,
        within: Duration,
    ) -> Option<(String, Instant)> {
        loop {
            let next = tokio::time::timeout(within, events.recv()).await;
            match next.ok().flatten() {
                Some(super::super::ProxyEvent::Applied { endpoints, at }) => {
                    return Some((endpoints[0].pod.clone(), at));
                }
                Some(_) => {}
                None => return None,
            }
        }
    }

    #[tokio::test]
    async fn changes_within_the_sync_period_are_applied_together() {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(events_tx, Arc::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        // 50 ms of delivery, then syncs at most every 400 ms.
        let p = Propagation {
            min: ms(50),
            max: ms(450),
        };
        let task = tokio::spawn(run_syncs(rx, p));

        // The runner is idle: the first change is applied `min` after it.
        let a = send(&tx, &shared, "a", 1);
        let (pod, at) = next_applied(&mut events, ms(2000))
            .await
            .expect("a applied");
        assert_eq!(pod, "a");
        let took = at - a;
        assert!(took >= ms(50) && took < ms(350), "a applied after {took:?}");

        // Two changes inside the period: one sync, when the period is over,
        // applies the newer; the older never becomes the view on its own.
        tokio::time::sleep(ms(100)).await;
        let b = send(&tx, &shared, "b", 2);
        tokio::time::sleep(ms(50)).await;
        send(&tx, &shared, "c", 3);
        let (pod, at_c) = next_applied(&mut events, ms(2000))
            .await
            .expect("c applied");
        assert_eq!(pod, "c", "b and c are applied in one sync, as c's view");
        assert!(
            at_c - at >= ms(390),
            "synced {:?} after the previous sync",
            at_c - at
        );
        assert!(
            at_c - b >= ms(200),
            "b waited for the sync period: {:?}",
            at_c - b
        );

        // After a quiet period the next change is applied `min` after it.
        tokio::time::sleep(ms(600)).await;
        let d = send(&tx, &shared, "d", 4);
        let (pod, at) = next_applied(&mut events, ms(2000))
            .await
            .expect("d applied");
        assert_eq!(pod, "d");
        let took = at - d;
        assert!(took >= ms(50) && took < ms(350), "d applied after {took:?}");
        assert!(
            next_applied(&mut events, ms(300)).await.is_none(),
            "nothing else"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_fixed_delay_applies_every_update_that_long_after_its_write_in_order() {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(events_tx, Arc::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_syncs(rx, Propagation::fixed(ms(100))));
        let mut written = Vec::new();
        for i in 0..5u16 {
            written.push(send(&tx, &shared, &format!("p{i}"), i + 1));
            tokio::time::sleep(ms(30)).await;
        }
        for (i, w) in written.iter().enumerate() {
            let (pod, at) = next_applied(&mut events, ms(2000)).await.expect("applied");
            assert_eq!(pod, format!("p{i}"));
            assert!(
                at - *w >= ms(100),
                "p{i} applied {:?} after its write",
                at - *w
            );
        }
        task.abort();
    }

    /// kube-proxy syncs every Service's rules in one run: two listeners fed
    /// by one runner switch to their new endpoint sets in the same sync,
    /// and a listener closed meanwhile gets nothing.
    #[tokio::test]
    async fn listeners_of_one_runner_sync_together() {
        let (a_tx, mut a_events) = mpsc::unbounded_channel();
        let (b_tx, mut b_events) = mpsc::unbounded_channel();
        let (c_tx, mut c_events) = mpsc::unbounded_channel();
        let a = Arc::new(Shared::new(a_tx, Arc::default()));
        let b = Arc::new(Shared::new(b_tx, Arc::default()));
        let c = Arc::new(Shared::new(c_tx, Arc::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let p = Propagation {
            min: ms(50),
            max: ms(450),
        };
        let task = tokio::spawn(run_syncs(rx, p));
        // A first change starts a sync; then, inside the period, a changes
        // twice and b once 100 ms later: one sync applies both.
        send(&tx, &a, "a0", 1);
        next_applied(&mut a_events, ms(2000)).await.expect("a0");
        send(&tx, &a, "a1", 2);
        send(&tx, &c, "c1", 5);
        c.close();
        tokio::time::sleep(ms(100)).await;
        send(&tx, &a, "a2", 3);
        send(&tx, &b, "b1", 4);
        let (pod_a, at_a) = next_applied(&mut a_events, ms(2000)).await.expect("a");
        let (pod_b, at_b) = next_applied(&mut b_events, ms(2000)).await.expect("b");
        assert_eq!((pod_a.as_str(), pod_b.as_str()), ("a2", "b1"));
        let apart = if at_a > at_b {
            at_a - at_b
        } else {
            at_b - at_a
        };
        assert!(apart < ms(20), "applied {apart:?} apart");
        assert!(
            next_applied(&mut c_events, ms(300)).await.is_none(),
            "a closed listener is not synced"
        );
        task.abort();
    }
}
