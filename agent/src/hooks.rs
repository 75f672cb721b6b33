//! Notify hooks: programs run on every state change of an instance or a sync group, with
//! keepalived-compatible arguments and `HAV_*` environment variables.
//!
//! Guarantees: one [`HookQueue`] per instance (or group) runs its hooks one at a time, in the
//! order the changes were notified, never reordered or merged; [`HookQueue::notify`] never blocks
//! or awaits (the queue is unbounded: state changes are rare, and dropping one would hide a
//! transition from the operator's scripts); a hook still running after the timeout is killed with
//! its whole process group; every outcome is logged with `tracing`.
//!
//! For each change, the per-state programs (`notify_master`, `notify_backup`, `notify_fault`,
//! `notify_stop`) run first with their configured arguments, as in keepalived; then the generic
//! `notify` programs with `INSTANCE|GROUP <name> <MASTER|BACKUP|FAULT|STOP> <priority>` appended.
//! Every program gets `HAV_NAME`, `HAV_KIND`, `HAV_OLD_STATE`, `HAV_NEW_STATE`, `HAV_PRIORITY` and
//! `HAV_CAUSE` in its environment.

use std::fmt;
use std::time::Duration;

use hav_vrrp::Priority;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::track::exec::{self, PreparedProgram};
use crate::track::{Program, RunAsError};

/// Whether the hook is for one instance or for a sync group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Instance,
    Group,
}

impl HookKind {
    /// keepalived's first argument.
    pub fn keyword(self) -> &'static str {
        match self {
            HookKind::Instance => "INSTANCE",
            HookKind::Group => "GROUP",
        }
    }
}

/// State named to a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookState {
    /// Before the first transition; only ever an old state.
    Init,
    Backup,
    Master,
    Fault,
    /// The instance was stopped (agent shutdown or instance removed).
    Stop,
}

impl HookState {
    pub fn keyword(self) -> &'static str {
        match self {
            HookState::Init => "INIT",
            HookState::Backup => "BACKUP",
            HookState::Master => "MASTER",
            HookState::Fault => "FAULT",
            HookState::Stop => "STOP",
        }
    }
}

impl fmt::Display for HookState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// One state change to notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub kind: HookKind,
    /// Instance or group name.
    pub name: String,
    pub old: HookState,
    pub new: HookState,
    pub priority: Priority,
    /// Why, e.g. `master-down timer` or `higher priority advert from 198.51.100.12`.
    pub cause: String,
}

/// The programs to run for one instance or group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// Generic `notify`: run on every change, with the keepalived arguments appended.
    pub notify: Vec<Program>,
    pub notify_master: Vec<Program>,
    pub notify_backup: Vec<Program>,
    pub notify_fault: Vec<Program>,
    pub notify_stop: Vec<Program>,
    /// A program still running after this is killed (with its process group).
    pub timeout: Duration,
}

impl Default for HookConfig {
    /// No programs; a 30 s timeout.
    fn default() -> Self {
        Self {
            notify: Vec::new(),
            notify_master: Vec::new(),
            notify_backup: Vec::new(),
            notify_fault: Vec::new(),
            notify_stop: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    #[error("hook {program}: {source}")]
    RunAs {
        program: String,
        #[source]
        source: RunAsError,
    },
    #[error("hook timeout must be positive")]
    ZeroTimeout,
}

/// The per-instance queue: a task that runs the hooks of each notified change in order.
#[derive(Debug)]
pub struct HookQueue {
    changes: mpsc::UnboundedSender<StateChange>,
    task: JoinHandle<()>,
}

impl HookQueue {
    /// Starts the queue task (call from within a runtime). Users and groups are resolved now, so
    /// that a bad name is a configuration error. Dropping the queue lets the task finish what is
    /// queued in the background; [`HookQueue::close`] waits for it.
    pub fn spawn(config: HookConfig) -> Result<Self, HookError> {
        if config.timeout.is_zero() {
            return Err(HookError::ZeroTimeout);
        }
        let prepare = |programs: &[Program]| -> Result<Vec<PreparedProgram>, HookError> {
            programs
                .iter()
                .map(|program| {
                    program.prepare().map_err(|source| HookError::RunAs {
                        program: program.path.display().to_string(),
                        source,
                    })
                })
                .collect()
        };
        let runner = Runner {
            notify: prepare(&config.notify)?,
            master: prepare(&config.notify_master)?,
            backup: prepare(&config.notify_backup)?,
            fault: prepare(&config.notify_fault)?,
            stop: prepare(&config.notify_stop)?,
            timeout: config.timeout,
        };
        let (changes, queue) = mpsc::unbounded_channel();
        let task = tokio::spawn(runner.run(queue));
        Ok(Self { changes, task })
    }

    /// Queues the hooks for `change`; returns at once.
    pub fn notify(&self, change: StateChange) {
        if self.changes.send(change).is_err() {
            // The task only ends after the sender is gone, so this cannot happen while `self`
            // exists unless the task panicked; log rather than panic in turn.
            tracing::error!("hook queue task is gone; change not notified");
        }
    }

    /// Runs everything queued so far and returns when the last hook has finished.
    pub async fn close(self) {
        let Self { changes, task } = self;
        drop(changes);
        if let Err(error) = task.await {
            tracing::error!(%error, "hook queue task failed");
        }
    }
}

struct Runner {
    notify: Vec<PreparedProgram>,
    master: Vec<PreparedProgram>,
    backup: Vec<PreparedProgram>,
    fault: Vec<PreparedProgram>,
    stop: Vec<PreparedProgram>,
    timeout: Duration,
}

impl Runner {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<StateChange>) {
        while let Some(change) = queue.recv().await {
            self.run_change(&change).await;
        }
    }

    async fn run_change(&self, change: &StateChange) {
        let per_state: &[PreparedProgram] = match change.new {
            HookState::Master => &self.master,
            HookState::Backup => &self.backup,
            HookState::Fault => &self.fault,
            HookState::Stop => &self.stop,
            HookState::Init => &[],
        };
        for program in per_state {
            self.run_one(program, change, &[]).await;
        }
        let priority = change.priority.get().to_string();
        let arguments = [
            change.kind.keyword(),
            change.name.as_str(),
            change.new.keyword(),
            priority.as_str(),
        ];
        for program in &self.notify {
            self.run_one(program, change, &arguments).await;
        }
    }

    async fn run_one(&self, program: &PreparedProgram, change: &StateChange, arguments: &[&str]) {
        let mut command = program.command(arguments.iter().copied());
        command
            .env("HAV_NAME", &change.name)
            .env("HAV_KIND", change.kind.keyword())
            .env("HAV_OLD_STATE", change.old.keyword())
            .env("HAV_NEW_STATE", change.new.keyword())
            .env("HAV_PRIORITY", change.priority.get().to_string())
            .env("HAV_CAUSE", &change.cause);
        let outcome = exec::run(command, self.timeout).await;
        let hook = program.describe();
        if outcome.succeeded() {
            tracing::info!(%hook, name = %change.name, old = %change.old, new = %change.new, %outcome, "notify hook ran");
        } else {
            tracing::warn!(%hook, name = %change.name, old = %change.old, new = %change.new, %outcome, "notify hook failed");
        }
    }
}
