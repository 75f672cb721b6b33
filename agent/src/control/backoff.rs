//! Jittered exponential backoff for reconnecting: the n-th delay is drawn uniformly from
//! `[d/2, d]` with `d = min(max, initial · 2ⁿ)`, so a fleet restarting together does not
//! reconnect in lockstep. [`Backoff::short_delay`] is the first delay, drawn again without
//! counting an attempt (the step to the next of several coordinators).

use std::time::Duration;

/// Reconnect delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        jittered(ceiling)
    }

    /// A delay drawn like the first one, `[initial/2, initial]`, that does not grow the next.
    pub fn short_delay(&self) -> Duration {
        jittered(self.initial.min(self.max))
    }

    /// Back to the initial delay (after a successful session).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Uniformly in `[ceiling/2, ceiling]` (millisecond steps).
fn jittered(ceiling: Duration) -> Duration {
    let half = ceiling / 2;
    let jitter_ms = half.as_millis() as u64;
    half + Duration::from_millis(if jitter_ms == 0 {
        0
    } else {
        rand::random_range(0..=jitter_ms)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_within_jitter_bounds() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for ceiling in ceilings {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                (ceiling / 2..=ceiling).contains(&delay),
                "{delay} vs {ceiling}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
        for _ in 0..5 {
            let short = backoff.short_delay().as_millis() as u64;
            assert!((50..=100).contains(&short), "{short}");
        }
        let delay = backoff.next_delay().as_millis() as u64;
        assert!(
            (100..=200).contains(&delay),
            "short delays do not grow it: {delay}"
        );
    }
}
