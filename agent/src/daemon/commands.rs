//! The coordinator's commands, carried out by the daemon and acknowledged one by one. Pushed
//! configs take the same transaction as SIGHUP; drains and overrides set runtime priorities.

use std::time::Instant;

use super::{Daemon, fleet};
use crate::control::{Command, CommandError, PendingCommand};

impl Daemon {
    /// Carries out one coordinator command and acknowledges it.
    pub(super) async fn on_command(&mut self, pending: PendingCommand, stopping: bool) {
        let id = pending.id;
        let kind = pending.command.kind();
        if stopping {
            tracing::warn!(
                id,
                "coordinator command refused: {kind}: the agent is stopping"
            );
            pending.ack(Err(CommandError::Stopping));
            return;
        }
        // Exec runs in its own task and acks when the program ends (exec_command.rs).
        if let Command::Exec(exec) = &pending.command {
            let Some(link) = &self.link else {
                pending.ack(Err(CommandError::NoLink));
                return;
            };
            tracing::info!(id, program = %exec.program, "coordinator command started: exec");
            let (exec, events) = (exec.clone(), link.side.events.clone());
            crate::exec_command::spawn(pending, exec, events);
            return;
        }
        let result = self.carry_out(&pending.command).await;
        match &result {
            Ok(()) => tracing::info!(id, "coordinator command done: {kind}"),
            Err(error) => tracing::warn!(id, %error, "coordinator command refused: {kind}"),
        }
        // The snapshot showing the command's effect (a config version, an override) goes out
        // before its ack: the link sends a snapshot published before an ack first, so the
        // coordinator never acts on an acknowledged command with the node's old state.
        self.publish_link();
        pending.ack(result);
    }

    async fn carry_out(&mut self, command: &Command) -> Result<(), CommandError> {
        let now = Instant::now();
        match command {
            Command::ApplyConfig { version, toml } => self.apply_pushed(*version, toml).await,
            Command::EndDrain { instance } => {
                let only = match instance {
                    Some(name) => Some(
                        (self.engine.router_id(name))
                            .ok_or_else(|| CommandError::NoInstance(name.clone()))?,
                    ),
                    None => None,
                };
                self.executor.end_drains(only).await;
                Ok(())
            }
            Command::Drain => {
                self.overrides.drained = true;
                self.apply_overrides(now);
                Ok(())
            }
            Command::Undrain => {
                self.overrides.drained = false;
                self.apply_overrides(now);
                Ok(())
            }
            Command::SetPriorityOverride {
                instance,
                priority,
                ttl,
            } => {
                if self.engine.router_id(instance).is_none() {
                    return Err(CommandError::NoInstance(instance.clone()));
                }
                self.overrides.set(instance, *priority, *ttl, now);
                self.apply_overrides(now);
                Ok(())
            }
            Command::ClearOverride { instance } => {
                self.overrides.clear(instance);
                self.apply_overrides(now);
                Ok(())
            }
            Command::Exec(_) => Err(CommandError::NoLink),
        }
    }

    /// A pushed config may not move an instance onto an interface this node lacks: a local file
    /// runs such an instance in Fault (links come and go), but a push is the fleet's intent,
    /// and a name no node has is a mistake to refuse, not a VIP to leave unserved. Instances
    /// that keep their interface are not held to this (their link may be away for a while).
    fn refuse_new_missing_links(
        &self,
        config: &hav_proto::config::NodeConfig,
    ) -> Result<(), String> {
        let host = super::plan::Host::read().map_err(|error| error.to_string())?;
        let missing: Vec<String> = (config.instances.iter())
            .filter(|instance| host.index_of(&instance.interface).is_none())
            .filter(|instance| {
                self.running
                    .config
                    .instance(&instance.name)
                    .is_none_or(|running| running.interface != instance.interface)
            })
            .map(|instance| {
                format!(
                    "instance {}: interface {} not found on this node",
                    instance.name, instance.interface
                )
            })
            .collect();
        match missing.is_empty() {
            true => Ok(()),
            false => Err(missing.join("; ")),
        }
    }

    /// A config pushed by the coordinator: checked, staged on disk, run through the reload
    /// transaction, then kept as the last good config. On any failure the running config stays.
    async fn apply_pushed(&mut self, version: u64, text: &str) -> Result<(), CommandError> {
        let running = self.running.version;
        let refused = |reason: String| CommandError::ConfigRefused {
            version,
            running,
            reason,
        };
        let config = fleet::parse(text, version, &self.running.config).map_err(refused)?;
        self.refuse_new_missing_links(&config).map_err(refused)?;
        let staged = fleet::Staged::write(&self.running.config.node.state_dir, version, text)
            .map_err(CommandError::Stage)?;
        match self.reconfigure(config).await {
            Ok(()) => {
                staged.commit().map_err(CommandError::Commit)?;
                self.running.version = version;
                tracing::info!(version, "config from the coordinator applied");
                Ok(())
            }
            Err(error) => {
                staged.discard();
                Err(refused(error.to_string()))
            }
        }
    }
}
