//! A settled master's repeats, held back by the kernel so that a backup sleeps through them.
//!
//! While the engine reports a [steady advert](hav_vrrp::engine::Engine::steady_repeat), the
//! VRRP sockets of its interface drop that advert's repeats ([`Program::all_but`]) and a
//! holding socket of the same spec, which nothing waits on, queues them ([`Program::only`])
//! with their arrival stamps. The loop reads them before every turn and hands them to the
//! engine with the time they arrived, so the engine sees the adverts it would have seen, in the
//! same order and at the same times, only later; and a repeat, while the engine reports it
//! steady, would only have restarted the master-down timer. So a backup wakes once per
//! master-down interval (at its deadline, which the held adverts then move) instead of once per
//! advert, and a master's advert wakes nobody. Everything else (another advert, another master,
//! a changed priority) still wakes the loop at once, and the filters follow the engine in the
//! turn after any change of its steady advert, the held repeats being read first.
//!
//! An arrival is stamped by the wall clock; it becomes an [`Instant`] through a pair of
//! readings of both clocks at each drain. When the wall clock was stepped or slewed fast since
//! the previous drain, or the holding socket dropped datagrams for want of room, the stamps
//! cannot be trusted, and the adverts count as heard at the drain: a failover is then late,
//! never early.
//!
//! [`Program::all_but`]: crate::net::hold::Program::all_but
//! [`Program::only`]: crate::net::hold::Program::only

use std::time::{Duration, Instant, SystemTime};

/// How far the two clocks may drift apart between drains and the stamps still be trusted:
/// a millisecond, and a tenth of a percent of the time between the drains (twice the most ntpd
/// slews by; a faster slew makes the stamps count as heard at the drain).
const DRIFT_FLOOR: Duration = Duration::from_millis(1);
const DRIFT_PER_MILLE: u32 = 1;

/// Turns arrival stamps into the loop's time.
#[derive(Debug, Default)]
pub struct ArrivalClock {
    /// Both clocks, read together at the last drain (or when holding began).
    pair: Option<(SystemTime, Instant)>,
    /// The time of the last drain's turn (or when holding began): no held advert goes before
    /// it.
    floor: Option<Instant>,
    /// The holding socket's drop count last seen.
    dropped: u32,
}

/// One drain: the readings it converts stamps with.
#[derive(Debug)]
pub struct Drain {
    /// The turn's time: no held advert goes after it.
    now: Instant,
    real: SystemTime,
    mono: Instant,
    trusted: bool,
    floor: Instant,
}

impl Drain {
    /// The turn's time.
    pub fn now(&self) -> Instant {
        self.now
    }
}

impl ArrivalClock {
    /// Reads both clocks as holding begins: stamps taken after this convert exactly at the next
    /// drain unless the wall clock moves meanwhile.
    pub fn mark(&mut self) {
        let mono = Instant::now();
        self.pair = Some((SystemTime::now(), mono));
        // Nothing held arrived before its filter was set.
        self.floor = Some(self.floor.map_or(mono, |floor| floor.max(mono)));
    }

    /// Starts a drain for a turn at `now`.
    pub fn begin(&mut self, now: Instant) -> Drain {
        let (real, mono) = (SystemTime::now(), Instant::now());
        let trusted = self
            .pair
            .is_some_and(|(real_then, mono_then)| steady(real_then, mono_then, real, mono));
        self.pair = Some((real, mono));
        let floor = self.floor.map_or(now, |floor| floor.min(now));
        Drain {
            now,
            real,
            mono,
            trusted,
            floor,
        }
    }

    /// The time a held advert stamped `arrived` counts as heard at, in `drain`; `dropped` is
    /// the socket's drop count it came with.
    pub fn arrival(
        &mut self,
        drain: &mut Drain,
        arrived: Option<SystemTime>,
        dropped: Option<u32>,
    ) -> Instant {
        if let Some(dropped) = dropped
            && dropped != self.dropped
        {
            // Datagrams newer than the queued ones were dropped: the newest arrival is unknown.
            self.dropped = dropped;
            drain.trusted = false;
        }
        let at = match arrived {
            Some(arrived) if drain.trusted => match drain.real.duration_since(arrived) {
                Ok(age) => drain.mono.checked_sub(age).unwrap_or(drain.floor),
                Err(_) => drain.now,
            },
            _ => drain.now,
        };
        let at = at.clamp(drain.floor, drain.now);
        drain.floor = at;
        at
    }

