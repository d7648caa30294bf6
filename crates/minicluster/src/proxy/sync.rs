//! ingress-nginx's endpoint sync: how an endpoint change that reached the
//! controller (after the propagation delay) becomes the data path's view.
//!
//! kubernetes/ingress-nginx, in order:
//! - `internal/ingress/controller/controller.go` `syncIngress` starts with
//!   `n.syncRateLimiter.Accept()`, a token bucket of `--sync-rate-limit`
//!   (`pkg/flags/flags.go`, default 0.3/s) and burst 1
//!   (`internal/ingress/controller/nginx.go`): a sync runs at once when the
//!   last one is at least `1 / rate` ago, else when it is; it reads the
//!   controller's store *then*, so every change up to that moment goes in one
//!   post of the backends (`configureDynamically`);
//! - `rootfs/etc/nginx/lua/balancer.lua` picks the posted backends up on a
//!   `ngx.timer.every(BACKENDS_SYNC_INTERVAL = 1)` tick in each worker.
//!
//! Here: each endpoint set the applier delivers replaces the pending one; a
//! sync takes the newest at `max(now, last sync + min_sync_interval)`, and
//! the view becomes that set at the next tick of a `backends_sync_interval`
//! grid. The grid is anchored to the wall clock (whole multiples of the
//! interval since the epoch) so the listeners of one Service (ClusterIP and
//! NodePort, each a proxy) tick together and apply the same sets at the same
//! moments. The rate limit is per proxy, where ingress-nginx has one
//! controller for every Service: with one Service under load it is the same.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{sync::mpsc, time::Instant};

use super::{Endpoint, IngressNginx, ProxyEvent, table::Shared};

/// When a sync may run and when its result is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncLimit {
    /// The token bucket's period (`1 / --sync-rate-limit`).
    pub(crate) min_interval: Duration,
    /// The workers' timer (`BACKENDS_SYNC_INTERVAL`); zero applies at once.
    pub(crate) tick: Duration,
}

impl From<&IngressNginx> for SyncLimit {
    fn from(c: &IngressNginx) -> SyncLimit {
        SyncLimit {
            min_interval: c.min_sync_interval,
            tick: c.backends_sync_interval,
        }
    }
}

impl SyncLimit {
    /// When a sync wanted at `now` runs, the previous one having run at `last`.
    pub(crate) fn sync_at(&self, now: Instant, last: Option<Instant>) -> Instant {
        last.map_or(now, |last| now.max(last + self.min_interval))
    }

    /// The first tick at or after `at`, on a grid whose ticks fall
    /// `phase` after `origin` plus whole intervals.
    pub(crate) fn tick_at(&self, at: Instant, origin: Instant, phase: Duration) -> Instant {
        let tick = self.tick.as_nanos();
        if tick == 0 {
            return at;
        }
        let first = origin + phase;
        if at <= first {
            return first;
        }
        let since = (at - first).as_nanos();
        let ticks = since.div_ceil(tick);
        let offset = u64::try_from(ticks.saturating_mul(tick)).unwrap_or(u64::MAX);
        first + Duration::from_nanos(offset)
    }
}

/// How far after `now` the wall-clock grid of `tick` has its next tick.
fn wall_clock_phase(tick: Duration) -> Duration {
    let tick_ns = tick.as_nanos();
    if tick_ns == 0 {
        return Duration::ZERO;
    }
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let into = since_epoch % tick_ns;
    let until = if into == 0 { 0 } else { tick_ns - into };
    Duration::from_nanos(u64::try_from(until).unwrap_or(0))
}

