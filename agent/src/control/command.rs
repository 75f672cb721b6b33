//! The coordinator's commands as the daemon sees them: parsed once, at the link, from the
//! generated `hav.v1` messages. The daemon never matches on a protocol struct; a command this
//! agent cannot carry out as sent (an unknown kind, a priority out of range) is refused here.

use std::time::Duration;

use hav_proto::v1::command::Action;
use hav_vrrp::Priority;

/// How long an exec'd program may run when the command gives no timeout.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// One thing the coordinator asks of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run this config (node schema, TOML) as version `version`.
    ApplyConfig {
        version: u64,
        toml: String,
    },
    /// Run every instance at the drain priority: any peer wins.
    Drain,
    Undrain,
    /// Run `instance` at `priority` until cleared or `ttl` passes.
    SetPriorityOverride {
        instance: String,
        priority: Priority,
        ttl: Option<Duration>,
    },
    ClearOverride {
        instance: String,
    },
    /// Run a program on this node (a rollout step) and stream its output back.
    Exec(ExecRequest),
    /// Let go now of the VIPs kept for connections after a hand-over (`None`: every instance).
    EndDrain {
        instance: Option<String>,
    },
}

/// A program for [`Command::Exec`]: run directly, no shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub program: String,
    pub args: Vec<String>,
    pub timeout: Duration,
}

/// Why a command was not carried out; its text is what the acknowledgement carries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    #[error("unknown command: this agent is older than the coordinator")]
    Unknown,
    #[error("apply_config without a config")]
    ApplyWithoutConfig,
    #[error("priority {0} is not in 1..=254")]
    PriorityOutOfRange(u32),
    #[error("exec without a program")]
    ExecWithoutProgram,
    #[error("agent busy: command queue full")]
    Busy,
    #[error("the agent is stopping")]
    Stopping,
    #[error("no instance {0:?} on this node")]
    NoInstance(String),
    #[error("exec needs the control link")]
    NoLink,
    #[error("config version {version} refused, version {running} keeps running: {reason}")]
    ConfigRefused {
        version: u64,
        running: u64,
        reason: String,
    },
    #[error("cannot store the config in the state dir: {0}")]
    Stage(#[source] std::io::Error),
    #[error("applied, but not stored: {0}")]
    Commit(#[source] std::io::Error),
}

impl Command {
    /// Parses a command off the wire.
    pub fn from_proto(action: Option<Action>) -> Result<Command, CommandError> {
        Ok(match action.ok_or(CommandError::Unknown)? {
            Action::ApplyConfig(apply) => {
                let doc = apply.config.ok_or(CommandError::ApplyWithoutConfig)?;
                Command::ApplyConfig {
                    version: doc.version,
                    toml: doc.toml,
                }
            }
            Action::Drain(_) => Command::Drain,
            Action::Undrain(_) => Command::Undrain,
            Action::SetPriorityOverride(set) => {
                let priority = u8::try_from(set.priority)
                    .ok()
                    .filter(|p| (1..=254).contains(p))
                    .ok_or(CommandError::PriorityOutOfRange(set.priority))?;
                Command::SetPriorityOverride {
                    instance: set.instance,
                    priority: Priority(priority),
                    ttl: (set.ttl_seconds > 0)
                        .then(|| Duration::from_secs(u64::from(set.ttl_seconds))),
                }
            }
            Action::ClearOverride(clear) => Command::ClearOverride {
                instance: clear.instance,
            },
            Action::Exec(exec) => {
                let mut argv = exec.argv.into_iter();
                let program = argv.next().ok_or(CommandError::ExecWithoutProgram)?;
                Command::Exec(ExecRequest {
                    program,
                    args: argv.collect(),
                    timeout: match exec.timeout_seconds {
                        0 => DEFAULT_EXEC_TIMEOUT,
                        seconds => Duration::from_secs(u64::from(seconds)),
                    },
                })
            }
            Action::EndDrain(end) => Command::EndDrain {
                instance: (!end.instance.is_empty()).then_some(end.instance),
            },
        })
    }

    /// A short name for logs and spans.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::ApplyConfig { .. } => "apply_config",
            Command::Drain => "drain",
            Command::Undrain => "undrain",
            Command::SetPriorityOverride { .. } => "set_priority_override",
            Command::ClearOverride { .. } => "clear_override",
            Command::Exec(_) => "exec",
            Command::EndDrain { .. } => "end_drain",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hav_proto::v1::{NodeConfigDoc, SetPriorityOverride};

    #[test]
    fn a_priority_outside_one_to_254_is_refused_at_the_link() {
        for priority in [0, 255, 1000] {
            let action = Action::SetPriorityOverride(SetPriorityOverride {
                instance: "v".into(),
                priority,
                ttl_seconds: 0,
            });
            assert!(matches!(
                Command::from_proto(Some(action)),
                Err(CommandError::PriorityOutOfRange(p)) if p == priority
            ));
        }
    }

    #[test]
    fn unknown_and_empty_commands_are_refused_with_a_reason() {
        assert!(matches!(
            Command::from_proto(None),
            Err(CommandError::Unknown)
        ));
        let apply = Action::ApplyConfig(hav_proto::v1::ApplyConfig { config: None });
        assert!(matches!(
            Command::from_proto(Some(apply)),
            Err(CommandError::ApplyWithoutConfig)
        ));
        let ok = Action::ApplyConfig(hav_proto::v1::ApplyConfig {
            config: Some(NodeConfigDoc {
                version: 3,
                toml: "x".into(),
            }),
        });
        assert_eq!(
            Command::from_proto(Some(ok)).ok(),
            Some(Command::ApplyConfig {
                version: 3,
                toml: "x".into()
            })
        );
    }
}
