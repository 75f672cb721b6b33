//! The fault schedule: which fault hits which node, when, and for how long.
//!
//! A schedule is a pure function of (seed, duration, pairs, fault kinds): the same four values
//! give the same events on every machine and every version of this crate, because the random
//! numbers come from SplitMix64 written out here (a library's generator or its range sampling
//! may change between releases and would break `--seed` replays). Planned times are offsets from
//! the start of the run; the executor never starts a fault on a pair before the previous one on
//! that pair has settled, so only the order and the parameters are exact, not the wall clock.

use std::fmt::{self, Write as _};
use std::time::Duration;

/// SplitMix64 (Steele, Lea, Flood 2014; the seeding generator of xoshiro): 64-bit state,
/// full period, good enough to pick faults, and defined by the ten lines below.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (rejection sampling, no modulo bias); 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = usize::try_from(self.below(i as u64 + 1)).unwrap_or(0);
            items.swap(i, j);
        }
    }
}

/// The VRRP implementation a fleet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Implementation {
    Hav,
    Keepalived,
}

impl Implementation {
    pub fn label(self) -> &'static str {
        match self {
            Implementation::Hav => "hav",
            Implementation::Keepalived => "keepalived",
        }
    }
}

/// What a client may see while a fault runs and recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// Something broke: each client outage must end within the backup's master-down interval
    /// plus 10 ms.
    Unplanned,
    /// An operator's action or a fault that must not reach VRRP at all: no probe may fail.
    Planned,
}

