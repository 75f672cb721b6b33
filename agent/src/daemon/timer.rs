//! The engine's next deadline on a `timerfd`.
//!
//! One exact wake-up per deadline, re-armed only when the deadline changes. tokio's timer wheel
//! would wake a 100 ms sleep once early (its 64 ms level cascading down) and unpark the runtime
//! through its eventfd whenever a sleep is re-registered earlier than its cached wake-up: three
//! wake-ups per advert where the protocol needs one. At 100 ms adverts that was most of an idle
//! agent's CPU.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
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
}

impl EngineTimer {
    pub fn new() -> io::Result<Self> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Self {
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
                // A zero it_value would disarm the timer: a deadline already due fires in 1 ns.
                let delay = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                self.fd.get_ref().0.set(
                    Expiration::OneShot(TimeSpec::from_duration(delay)),
                    TimerSetTimeFlags::empty(),
                )?;
            }
        }
        self.armed = at;
        Ok(())
    }

    /// Waits until the armed deadline passes (forever if none is armed).
    pub async fn expired(&mut self) -> io::Result<()> {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(result) => {
                    result?;
                    // The expiration is consumed: no need to find that out with a failed read.
                    ready.clear_ready();
                    self.armed = None;
                    return Ok(());
                }
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
