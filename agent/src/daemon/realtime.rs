//! `[node] max_auto_priority`: the agent raises itself to a realtime scheduling priority when it
//! finds itself woken late, as keepalived's option of that name does.
//!
//! The loop knows when the engine's deadline was due and when it woke for it; lateness beyond
//! [`late_threshold`] (a quarter of the fastest advert interval, never under 10 ms: a master
//! that late has spent a quarter of one interval of its peers' three-interval patience) is a
//! sign the agent is starved of CPU. Each such wake-up raises it one step: `SCHED_RR` at
//! priority 1 first, then doubling, never above the configured maximum; it never lowers itself.
//! Every thread of the process then gets the new policy, with `SCHED_RESET_ON_FORK`, so the
//! programs it starts (hooks, check scripts) and the threads it starts later run with normal
//! scheduling. A refusal (no `CAP_SYS_NICE`, systemd's `RestrictRealtime=yes`) is logged once
//! and the agent stops trying. [`AutoPriority::on_wakeup`] is pure; [`apply`] does the IO.

use std::io;
use std::time::Duration;

use hav_proto::config::RealtimePriority;

/// The least lateness that counts, whatever the advert intervals.
pub const MIN_LATE_THRESHOLD: Duration = Duration::from_millis(10);

/// The lateness that raises the priority when the fastest instance advertises every
/// `fastest_advert` (`None`: no instance).
pub fn late_threshold(fastest_advert: Option<Duration>) -> Duration {
    fastest_advert
        .map(|interval| interval / 4)
        .unwrap_or_default()
        .max(MIN_LATE_THRESHOLD)
}

/// The raising rule; see the module documentation.
#[derive(Debug, Clone)]
pub struct AutoPriority {
    max: RealtimePriority,
    /// The priority the agent runs at; `None` while it runs as it was started.
    current: Option<u8>,
    /// The kernel refused once: no further tries.
    refused: bool,
}

impl AutoPriority {
    pub fn new(max: RealtimePriority) -> Self {
        Self {
            max,
            current: None,
            refused: false,
        }
    }

    /// The maximum changed (a reload): later raises stop at it; the priority reached is kept.
    pub fn set_max(&mut self, max: RealtimePriority) {
        self.max = max;
    }

    /// A wake-up `lateness` after its deadline: the priority to switch to now, if any.
    pub fn on_wakeup(&mut self, lateness: Duration, threshold: Duration) -> Option<u8> {
        if self.refused || lateness <= threshold {
            return None;
        }
        let next = match self.current {
            None => 1,
            Some(current) => current.saturating_mul(2),
        }
        .min(self.max.get());
        self.current
            .is_none_or(|current| next > current)
            .then_some(next)
    }

    /// The switch to `priority` was made.
    pub fn raised(&mut self, priority: u8) {
        self.current = Some(priority);
    }

    /// The kernel refused the switch.
    pub fn refused(&mut self) {
        self.refused = true;
    }
}

/// Puts every thread of this process under `SCHED_RR` at `priority`, reset on fork. `Ok`: the
/// number of threads switched (a thread that ended meanwhile is skipped).
pub fn apply(priority: u8) -> io::Result<usize> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    let mut switched = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: `param` is a valid `sched_param` that outlives the call; the call reads it
        // and changes only the scheduling of thread `tid` of this process.
        let result = unsafe {
            libc::sched_setscheduler(tid, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param)
        };
        if result == 0 {
            switched += 1;
            continue;
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ESRCH) {
            return Err(error);
        }
    }
    Ok(switched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(max: i64) -> AutoPriority {
        AutoPriority::new(RealtimePriority::new(max).expect("in range"))
    }

    #[test]
    fn the_threshold_is_a_quarter_of_the_fastest_interval_and_at_least_10_ms() {
        assert_eq!(
            late_threshold(Some(Duration::from_secs(1))),
            Duration::from_millis(250)
        );
        assert_eq!(
            late_threshold(Some(Duration::from_millis(20))),
            MIN_LATE_THRESHOLD
        );
        assert_eq!(late_threshold(None), MIN_LATE_THRESHOLD);
    }

    #[test]
    fn each_late_wakeup_raises_one_step_up_to_the_maximum_and_never_lowers() {
        let threshold = Duration::from_millis(250);
        let mut auto = rule(10);
        assert_eq!(auto.on_wakeup(Duration::from_millis(100), threshold), None);
        let mut reached = Vec::new();
        for _ in 0..8 {
            if let Some(priority) = auto.on_wakeup(Duration::from_secs(2), threshold) {
                auto.raised(priority);
                reached.push(priority);
            }
        }
        assert_eq!(reached, [1, 2, 4, 8, 10]);
        assert_eq!(auto.on_wakeup(Duration::ZERO, threshold), None);
    }

    #[test]
    fn a_refusal_stops_the_tries() {
        let mut auto = rule(5);
        assert_eq!(
            auto.on_wakeup(Duration::from_secs(1), Duration::ZERO),
            Some(1)
        );
        auto.refused();
        assert_eq!(auto.on_wakeup(Duration::from_secs(1), Duration::ZERO), None);
    }
}
