//! Invariants over arbitrary runs (proptest).

use super::*;

// ---- invariants

fn arb_record(seq: u64) -> impl Strategy<Value = RequestRecord> {
    let kinds = prop_oneof![
        Just(Outcome::Ok),
        Just(Outcome::Dropped),
        (0..ErrorKind::ALL.len()).prop_map(|i| Outcome::Failed(ErrorKind::ALL[i])),
    ];
    let pods = prop_oneof![
        Just(None),
        Just(Some("old-1")),
        Just(Some("old-2")),
        Just(Some("new-2")),
        Just(Some("ghost")),
    ];
    (
        0u64..40_000,
        0u64..3_000,
        kinds,
        pods,
        proptest::option::of(0u64..6),
    )
        .prop_map(move |(sent, lat, outcome, pod, conn)| {
            let mut r = rec(seq, sent, lat, outcome);
            if outcome == Outcome::Dropped {
                r = RequestRecord::dropped(seq, sent * MS);
            }
            r.pod = pod.map(Into::into);
            r.conn = conn;
            if outcome.error_kind() == Some(ErrorKind::Http5xx) {
                r.status = Some(503);
            }
            r
        })
}

fn arb_case() -> impl Strategy<Value = (Case, Vec<usize>)> {
    let mode = prop_oneof![
        Just(ProxyMode::L4),
        Just(ProxyMode::L7),
        Just(ProxyMode::External)
    ];
    (mode, 1usize..60).prop_flat_map(|(mode, n)| {
        let recs: Vec<_> = (0..n as u64).map(arb_record).collect();
        let proxy = proptest::collection::vec((0u64..6, 0u64..40_000, 0usize..4, 0usize..4), 0..20);
        let perm = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
        (recs, proxy, perm).prop_map(move |(records, proxy, perm)| {
            let pods = [None, Some("old-1"), Some("new-2"), Some("old-2")];
            let outcomes = [
                ProxyOutcome::ConnectFailed,
                ProxyOutcome::BackendReset,
                ProxyOutcome::Backend { status: 503 },
                ProxyOutcome::Proxy {
                    status: 502,
                    reason: ProxyFailure::BackendGone,
                },
            ];
            let case = Case {
                mode,
                conns: (0..6).map(|i| conn(i, i * 1_000)).collect(),
                proxy: proxy
                    .into_iter()
                    .map(|(c, t, p, o)| prec(c, pods[p], t, t + 5, outcomes[o]))
                    .collect(),
                records,
            };
            (case, perm)
        })
    })
}

proptest! {
    #[test]
    fn every_failed_record_gets_exactly_one_attribution((case, perm) in arb_case()) {
        let t = timeline();
        let input = case.input(&t);
        let attrs = correlate::attribute(&input);
        let mut failed: Vec<u64> = case
            .records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .map(|r| r.seq)
            .collect();
        failed.sort_unstable();
        let seqs: Vec<u64> = attrs.iter().map(|a| a.seq).collect();
        prop_assert_eq!(&seqs, &failed);

        // Same answer whatever the order of the records.
        let shuffled: Vec<RequestRecord> = perm.iter().map(|&i| case.records[i].clone()).collect();
        let input2 = Input { records: &shuffled, ..input };
        prop_assert_eq!(&correlate::attribute(&input2), &attrs);
        prop_assert_eq!(&correlate::attribute(&input), &attrs);

        // Groups account for every failure, in any order.
        let groups = correlate::groups(&input, &attrs);
        prop_assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), failed.len() as u64);
        prop_assert_eq!(&correlate::groups(&input2, &attrs), &groups);
        for g in &groups {
            prop_assert_eq!(g.kinds.values().sum::<u64>(), g.count);
            prop_assert!(!g.evidence.is_empty() && !g.fix.is_empty());
        }
        // Groups without attributions attribute on their own, identically.
        prop_assert_eq!(&correlate::groups(&input, &[]), &groups);
    }
}

/// The fixture timeline with every pod event's moment blurred the way a
/// real cluster blurs it: a server timestamp cut to whole seconds (or a
/// precise one, or none) somewhere before the observation, from a mix of
/// sources; so the rules see intervals, not instants.
fn arb_blurred_timeline() -> impl Strategy<Value = Timeline> {
    let n = timeline().events.len();
    proptest::collection::vec((0u8..4, 0i64..1_500), n).prop_map(|blur| {
        let mut t = timeline();
        for (e, (how, back_ms)) in t.events.iter_mut().zip(blur) {
            if e.pod.is_none() {
                continue;
            }
            let seen = i64::try_from(e.at_us).unwrap_or(i64::MAX);
            let server = seen - back_ms * 1_000;
            match how {
                // A status timestamp in seconds.
                0 => e.server_us = Some(server - server.rem_euclid(1_000_000)),
                // A legacy Event's lastTimestamp.
                1 => {
                    e.source = EventSource::Event;
                    e.server_us = Some(server - server.rem_euclid(1_000_000));
                    e.server_precision_us = Some(1_000_000);
                }
                // A precise eventTime.
                2 => {
                    e.source = EventSource::Event;
                    e.server_us = Some(server);
                }
                _ => {}
            }
        }
        t
    })
}

proptest! {
    #[test]
    fn intervals_still_give_exactly_one_cause_and_the_rebuild_agrees(
        (case, perm) in arb_case(),
        t in arb_blurred_timeline(),
    ) {
        // The allowance measured from the run, as on a real cluster.
        let input = Input { propagation_allowance_us: None, ..case.input(&t) };
        let attrs = correlate::attribute(&input);
        let failed = case
            .records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .count();
        prop_assert_eq!(attrs.len(), failed);
        prop_assert!(attrs.windows(2).all(|w| w[0].seq < w[1].seq));

        let shuffled: Vec<RequestRecord> = perm.iter().map(|&i| case.records[i].clone()).collect();
        let input2 = Input { records: &shuffled, ..input };
        prop_assert_eq!(&correlate::attribute(&input2), &attrs);

        // A rebuild reads records.csv: the causes and pods written into the
        // records, no connections, no proxy records. It must tell the same
        // story, the measured allowance included.
        let groups = correlate::groups(&input, &attrs);
        prop_assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), failed as u64);
        let mut written = case.records.clone();
        for r in &mut written {
            if let Some(a) = attrs.iter().find(|a| a.seq == r.seq) {
                r.cause = Some(a.cause);
                if r.pod.is_none() {
                    r.pod.clone_from(&a.pod);
                }
            }
        }
        let rebuilt = Input { records: &written, conns: &[], proxy: &[], ..input };
        prop_assert_eq!(
            correlate::Correlation::new(rebuilt).allowance(),
            correlate::Correlation::new(input).allowance()
        );
        prop_assert_eq!(&correlate::groups(&rebuilt, &[]), &groups);
    }
}
