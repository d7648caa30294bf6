//! The client thread: a single-threaded tokio runtime running the pacing
//! loop ([`dispatch`]) and the connection pool ([`Pool`]): requests are
//! serialized once and written straight to pooled sockets, responses parsed
//! with `httparse` (see `pool.rs` for why a request costs no task, channel or
//! timer of its own). Connections are opened on demand, so against a slow
//! target the pool grows until `max_in_flight` (enforced by the pacer) is the
//! only bound. The warm-up [`probe`] is an independent client: hyper's.

use std::{
    net::SocketAddr,
    rc::Rc,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;
use tokio::task::LocalSet;

use super::{
    LiveCounters, RecordSender, Stop,
    http1::encode_request,
    pacer::Pacer,
    pool::{Job, Pool, Wire},
    timer::PreciseTimer,
};
use rolltest_core::model::{ConnRecord, RequestRecord, RunClock};

use crate::{LoadSpec, Target};

/// The response header naming the pod that served a request.
pub const POD_HEADER: &str = "x-rolltest-pod";

/// Everything needed to build each request, prepared once.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    method: http::Method,
    path: http::Uri,
    headers: http::HeaderMap,
    body: Bytes,
    keepalive: bool,
}

impl RequestTemplate {
    pub fn new(target: &Target, keepalive: bool) -> Self {
        let path = target
            .path_and_query()
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        let mut headers = http::HeaderMap::new();
        let authority = target.url.authority().map_or("", |a| a.as_str());
        if let Ok(host) = HeaderValue::from_str(authority) {
            headers.insert(header::HOST, host);
        }
        headers.insert(header::USER_AGENT, HeaderValue::from_static("rolltest"));
        if !keepalive {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        for (name, value) in &target.headers {
            headers.insert(name.clone(), value.clone());
        }
        RequestTemplate {
            method: target.method.clone(),
            path,
            headers,
            body: target.body.clone(),
            keepalive,
        }
    }

    /// The request as the load writes it: serialized once.
    pub fn wire(&self) -> Wire {
        Wire {
            request: encode_request(
                &self.method,
                self.path.path_and_query().map_or("/", |p| p.as_str()),
                &self.headers,
                &self.body,
            ),
            method: self.method.clone(),
            keepalive: self.keepalive,
        }
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Sends one request as the load will send it (method, headers, body,
/// `Connection: close`) on a connection of its own and returns the status:
/// a check that the target serves, before any request is counted.
///
/// It connects from a port outside the load's way ([`probe_connect`]).
pub async fn probe(target: &Target, addr: SocketAddr) -> Result<u16, String> {
    let stream = probe_connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(RequestTemplate::new(target, false).build())
        .await
        .map_err(|e| e.to_string());
    driver.abort();
    Ok(response?.status().as_u16())
}

/// How many ports just below the kernel's ephemeral range a probe may bind.
const PROBE_PORTS: u16 = 1024;
/// How many of them a probe tries before it lets the kernel choose.
const PROBE_PORT_TRIES: u16 = 16;

/// The ports a probe binds on this machine: the [`PROBE_PORTS`] just below
/// the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), which
/// `connect()` never gives a socket on its own; `None` where that range is
/// unknown (not Linux) or starts too low to leave room below it.
fn probe_ports() -> Option<std::ops::Range<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = text.split_whitespace().next()?.parse().ok()?;
    let start = low.checked_sub(PROBE_PORTS)?;
    (start >= 1024).then_some(start..low)
}

/// Connects a warm-up probe from a port the load's own connections never
/// get.
///
/// A probe refused before kube-proxy has synced the Service's first
/// endpoints (its REJECT rule) leaves behind a conntrack entry for its
/// 4-tuple without the Service's DNAT, in SYN_SENT, for two minutes; a later
/// connection that the kernel gives the same source port matches that entry
/// instead of the NAT rules and is refused by this host, in microseconds,
/// with every endpoint ready (kubernetes/kubernetes#48719, #101607; measured
/// on `scripts/realk8s`). So a probe binds a port below the ephemeral range
/// (a few tries from a random start, skipping ports in use) and only falls
/// back to a kernel-chosen port when none is free or the range is unknown.
pub async fn probe_connect(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    use std::io::ErrorKind::{AddrInUse, AddrNotAvailable};
    if let Some(ports) = probe_ports() {
        let len = ports.end - ports.start;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let first = u16::try_from(seed % u32::from(len)).unwrap_or(0);
        let any = match addr {
            SocketAddr::V4(_) => std::net::IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
        };
        for i in 0..PROBE_PORT_TRIES {
            let port = ports.start + (first + i * 61) % len;
            let socket = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.set_reuseaddr(true)?;
            match socket.bind(SocketAddr::new(any, port)) {
                Ok(()) => {}
                Err(e) if e.kind() == AddrInUse => continue,
                Err(_) => break,
            }
            match socket.connect(addr).await {
                // This 4-tuple still in TIME_WAIT here: another port.
                Err(e) if matches!(e.kind(), AddrInUse | AddrNotAvailable) => continue,
                other => return other,
            }
        }
    }
    tokio::net::TcpStream::connect(addr).await
}

/// How often finished records are handed to the writer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Longest timer wait, so a stop request is noticed promptly.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// Longest tick at which the dispatcher reads responses only at its ticks.
const READ_AT_TICKS_UP_TO: Duration = Duration::from_millis(1);
/// How often the dispatcher looks for requests past their timeout.
const EXPIRE_EVERY: Duration = Duration::from_millis(5);
/// After this many dispatches in a row (a generator catching up), let the
/// connections' tasks and the IO driver run before dispatching more.
const BURST: u32 = 32;

/// What the generator needs to run.
pub struct Params {
    pub addr: SocketAddr,
    pub template: RequestTemplate,
    pub spec: LoadSpec,
    pub clock: RunClock,
    /// When request 0 is due.
    pub origin: Instant,
}

/// What the generator did.
pub struct Finished {
    /// Requests the schedule reached (sent or dropped).
    pub scheduled: u64,
    /// Every connection opened, with its local address.
    pub conns: Vec<ConnRecord>,
    /// Scheduling was stopped early.
    pub interrupted: bool,
    /// The schedule ran to its end: neither interrupted nor finished early
    /// (a rollout ends its load with [`Stop::finish`] once it has seen enough).
    pub completed: bool,
    /// The generator could not start (runtime or timer).
    pub error: Option<std::io::Error>,
}

/// Runs the whole load on the calling thread and returns when every request has finished.
pub fn run(
    params: Params,
    records: RecordSender,
    stop: &Stop,
    live: Arc<LiveCounters>,
) -> Finished {
    crate::os::set_thread_nice(-10);
    let failed_start = |error| Finished {
        scheduled: 0,
        conns: Vec::new(),
        interrupted: false,
        completed: false,
        error: Some(error),
    };
    // IO and time only: the signal and process drivers would be polled on
    // every park (tokio reaps orphaned child processes there) for nothing.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return failed_start(e),
    };
    let pool = match Pool::new(
        params.addr,
        params.template.wire(),
        params.spec.timeout,
        params.spec.idle_timeout,
        live.clone(),
        params.clock,
    ) {
        Ok(pool) => pool,
        Err(e) => return failed_start(e),
    };
    let local = LocalSet::new();
    local.block_on(&runtime, async move {
        let mut timer = match PreciseTimer::new() {
            Ok(timer) => timer,
            Err(e) => return failed_start(e),
        };
        let flusher = {
            let pool = pool.clone();
            let records = records.clone();
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(FLUSH_EVERY);
                loop {
                    tick.tick().await;
                    flush(&pool, &records);
                }
            })
        };
        if params.spec.keepalive {
            pool.warm_up(warm_connections(&params.spec)).await;
        }
        let result = dispatch(
            &pool,
            &params.spec,
            params.clock,
            params.origin,
            &mut timer,
            stop,
            &live,
        )
        .await;
        // Every request has its own timeout; wait for the stragglers.
        let deadline = Instant::now() + params.spec.timeout + Duration::from_secs(2);
        loop {
            pool.process();
            pool.expire(params.clock.now_micros());
            if live.in_flight.load(Ordering::Acquire) == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(EXPIRE_EVERY) => {}
                _ = pool.ready() => {}
            }
        }
        flusher.abort();
        flush(&pool, &records);
        pool.clear();
        Finished {
            conns: pool.take_opened(),
            ..result
        }
    })
}

