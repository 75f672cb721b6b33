//! The timers of one virtual router: a fixed table keyed by [`Timer`].
//!
//! A timer is a deadline or nothing; the engine's wake-up time is the earliest deadline of all
//! tables, and an expired timer is stopped before its handler runs.

use std::time::Instant;

/// One router's timers (RFC 5798 section 6.2 names the first two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Backup: the master is presumed down when it fires.
    MasterDown,
    /// Master (and a resigning router): send the next advert.
    Advert,
    /// Make-before-break: give up the VIPs even if no new master was heard.
    Release,
    /// The next announcement of the VIPs.
    Announce,
    /// Master: announce the VIPs once more after another master was heard (its own
    /// announcement may have reached hosts after ours).
    Reannounce,
}

impl Timer {
    /// In the order expired timers are handled: MasterDown before Release, so that a router that
    /// resigned and heard no successor takes the master role back without dropping its VIPs.
    pub(crate) const ALL: [Timer; 5] = [
        Timer::MasterDown,
        Timer::Advert,
        Timer::Release,
        Timer::Announce,
        Timer::Reannounce,
    ];

    const fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, deadline: Instant) {
        self.deadlines[timer.index()] = Some(deadline);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer.index()]
    }

    pub(crate) fn stop_all(&mut self) {
        self.deadlines = Default::default();
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// The first expired timer in [`Timer::ALL`] order, stopped.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        let timer = Timer::ALL
            .into_iter()
            .find(|timer| self.get(*timer).is_some_and(|at| at <= now))?;
        self.stop(timer);
        Some(timer)
    }
}
