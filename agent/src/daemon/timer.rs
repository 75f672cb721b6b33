//! The engine's next deadline on a `timerfd`.
//!
//! One wake-up per deadline (two when an expiry kept for it fires first), re-armed only when
//! the deadline changes. tokio's timer wheel would wake a 100 ms sleep once early (its 64 ms
//! level cascading down) and unpark the runtime through its eventfd whenever a sleep is
//! re-registered earlier than its cached wake-up: three wake-ups per advert where the protocol
//! needs one. At 100 ms adverts that was most of an idle agent's CPU. The timer is armed with an
//! absolute time of `CLOCK_MONOTONIC` (the clock of [`Instant`]), so arming reads no clock. A
//! deadline that moves later may leave an earlier expiry armed ([`EngineTimer::follow`]): a
//! backup sets the timer after every second advert it hears, not each. The loop waits for it in
//! its own `epoll` ([`super::poller`]), edge-triggered.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::{ClockId as TimeClock, clock_gettime};

/// A one-shot monotonic timer the event loop waits for.
pub struct EngineTimer {
    fd: TimerFd,
    armed: Option<Instant>,
    /// How long the armed expiry stays for a later deadline ([`EngineTimer::follow`]).
    keep: Keep,
    /// One instant and `CLOCK_MONOTONIC` read after it, in nanoseconds: an [`Instant`] as an
    /// absolute expiration, never earlier than the instant (late by the nanoseconds between the
    /// reads).
    anchor: (Instant, u64),
}

impl EngineTimer {
    pub fn new() -> io::Result<Self> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let instant = Instant::now();
        let clock = clock_gettime(TimeClock::CLOCK_MONOTONIC)?;
        let anchor = (instant, nanos(clock.tv_sec(), clock.tv_nsec()));
        Ok(Self {
            anchor,
            fd,
            armed: None,
            keep: Keep::Never,
        })
    }

    /// The descriptor to wait on: an expiry makes it readable.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_fd().as_raw_fd()
    }

    /// Arms the timer for `at` (disarms it for `None`); a no-op when already armed for it.
    pub fn arm(&mut self, at: Option<Instant>) -> io::Result<()> {
        if at == self.armed {
            return Ok(());
        }
        match at {
            None => self.fd.unset()?,
            Some(at) => {
                self.fd.set(
                    Expiration::OneShot(self.absolute(at)),
                    TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                )?;
            }
        }
        self.armed = at;
        self.keep = Keep::Never;
        Ok(())
    }

    /// Arms the timer for `at`, or leaves it armed for an earlier expiry while `now` (when the
    /// loop last woke; `None` arms exactly) is in the first half of the time from when that
    /// expiry was armed to it. Such an expiry fires early only if nothing moves the deadline
    /// again before it, and the wake-up then finds nothing due and arms `at` exactly: the
    /// deadline is never missed. A backup's master-down deadline (three intervals and a skew
    /// ahead) moves an interval later with every advert it hears: the timer is then set after
    /// every second advert instead of each, and the advert after a kept one still has half an
    /// interval of slack before the early expiry. Each `timerfd_settime` re-sorts the kernel's
    /// timers and may reprogram the CPU's clock event device.
    pub fn follow(&mut self, at: Option<Instant>, now: Option<Instant>) -> io::Result<()> {
        if let (Some(armed), Some(at), Some(now)) = (self.armed, at, now)
            && armed <= at
            && self.keep_until(armed).is_some_and(|until| now <= until)
        {
            return Ok(());
        }
        if at != self.armed {
            self.arm(at)?;
            if let Some(now) = now {
                self.keep = Keep::ArmedAt(now);
            }
        }
        Ok(())
    }

    /// Until when the expiry armed for `armed` stays for later deadlines; worked out the first
    /// time it is asked (a master's timer, which fires before its deadline moves, never asks).
    fn keep_until(&mut self, armed: Instant) -> Option<Instant> {
        match self.keep {
            Keep::Never => None,
            Keep::Until(until) => Some(until),
            Keep::ArmedAt(then) => {
                // Halved in nanoseconds: an odd one rounds down, and the window ends no later.
                let until = then.checked_add(armed.saturating_duration_since(then) / 2);
                self.keep = until.map_or(Keep::Never, Keep::Until);
                until
            }
        }
    }

    /// `at` on `CLOCK_MONOTONIC`. Never zero (that would disarm the timer): an instant before
    /// the anchor maps to the anchor's own time or 1 ns, both long past, so it fires at once.
    fn absolute(&self, at: Instant) -> TimeSpec {
        let (instant, clock) = self.anchor;
        let after = at.saturating_duration_since(instant);
        let absolute = clock
            .saturating_add(nanos(after.as_secs() as i64, after.subsec_nanos().into()))
            .max(1);
        TimeSpec::new(
            (absolute / NANOS_PER_SECOND) as i64,
            (absolute % NANOS_PER_SECOND) as i64,
        )
    }

    /// After the descriptor was readable: whether the armed deadline has passed at `now` (then
    /// the timer is disarmed).
    ///
    /// The expiration count is never read: arming again resets it, and each expiry is an edge
    /// of its own for `epoll`, so one `read(2)` per deadline is saved. What the count told,
    /// whether this readiness is an expiry of the deadline armed now or a stale one (the timer
    /// fired, then was armed again for later before the loop got here), the clock tells
    /// instead: the timer never fires before its deadline.
    pub fn expired(&mut self, now: Instant) -> bool {
        match self.armed {
            Some(at) if now >= at => {
                self.armed = None;
                true
            }
            _ => false,
        }
    }
}

