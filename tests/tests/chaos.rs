//! The chaos soak, short: three hav-agent pairs (two VIPs each, each node mastering one) under
//! a fixed 50 s schedule that deals every fault kind at least once (link flap, interface
//! deleted and recreated, SIGKILL, SIGSTOP, SIGTERM, tracked process killed, 20% advert loss,
//! CPU starved, state directory full, corrupt journal, SIGHUP valid and invalid, stray
//! SIGUSR1/SIGUSR2), while a client probes every VIP every 5 ms. No invariant may break: see
//! `hav_tests::chaos::invariants`. A failure prints the report, every violation, the seed and
//! the schedule; `hav-chaos --seed 7 --seconds 50 --pairs 3` replays it. Needs root.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use hav_tests::chaos::{self, ChaosConfig};

/// Deals all thirteen fault kinds in 15 faults over 50 s.
const SEED: u64 = 7;

#[test]
fn a_short_seeded_soak_breaks_no_invariant() {
    let mut config = ChaosConfig::new(SEED, Duration::from_secs(50), 3);
    // Short enough to keep the test near 80 s even when pairs need repairs.
    config.settle_timeout = Duration::from_secs(5);
    config.overrun = Duration::from_secs(10);
    let stop = AtomicBool::new(false);
    let outcome = chaos::run(&config, &stop).expect("the soak ran");
    eprintln!("{}", outcome.report());
    if !outcome.passed() {
        eprintln!("{}", outcome.agent_logs(3));
    }
    assert!(
        outcome.passed(),
        "{}\n{}",
        outcome.violations(50),
        outcome.replay()
    );
}
