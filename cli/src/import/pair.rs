//! The nodes of a pair taken together: instances matched by VRID and family across the files
//! given, unicast peers' priorities filled in from the peer's file, differences that break a
//! pair noted.

use std::collections::HashMap;
use std::net::IpAddr;

use super::Finding;
use super::draft::{Draft, InstanceDraft};

/// Matches instances across the drafts of several nodes by VRID and family: fills unicast
/// peers' priorities from the peer node and returns remarks on the pair.
pub(crate) fn pair(drafts: &mut [Draft]) -> Vec<String> {
    let mut notes = Vec::new();
    if drafts.len() < 2 {
        return notes;
    }
    // (node index, instance index) of every instance, keyed by (vrid, family).
    let mut by_router: HashMap<(i64, bool), Vec<(usize, usize)>> = HashMap::new();
    for (node, draft) in drafts.iter().enumerate() {
        for (index, instance) in draft.instances.iter().enumerate() {
            if let Some(vrid) = instance.vrid {
                by_router
                    .entry((vrid, instance.is_v6()))
                    .or_default()
                    .push((node, index));
            }
        }
    }
    let mut routers: Vec<_> = by_router.into_iter().collect();
    routers.sort_by_key(|((vrid, v6), _)| (*vrid, *v6));
    for ((vrid, v6), members) in routers {
        let family = if v6 { "IPv6" } else { "IPv4" };
        if members.len() < 2 {
            continue;
        }
        let mut ranking: Vec<(i64, String)> = members
            .iter()
            .map(|&(node, index)| {
                (
                    drafts[node].instances[index].priority,
                    drafts[node].node_name.clone(),
                )
            })
            .collect();
        ranking.sort_by(|a, b| b.cmp(a));
        let listed: Vec<String> = ranking
            .iter()
            .map(|(priority, node)| format!("{node} ({priority})"))
            .collect();
        notes.push(format!(
            "VRID {vrid} {family}: {} ; highest priority is master{}",
            listed.join(", "),
            if ranking.len() > 1 && ranking[0].0 == ranking[1].0 {
                " (equal priorities: the higher primary address wins)"
            } else {
                ""
            }
        ));
        let (first_node, first_index) = members[0];
        let reference = drafts[first_node].instances[first_index].clone();
        for &(node, index) in &members[1..] {
            let other = &drafts[node].instances[index];
            let mut differences = Vec::new();
            if other.advert_interval_ms != reference.advert_interval_ms {
                differences.push("advert_interval");
            }
            if other.version != reference.version {
                differences.push("version");
            }
            if other.auth_pass != reference.auth_pass {
                differences.push("auth_pass");
            }
            let addresses = |instance: &InstanceDraft| {
                let mut list: Vec<IpAddr> = instance.vips.iter().map(|vip| vip.address).collect();
                list.sort();
                list
            };
            if addresses(other) != addresses(&reference) {
                differences.push("vips");
            }
            if !differences.is_empty() {
                notes.push(format!(
                    "VRID {vrid} {family}: {} and {} differ in {}: peers must agree",
                    drafts[first_node].node_name,
                    drafts[node].node_name,
                    differences.join(", ")
                ));
            }
        }
        // Each member's unicast peers get the priority of the member they address.
        for &(node, index) in &members {
            let others: Vec<(Option<String>, i64)> = members
                .iter()
                .filter(|(other_node, _)| *other_node != node)
                .map(|&(other_node, other_index)| {
                    let other = &drafts[other_node].instances[other_index];
                    (other.source_address.clone(), other.priority)
                })
                .collect();
            let instance = &mut drafts[node].instances[index];
            let single_peer = instance.peers.len() == 1 && others.len() == 1;
            let location = instance.location.clone();
            let name = instance.name.clone();
            let mut assumed = None;
            for peer in &mut instance.peers {
                let by_address = others
                    .iter()
                    .find(|(source, _)| source.as_deref() == Some(peer.address.as_str()));
                match by_address {
                    Some((_, priority)) => peer.priority = Some(*priority),
                    None if single_peer => {
                        peer.priority = Some(others[0].1);
                        assumed = Some(peer.address.clone());
                    }
                    None => {}
                }
            }
            if let Some(address) = assumed {
                drafts[node].findings.push(Finding::note(
                    location,
                    format!("vrrp_instance {name} unicast_peer {address}"),
                    "the peer sets no unicast_src_ip: taken to be the other file's node for its \
                     priority",
                ));
            }
        }
    }
    notes
}