/// How long an armed expiry stays for later deadlines: through the first half of the time from
/// the wake-up it was armed at to it.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// Armed without the time of a wake-up (or not armed): never kept.
    Never,
    /// Armed at this wake-up; the end of the half not worked out yet.
    ArmedAt(Instant),
    Until(Instant),
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A time of seconds and nanoseconds in nanoseconds, saturating (and 0 for a negative one).
fn nanos(seconds: i64, nanoseconds: i64) -> u64 {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    let nanoseconds = u64::try_from(nanoseconds).unwrap_or(0);
    seconds
        .saturating_mul(NANOS_PER_SECOND)
        .saturating_add(nanoseconds)
}

#[cfg(test)]
mod tests {
    use std::os::fd::BorrowedFd;
    use std::time::Duration;

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    use super::*;

    /// Waits up to `limit` for the timer's descriptor; whether it became readable.
    fn readable(timer: &EngineTimer, limit: Duration) -> bool {
        // SAFETY: the descriptor is the timer's, open for the whole call.
        let fd = unsafe { BorrowedFd::borrow_raw(timer.as_raw_fd()) };
        let timeout = PollTimeout::try_from(limit).expect("a short limit");
        poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], timeout).expect("poll") == 1
    }

    #[test]
    fn fires_once_at_the_deadline_and_re_arms() {
        let mut timer = EngineTimer::new().expect("timerfd");
        let start = Instant::now();
        timer
            .arm(Some(start + Duration::from_millis(20)))
            .expect("arm");
        assert!(readable(&timer, Duration::from_secs(1)), "fires");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        assert!(timer.expired(Instant::now()));
        assert!(!timer.expired(Instant::now()), "one expiry per deadline");
        // Fired means disarmed: arming the same instant again must set it anew.
        let again = Instant::now();
        timer.arm(Some(again)).expect("due at once");
        assert!(readable(&timer, Duration::from_secs(1)), "fires at once");
        assert!(timer.expired(Instant::now()));
    }

    #[test]
    fn an_instant_maps_to_the_monotonic_clock_to_the_nanosecond() {
        let timer = EngineTimer::new().expect("timerfd");
        let (instant, clock) = timer.anchor;
        let at = |spec: TimeSpec| nanos(spec.tv_sec(), spec.tv_nsec());
        let later = Duration::new(86_400 * 400, 999_999_999);
        assert_eq!(
            at(timer.absolute(instant + later)),
            clock + later.as_nanos() as u64
        );
        assert_eq!(timer.absolute(instant + later).tv_nsec(), {
            ((clock + later.as_nanos() as u64) % NANOS_PER_SECOND) as i64
        });
        assert_eq!(at(timer.absolute(instant)), clock);
        let before = instant
            .checked_sub(Duration::from_secs(1))
            .expect("a clock past 1 s");
        assert_eq!(at(timer.absolute(before)), clock, "clamped to the anchor");
        assert_eq!(nanos(-1, 5), 5, "a negative time counts as none");
        assert_eq!(nanos(i64::MAX, 0), u64::MAX, "saturates");
    }

    #[test]
    fn a_later_deadline_keeps_an_expiry_for_the_first_half_of_its_wait() {
        let mut timer = EngineTimer::new().expect("timerfd");
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        timer.follow(Some(at(360)), Some(now)).expect("arm");
        assert_eq!(timer.armed, Some(at(360)));
        // Armed at 0 for 360: kept for later deadlines until 180.
        timer.follow(Some(at(460)), Some(at(100))).expect("kept");
        assert_eq!(timer.armed, Some(at(360)), "kept");
        timer.follow(Some(at(540)), Some(at(180))).expect("kept");
        assert_eq!(timer.armed, Some(at(360)), "kept to the half-way point");
        timer
            .follow(Some(at(560)), Some(at(200)))
            .expect("re-armed");
        assert_eq!(timer.armed, Some(at(560)), "armed for the deadline");
        // An earlier deadline is always armed, and so is any without the time of a wake-up.
        timer.follow(Some(at(500)), Some(at(210))).expect("earlier");
        assert_eq!(timer.armed, Some(at(500)));
        timer.follow(Some(at(900)), None).expect("exact");
        assert_eq!(timer.armed, Some(at(900)));
        timer
            .follow(Some(at(950)), Some(at(220)))
            .expect("exact, then not kept");
        assert_eq!(timer.armed, Some(at(950)));
        timer.follow(None, Some(at(230))).expect("disarmed");
        assert_eq!(timer.armed, None);
        // A kept expiry fires early; the loop then finds it expired and arms the deadline.
        let start = Instant::now();
        timer
            .follow(Some(start + Duration::from_millis(10)), Some(start))
            .expect("arm");
        timer
            .follow(Some(start + Duration::from_millis(15)), Some(start))
            .expect("kept");
        assert_eq!(timer.armed, Some(start + Duration::from_millis(10)), "kept");
        assert!(readable(&timer, Duration::from_secs(1)), "fires");
        let fired = Instant::now();
        assert!(
            fired >= start + Duration::from_millis(10),
            "not before the kept expiry"
        );
        assert!(timer.expired(fired));
        timer
            .follow(Some(start + Duration::from_millis(15)), Some(fired))
            .expect("the deadline itself");
        assert!(readable(&timer, Duration::from_secs(1)), "fires again");
        assert!(Instant::now() >= start + Duration::from_millis(15));
    }

    #[test]
    fn a_deadline_from_before_the_timer_fires_at_once() {
        let past = Instant::now();
        let mut timer = EngineTimer::new().expect("timerfd");
        timer.arm(Some(past)).expect("arm");
        assert!(readable(&timer, Duration::from_secs(1)), "fires at once");
        assert!(timer.expired(Instant::now()));
    }

    #[test]
    fn a_timer_armed_again_for_later_waits_for_the_new_deadline() {
        let mut timer = EngineTimer::new().expect("timerfd");
        // Due at once, and it fires; then the deadline moves before the loop looks: that
        // expiry is stale and must not count.
        timer.arm(Some(Instant::now())).expect("arm");
        assert!(readable(&timer, Duration::from_secs(1)));
        let later = Instant::now() + Duration::from_millis(30);
        timer.arm(Some(later)).expect("arm again");
        assert!(
            !timer.expired(Instant::now()),
            "the superseded deadline counted"
        );
        assert!(readable(&timer, Duration::from_secs(1)), "fires again");
        let now = Instant::now();
        assert!(now >= later, "fired before the new deadline");
        assert!(timer.expired(now));
    }

    #[test]
    fn disarmed_never_fires() {
        let mut timer = EngineTimer::new().expect("timerfd");
        timer
            .arm(Some(Instant::now() + Duration::from_millis(5)))
            .expect("arm");
        timer.arm(None).expect("disarm");
        assert!(
            !readable(&timer, Duration::from_millis(50)),
            "a disarmed timer fired"
        );
        assert!(!timer.expired(Instant::now()));
    }
}
