use rolltest_core::model::{
    Cause, ErrorKind, EventSource, LifecycleEvent, LifecycleKind, Timeline,
};

use crate::{html::palette::cause_slot, report::failure::FailurePoint};

use super::{build::column, draw::short_name, *};

fn ev(at_ms: u64, pod: &str, kind: LifecycleKind) -> LifecycleEvent {
    LifecycleEvent {
        at_us: at_ms * 1000,
        server_us: None,
        server_precision_us: None,
        pod: Some(pod.into()),
        source: EventSource::Pod,
        kind,
    }
}

fn timeline() -> Timeline {
    let created = || LifecycleKind::PodCreated {
        replicaset: None,
        template_hash: None,
    };
    let mut t = Timeline {
        events: vec![
            ev(1_000, "new", created()),
            ev(0, "old", created()),
            ev(100, "old", LifecycleKind::PodReady),
            ev(3_000, "new", LifecycleKind::PodReady),
            ev(
                4_000,
                "old",
                LifecycleKind::DeletionRequested { grace_seconds: 30 },
            ),
            ev(4_000, "old", LifecycleKind::PreStopStarted),
            ev(
                4_010,
                "old",
                LifecycleKind::EndpointChanged {
                    ready: false,
                    serving: true,
                    terminating: true,
                },
            ),
            ev(
                4_020,
                "old",
                LifecycleKind::EndpointChanged {
                    ready: false,
                    serving: false,
                    terminating: true,
                },
            ),
            ev(
                5_500,
                "old",
                LifecycleKind::ProxyApplied {
                    present: true,
                    ready: false,
                    serving: true,
                    terminating: true,
                },
            ),
            ev(5_000, "old", LifecycleKind::PreStopFinished),
            ev(5_000, "old", LifecycleKind::SigtermSent),
            ev(
                6_000,
                "old",
                LifecycleKind::ContainerExited {
                    exit_code: Some(0),
                    signal: None,
                    reason: None,
                },
            ),
            ev(6_500, "old", LifecycleKind::PodDeleted),
        ],
    };
    t.events.push(LifecycleEvent {
        at_us: 3_900_000,
        server_us: None,
        server_precision_us: None,
        pod: None,
        source: EventSource::Action,
        kind: LifecycleKind::ActionStarted {
            index: 0,
            action: "delete-pod".into(),
            target: "pod old".into(),
        },
    });
    t.sort();
    t
}

#[test]
fn phases_follow_the_lifecycle() {
    let s = build(&timeline(), &[], 0, 10_000_000);
    let names: Vec<_> = s.lanes.iter().map(|l| l.pod.as_deref()).collect();
    assert_eq!(names, [Some("old"), Some("new")], "ordered by creation");
    let old: Vec<_> = s.lanes[0]
        .segments
        .iter()
        .map(|g| (g.start_us / 1000, g.end_us / 1000, g.phase))
        .collect();
    assert_eq!(
        old,
        [
            (0, 100, Phase::Starting),
            (100, 4_000, Phase::Ready),
            (4_000, 5_000, Phase::PreStop),
            (5_000, 6_000, Phase::AfterSigterm),
            (6_000, 6_500, Phase::Exited),
        ]
    );
    // Only the first "down" of the slice is a tick; the proxy's not-ready too.
    let ticks: Vec<_> = s.lanes[0]
        .ticks
        .iter()
        .map(|t| (t.at_us / 1000, t.kind))
        .collect();
    assert_eq!(
        ticks,
        [
            (4_010, TickKind::SliceNotReady),
            (5_500, TickKind::ProxyNotReady)
        ]
    );
    // The new pod is Ready to the end of the axis.
    assert_eq!(
        s.lanes[1].segments.last(),
        Some(&Segment {
            start_us: 3_000_000,
            end_us: 10_000_000,
            phase: Phase::Ready
        })
    );
    assert_eq!(s.actions.len(), 1);
    assert_eq!(s.actions[0].label, "delete-pod pod old");
    assert_eq!(s.actions[0].end_us, None);
}

#[test]
fn failures_are_binned_per_lane_and_cause() {
    let f = |ms: u64, pod: Option<&str>, cause| FailurePoint {
        sent_us: 2_000_000 + ms * 1000,
        pod: pod.map(str::to_string),
        cause,
        kind: ErrorKind::ConnectRefused,
    };
    let mut failures = vec![
        f(0, Some("old"), Some(Cause::EndpointLag)),
        f(1, Some("old"), Some(Cause::EndpointLag)),
        f(2, Some("old"), Some(Cause::KilledInFlight)),
        f(3, None, None),
        f(4, Some("stranger"), Some(Cause::Capacity)),
        // Before the load's start and after the axis: clamped.
        FailurePoint {
            sent_us: 0,
            ..f(0, Some("new"), Some(Cause::NotReady))
        },
        f(99_000, Some("new"), Some(Cause::NotReady)),
    ];
    failures.reverse();
    let s = build(&timeline(), &failures, 1_000_000, 10_000_000);
    let names: Vec<_> = s.lanes.iter().map(|l| l.pod.as_deref()).collect();
    assert_eq!(names, [Some("old"), Some("new"), Some("stranger"), None]);
    let old = &s.lanes[0];
    assert_eq!(old.failures(), 3);
    let col = column(1_000_000, 10_000_000);
    assert_eq!(old.columns[col][cause_slot(Some(Cause::EndpointLag))], 2);
    assert_eq!(old.columns[col][cause_slot(Some(Cause::KilledInFlight))], 1);
    assert_eq!(
        old.totals[cause_slot(Some(Cause::EndpointLag))],
        (2, 1_000_000, 1_001_000)
    );
    let new = &s.lanes[1];
    assert_eq!(new.columns[0][cause_slot(Some(Cause::NotReady))], 1);
    assert_eq!(
        new.columns[COLUMNS - 1][cause_slot(Some(Cause::NotReady))],
        1
    );
    assert!(!s.lanes[2].in_timeline);
    assert_eq!(s.lanes[3].totals[cause_slot(None)].0, 1);
    let svg = draw(&s);
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    assert!(svg.contains("unknown pod"));
    assert!(svg.contains("2 failed requests on old, cause endpoint_lag"));
}

#[test]
fn long_names_are_shortened_keeping_the_tail() {
    assert_eq!(short_name("api-6f7c9d84b5-k2x8p"), "api-6f7c9d84b5-k2x8p");
    let long = "payments-gateway-internal-canary-7d9f8c6b5d-x2k9q";
    let s = short_name(long);
    assert_eq!(s.chars().count(), MAX_LABEL);
    assert!(s.ends_with("-7d9f8c6b5d-x2k9q"), "{s}");
    assert!(s.starts_with("payments-gateway"), "{s}");
    let odd = "a".repeat(80);
    assert_eq!(short_name(&odd).chars().count(), MAX_LABEL);
}