/// Whether a fault acts on one pair or, being host-wide, on every pair at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Pair,
    Fleet,
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FaultKind {
    /// The node's switch port goes down, then up (carrier loss).
    LinkFlap,
    /// The node's interface is deleted, then recreated with the same name and addresses.
    InterfaceRecreate,
    /// SIGKILL to the daemon (VIPs stay where they are), then a restart.
    Kill,
    /// SIGSTOP to the daemon, then SIGCONT.
    StopCont,
    /// SIGTERM (graceful stop, must exit 0), then a restart.
    TermRestart,
    /// The tracked process (the "squid" stand-in) is killed, then started again.
    TrackedProcess,
    /// nftables in the node drops 20% of VRRP packets in and out.
    AdvertLoss,
    /// Busy loops on every core (two per core).
    CpuHog,
    /// The state directory (a small tmpfs) is filled up; meanwhile a reload asks the node to take
    /// over its peer's VIP; then space is freed and the config restored.
    StateDirFull,
    /// SIGKILL, garbage written into the VIP journal, restart.
    CorruptJournal,
    /// SIGHUP with the node's own VIP at priority 50 (a planned handover), then back.
    ReloadValid,
    /// SIGHUP with an invalid config (priority 300): refused, the agent keeps running.
    ReloadInvalid,
    /// SIGUSR1 and SIGUSR2 (keepalived's dump signals, sent out of habit): must not harm.
    StraySignals,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::LinkFlap,
        FaultKind::InterfaceRecreate,
        FaultKind::Kill,
        FaultKind::StopCont,
        FaultKind::TermRestart,
        FaultKind::TrackedProcess,
        FaultKind::AdvertLoss,
        FaultKind::CpuHog,
        FaultKind::StateDirFull,
        FaultKind::CorruptJournal,
        FaultKind::ReloadValid,
        FaultKind::ReloadInvalid,
        FaultKind::StraySignals,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FaultKind::LinkFlap => "link-flap",
            FaultKind::InterfaceRecreate => "iface-recreate",
            FaultKind::Kill => "sigkill-restart",
            FaultKind::StopCont => "sigstop-cont",
            FaultKind::TermRestart => "sigterm-restart",
            FaultKind::TrackedProcess => "tracked-process",
            FaultKind::AdvertLoss => "advert-loss",
            FaultKind::CpuHog => "cpu-hog",
            FaultKind::StateDirFull => "state-dir-full",
            FaultKind::CorruptJournal => "corrupt-journal",
            FaultKind::ReloadValid => "sighup-valid",
            FaultKind::ReloadInvalid => "sighup-invalid",
            FaultKind::StraySignals => "stray-signals",
        }
    }

    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.label() == label)
    }

    pub fn expectation(self) -> Expectation {
        match self {
            FaultKind::TermRestart
            | FaultKind::ReloadValid
            | FaultKind::ReloadInvalid
            | FaultKind::StateDirFull
            | FaultKind::StraySignals => Expectation::Planned,
            _ => Expectation::Unplanned,
        }
    }

    pub fn scope(self) -> Scope {
        match self {
            FaultKind::CpuHog => Scope::Fleet,
            _ => Scope::Pair,
        }
    }

    /// Whether the fault means something for `implementation`. keepalived has no VIP journal
    /// and no state directory, takes an invalid file on SIGHUP as far as it can parse it, and
    /// writes its SIGUSR1/SIGUSR2 dumps into the host's /tmp.
    pub fn applies_to(self, implementation: Implementation) -> bool {
        match implementation {
            Implementation::Hav => true,
            Implementation::Keepalived => !matches!(
                self,
                FaultKind::StateDirFull
                    | FaultKind::CorruptJournal
                    | FaultKind::ReloadInvalid
                    | FaultKind::StraySignals
            ),
        }
    }

    /// How long the fault is held before it is cleared, in milliseconds (inclusive range).
    fn hold_range(self) -> (u64, u64) {
        match self {
            FaultKind::LinkFlap => (500, 3000),
            FaultKind::InterfaceRecreate => (500, 2000),
            FaultKind::Kill | FaultKind::TermRestart | FaultKind::CorruptJournal => (300, 2000),
            // Some stops are shorter than the master-down interval (no takeover), most longer.
            FaultKind::StopCont => (200, 2000),
            FaultKind::TrackedProcess => (500, 2500),
            FaultKind::AdvertLoss => (3000, 8000),
            FaultKind::CpuHog => (2000, 4000),
            FaultKind::StateDirFull | FaultKind::ReloadValid => (1000, 3000),
            FaultKind::ReloadInvalid | FaultKind::StraySignals => (300, 1000),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Node `a` (masters the pair's first VIP) or `b` (masters the second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn letter(self) -> char {
        match self {
            Side::A => 'a',
            Side::B => 'b',
        }
    }

    /// The VIP slot (0 or 1) this side masters.
    pub fn slot(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEvent {
    /// 1-based position in the schedule.
    pub number: usize,
    /// Planned start, from the start of the run.
    pub at: Duration,
    /// Pair index (for a fleet-wide fault: the pair whose node runs it).
    pub pair: usize,
    pub side: Side,
    pub kind: FaultKind,
    pub hold: Duration,
}

/// The whole schedule of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    pub duration: Duration,
    pub pairs: usize,
    pub kinds: Vec<FaultKind>,
    pub events: Vec<FaultEvent>,
}

/// The first fault comes this long after the fleet settled.
const FIRST_FAULT: Duration = Duration::from_secs(1);
/// What the planner assumes a pair needs after a fault is cleared (recovery and the quiet
/// check); the executor waits for the real thing.
const SETTLE_ESTIMATE: Duration = Duration::from_secs(3);
/// Idle time on a pair between two of its faults (inclusive range, ms).
const IDLE_MS: (u64, u64) = (500, 3000);

impl Schedule {
    /// Deals the fault kinds out like cards (every kind once per round, in a shuffled order) to
    /// the pair that becomes free first. A fleet-wide fault is held back until every pair that
    /// was busy when it was dealt has become free (the others take faults meanwhile), then runs
    /// when all are free.
    pub fn generate(seed: u64, duration: Duration, pairs: usize, kinds: &[FaultKind]) -> Schedule {
        let mut rng = SplitMix64::new(seed);
        let mut events = Vec::new();
        let mut free_at = vec![FIRST_FAULT; pairs];
        let mut bag: Vec<FaultKind> = Vec::new();
        // A fleet-wide fault dealt but not placed yet, and the time every pair must reach.
        let mut held: Option<(FaultEvent, Duration)> = None;
        let place_fleet = |event: FaultEvent, free_at: &mut Vec<Duration>| {
            let latest = free_at.iter().copied().max().unwrap_or(FIRST_FAULT);
            let at = latest + event.at;
            let done = at + event.hold + SETTLE_ESTIMATE;
            free_at.iter_mut().for_each(|f| *f = done);
            (done <= duration).then_some(FaultEvent { at, ..event })
        };
        while pairs > 0 && !kinds.is_empty() {
            let earliest = free_at.iter().copied().min().unwrap_or(FIRST_FAULT);
            if let Some((event, barrier)) = held.take() {
                if earliest >= barrier {
                    match place_fleet(event, &mut free_at) {
                        Some(event) => events.push(event),
                        None => break,
                    }
                    continue;
                }
                held = Some((event, barrier));
            }
            if bag.is_empty() {
                bag = kinds.to_vec();
                rng.shuffle(&mut bag);
            }
            let Some(kind) = bag.pop() else { break };
            let (lo, hi) = kind.hold_range();
            let hold = rng.millis(lo, hi);
            let side = if rng.below(2) == 0 { Side::A } else { Side::B };
            let idle = rng.millis(IDLE_MS.0, IDLE_MS.1);
            if kind.scope() == Scope::Fleet {
                let pair = usize::try_from(rng.below(pairs as u64)).unwrap_or(0);
                // `at` holds the idle gap until the event is placed.
                let event = FaultEvent {
                    number: 0,
                    at: idle,
                    pair,
                    side,
                    kind,
                    hold,
                };
                if let Some((previous, _)) = held.take() {
                    match place_fleet(previous, &mut free_at) {
                        Some(previous) => events.push(previous),
                        None => break,
                    }
                }
                let barrier = free_at.iter().copied().max().unwrap_or(FIRST_FAULT);
                held = Some((event, barrier));
                continue;
            }
            let (pair, free) = free_at
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|(_, free)| *free)
                .unwrap_or((0, FIRST_FAULT));
            let at = free + idle;
            let done = at + hold + SETTLE_ESTIMATE;
            if done > duration {
                break;
            }
            free_at[pair] = done;
            events.push(FaultEvent {
                number: 0,
                at,
                pair,
                side,
                kind,
                hold,
            });
        }
        events.sort_by_key(|e| (e.at, e.pair));
        for (i, event) in events.iter_mut().enumerate() {
            event.number = i + 1;
        }
        Schedule {
            seed,
            duration,
            pairs,
            kinds: kinds.to_vec(),
            events,
        }
    }

    /// The command line that replays this schedule.
    pub fn replay_command(&self, keepalived: bool) -> String {
        let mut command = format!(
            "hav-chaos --seed {} --seconds {} --pairs {}",
            self.seed,
            self.duration.as_secs(),
            self.pairs
        );
        if self.kinds != FaultKind::ALL {
            let labels: Vec<&str> = self.kinds.iter().map(|k| k.label()).collect();
            let _ = write!(command, " --faults {}", labels.join(","));
        }
        if keepalived {
            command.push_str(" --keepalived");
        }
        command
    }

    /// The schedule as a table, one line per fault.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "schedule: seed {}, {} pairs, {} s, {} faults",
            self.seed,
            self.pairs,
            self.duration.as_secs(),
            self.events.len()
        );
        let _ = writeln!(
            out,
            "{:>4}  {:>9}  {:<6} {:<16} {:>7}",
            "#", "planned", "node", "fault", "hold"
        );
        for e in &self.events {
            let target = match e.kind.scope() {
                Scope::Pair => format!("{}{}", e.pair, e.side.letter()),
                Scope::Fleet => format!("all@{}{}", e.pair, e.side.letter()),
            };
            let _ = writeln!(
                out,
                "{:>4}  {:>8.3}s  {:<6} {:<16} {:>6.3}s",
                e.number,
                e.at.as_secs_f64(),
                target,
                e.kind.label(),
                e.hold.as_secs_f64()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0 (reference implementation by Vigna).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let one = Schedule::generate(7, Duration::from_secs(600), 3, &FaultKind::ALL);
        let again = Schedule::generate(7, Duration::from_secs(600), 3, &FaultKind::ALL);
        let other = Schedule::generate(8, Duration::from_secs(600), 3, &FaultKind::ALL);
        assert_eq!(one, again);
        assert_ne!(one.events, other.events);
        assert_eq!(one.render(), again.render());
    }

    #[test]
    fn every_kind_comes_once_per_round_and_faults_on_a_pair_never_overlap() {
        let schedule = Schedule::generate(42, Duration::from_secs(1800), 3, &FaultKind::ALL);
        let first_round: std::collections::BTreeSet<_> = schedule
            .events
            .iter()
            .take(FaultKind::ALL.len())
            .map(|e| e.kind)
            .collect();
        // Sorting by time can swap neighbours across a round boundary; most of the first round
        // is still in the first 13 events, and the whole run has every kind many times.
        assert!(
            first_round.len() >= FaultKind::ALL.len() - 3,
            "{first_round:?}"
        );
        for kind in FaultKind::ALL {
            assert!(
                schedule.events.iter().filter(|e| e.kind == kind).count() >= 5,
                "{kind} too rare"
            );
        }
        for pair in 0..3 {
            let mut previous_end = Duration::ZERO;
            for e in schedule
                .events
                .iter()
                .filter(|e| e.pair == pair || e.kind.scope() == Scope::Fleet)
            {
                assert!(e.at >= previous_end, "overlap at #{}", e.number);
                previous_end = e.at + e.hold + SETTLE_ESTIMATE;
            }
            assert!(previous_end <= schedule.duration);
        }
        let numbers: Vec<usize> = schedule.events.iter().map(|e| e.number).collect();
        assert_eq!(numbers, (1..=schedule.events.len()).collect::<Vec<_>>());
    }

    #[test]
    fn a_restricted_schedule_only_uses_the_given_kinds_and_replays_with_them() {
        let kinds = [FaultKind::Kill, FaultKind::LinkFlap];
        let schedule = Schedule::generate(1, Duration::from_secs(120), 2, &kinds);
        assert!(!schedule.events.is_empty());
        assert!(schedule.events.iter().all(|e| kinds.contains(&e.kind)));
        assert_eq!(
            schedule.replay_command(true),
            "hav-chaos --seed 1 --seconds 120 --pairs 2 --faults sigkill-restart,link-flap --keepalived"
        );
    }

    #[test]
    fn labels_round_trip() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::parse(kind.label()), Some(kind));
        }
        assert_eq!(FaultKind::parse("meteor"), None);
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(3);
        for n in [1, 2, 3, 7, 1000] {
            assert!((0..100).all(|_| rng.below(n) < n));
        }
        assert_eq!(rng.below(0), 0);
        let d = rng.millis(500, 500);
        assert_eq!(d, Duration::from_millis(500));
    }
}
