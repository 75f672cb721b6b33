//! Rise/fall debouncing of periodic check results (scripts and probes).
//!
//! `fall` consecutive failures take an up object down; `rise` consecutive successes bring a down
//! object up; a result that agrees with the current state resets the opposite count. Pure logic,
//! no clock.

/// Health of a periodic check before its first results are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialHealth {
    /// Report nothing until the first result, which alone decides (no rise/fall for it). The
    /// default: a daemon that starts next to a healthy service is up after one check, and one
    /// next to a dead service is down after one check.
    #[default]
    FirstResult,
    /// Start down and need `rise` successes (keepalived's `init_fail`).
    Down,
    /// Start up and need `fall` failures.
    Up,
}

/// Debounces check results into up/down.
#[derive(Debug, Clone)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: Option<bool>,
    contrary: u32,
}

impl RiseFall {
    /// `rise` and `fall` below 1 count as 1.
    pub fn new(rise: u32, fall: u32, initial: InitialHealth) -> Self {
        let up = match initial {
            InitialHealth::FirstResult => None,
            InitialHealth::Down => Some(false),
            InitialHealth::Up => Some(true),
        };
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            up,
            contrary: 0,
        }
    }

    /// Current state: `None` until decided.
    pub fn is_up(&self) -> Option<bool> {
        self.up
    }

    /// Records one check result and returns the state after it.
    pub fn record(&mut self, success: bool) -> bool {
        let Some(up) = self.up else {
            self.up = Some(success);
            return success;
        };
        if success == up {
            self.contrary = 0;
            return up;
        }
        self.contrary += 1;
        let needed = if up { self.fall } else { self.rise };
        if self.contrary >= needed {
            self.up = Some(success);
            self.contrary = 0;
        }
        self.up.unwrap_or(success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(checker: &mut RiseFall, results: &[bool]) -> Vec<bool> {
        results.iter().map(|r| checker.record(*r)).collect()
    }

    #[test]
    fn first_result_decides_then_debounces() {
        let mut checker = RiseFall::new(2, 3, InitialHealth::FirstResult);
        assert_eq!(checker.is_up(), None);
        let states = run(
            &mut checker,
            &[true, false, false, true, false, false, false, true, true],
        );
        assert_eq!(
            states,
            [true, true, true, true, true, true, false, false, true]
        );
    }

    #[test]
    fn initial_down_needs_rise_successes() {
        let mut checker = RiseFall::new(3, 1, InitialHealth::Down);
        assert_eq!(checker.is_up(), Some(false));
        assert_eq!(
            run(&mut checker, &[true, true, false, true, true, true]),
            [false, false, false, false, false, true]
        );
        assert!(!checker.record(false), "fall 1: one failure is enough");
    }

    #[test]
    fn initial_up_needs_fall_failures_and_zero_counts_as_one() {
        let mut checker = RiseFall::new(0, 0, InitialHealth::Up);
        assert_eq!(run(&mut checker, &[false, true]), [false, true]);
    }
}
