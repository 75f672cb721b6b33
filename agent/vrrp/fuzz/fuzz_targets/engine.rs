//! Fuzzing of the VRRP engine: arbitrary event sequences (adverts from a small set of valid ones
//! with fields and bytes mutated, raw bytes, time jumps, tracker and override changes,
//! reconfigurations, shutdown) must never panic and must keep the engine's invariants: VIPs
//! added and removed strictly alternately per router, reported transitions consistent, timers
//! never left expired, and a shutdown that completes with no VIP held.
//!
//! The body lives in `hav_vrrp::sim::fuzz` so that a proptest runs it in CI too
//! (`agent/vrrp/tests/sim_fuzz_body.rs`). Built by cargo-fuzz with `cfg(fuzzing)`, under which
//! the codec skips checksum verification, so mutated adverts reach the state machine.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hav_vrrp::sim::fuzz::run(data);
});