/// Reads the sets the applier delivered (as `Applied` events of the
/// controller's own table) and applies them to `shared` at the sync rate.
/// Ends when the applier does.
pub(crate) async fn run(
    mut staged: mpsc::UnboundedReceiver<ProxyEvent>,
    limit: SyncLimit,
    shared: Arc<Shared>,
) {
    let origin = Instant::now();
    let phase = wall_clock_phase(limit.tick);
    let mut last_sync: Option<Instant> = None;
    let newest = |event: ProxyEvent| match event {
        ProxyEvent::Applied { endpoints, .. } => Some(endpoints),
        ProxyEvent::Served { .. } => None,
    };
    loop {
        let Some(event) = staged.recv().await else {
            return;
        };
        let mut pending: Option<Arc<[Endpoint]>> = newest(event);
        let sync_at = limit.sync_at(Instant::now(), last_sync);
        tokio::time::sleep_until(sync_at).await;
        // The sync reads the store now: every change delivered so far.
        while let Ok(event) = staged.try_recv() {
            if let Some(set) = newest(event) {
                pending = Some(set);
            }
        }
        last_sync = Some(sync_at);
        let apply_at = limit.tick_at(sync_at, origin, phase);
        tokio::time::sleep_until(apply_at).await;
        if let Some(set) = pending {
            shared.apply(set);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_sync_waits_for_its_token() {
        let limit = SyncLimit {
            min_interval: ms(3333),
            tick: ms(1000),
        };
        let t0 = Instant::now();
        assert_eq!(limit.sync_at(t0, None), t0, "the first sync runs at once");
        assert_eq!(limit.sync_at(t0 + ms(500), Some(t0)), t0 + ms(3333));
        assert_eq!(limit.sync_at(t0 + ms(5000), Some(t0)), t0 + ms(5000));
    }

    #[test]
    fn the_view_changes_on_the_workers_tick() {
        let limit = SyncLimit {
            min_interval: ms(3333),
            tick: ms(1000),
        };
        let t0 = Instant::now();
        let phase = ms(250);
        assert_eq!(limit.tick_at(t0, t0, phase), t0 + ms(250));
        assert_eq!(limit.tick_at(t0 + ms(250), t0, phase), t0 + ms(250));
        assert_eq!(limit.tick_at(t0 + ms(251), t0, phase), t0 + ms(1250));
        assert_eq!(limit.tick_at(t0 + ms(3583), t0, phase), t0 + ms(4250));
        let at_once = SyncLimit {
            min_interval: ms(0),
            tick: ms(0),
        };
        assert_eq!(at_once.tick_at(t0 + ms(7), t0, phase), t0 + ms(7));
        assert!(wall_clock_phase(ms(1000)) <= ms(1000));
    }

    fn set(pod: &str) -> Arc<[Endpoint]> {
        vec![Endpoint {
            pod: pod.to_owned(),
            addr: SocketAddr::from(([127, 0, 1, 1], 80)),
            ready: true,
            serving: true,
            terminating: false,
        }]
        .into()
    }

    #[tokio::test]
    async fn changes_close_together_become_one_sync_no_more_often_than_the_limit() {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(events_tx, Arc::default()));
        let (staged_tx, staged) = mpsc::unbounded_channel();
        let limit = SyncLimit {
            min_interval: ms(300),
            tick: ms(0),
        };
        let task = tokio::spawn(run(staged, limit, Arc::clone(&shared)));
        let deliver = |pod: &str| {
            let _ = staged_tx.send(ProxyEvent::Applied {
                at: std::time::Instant::now(),
                endpoints: set(pod),
            });
        };
        let start = std::time::Instant::now();
        deliver("a");
        tokio::time::sleep(ms(20)).await;
        deliver("b");
        tokio::time::sleep(ms(20)).await;
        deliver("c");
        tokio::time::sleep(ms(700)).await;
        let mut applied = Vec::new();
        while let Ok(ProxyEvent::Applied { endpoints, at }) = events.try_recv() {
            applied.push((endpoints[0].pod.clone(), at - start));
        }
        // "a" at once; "b" and "c" in one sync a token later.
        let pods: Vec<&str> = applied.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(pods, ["a", "c"]);
        assert!(applied[0].1 < ms(20), "{applied:?}");
        assert!((ms(299)..ms(650)).contains(&applied[1].1), "{applied:?}");
        task.abort();
    }
}
