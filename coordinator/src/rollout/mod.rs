//! Maintenance: make-before-break drains and rolling maintenance over the fleet.
//!
//! [`drain::plan_drain`] decides how a node's VIPs move to peers (or refuses, with the reason);
//! [`drain_node`] carries it out: raise each peer's priority for the moved instance (with a TTL)
//! so it preempts and announces itself (GARP/NA) while the node still holds the VIP, wait until
//! every VIP is held by its peer and no longer by the node, then mark the node drained (every
//! instance at the lowest priority, so it takes nothing back). [`undrain_node`] reverses it and
//! the configured priorities restore the balanced layout. [`plan`] decides the waves of a
//! rollout and [`job`] runs, persists, resumes and aborts rollout jobs.
//!
//! Everything here talks to the fleet through [`Fleet`], implemented by the live
//! [`Registry`]; tests use a simulated fleet.

pub mod drain;
pub mod job;
pub mod plan;

use std::time::Duration;

use futures::future::BoxFuture;
use hav_proto::v1::{
    ClearOverride, CommandAck, Drain, EndDrain, FleetEvent, SetPriorityOverride, Undrain,
    VrrpState, command,
};
use tokio::sync::{broadcast, watch};

use crate::error::ControlError;
use crate::registry::Registry;
use drain::{Move, NodeView, Refusal, TAKEOVER_PRIORITY, drained, plan_drain};

/// What the maintenance logic needs from the fleet.
pub trait Fleet: Send + Sync + 'static {
    /// Every node known now.
    fn views(&self) -> Vec<NodeView>;
    /// Sends a command and waits for its ack.
    fn command(
        &self,
        node: &str,
        action: command::Action,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<CommandAck, ControlError>>;
    /// Wakes on every change of the views.
    fn changes(&self) -> watch::Receiver<u64>;
    /// Agent events from now on (for command output).
    fn events(&self) -> broadcast::Receiver<FleetEvent>;
}

impl Fleet for Registry {
    fn views(&self) -> Vec<NodeView> {
        self.connected()
            .into_iter()
            .map(|live| NodeView {
                name: live.name,
                connected: true,
                snapshot: live.snapshot,
            })
            .collect()
    }

    fn command(
        &self,
        node: &str,
        action: command::Action,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<CommandAck, ControlError>> {
        let node = node.to_owned();
        Box::pin(async move { Registry::command(self, &node, action, timeout).await })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.watch_changes()
    }

    fn events(&self) -> broadcast::Receiver<FleetEvent> {
        self.subscribe()
    }
}

/// Timing of drains.
#[derive(Debug, Clone, Copy)]
pub struct DrainSettings {
    /// How long the peers' takeover overrides last if nobody undrains.
    pub ttl: Duration,
    /// How long to wait for the VIPs to move.
    pub wait: Duration,
    /// How long to wait for each command's ack.
    pub command_timeout: Duration,
    /// Once the VIPs moved, how long the node may go on serving its established connections
    /// (instances with `connection_drain`) before they are broken.
    pub connection_deadline: Duration,
}

impl Default for DrainSettings {
    fn default() -> DrainSettings {
        DrainSettings {
            ttl: Duration::from_secs(3600),
            wait: Duration::from_secs(30),
            command_timeout: Duration::from_secs(10),
            connection_deadline: Duration::from_secs(300),
        }
    }
}

/// Why a drain or undrain did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DrainError {
    #[error("drain of {node} refused: {refusal}")]
    Refused { node: String, refusal: Refusal },
    #[error("{node} refused the {what} command: {error}")]
    Command {
        node: String,
        what: &'static str,
        error: String,
    },
    #[error("{what} of {node} did not complete within {waited:?}")]
    Timeout {
        node: String,
        what: &'static str,
        waited: Duration,
    },
}

