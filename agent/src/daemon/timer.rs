//! The engine's next deadline on a `timerfd`.
//!
//! One exact wake-up per deadline, re-armed only when the deadline changes. tokio's timer wheel
//! would wake a 100 ms sleep once early (its 64 ms level cascading down) and unpark the runtime
//! through its eventfd whenever a sleep is re-registered earlier than its cached wake-up: three
//! wake-ups per advert where the protocol needs one. At 100 ms adverts that was most of an idle
//! agent's CPU. The timer is armed with an absolute time of `CLOCK_MONOTONIC` (the clock of
//! [`Instant`]), so arming reads no clock: a backup re-arms after every advert it hears.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::time::{TimeSpec, TimeValLike};
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::{ClockId as TimeClock, clock_gettime};
use tokio::io::unix::AsyncFd;

/// nix's `TimerFd` offers `AsFd`; tokio's `AsyncFd` wants `AsRawFd`.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A one-shot monotonic timer the event loop awaits.
pub struct EngineTimer {
    fd: AsyncFd<Fd>,
    armed: Option<Instant>,
    /// One instant and `CLOCK_MONOTONIC` read after it: an [`Instant`] as an absolute
    /// expiration, never earlier than the instant (late by the nanoseconds between the reads).
    anchor: (Instant, TimeSpec),
}

impl EngineTimer {
    pub fn new() -> io::Result<Self> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let instant = Instant::now();
        let anchor = (instant, clock_gettime(TimeClock::CLOCK_MONOTONIC)?);
        Ok(Self {
            anchor,
            // SAFETY: `Fd` owns the timerfd through nix's `TimerFd`, and nothing replaces or
            // closes it while the `AsyncFd` owns it (they are dropped together).
            fd: unsafe {
                AsyncFd::register_with_interest(Fd(timer), tokio::io::Interest::READABLE)
            }
            .map_err(io::Error::from)?,
            armed: None,
        })
    }

    /// Arms the timer for `at` (disarms it for `None`); a no-op when already armed for it.
    pub fn arm(&mut self, at: Option<Instant>) -> io::Result<()> {
        if at == self.armed {
            return Ok(());
        }
        match at {
            None => self.fd.get_ref().0.unset()?,
            Some(at) => {
                self.fd.get_ref().0.set(
                    Expiration::OneShot(self.absolute(at)),
                    TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                )?;
            }
        }
        self.armed = at;
        Ok(())
    }

    /// `at` on `CLOCK_MONOTONIC`. Never zero (that would disarm the timer): an instant before
    /// the anchor maps to the anchor's own time or 1 ns, both long past, so it fires at once.
    fn absolute(&self, at: Instant) -> TimeSpec {
        let (instant, clock) = self.anchor;
        let absolute = match at.checked_duration_since(instant) {
            Some(after) => clock + TimeSpec::from_duration(after),
            None => clock,
        };
        absolute.max(TimeSpec::nanoseconds(1))
    }

    /// Waits until the armed deadline passes (forever if none is armed).
    ///
    /// The expiration count is never read: arming again resets it, and each expiry is an edge
    /// of its own for epoll (tokio's registration is edge-triggered), so one `read(2)` per
    /// deadline is saved. What the count told, whether this readiness is an expiry of the
    /// deadline armed now or a stale one (the timer fired, then was armed again for later
    /// before the loop got here), the clock tells instead: the timer never fires before its
    /// deadline.
    pub async fn expired(&mut self) -> io::Result<()> {
        let Some(at) = self.armed else {
            return std::future::pending().await;
        };
        loop {
            let mut ready = self.fd.readable().await?;
            ready.clear_ready();
            if Instant::now() >= at {
                self.armed = None;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn fires_once_at_the_deadline_and_re_arms() {
        let mut timer = EngineTimer::new().expect("timerfd");
        let start = Instant::now();
        timer
            .arm(Some(start + Duration::from_millis(20)))
            .expect("arm");
        timer.expired().await.expect("fires");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        // Fired means disarmed: arming the same instant again must set it anew.
        let again = Instant::now();
        timer.arm(Some(again)).expect("due at once");
        timer.expired().await.expect("fires at once");
        assert!(again.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_deadline_from_before_the_timer_fires_at_once() {
        let past = Instant::now();
        let mut timer = EngineTimer::new().expect("timerfd");
        timer.arm(Some(past)).expect("arm");
        tokio::time::timeout(Duration::from_secs(1), timer.expired())
            .await
            .expect("fires at once")
            .expect("fires");
    }

    #[tokio::test]
    async fn a_timer_armed_again_for_later_waits_for_the_new_deadline() {
        let mut timer = EngineTimer::new().expect("timerfd");
        // Due at once: its expiry becomes readiness that nothing consumes (the runtime's driver
        // sees it when the task yields), then the deadline moves: the stale expiry must not
        // count.
        timer.arm(Some(Instant::now())).expect("arm");
        tokio::task::yield_now().await;
        let later = Instant::now() + Duration::from_millis(30);
        timer.arm(Some(later)).expect("arm again");
        timer.expired().await.expect("fires");
        assert!(Instant::now() >= later, "fired at the superseded deadline");
    }

    #[tokio::test]
    async fn disarmed_never_fires() {
        let mut timer = EngineTimer::new().expect("timerfd");
        timer
            .arm(Some(Instant::now() + Duration::from_millis(5)))
            .expect("arm");
        timer.arm(None).expect("disarm");
        let outcome = tokio::time::timeout(Duration::from_millis(50), timer.expired()).await;
        assert!(outcome.is_err(), "a disarmed timer fired");
    }
}