fn flush(pool: &Pool, records: &RecordSender) {
    let batch = pool.take_batch();
    if !batch.is_empty() {
        let _ = records.send(batch);
    }
}

/// Connections opened before the first request is due: enough for the
/// schedule to find idle connections while responses take up to about a
/// millisecond. Without them a high rate opens a connection per request for
/// the first milliseconds, and on a single core those connects can put the
/// generator behind before the pool has grown.
fn warm_connections(spec: &LoadSpec) -> usize {
    ((spec.rate / 1000.0).ceil() as usize).clamp(1, spec.max_in_flight.min(256))
}

/// The pacing loop: hands each request to the pool at its due time.
async fn dispatch(
    pool: &Rc<Pool>,
    spec: &LoadSpec,
    clock: RunClock,
    origin: Instant,
    timer: &mut PreciseTimer,
    stop: &Stop,
    live: &LiveCounters,
) -> Finished {
    let pacer = Pacer::new(spec.rate);
    let total = pacer.count_before(spec.duration);
    // A generator so far behind that it would still be sending after the
    // schedule plus one timeout has ended gives up the rest as dropped.
    let give_up_at = origin + spec.duration + spec.timeout;
    let tick = pacer.tick(spec.send_quantum(), MAX_WAIT);
    let mut periodic = match tick {
        Some(tick) => timer.start_periodic(origin, tick).is_ok(),
        None => false,
    };
    // Ticking often, the dispatcher reads responses at its ticks (each is
    // timed by when it arrived, so none is late for it) and the thread
    // wakes once per tick, not once more per response. Ticking seldom (or
    // not at all), it wakes for responses as they arrive.
    let read_at_ticks = periodic && tick.is_some_and(|tick| tick <= READ_AT_TICKS_UP_TO);
    let mut seq = 0;
    let mut burst = 0;
    let mut interrupted = false;
    let mut next_expiry = origin;
    while seq < total {
        if stop.interrupt.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        if stop.finish.load(Ordering::Relaxed) {
            break;
        }
        let due = origin + pacer.due(seq);
        let now = Instant::now();
        if now >= next_expiry {
            pool.expire(clock.micros(now));
            next_expiry = now + EXPIRE_EVERY;
        }
        if now < due {
            burst = 0;
            let timer_wait = async {
                if periodic {
                    timer.tick().await.map(|_| ())
                } else {
                    timer.sleep_until(due.min(now + MAX_WAIT)).await
                }
            };
            let waited = if periodic && read_at_ticks {
                timer_wait.await
            } else {
                tokio::select! {
                    waited = timer_wait => waited,
                    _ = pool.ready() => Ok(()),
                }
            };
            if waited.is_err() {
                // The timer broke mid-run: fall back to tokio's coarser timer.
                periodic = false;
                tokio::time::sleep_until(due.into()).await;
            }
            pool.process();
            continue;
        }
        let intended_us = clock.micros(due);
        if now > give_up_at {
            for s in seq..total {
                let mut r = RequestRecord::dropped(s, clock.micros(origin + pacer.due(s)));
                r.detail = Some("the generator fell too far behind to send it".into());
                pool.record_dropped(r);
            }
            seq = total;
            break;
        }
        if live.in_flight.load(Ordering::Acquire) >= spec.max_in_flight {
            let mut r = RequestRecord::dropped(seq, intended_us);
            r.detail = Some(format!("{} requests already in flight", spec.max_in_flight));
            pool.record_dropped(r);
        } else {
            live.in_flight.fetch_add(1, Ordering::AcqRel);
            live.sent.fetch_add(1, Ordering::Relaxed);
            pool.submit(Job {
                seq,
                intended_us,
                sent_us: clock.micros(now),
            });
        }
        seq += 1;
        burst += 1;
        if burst >= BURST {
            burst = 0;
            tokio::task::yield_now().await;
            pool.process();
        }
    }
    Finished {
        scheduled: seq,
        conns: Vec::new(),
        interrupted,
        completed: seq >= total,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe connects from a port below the ephemeral range, which the
    /// kernel never gives the load's own connections; one after another
    /// they each get one (a port still in use or in TIME_WAIT is skipped).
    #[tokio::test(flavor = "current_thread")]
    async fn probes_connect_from_below_the_ephemeral_range() {
        // Linux's default range starts at 32768: room below it.
        let ports = probe_ports().expect("ip_local_port_range with room below it");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut held = Vec::new();
        for _ in 0..5 {
            let stream = probe_connect(addr).await.expect("connect");
            let (_accepted, peer) = listener.accept().await.expect("accept");
            let local = stream.local_addr().expect("local");
            assert_eq!(local, peer);
            assert!(ports.contains(&local.port()), "{local} not in {ports:?}");
            held.push(stream);
        }
        let plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(!ports.contains(&plain.local_addr().expect("local").port()));
    }
}
