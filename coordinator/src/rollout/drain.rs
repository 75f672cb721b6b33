//! Make-before-break drains, as pure decisions over what the agents report.
//!
//! [`plan_drain`] decides, from the latest snapshots, how to move every VIP a node masters to a
//! peer before the node lets go: for each such instance, the peer that will take it (the
//! highest-priority healthy peer of the same VRID) and the override that makes it preempt. It
//! refuses, naming the VIP and the reason, when a VIP would be left without a healthy holder:
//! the node or a peer is not connected, no peer backs the VRID, or every peer is in Fault or
//! runs another config version. [`drained`] tells when the move is complete: every VIP the node
//! held is held by a peer and no longer by the node.

use std::collections::BTreeMap;

use hav_proto::v1::{InstanceState, StateSnapshot, VrrpState};

/// The priority a peer is raised to so that it preempts the draining node (below 255, which
/// RFC 5798 reserves for the address owner).
pub const TAKEOVER_PRIORITY: u32 = 254;

/// A node as the drain logic sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub connected: bool,
    pub snapshot: Option<StateSnapshot>,
}

/// One VIP-carrying instance moving from the draining node to a peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Move {
    pub vrid: u32,
    /// The draining node's instance.
    pub instance: String,
    pub vips: Vec<String>,
    pub peer: String,
    /// The peer's instance of the same VRID (raised to [`TAKEOVER_PRIORITY`]).
    pub peer_instance: String,
}

/// Why a drain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    #[error("node `{0}` is not connected")]
    NotConnected(String),
    #[error("node `{0}` has not reported its state yet")]
    NoSnapshot(String),
    #[error("VIP {vips} (VRID {vrid}) would have no healthy holder: {why}")]
    NoHealthyPeer {
        vrid: u32,
        vips: String,
        why: String,
    },
}

/// The moves that drain `node`, or why it cannot be drained safely.
pub fn plan_drain(node: &str, fleet: &[NodeView]) -> Result<Vec<Move>, Refusal> {
    let me = fleet
        .iter()
        .find(|n| n.name == node)
        .ok_or_else(|| Refusal::NotConnected(node.to_owned()))?;
    if !me.connected {
        return Err(Refusal::NotConnected(node.to_owned()));
    }
    let snapshot = me
        .snapshot
        .as_ref()
        .ok_or_else(|| Refusal::NoSnapshot(node.to_owned()))?;
    let mut moves = Vec::new();
    for instance in &snapshot.instances {
        if instance.state != VrrpState::Master as i32 || instance.vips_held.is_empty() {
            continue;
        }
        let refuse = |why: String| Refusal::NoHealthyPeer {
            vrid: instance.vrid,
            vips: instance.vips_held.join(", "),
            why,
        };
        let mut reasons = Vec::new();
        let mut best: Option<(&NodeView, &InstanceState)> = None;
        for peer in fleet.iter().filter(|n| n.name != node) {
            let Some(peer_instance) = peer_instance(peer, instance) else {
                continue;
            };
            if !peer.connected {
                reasons.push(format!("peer {} is not connected", peer.name));
                continue;
            }
            let peer_version = peer.snapshot.as_ref().map(|s| s.config_version);
            if peer_version != Some(snapshot.config_version) {
                reasons.push(format!(
                    "peer {} runs config version {}, {node} runs {}",
                    peer.name,
                    peer_version.unwrap_or(0),
                    snapshot.config_version
                ));
                continue;
            }
            if peer_instance.state != VrrpState::Backup as i32 {
                let state = VrrpState::try_from(peer_instance.state)
                    .map(|s| s.as_str_name().trim_start_matches("VRRP_STATE_").to_owned())
                    .unwrap_or_else(|_| "UNKNOWN".into());
                reasons.push(format!("peer {} is {state}", peer.name));
                continue;
            }
            let better =
                best.is_none_or(|(_, b)| peer_instance.effective_priority > b.effective_priority);
            if better {
                best = Some((peer, peer_instance));
            }
        }
        let Some((peer, peer_instance)) = best else {
            let why = if reasons.is_empty() {
                "no other node backs this VRID".to_owned()
            } else {
                reasons.join("; ")
            };
            return Err(refuse(why));
        };
        moves.push(Move {
            vrid: instance.vrid,
            instance: instance.name.clone(),
            vips: instance.vips_held.clone(),
            peer: peer.name.clone(),
            peer_instance: peer_instance.name.clone(),
        });
    }
    Ok(moves)
}

/// Whether every move is complete: each VIP held by its peer and no longer by the drained node.
pub fn drained(node: &str, moves: &[Move], fleet: &[NodeView]) -> bool {
    let held: BTreeMap<&str, Vec<&String>> = fleet
        .iter()
        .filter_map(|n| n.snapshot.as_ref().map(|s| (n.name.as_str(), s)))
        .map(|(name, s)| {
            let vips = s.instances.iter().flat_map(|i| &i.vips_held).collect();
            (name, vips)
        })
        .collect();
    let holds = |who: &str, vip: &String| held.get(who).is_some_and(|v| v.contains(&vip));
    moves.iter().all(|m| {
        m.vips
            .iter()
            .all(|vip| holds(&m.peer, vip) && !holds(node, vip))
    })
}

