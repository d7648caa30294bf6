//! The knobs that decide whether a rollout drops requests — preStop sleep,
//! termination grace period, PodDisruptionBudget, rollout strategy, honest
//! readiness (probes, minReadySeconds) — plus the replica count and the app
//! itself: their names, which knob fixes which cause, and the fix texts the
//! correlator advises, sized from what a run measured.
//!
//! One module owns them: the correlator's fixes (`correlate::evidence`) are
//! written here, `rolltest compare` names the knobs that changed and relates
//! them to the causes with [`Knob::for_cause`], and the binary crate reads
//! the same knobs from manifests in one module (`manifest::knobs`, for
//! `lint` and `compare`).

use serde::{Deserialize, Serialize};

use crate::model::Cause;

/// A knob of a workload (or of its PodDisruptionBudget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Knob {
    /// `lifecycle.preStop` of a container.
    PreStop,
    /// `terminationGracePeriodSeconds`.
    GracePeriod,
    /// `strategy` (type, maxSurge, maxUnavailable).
    Strategy,
    /// `minReadySeconds`.
    MinReadySeconds,
    /// startup / readiness / liveness probes.
    Probes,
    /// `replicas`.
    Replicas,
    /// A PodDisruptionBudget (present, minAvailable, maxUnavailable).
    Pdb,
    /// The container's image, command and args (how the app behaves on SIGTERM).
    App,
}

impl Knob {
    /// The knob's name in words.
    pub fn label(self) -> &'static str {
        match self {
            Knob::PreStop => "preStop",
            Knob::GracePeriod => "grace period",
            Knob::Strategy => "strategy",
            Knob::MinReadySeconds => "minReadySeconds",
            Knob::Probes => "probes",
            Knob::Replicas => "replicas",
            Knob::Pdb => "PodDisruptionBudget",
            Knob::App => "app (image/args)",
        }
    }

    /// The knobs that fix a cause: endpoint_lag →
    /// preStop; killed_in_flight → grace period, the app's drain
    /// (args/image); not_ready → readiness/startup probes, minReadySeconds;
    /// capacity → maxUnavailable / maxSurge, a PodDisruptionBudget (and
    /// replicas); keepalive_race → the app (its idle timeout, `Connection:
    /// close` while draining; the client's retries are not a workload knob).
    pub fn for_cause(cause: Cause) -> &'static [Knob] {
        match cause {
            Cause::EndpointLag => &[Knob::PreStop],
            Cause::KilledInFlight => &[Knob::GracePeriod, Knob::App],
            Cause::NotReady => &[Knob::Probes, Knob::MinReadySeconds],
            Cause::Capacity => &[Knob::Strategy, Knob::Pdb, Knob::Replicas],
            Cause::KeepaliveRace => &[Knob::App],
            Cause::Unexplained => &[],
        }
    }
}

/// The fix texts the correlator advises, one per knob, sized from the run's
/// measurements (µs on the run clock; printed as "1.49 s").
pub mod fix {
    /// µs as "1.49 s".
    pub fn secs(us: i64) -> String {
        format!("{:.2} s", us as f64 / 1e6)
    }

    /// µs rounded up to whole seconds.
    pub fn whole_seconds(us: i64) -> i64 {
        (us.max(0) + 999_999) / 1_000_000
    }

    /// The preStop sleep that outlasts a propagation of `slowest_us`:
    /// ceil(slowest + 0.5 s), at least 1 s. The 0.5 s margin absorbs
    /// run-to-run jitter of the proxies' sync, and whole seconds because
    /// `sleep` and the kubelet's grace arithmetic (it truncates the hook's
    /// duration to seconds) work in seconds.
    pub fn pre_stop_seconds(slowest_us: i64) -> i64 {
        whole_seconds(slowest_us.max(0) + 500_000).max(1)
    }

    /// preStop, when the run measured no propagation.
    pub const PRE_STOP_UNMEASURED: &str = "preStop sleep longer than the endpoint propagation (none was measured in this run), and terminationGracePeriodSeconds above preStop + drain";

    /// preStop, embedded: the slowest deletion → proxy applied was
    /// `measured_us`.
    pub fn pre_stop(measured_us: i64) -> String {
        format!(
            "preStop sleep ≥ {} s (and terminationGracePeriodSeconds above preStop + drain): the slowest endpoint propagation measured was {}",
            pre_stop_seconds(measured_us),
            secs(measured_us)
        )
    }

