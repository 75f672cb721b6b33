//! Health trackers: each watches one object (a link, a process, a script, a file, a TCP or HTTP
//! endpoint) and reports its raw health to the daemon loop.
//!
//! Guarantees: a tracker is one tokio task; it sends a [`TrackEvent`] for its initial health and
//! then only when the health changes (a `Down` whose reason alone changes is not a change); it
//! never panics on what it reads from the host; dropping its [`TrackerHandle`] stops it and kills
//! any child process it started. Mapping health to a priority change is the pure function
//! [`contribution`] (keepalived semantics), so the daemon loop owns all priority arithmetic.
//!
//! All trackers of a node share one `mpsc` channel rather than a `watch` per tracker: the daemon
//! loop selects on a single receiver, events keep their order across trackers, and every
//! transition is delivered (a `watch` would coalesce a quick Down→Up into nothing, hiding a flap
//! from the logs). Trackers only send on change, so the channel carries little traffic; when it is
//! full a tracker waits, which is the back-pressure we want.

pub mod file;
pub mod interface;
pub mod probe;
pub mod process;
pub mod script;

mod dirwatch;
pub(crate) mod exec;
mod rise_fall;

use std::fmt;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use exec::{Program, RunAs, RunAsError};
pub use file::FileSpec;
pub use interface::InterfaceSpec;
pub use probe::{HttpSpec, ProbeSchedule, TcpSpec};
pub use process::{ProcessMatch, ProcessSpec};
pub use rise_fall::{InitialHealth, RiseFall};
pub use script::ScriptSpec;

/// Raw health of a tracked object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// The object is healthy.
    Up,
    /// The object has failed; `reason` is for logs and operators.
    Down { reason: String },
    /// A tracked file holds this integer (the daemon multiplies it by the weight).
    Value(i64),
}

impl Health {
    pub fn down(reason: impl Into<String>) -> Self {
        Health::Down {
            reason: reason.into(),
        }
    }

    /// Whether two healths differ in a way the daemon acts on (the reason of a `Down` does not
    /// count).
    pub fn differs_from(&self, other: &Health) -> bool {
        match (self, other) {
            (Health::Up, Health::Up) | (Health::Down { .. }, Health::Down { .. }) => false,
            (Health::Value(a), Health::Value(b)) => a != b,
            _ => true,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Up => f.write_str("up"),
            Health::Down { reason } => write!(f, "down ({reason})"),
            Health::Value(value) => write!(f, "value {value}"),
        }
    }
}

/// What a tracker sends: its configured name and its new health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackEvent {
    pub name: String,
    pub health: Health,
}

/// What one tracked object does to an instance's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contribution {
    /// Add this (possibly negative, possibly zero) amount to the configured priority.
    Adjust(i32),
    /// The instance must go to FAULT.
    Fault,
}

/// Below this, a track file's value × weight sends the instance to FAULT (keepalived: "less than
/// -253").
pub const FILE_FAULT_BELOW: i64 = -253;

/// Maps a tracker's health and the instance's weight for it to a priority contribution, with
/// keepalived's semantics:
///
/// - `Up`/`Down`: a positive weight is added while the object is up, a negative weight while it
///   is down, and weight 0 means "down ⇒ FAULT".
/// - `Value(n)` (track file): with weight 0 a non-zero value is a FAULT and zero is fine;
///   otherwise `n × weight` is added, and a product below -253 is a FAULT. A track file that
///   cannot be read or parsed is `Down` and counts like any other `Down`.
///
/// keepalived's `reverse` keyword is not supported (negate the weight's meaning in the config
/// layer if it is ever needed).
///
/// Clamping the summed priority to 1..=254 is the caller's job.
pub fn contribution(health: &Health, weight: i32) -> Contribution {
    match health {
        Health::Up if weight > 0 => Contribution::Adjust(weight),
        Health::Up => Contribution::Adjust(0),
        Health::Down { .. } if weight == 0 => Contribution::Fault,
        Health::Down { .. } if weight < 0 => Contribution::Adjust(weight),
        Health::Down { .. } => Contribution::Adjust(0),
        Health::Value(value) if weight == 0 => {
            if *value == 0 {
                Contribution::Adjust(0)
            } else {
                Contribution::Fault
            }
        }
        Health::Value(value) => {
            let product = value.saturating_mul(i64::from(weight));
            if product < FILE_FAULT_BELOW {
                Contribution::Fault
            } else {
                // A product above i32::MAX adds more than any priority can hold; saturate.
                Contribution::Adjust(i32::try_from(product).unwrap_or(i32::MAX))
            }
        }
    }
}

