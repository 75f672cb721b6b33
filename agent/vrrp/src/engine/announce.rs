//! The announce schedule of a master: bursts of gratuitous ARP / unsolicited NA rounds.
//!
//! On becoming master: `repeat` rounds spaced by `interval`, a second burst `second_burst_after`
//! the first, then one round every `refresh`. The schedule lives here so that the driver only
//! executes single rounds; it is cancelled when the router leaves Master.

use std::time::{Duration, Instant};

use super::config::AnnounceSchedule;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    FirstBurst,
    SecondBurst,
    Refresh,
}

/// Where a master is in its schedule.
#[derive(Debug, Clone)]
pub(crate) struct Announcer {
    schedule: AnnounceSchedule,
    started: Instant,
    phase: Phase,
    left_in_burst: u32,
    next: Option<Instant>,
}

impl Announcer {
    /// A schedule starting at `now`; the first round is due at once (if `repeat` > 0).
    pub(crate) fn start(schedule: AnnounceSchedule, now: Instant) -> Self {
        let mut announcer = Self {
            schedule,
            started: now,
            phase: Phase::FirstBurst,
            left_in_burst: schedule.repeat,
            next: Some(now),
        };
        if schedule.repeat == 0 {
            announcer.end_burst(now);
        }
        announcer
    }

    /// When the next round is due.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.next
    }

    /// How many rounds are due at `now` (each one an `Announce` action), advancing the schedule.
    pub(crate) fn due(&mut self, now: Instant) -> u32 {
        let mut rounds = 0;
        // Bounded: each round either moves `next` forward by a non-zero step, or uses up one of
        // the at most MAX_ANNOUNCE_REPEAT rounds of a burst.
        while let Some(at) = self.next.filter(|at| *at <= now) {
            rounds += 1;
            match self.phase {
                Phase::FirstBurst | Phase::SecondBurst => {
                    self.left_in_burst = self.left_in_burst.saturating_sub(1);
                    if self.left_in_burst > 0 {
                        self.next = Some(at + self.schedule.interval);
                    } else {
                        self.end_burst(at);
                    }
                }
                // A late driver gets one refresh, not a catch-up of every missed one.
                Phase::Refresh => {
                    self.next = self
                        .schedule
                        .refresh
                        .map(|period| (at + period).max(now + period))
                }
            }
            if rounds > 2 * super::config::MAX_ANNOUNCE_REPEAT + 2 {
                break;
            }
        }
        rounds
    }

    /// A burst ended at `at`: schedule the second burst or the refresh.
    fn end_burst(&mut self, at: Instant) {
        match (self.phase, self.schedule.second_burst_after) {
            (Phase::FirstBurst, Some(after)) if self.schedule.repeat > 0 => {
                self.phase = Phase::SecondBurst;
                self.left_in_burst = self.schedule.repeat;
                self.next = Some((self.started + after).max(at + min_step(self.schedule.interval)));
            }
            _ => {
                self.phase = Phase::Refresh;
                self.next = self.schedule.refresh.map(|period| at + period);
            }
        }
    }
}

/// Keeps a second burst strictly after the first when `interval` is zero.
fn min_step(interval: Duration) -> Duration {
    interval.max(Duration::from_nanos(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(schedule: AnnounceSchedule, until: Duration) -> Vec<Duration> {
        let start = crate::engine::tests_support::epoch();
        let mut announcer = Announcer::start(schedule, start);
        let mut out = Vec::new();
        while let Some(at) = announcer.next() {
            if at > start + until {
                break;
            }
            for _ in 0..announcer.due(at) {
                out.push(at - start);
            }
        }
        out
    }

    #[test]
    fn keepalived_default_is_two_bursts_of_five() {
        let got = offsets(AnnounceSchedule::default(), Duration::from_secs(60));
        let mut want = vec![Duration::ZERO; 5];
        want.extend([Duration::from_secs(5); 5]);
        assert_eq!(got, want);
    }

    #[test]
    fn spaced_bursts_and_refresh() {
        let schedule = AnnounceSchedule {
            repeat: 3,
            interval: Duration::from_millis(100),
            second_burst_after: Some(Duration::from_secs(2)),
            refresh: Some(Duration::from_secs(10)),
        };
        let ms = Duration::from_millis;
        let got = offsets(schedule, Duration::from_secs(31));
        assert_eq!(
            got,
            [
                ms(0),
                ms(100),
                ms(200),
                ms(2000),
                ms(2100),
                ms(2200),
                ms(12200),
                ms(22200)
            ]
        );
    }

    #[test]
    fn no_repeat_means_refresh_only() {
        let schedule = AnnounceSchedule {
            repeat: 0,
            interval: Duration::ZERO,
            second_burst_after: Some(Duration::from_secs(5)),
            refresh: Some(Duration::from_secs(1)),
        };
        let got = offsets(schedule, Duration::from_millis(2500));
        assert_eq!(got, [Duration::from_secs(1), Duration::from_secs(2)]);
    }
}
