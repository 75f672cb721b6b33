//! The `engine` fuzz target's body under proptest, so that CI exercises it without cargo-fuzz.

use proptest::prelude::*;

/// `PROPTEST_CASES` overrides the default number of cases.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(500), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn engine_survives_any_event_sequence(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        hav_vrrp::sim::fuzz::run(&data);
    }

    /// Sequences biased towards valid adverts and time jumps, which reach deeper states.
    #[test]
    fn engine_survives_advert_heavy_sequences(
        events in proptest::collection::vec((prop_oneof![Just(1u8), Just(2), Just(4), Just(5), Just(6), Just(8)], proptest::collection::vec(any::<u8>(), 14)), 0..80)
    ) {
        let data: Vec<u8> = events.into_iter().flat_map(|(op, args)| std::iter::once(op).chain(args)).collect();
        hav_vrrp::sim::fuzz::run(&data);
    }
}

/// One event of the fuzz body's encoding, whole: its op byte and exactly the bytes it reads
/// (an advert is picked from a pool, so that the same bytes recur as a master's adverts do).
fn event(pool_len: usize) -> impl Strategy<Value = (u8, Vec<u8>, Option<usize>)> {
    prop_oneof![
        1 => Just((0u8, vec![], None)),
        6 => (0..pool_len).prop_map(|pick| (1u8, vec![], Some(pick))),
        4 => proptest::collection::vec(any::<u8>(), 2).prop_map(|args| (4u8, args, None)),
        1 => proptest::collection::vec(any::<u8>(), 3).prop_map(|args| (6u8, args, None)),
        1 => proptest::collection::vec(any::<u8>(), 2).prop_map(|args| (7u8, args, None)),
        1 => proptest::collection::vec(any::<u8>(), 1).prop_map(|args| (8u8, args, None)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1000), failure_persistence: None, ..ProptestConfig::default() })]

    /// A few adverts recurring among time jumps, trackers, overrides and reconfigurations: an
    /// engine that knows a backup's repeated advert and one that judges every advert in full
    /// must agree on everything after every event.
    #[test]
    fn a_repeated_advert_does_what_judging_it_in_full_does(
        (pool, events) in proptest::collection::vec(any::<[u8; 9]>(), 1..4)
            .prop_flat_map(|pool| {
                let len = pool.len();
                (Just(pool), proptest::collection::vec(event(len), 0..150))
            })
    ) {
        let mut data = Vec::new();
        for (op, args, pick) in events {
            data.push(op);
            match pick {
                Some(pick) => {
                    let mut advert = pool[pick];
                    // No bit flips: the advert is the same bytes each time it is picked.
                    advert[7] = 0;
                    data.extend_from_slice(&advert);
                }
                None => data.extend_from_slice(&args),
            }
        }
        hav_vrrp::sim::fuzz::run_against_full_judgement(&data);
    }

    /// The whole fuzz encoding, on both engines.
    #[test]
    fn any_event_sequence_does_what_judging_in_full_does(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        hav_vrrp::sim::fuzz::run_against_full_judgement(&data);
    }
}
