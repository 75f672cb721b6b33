//! Script tracker (keepalived `vrrp_script`): runs a program every `interval`; exit status 0 is a
//! success, anything else (a non-zero status, a signal, a timeout, a failure to start) a failure.
//!
//! Guarantees: one run at a time; a run that outlives `timeout` is killed with its whole process
//! group and counts as a failure; results are debounced by [`RiseFall`]; dropping the tracker
//! kills a run in progress.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::exec::{self, PreparedProgram, Program};
use super::rise_fall::{InitialHealth, RiseFall};
use super::{Health, Reporter, TrackError};

/// Configuration of a script tracker.
#[derive(Debug, Clone)]
pub struct ScriptSpec {
    pub program: Program,
    /// Time between the starts of two runs (a run that takes longer delays the next one).
    pub interval: Duration,
    /// A run still going after this is killed and counts as a failure.
    pub timeout: Duration,
    /// Consecutive successes that bring a down script up.
    pub rise: u32,
    /// Consecutive failures that take an up script down.
    pub fall: u32,
    pub initial: InitialHealth,
}

impl ScriptSpec {
    /// keepalived's defaults: every second, rise 1, fall 1; a 1 s timeout; the first result
    /// decides the initial health.
    pub fn new(program: Program) -> Self {
        Self {
            program,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
            initial: InitialHealth::FirstResult,
        }
    }
}

pub(crate) struct ScriptTracker {
    program: PreparedProgram,
    interval: Duration,
    timeout: Duration,
    checker: RiseFall,
}

impl ScriptSpec {
    /// What the spec must be to run, without looking at the host.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval.is_zero() {
            Err("interval must be positive".to_owned())
        } else if self.timeout.is_zero() {
            Err("timeout must be positive".to_owned())
        } else {
            Ok(())
        }
    }
}

impl ScriptTracker {
    pub(crate) fn new(spec: ScriptSpec, reporter: &Reporter) -> Result<Self, TrackError> {
        spec.validate().map_err(|reason| TrackError::InvalidSpec {
            name: reporter.name().to_owned(),
            reason,
        })?;
        let program = spec.program.prepare().map_err(|source| TrackError::RunAs {
            name: reporter.name().to_owned(),
            source,
        })?;
        Ok(Self {
            program,
            interval: spec.interval,
            timeout: spec.timeout,
            checker: RiseFall::new(spec.rise, spec.fall, spec.initial),
        })
    }

    pub(crate) async fn run(mut self, mut reporter: Reporter) {
        let mut last_failure = String::from("not yet run");
        if let Some(up) = self.checker.is_up()
            && reporter.report(health(up, &last_failure)).await.is_err()
        {
            return;
        }
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let outcome = exec::run(self.program.command([]), self.timeout).await;
            let success = outcome.succeeded();
            if !success {
                last_failure = format!("{}: {outcome}", self.program.describe());
                tracing::debug!(tracker = %reporter.name(), %last_failure, "script failed");
            }
            let up = self.checker.record(success);
            if reporter.report(health(up, &last_failure)).await.is_err() {
                return;
            }
        }
    }
}

fn health(up: bool, last_failure: &str) -> Health {
    if up {
        Health::Up
    } else {
        Health::down(last_failure)
    }
}