    /// Ends `drain`: the turn feeds the engine at its time next.
    pub fn end(&mut self, drain: Drain) {
        self.floor = Some(drain.now);
    }
}

/// Whether the wall clock and the monotonic clock moved alike between two readings of both.
fn steady(real_then: SystemTime, mono_then: Instant, real: SystemTime, mono: Instant) -> bool {
    let Ok(real_elapsed) = real.duration_since(real_then) else {
        return false;
    };
    let mono_elapsed = mono.saturating_duration_since(mono_then);
    let allowed = DRIFT_FLOOR + mono_elapsed * DRIFT_PER_MILLE / 1000;
    real_elapsed.abs_diff(mono_elapsed) <= allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_converts_to_the_loop_time_it_was_taken_at() {
        let mut clock = ArrivalClock::default();
        clock.mark();
        let real = SystemTime::now();
        let mono = Instant::now();
        let now = Instant::now() + Duration::from_millis(5);
        let mut drain = clock.begin(now);
        assert!(drain.trusted);
        let at = clock.arrival(&mut drain, Some(real), None);
        // The stamp and `mono` were read one after the other (a preempted test may be late).
        let apart = at.max(mono) - at.min(mono);
        assert!(apart < Duration::from_millis(20), "{apart:?}");
        assert!(at <= now);
    }

    #[test]
    fn untrusted_stamps_count_as_heard_at_the_turn() {
        // No pair of readings before the drain: the wall clock may have moved.
        let mut clock = ArrivalClock::default();
        let now = Instant::now();
        let mut drain = clock.begin(now);
        let old = SystemTime::now() - Duration::from_secs(3);
        assert_eq!(clock.arrival(&mut drain, Some(old), None), now);
        clock.end(drain);

        // Trusted, but the socket dropped datagrams: from there on, the turn's time.
        let mut drain = clock.begin(now + Duration::from_millis(1));
        assert!(drain.trusted);
        let later = clock.arrival(&mut drain, Some(old), Some(3));
        assert_eq!(later, now + Duration::from_millis(1));
        // The same count again is no new drop: an old stamp converts (to the previous turn's
        // time, the earliest a held advert may have).
        clock.end(drain);
        let mut drain = clock.begin(now + Duration::from_millis(2));
        assert!(drain.trusted);
        let again = clock.arrival(&mut drain, Some(old), Some(3));
        assert_eq!(
            again,
            now + Duration::from_millis(1),
            "trusted: not the turn's time"
        );
    }

    #[test]
    fn arrivals_never_go_back_before_the_previous_turn_nor_past_this_one() {
        let mut clock = ArrivalClock::default();
        clock.mark();
        let start = Instant::now() + Duration::from_millis(50);
        let mut drain = clock.begin(start);
        clock.arrival(&mut drain, Some(SystemTime::now()), None);
        clock.end(drain);
        let now = start + Duration::from_millis(10);
        let mut drain = clock.begin(now);
        // Stamped before the previous turn (a datagram in flight during its drain).
        let early = clock.arrival(
            &mut drain,
            Some(SystemTime::now() - Duration::from_secs(1)),
            None,
        );
        assert_eq!(early, start);
        // Stamped in the future of this turn.
        let late = clock.arrival(
            &mut drain,
            Some(SystemTime::now() + Duration::from_secs(1)),
            None,
        );
        assert_eq!(late, now);
    }

    #[test]
    fn clocks_that_moved_apart_are_not_steady() {
        let real = SystemTime::now();
        let mono = Instant::now();
        let second = Duration::from_secs(1);
        assert!(steady(real, mono, real + second, mono + second));
        assert!(steady(
            real,
            mono,
            real + second + Duration::from_micros(1500),
            mono + second
        ));
        assert!(!steady(
            real,
            mono,
            real + second + Duration::from_millis(3),
            mono + second
        ));
        assert!(!steady(real, mono, real - second, mono + second));
    }
}