    /// preStop, real cluster: the slowest deletion → EndpointSlice update was
    /// `measured_us`, and node proxies may follow it `allowance_us` later.
    pub fn pre_stop_external(measured_us: i64, allowance_us: i64) -> String {
        format!(
            "preStop sleep ≥ {} s (and terminationGracePeriodSeconds above preStop + drain): the slowest EndpointSlice update measured was {} after deletion, plus {} allowed for node proxies to follow it",
            pre_stop_seconds(measured_us + allowance_us),
            secs(measured_us),
            secs(allowance_us)
        )
    }

    /// How long the preStop hooks ran, as far as a run can tell.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum PreStop {
        /// Measured (µs): the embedded kubelet's record, or a hook whose end
        /// an Event told (`FailedPreStopHook`).
        Measured(i64),
        /// At most this long (µs): a real kubelet publishes the hook's start
        /// (its `Killing` Event) but not its end, so the start to the exit
        /// bounds it (drain included).
        AtMost(i64),
    }

    /// The grace period: ≥ preStop + drain + 1 s, where the drain must
    /// outlast the slowest request the app serves (`drain_us`).
    fn grace(pre_stop: PreStop, drain_us: i64) -> String {
        let (pre_stop_us, how) = match pre_stop {
            PreStop::Measured(us) => (us, format!("measured {}", secs(us))),
            PreStop::AtMost(us) => (
                us,
                format!(
                    "at most {}, from the Killing event to the exit: a real kubelet does not publish the hook's end",
                    secs(us)
                ),
            ),
        };
        format!(
            "terminationGracePeriodSeconds ≥ {} s covers preStop ({how}) + drain (the slowest request took {}) + 1 s",
            whole_seconds(pre_stop_us + drain_us + 1_000_000),
            secs(drain_us)
        )
    }

    /// killed_in_flight: the grace period and the app's drain on SIGTERM;
    /// `sigkilled` when the grace period ran out.
    pub fn grace_and_drain(sigkilled: bool, pre_stop: PreStop, drain_us: i64) -> String {
        let sizing = grace(pre_stop, drain_us);
        if sigkilled {
            format!(
                "the grace period ran out and SIGKILL cut the requests: {sizing}; drain on SIGTERM (finish in-flight requests, close keep-alive connections after their response)"
            )
        } else {
            format!(
                "drain on SIGTERM: keep serving in-flight requests and close keep-alive connections only after their current response (`Connection: close`), then exit; {sizing}"
            )
        }
    }

    /// not_ready: honest readiness; for a pod the run started (a rollout's
    /// new pod) also a startupProbe and minReadySeconds sized to how long it
    /// still failed after it became Ready (`window_us`). An old pod that
    /// began to fail while Ready (a dependency down, a crash) gains nothing
    /// from either: they act only when a pod first becomes Ready.
    pub fn readiness(window_us: i64, new_pod: bool) -> String {
        if !new_pod {
            return "honest readiness: the readiness probe must fail while the app cannot serve (check what it needs to answer, e.g. its database), so the pod leaves the endpoints instead of failing requests".to_owned();
        }
        let window = window_us.max(0);
        format!(
            "honest readiness: the readiness probe must fail until the app can serve; a startupProbe for slow starts; minReadySeconds ≥ {} s (it was still failing {} after Ready)",
            whole_seconds(window).max(1),
            secs(window)
        )
    }

    /// not_ready of an old pod whose readiness probe took it out
    /// `detect_us` after its first failed request: how fast the probe
    /// notices (periodSeconds × failureThreshold).
    pub fn readiness_detection(detect_us: i64) -> String {
        format!(
            "a readiness probe that notices sooner: it took the pod out {} after it began to fail; periodSeconds × failureThreshold is how long a failing pod keeps getting traffic (e.g. periodSeconds: 1, failureThreshold: 2)",
            secs(detect_us.max(0))
        )
    }

    /// The liveness probe's part, put before a not_ready or capacity fix when
    /// liveness restarts happened meanwhile.
    pub const LIVENESS: &str = "a livenessProbe that checks only the process (e.g. /livez), never a dependency: the readiness probe takes a pod out of the endpoints during an outage and puts it back at once, a liveness restart keeps it out longer; ";

    /// not_ready of pods a liveness restart killed: the liveness probe alone.
    pub const LIVENESS_ONLY: &str = "a livenessProbe that checks only the process (e.g. /livez), never a dependency: these requests failed on pods the liveness probe restarted, each a cold start and then a CrashLoopBackOff wait; the readiness probe alone takes a pod out of the endpoints during an outage and puts it back at once";

    /// capacity: the rollout strategy and a PodDisruptionBudget, when the
    /// run cannot tell which took the pods.
    pub const STRATEGY_AND_PDB: &str = "maxUnavailable: 0 and maxSurge ≥ 1, so a rollout adds a Ready pod before it removes one, and a PodDisruptionBudget (e.g. maxUnavailable: 1) so drains and evictions wait for Ready replacements";

    /// capacity lost to a rollout.
    pub const STRATEGY: &str = "maxUnavailable: 0 and maxSurge ≥ 1, so the rollout adds a Ready pod before it removes one (with one replica, maxUnavailable 1 leaves none)";

    /// capacity lost to evictions (a drain).
    pub const PDB: &str = "a PodDisruptionBudget (e.g. minAvailable: 1 or maxUnavailable: 1) so a drain's evictions wait for Ready replacements, and replicas spread over nodes";

    /// capacity lost to pod deletions (not evictions: no PDB guards them).
    pub const REPLICAS: &str = "more replicas (a deleted pod's share falls on the rest until its replacement is Ready), and evictions instead of deletes where you can, so a PodDisruptionBudget guards them";

    /// capacity lost with no rollout, eviction or deletion: the pods failed
    /// their readiness together.
    pub const OUTAGE: &str = "no rollout, eviction or deletion took these pods out: they left the endpoints together, failing readiness (a dependency outage?), which no rollout knob fixes; let the app degrade gracefully without the dependency, and size replicas for the load the rest must carry";

    /// The rest of an outage's capacity fix after [`LIVENESS`]: no rollout
    /// knob is implicated.
    pub const OUTAGE_AFTER_LIVENESS: &str = "no rollout, eviction or deletion took these pods out, so no rollout knob fixes the rest: it is the outage itself";

    /// keepalive_race: the client's retries, the idle timeouts, or
    /// `Connection: close` while draining; `idle_us` is the shortest idle
    /// time before a raced request (what the server's idle timeout was at
    /// most), `draining` whether the pod was terminating.
    pub fn keepalive(idle_us: i64, draining: bool) -> String {
        let retry = "let the client retry idempotent requests on a connection reset before any response byte (Go's net/http and browsers do)";
        if draining {
            format!(
                "answer in-flight and new requests on kept-alive connections with `Connection: close` while draining instead of closing idle connections under the client; or {retry}"
            )
        } else {
            format!(
                "keep the server's keep-alive idle timeout above the client's (these connections had idled {} when the server closed them: a client pool must drop idle connections sooner, e.g. Go's IdleConnTimeout, or the server wait longer, e.g. Node.js server.keepAliveTimeout); or {retry}",
                secs(idle_us)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Knob, fix};
    use crate::model::Cause;

    #[test]
    fn every_cause_but_unexplained_has_a_knob() {
        for cause in Cause::ALL {
            assert_eq!(
                Knob::for_cause(cause).is_empty(),
                cause == Cause::Unexplained,
                "{cause:?}"
            );
        }
    }

    #[test]
    fn pre_stop_is_sized_in_whole_seconds_with_half_a_second_margin() {
        assert_eq!(fix::pre_stop_seconds(0), 1);
        assert_eq!(fix::pre_stop_seconds(1_490_000), 2);
        assert_eq!(fix::pre_stop_seconds(1_600_000), 3);
        assert!(fix::pre_stop(1_490_000).starts_with("preStop sleep ≥ 2 s "));
        assert!(fix::pre_stop_external(1_000_000, 2_000_000).starts_with("preStop sleep ≥ 4 s "));
        assert!(
            fix::grace_and_drain(true, fix::PreStop::Measured(3_000_000), 200_000)
                .contains("≥ 5 s covers preStop (measured 3.00 s)")
        );
        assert!(
            fix::grace_and_drain(false, fix::PreStop::AtMost(3_400_000), 200_000)
                .contains("≥ 5 s covers preStop (at most 3.40 s, from the Killing event")
        );
    }
}