/// Whether an undrain is complete: the node holds each moved VIP again and its peer no longer
/// does (with preemption, the layout's master takes its VIPs back).
pub fn restored(node: &str, moves: &[Move], fleet: &[NodeView]) -> bool {
    moves.iter().all(|m| {
        let back = Move {
            peer: node.to_owned(),
            ..m.clone()
        };
        drained(&m.peer, std::slice::from_ref(&back), fleet)
    })
}

/// The instance of `peer` with the same VRID as `instance` and sharing a VIP with it (or any
/// same-VRID instance when the peer holds none, as a backup does not).
fn peer_instance<'a>(peer: &'a NodeView, instance: &InstanceState) -> Option<&'a InstanceState> {
    let instances = &peer.snapshot.as_ref()?.instances;
    instances
        .iter()
        .filter(|i| i.vrid == instance.vrid)
        .find(|i| i.interface == instance.interface || i.name == instance.name)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn instance(
        name: &str,
        vrid: u32,
        state: VrrpState,
        vips: &[&str],
    ) -> InstanceState {
        InstanceState {
            name: name.into(),
            vrid,
            state: state as i32,
            effective_priority: if state == VrrpState::Master { 150 } else { 140 },
            configured_priority: 150,
            vips_held: vips.iter().map(|s| s.to_string()).collect(),
            interface: "eth0".into(),
            priority_override: None,
            advert_interval_ms: 0,
            draining_connections: None,
        }
    }

    pub(crate) fn node(name: &str, version: u64, instances: Vec<InstanceState>) -> NodeView {
        NodeView {
            name: name.into(),
            connected: true,
            snapshot: Some(StateSnapshot {
                config_version: version,
                instances,
                drained: false,
                unix_ms: 1,
            }),
        }
    }

    /// lb-1 masters VIP .10 (VRID 10), lb-2 masters .11 (VRID 11): the classic pair.
    pub(crate) fn pair() -> Vec<NodeView> {
        vec![
            node(
                "lb-1",
                3,
                vec![
                    instance("vip-10", 10, VrrpState::Master, &["198.51.100.10/24"]),
                    instance("vip-11", 11, VrrpState::Backup, &[]),
                ],
            ),
            node(
                "lb-2",
                3,
                vec![
                    instance("vip-10", 10, VrrpState::Backup, &[]),
                    instance("vip-11", 11, VrrpState::Master, &["198.51.100.11/24"]),
                ],
            ),
        ]
    }

    #[test]
    fn moves_each_mastered_vip_to_the_peer() {
        let moves = plan_drain("lb-1", &pair()).expect("drainable");
        assert_eq!(
            moves,
            vec![Move {
                vrid: 10,
                instance: "vip-10".into(),
                vips: vec!["198.51.100.10/24".into()],
                peer: "lb-2".into(),
                peer_instance: "vip-10".into(),
            }]
        );
        assert!(!drained("lb-1", &moves, &pair()));
        // The peer took .10 (both hold it for a moment: make-before-break) ...
        let mut fleet = pair();
        fleet[1].snapshot.as_mut().expect("snapshot").instances[0] =
            instance("vip-10", 10, VrrpState::Master, &["198.51.100.10/24"]);
        assert!(!drained("lb-1", &moves, &fleet));
        // ... and the node let go.
        fleet[0].snapshot.as_mut().expect("snapshot").instances[0] =
            instance("vip-10", 10, VrrpState::Backup, &[]);
        assert!(drained("lb-1", &moves, &fleet));
    }

    #[test]
    fn refuses_when_a_vip_would_have_no_healthy_holder() {
        let mut fault = pair();
        fault[1].snapshot.as_mut().expect("snapshot").instances[0] =
            instance("vip-10", 10, VrrpState::Fault, &[]);
        let refusal = plan_drain("lb-1", &fault).expect_err("peer in fault");
        assert_eq!(
            refusal.to_string(),
            "VIP 198.51.100.10/24 (VRID 10) would have no healthy holder: peer lb-2 is FAULT"
        );

        let mut other_version = pair();
        other_version[1]
            .snapshot
            .as_mut()
            .expect("snapshot")
            .config_version = 4;
        let refusal = plan_drain("lb-1", &other_version).expect_err("version skew");
        assert!(
            refusal.to_string().contains("runs config version 4"),
            "{refusal}"
        );

        let mut gone = pair();
        gone[1].connected = false;
        assert!(plan_drain("lb-1", &gone).is_err());

        let alone = vec![pair().remove(0)];
        let refusal = plan_drain("lb-1", &alone).expect_err("no peer");
        assert!(
            refusal.to_string().contains("no other node backs"),
            "{refusal}"
        );

        assert_eq!(
            plan_drain("lb-9", &pair()),
            Err(Refusal::NotConnected("lb-9".into()))
        );
    }
}
