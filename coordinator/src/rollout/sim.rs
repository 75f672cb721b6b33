//! A simulated fleet for the maintenance logic: each VRID's master is the up node with the
//! highest effective priority (override, else 1 when drained, else configured), recomputed
//! after every command, as VRRP with preemption converges. It records every state it passes
//! through so tests can check invariants over the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use hav_proto::v1::{
    CommandAck, Event, ExecOutput, FleetEvent, InstanceState, StateSnapshot, VrrpState, command,
    event, fleet_event,
};
use tokio::sync::{broadcast, watch};

use super::Fleet;
use super::drain::NodeView;
use crate::error::ControlError;

#[derive(Debug, Clone)]
pub struct SimNode {
    pub configured: BTreeMap<u32, u32>,
    pub overrides: BTreeMap<u32, u32>,
    pub drained: bool,
    pub exec_fails: bool,
    pub fault: bool,
    /// Connections it serves; once it masters nothing, reported as draining (on its first
    /// instance) until they end or an `EndDrain` breaks them.
    pub connections: u32,
}

#[derive(Debug)]
pub struct State {
    pub nodes: BTreeMap<String, SimNode>,
    /// VRID → VIP.
    pub vips: BTreeMap<u32, String>,
    /// Every (node set drained at once) seen.
    pub drained_sets: Vec<BTreeSet<String>>,
    /// Commands in order: (node, description).
    pub log: Vec<(String, String)>,
}

pub struct SimFleet {
    pub state: Mutex<State>,
    changes: watch::Sender<u64>,
    events: broadcast::Sender<FleetEvent>,
}

impl SimFleet {
    /// Pairs `(a, b)` sharing two VRIDs: a masters the first, b the second.
    pub fn pairs(n: usize) -> SimFleet {
        let mut nodes = BTreeMap::new();
        let mut vips = BTreeMap::new();
        for p in 0..n {
            let (v1, v2) = (10 + 2 * p as u32, 11 + 2 * p as u32);
            vips.insert(v1, format!("198.51.100.{v1}/24"));
            vips.insert(v2, format!("198.51.100.{v2}/24"));
            for (name, (p1, p2)) in [
                (format!("lb-{p}a"), (150, 140)),
                (format!("lb-{p}b"), (140, 150)),
            ] {
                nodes.insert(
                    name,
                    SimNode {
                        configured: BTreeMap::from([(v1, p1), (v2, p2)]),
                        overrides: BTreeMap::new(),
                        drained: false,
                        exec_fails: false,
                        connections: 0,
                        fault: false,
                    },
                );
            }
        }
        SimFleet {
            state: Mutex::new(State {
                nodes,
                vips,
                drained_sets: Vec::new(),
                log: Vec::new(),
            }),
            changes: watch::Sender::new(0),
            events: broadcast::channel(16).0,
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changes.send_modify(|n| *n += 1);
        out
    }

    fn effective(node: &SimNode, vrid: u32) -> u32 {
        if let Some(p) = node.overrides.get(&vrid) {
            *p
        } else if node.drained {
            1
        } else {
            node.configured.get(&vrid).copied().unwrap_or(0)
        }
    }

    fn master(state: &State, vrid: u32) -> Option<String> {
        state
            .nodes
            .iter()
            .filter(|(_, n)| !n.fault && n.configured.contains_key(&vrid))
            .max_by_key(|(name, n)| (Self::effective(n, vrid), (*name).clone()))
            .map(|(name, _)| name.clone())
    }
}

impl Fleet for SimFleet {
    fn views(&self) -> Vec<NodeView> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .nodes
            .iter()
            .map(|(name, node)| {
                let masters_any = (node.configured.keys())
                    .any(|&vrid| Self::master(&state, vrid).as_deref() == Some(name));
                let first_vrid = node.configured.keys().next().copied();
                let instances = node
                    .configured
                    .keys()
                    .map(|&vrid| {
                        let master = Self::master(&state, vrid).as_deref() == Some(name);
                        let st = if node.fault {
                            VrrpState::Fault
                        } else if master {
                            VrrpState::Master
                        } else {
                            VrrpState::Backup
                        };
                        InstanceState {
                            name: format!("vip-{vrid}"),
                            vrid,
                            state: st as i32,
                            effective_priority: Self::effective(node, vrid),
                            configured_priority: node.configured[&vrid],
                            vips_held: if master {
                                vec![state.vips[&vrid].clone()]
                            } else {
                                vec![]
                            },
                            interface: "eth0".into(),
                            priority_override: node.overrides.get(&vrid).copied(),
                            advert_interval_ms: 0,
                            draining_connections: (!masters_any
                                && node.connections > 0
                                && Some(vrid) == first_vrid)
                                .then_some(node.connections),
                        }
                    })
                    .collect();
                NodeView {
                    name: name.clone(),
                    connected: true,
                    snapshot: Some(StateSnapshot {
                        config_version: 1,
                        instances,
                        drained: node.drained,
                        unix_ms: 1,
                    }),
                }
            })
            .collect()
    }

    fn command(
        &self,
        node: &str,
        action: command::Action,
        _timeout: Duration,
    ) -> BoxFuture<'_, Result<CommandAck, ControlError>> {
        let node = node.to_owned();
        Box::pin(async move {
            let vrid_of = |instance: &str| instance.trim_start_matches("vip-").parse::<u32>().ok();
            let result = self.with(|state| {
                let Some(sim) = state.nodes.get_mut(&node) else {
                    return Err(ControlError::NotConnected(node.clone()));
                };
                let (what, ok) = match &action {
                    command::Action::SetPriorityOverride(s) => {
                        if let Some(vrid) = vrid_of(&s.instance) {
                            sim.overrides.insert(vrid, s.priority);
                        }
                        (format!("override {} {}", s.instance, s.priority), true)
                    }
                    command::Action::ClearOverride(c) => {
                        if let Some(vrid) = vrid_of(&c.instance) {
                            sim.overrides.remove(&vrid);
                        }
                        (format!("clear {}", c.instance), true)
                    }
                    command::Action::Drain(_) => {
                        sim.drained = true;
                        ("drain".into(), true)
                    }
                    command::Action::Undrain(_) => {
                        sim.drained = false;
                        ("undrain".into(), true)
                    }
                    command::Action::Exec(e) => {
                        (format!("exec {}", e.argv.join(" ")), !sim.exec_fails)
                    }
                    command::Action::ApplyConfig(_) => ("apply".into(), true),
                    command::Action::EndDrain(_) => {
                        sim.connections = 0;
                        ("end drain".into(), true)
                    }
                };
                if let command::Action::Exec(_) = &action {
                    // As an agent does: the program's output is sent before the ack.
                    let _ = self
                        .events
                        .send(exec_output(&node, &format!("ran on {node}")));
                }
                state.log.push((node.clone(), what));
                let drained: BTreeSet<String> = state
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.drained)
                    .map(|(name, _)| name.clone())
                    .collect();
                state.drained_sets.push(drained);
                Ok(ok)
            })?;
            Ok(CommandAck {
                id: 0,
                ok: result,
                error: if result {
                    String::new()
                } else {
                    "exit status 1".into()
                },
            })
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn events(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }
}

fn exec_output(node: &str, line: &str) -> FleetEvent {
    FleetEvent {
        node: node.to_owned(),
        unix_ms: 0,
        kind: Some(fleet_event::Kind::Agent(Event {
            unix_ms: 0,
            kind: Some(event::Kind::ExecOutput(ExecOutput {
                command_id: 0,
                line: line.to_owned(),
                stderr: false,
            })),
        })),
    }
}
