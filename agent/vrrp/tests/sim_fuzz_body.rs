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