/// What to track; one variant per kind of tracker.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TrackSpec {
    Interface(InterfaceSpec),
    Process(ProcessSpec),
    Script(ScriptSpec),
    File(FileSpec),
    Tcp(TcpSpec),
    Http(HttpSpec),
}

impl TrackSpec {
    /// What the spec must be to run, without looking at the host. [`spawn`] refuses a spec that
    /// fails here, and the daemon's plan refuses the config, so `hav-agent --check` and start-up
    /// agree.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            TrackSpec::Interface(spec) => spec.validate(),
            TrackSpec::Process(spec) => spec.validate(),
            TrackSpec::Script(spec) => spec.validate(),
            TrackSpec::File(_) => Ok(()),
            TrackSpec::Tcp(spec) => spec.schedule.validate(),
            TrackSpec::Http(spec) => spec.validate(),
        }
    }

    /// What the tracker needs from this host and does not find: a user to run a script as, the
    /// directory of a watched file (without these it cannot start), a script program, the TLS
    /// trust anchors of an `https://` probe (without these it starts and reports down). Reads
    /// the host, changes nothing; `hav-agent --check` reports each as a warning.
    pub fn host_problems(&self) -> Vec<String> {
        match self {
            TrackSpec::Script(spec) => spec.program.host_problems(),
            TrackSpec::Process(ProcessSpec {
                target: ProcessMatch::PidFile(path),
                ..
            })
            | TrackSpec::File(FileSpec { path }) => {
                dirwatch::check_watchable(path).err().into_iter().collect()
            }
            TrackSpec::Http(spec) => spec.tls_problem().into_iter().collect(),
            TrackSpec::Interface(_) | TrackSpec::Process(_) | TrackSpec::Tcp(_) => Vec::new(),
        }
    }
}

