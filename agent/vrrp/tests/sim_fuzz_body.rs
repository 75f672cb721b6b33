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

/// One event of the fuzz body's encoding, whole: its op byte and exactly the bytes it reads. An
/// advert is one of `pool`, without bit flips, so that the same bytes recur as a master's
/// adverts do.
fn event(pool: Vec<[u8; 9]>) -> impl Strategy<Value = Vec<u8>> {
    let adverts: Vec<Vec<u8>> = (pool.into_iter())
        .map(|mut advert| {
            advert[7] = 0; // the count of bit flips
            std::iter::once(1u8).chain(advert).collect()
        })
        .collect();
    let op = |op: u8, len: usize| {
        proptest::collection::vec(any::<u8>(), len)
            .prop_map(move |args| std::iter::once(op).chain(args).collect::<Vec<u8>>())
    };
    prop_oneof![
        1 => Just(vec![0u8]),
        6 => proptest::sample::select(adverts),
        4 => op(4, 2),
        1 => op(6, 3),
        1 => op(7, 2),
        1 => op(8, 1),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1000), failure_persistence: None, ..ProptestConfig::default() })]

    /// A few adverts recurring among time jumps, trackers, overrides and reconfigurations: an
    /// engine that knows a backup's repeated advert and one that judges every advert in full
    /// must agree on everything after every event.
    #[test]
    fn a_repeated_advert_does_what_judging_it_in_full_does(
        events in proptest::collection::vec(any::<[u8; 9]>(), 1..4)
            .prop_flat_map(|pool| proptest::collection::vec(event(pool), 0..150))
    ) {
        hav_vrrp::sim::fuzz::run_against_full_judgement(&events.concat());
    }

    /// The whole fuzz encoding, on both engines.
    #[test]
    fn any_event_sequence_does_what_judging_in_full_does(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        hav_vrrp::sim::fuzz::run_against_full_judgement(&data);
    }
}