/// Drains `node` make-before-break; returns the moves made (needed to undrain).
pub async fn drain_node(
    fleet: &dyn Fleet,
    node: &str,
    settings: DrainSettings,
) -> Result<Vec<Move>, DrainError> {
    let moves = plan_drain(node, &fleet.views()).map_err(|refusal| DrainError::Refused {
        node: node.to_owned(),
        refusal,
    })?;
    let ttl_seconds = u32::try_from(settings.ttl.as_secs()).unwrap_or(u32::MAX);
    for m in &moves {
        let action = command::Action::SetPriorityOverride(SetPriorityOverride {
            instance: m.peer_instance.clone(),
            priority: TAKEOVER_PRIORITY,
            ttl_seconds,
        });
        send(fleet, &m.peer, "priority override", action, settings).await?;
    }
    let moved = wait_until(fleet, settings.wait, |views| drained(node, &moves, views)).await;
    if !moved {
        return Err(DrainError::Timeout {
            node: node.to_owned(),
            what: "moving the VIPs",
            waited: settings.wait,
        });
    }
    send(
        fleet,
        node,
        "drain",
        command::Action::Drain(Drain {}),
        settings,
    )
    .await?;
    Ok(moves)
}

/// What became of the connections a drained node still served after its VIPs moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Connections {
    /// Served when the VIPs had moved.
    pub at_move: u32,
    /// Broken at the deadline (or at once, forced); the others ended on their own.
    pub broken: u32,
}

/// The connections `node` still serves on VIPs it handed over, as it last reported.
pub fn draining_connections(node: &str, views: &[NodeView]) -> u32 {
    (views.iter())
        .filter(|v| v.name == node && v.connected)
        .filter_map(|v| v.snapshot.as_ref())
        .flat_map(|s| s.instances.iter())
        .filter_map(|i| i.draining_connections)
        .sum()
}

/// After a drain moved `node`'s VIPs: waits for the connections it still serves to end, at most
/// `settings.connection_deadline` (not at all when `force`), then tells it to let go of the rest.
pub async fn settle_connections(
    fleet: &dyn Fleet,
    node: &str,
    force: bool,
    settings: DrainSettings,
) -> Result<Connections, DrainError> {
    let at_move = draining_connections(node, &fleet.views());
    if at_move == 0 {
        return Ok(Connections::default());
    }
    let ended = !force
        && wait_until(fleet, settings.connection_deadline, |views| {
            draining_connections(node, views) == 0
        })
        .await;
    if ended {
        return Ok(Connections { at_move, broken: 0 });
    }
    let broken = draining_connections(node, &fleet.views());
    let action = command::Action::EndDrain(EndDrain {
        instance: String::new(),
    });
    send(fleet, node, "end drain", action, settings).await?;
    Ok(Connections { at_move, broken })
}

/// Undrains `node` and clears the peers' takeover overrides of `moves`.
pub async fn undrain_node(
    fleet: &dyn Fleet,
    node: &str,
    moves: &[Move],
    settings: DrainSettings,
) -> Result<(), DrainError> {
    send(
        fleet,
        node,
        "undrain",
        command::Action::Undrain(Undrain {}),
        settings,
    )
    .await?;
    for m in moves {
        let action = command::Action::ClearOverride(ClearOverride {
            instance: m.peer_instance.clone(),
        });
        send(fleet, &m.peer, "clear override", action, settings).await?;
    }
    Ok(())
}

/// Whether `node` is connected and every instance is Backup or Master (no Fault, not starting).
pub fn healthy(node: &str, views: &[NodeView]) -> bool {
    views.iter().any(|v| {
        v.name == node
            && v.connected
            && v.snapshot.as_ref().is_some_and(|s| {
                s.instances.iter().all(|i| {
                    i.state == VrrpState::Backup as i32 || i.state == VrrpState::Master as i32
                })
            })
    })
}

/// Waits (on fleet changes, not on a timer) until `done` holds or `limit` passes.
pub async fn wait_until(
    fleet: &dyn Fleet,
    limit: Duration,
    done: impl Fn(&[NodeView]) -> bool,
) -> bool {
    let mut changes = fleet.changes();
    let wait = async {
        loop {
            changes.borrow_and_update();
            if done(&fleet.views()) {
                return true;
            }
            if changes.changed().await.is_err() {
                return done(&fleet.views());
            }
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(false)
}

async fn send(
    fleet: &dyn Fleet,
    node: &str,
    what: &'static str,
    action: command::Action,
    settings: DrainSettings,
) -> Result<(), DrainError> {
    let error = |error: String| DrainError::Command {
        node: node.to_owned(),
        what,
        error,
    };
    match fleet.command(node, action, settings.command_timeout).await {
        Ok(ack) if ack.ok => Ok(()),
        Ok(ack) => Err(error(ack.error)),
        Err(e) => Err(error(e.to_string())),
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