/// Why a tracker could not be started. Once started, a tracker reports failures as `Down`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    #[error("tracker {name}: {reason}")]
    InvalidSpec { name: String, reason: String },
    #[error("tracker {name}: {source}")]
    RunAs {
        name: String,
        #[source]
        source: RunAsError,
    },
    #[error("tracker {name}: cannot watch {path}: {source}")]
    Watch {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Starts a tracker as a tokio task (call from within a runtime). It sends its initial health and
/// every change to `events`; it stops when the handle is dropped or the receiver is gone.
pub fn spawn(
    name: impl Into<String>,
    spec: TrackSpec,
    events: mpsc::Sender<TrackEvent>,
) -> Result<TrackerHandle, TrackError> {
    let reporter = Reporter::new(name.into(), events);
    spec.validate().map_err(|reason| TrackError::InvalidSpec {
        name: reporter.name().to_owned(),
        reason,
    })?;
    let task = match spec {
        TrackSpec::Interface(spec) => tokio::spawn(interface::run(spec, reporter)),
        TrackSpec::Process(spec) => {
            let tracker = process::ProcessTracker::new(spec, &reporter)?;
            tokio::spawn(tracker.run(reporter))
        }
        TrackSpec::Script(spec) => {
            let tracker = script::ScriptTracker::new(spec, &reporter)?;
            tokio::spawn(tracker.run(reporter))
        }
        TrackSpec::File(spec) => {
            let tracker = file::FileTracker::new(spec, &reporter)?;
            tokio::spawn(tracker.run(reporter))
        }
        TrackSpec::Tcp(spec) => {
            let tracker = probe::ProbeTracker::tcp(spec, &reporter)?;
            tokio::spawn(tracker.run(reporter))
        }
        TrackSpec::Http(spec) => {
            let tracker = probe::ProbeTracker::http(spec, &reporter)?;
            tokio::spawn(tracker.run(reporter))
        }
    };
    Ok(TrackerHandle { task })
}

/// Owns a running tracker. Dropping it aborts the task, which drops (and so kills) any child
/// process the tracker had running.
#[derive(Debug)]
#[must_use = "dropping the handle stops the tracker"]
pub struct TrackerHandle {
    task: JoinHandle<()>,
}

impl TrackerHandle {
    /// Stops the tracker and waits until its task (and with it any child guard) is gone.
    pub async fn stop(mut self) {
        self.task.abort();
        // Ends with a cancellation error, which is what we asked for.
        let _ = (&mut self.task).await;
    }

    /// Whether the tracker's task has ended (it only ends on its own when the receiver is gone).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for TrackerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends a tracker's health to the daemon, only when it changes.
#[derive(Debug)]
pub(crate) struct Reporter {
    name: String,
    events: mpsc::Sender<TrackEvent>,
    last: Option<Health>,
}

/// The receiver is gone: the tracker should stop.
#[derive(Debug)]
pub(crate) struct Closed;

impl Reporter {
    fn new(name: String, events: mpsc::Sender<TrackEvent>) -> Self {
        Self {
            name,
            events,
            last: None,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn has_reported(&self) -> bool {
        self.last.is_some()
    }

    /// Reports `health` if it differs from the last reported one.
    pub(crate) async fn report(&mut self, health: Health) -> Result<(), Closed> {
        if let Some(last) = &self.last
            && !health.differs_from(last)
        {
            return Ok(());
        }
        match &self.last {
            None => tracing::info!(tracker = %self.name, %health, "initial health"),
            Some(last) => {
                tracing::info!(tracker = %self.name, from = %last, to = %health, "health changed")
            }
        }
        self.last = Some(health.clone());
        let event = TrackEvent {
            name: self.name.clone(),
            health,
        };
        self.events.send(event).await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_down_follow_keepalived_weights() {
        let down = Health::down("x");
        assert_eq!(contribution(&Health::Up, 10), Contribution::Adjust(10));
        assert_eq!(contribution(&down, 10), Contribution::Adjust(0));
        assert_eq!(contribution(&Health::Up, -10), Contribution::Adjust(0));
        assert_eq!(contribution(&down, -10), Contribution::Adjust(-10));
        assert_eq!(contribution(&Health::Up, 0), Contribution::Adjust(0));
        assert_eq!(contribution(&down, 0), Contribution::Fault);
    }

    #[test]
    fn file_values_multiply_and_fault_below_minus_253() {
        assert_eq!(contribution(&Health::Value(0), 0), Contribution::Adjust(0));
        assert_eq!(contribution(&Health::Value(3), 0), Contribution::Fault);
        assert_eq!(contribution(&Health::Value(-1), 0), Contribution::Fault);
        assert_eq!(contribution(&Health::Value(5), 2), Contribution::Adjust(10));
        assert_eq!(
            contribution(&Health::Value(-5), 2),
            Contribution::Adjust(-10)
        );
        assert_eq!(
            contribution(&Health::Value(-253), 1),
            Contribution::Adjust(-253)
        );
        assert_eq!(contribution(&Health::Value(-254), 1), Contribution::Fault);
        assert_eq!(contribution(&Health::Value(1), -254), Contribution::Fault);
        assert_eq!(
            contribution(&Health::Value(i64::MAX), 2),
            Contribution::Adjust(i32::MAX)
        );
        assert_eq!(
            contribution(&Health::Value(i64::MIN), 2),
            Contribution::Fault
        );
    }

    #[test]
    fn a_new_down_reason_is_not_a_change() {
        assert!(!Health::down("a").differs_from(&Health::down("b")));
        assert!(Health::Up.differs_from(&Health::down("b")));
        assert!(Health::Value(1).differs_from(&Health::Value(2)));
        assert!(!Health::Value(1).differs_from(&Health::Value(1)));
        assert!(Health::Value(1).differs_from(&Health::Up));
    }
}
