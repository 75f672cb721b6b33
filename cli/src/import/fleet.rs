//! The nodes of a pair as one fleet file (`deploy/fleet/fleet.toml`'s schema): one group per
//! VRRP router the nodes share, with the VIPs, protocol settings, tracking and node addresses of
//! the converted node configs.
//!
//! The fleet file is returned only when `hav_proto::fleet::expand` accepts it, so it is one
//! `havctl push-config --fleet` takes. What the fleet schema decides itself (priorities, instance
//! names, one instance per VIP) or does not hold (virtual servers, sync groups, notify programs,
//! addresses' devices and labels) is listed in the notes, and nothing is written when a group
//! cannot be described (a node without its address on the segment, a name the fleet refuses).

use std::collections::BTreeSet;

use hav_proto::identity::valid_name;
use toml::{Table, Value};

use super::ImportedNode;

/// The fleet file for `nodes`, when one can be written, and remarks on it.
pub(crate) fn fleet(nodes: &[ImportedNode]) -> (Option<String>, Vec<String>) {
    let mut notes = Vec::new();
    let documents: Vec<Table> = (nodes.iter())
        .filter_map(|node| node.config.to_toml().parse::<Table>().ok())
        .collect();
    if documents.len() != nodes.len() || nodes.len() < 2 {
        return (None, notes);
    }
    let names: Vec<&str> = (nodes.iter())
        .map(|node| node.config.node.name.as_str())
        .collect();
    if let Some(name) = names.iter().find(|name| !valid_name(name)) {
        notes.push(format!(
            "no fleet file: node name {name:?} is not a fleet node name (1-63 of a-z 0-9 - _ .); \
             rename the node (router_id) and import again"
        ));
        return (None, notes);
    }
    let mut groups = Vec::new();
    let mut seen = BTreeSet::new();
    let mut incomplete = false;
    for (first, document) in documents.iter().enumerate() {
        for instance in tables(document, "instance") {
            let Some(key) = router_key(instance) else {
                continue;
            };
            if !seen.insert(key) {
                continue;
            }
            // The instance of this router on every node that runs it, in file order.
            let members: Vec<(usize, &Table)> = (documents.iter().enumerate().skip(first))
                .filter_map(|(index, document)| {
                    tables(document, "instance")
                        .find(|other| router_key(other).as_ref() == Some(&key))
                        .map(|other| (index, other))
                })
                .collect();
            let label = format!("VRID {} ({})", key.0, if key.1 { "IPv6" } else { "IPv4" });
            if members.len() < 2 {
                notes.push(format!(
                    "fleet: {label} runs on one node only; no group (a group needs two nodes)"
                ));
                continue;
            }
            match group(&label, &members, &documents, &names, &mut notes) {
                Some(group) => groups.push(Value::Table(group)),
                None => incomplete = true,
            }
        }
    }
    if incomplete || groups.is_empty() {
        notes.push("no fleet file written: see the fleet remarks above".to_owned());
        return (None, notes);
    }
    let mut root = Table::new();
    root.insert("group".into(), Value::Array(groups));
    let text = match toml::to_string(&root) {
        Ok(body) => format!("{FLEET_HEADER}\n{body}"),
        Err(error) => {
            notes.push(format!("no fleet file written: {error}"));
            return (None, notes);
        }
    };
    match hav_proto::fleet::expand("fleet.toml", &text) {
        Ok(_) => (Some(text), notes),
        Err(errors) => {
            notes.push(format!(
                "no fleet file written: the fleet schema refuses it:\n{errors}"
            ));
            (None, notes)
        }
    }
}

const FLEET_HEADER: &str = "\
# hav fleet file written by havctl import-keepalived from the node configs beside it.
# `havctl push-config --fleet fleet.toml --dry-run` shows what the coordinator would send.
# The expansion decides instance names (<group>-vip<i>), one instance per VIP and priorities
# (VIP i is mastered by node i mod N at 150, the others 10 less each); virtual servers, sync groups,
# notify programs, smtp_alert and GARP settings are not in the fleet schema, so a push replaces the node
# configs' own: keep running the node configs while the pair needs them.";

/// `(vrid, is IPv6)` of a canonical `[[instance]]`.
fn router_key(instance: &Table) -> Option<(i64, bool)> {
    let vrid = instance.get("vrid")?.as_integer()?;
    let first = instance.get("vips")?.as_array()?.first()?;
    let address = match first {
        Value::String(text) => text.clone(),
        Value::Table(table) => table.get("address")?.as_str()?.to_owned(),
        _ => return None,
    };
    Some((vrid, address.contains(':')))
}

fn tables<'a>(document: &'a Table, key: &str) -> impl Iterator<Item = &'a Table> {
    (document.get(key).and_then(Value::as_array).into_iter())
        .flatten()
        .filter_map(Value::as_table)
}

/// One `[[group]]` for the members of one router (node index, its instance), the node of
/// highest priority first so that it stays the master of the first VIP.
fn group(
    label: &str,
    members: &[(usize, &Table)],
    documents: &[Table],
    names: &[&str],
    notes: &mut Vec<String>,
) -> Option<Table> {
    let mut members = members.to_vec();
    members.sort_by_key(|(_, instance)| {
        std::cmp::Reverse(instance.get("priority").and_then(Value::as_integer))
    });
    let (lead, instance) = members[0];
    let instance_name = instance.get("name").and_then(Value::as_str).unwrap_or("");
    let name = instance_name.to_ascii_lowercase();
    if !valid_name(&name) {
        notes.push(format!(
            "fleet: {label}: instance name {instance_name:?} is not a fleet group name"
        ));
        return None;
    }
    let mut group = Table::new();
    group.insert("name".into(), name.clone().into());
    let interface = instance.get("interface").cloned();
    if let Some(interface) = &interface {
        group.insert("interface".into(), interface.clone());
    }
    let mut vips = Vec::new();
    let mut dropped_details = false;
    for vip in (instance.get("vips").and_then(Value::as_array).into_iter()).flatten() {
        match vip {
            Value::String(text) => vips.push(Value::String(text.clone())),
            Value::Table(table) => {
                let address = table.get("address").and_then(Value::as_str).unwrap_or("");
                let text = match table.get("prefix").and_then(Value::as_integer) {
                    Some(prefix) => format!("{address}/{prefix}"),
                    None => address.to_owned(),
                };
                dropped_details |= table.len() > 2 || table.get("prefix").is_none();
                vips.push(Value::String(text));
            }
            _ => {}
        }
    }
    if dropped_details {
        notes.push(format!(
            "fleet: group {name} ({label}): the VIPs' dev and label are not in the fleet schema"
        ));
    }
    let extras: Vec<&str> = ["vmac", "route", "rule", "strict"]
        .into_iter()
        .filter(|key| instance.contains_key(*key))
        .collect();
    if !extras.is_empty() {
        notes.push(format!(
            "fleet: group {name} ({label}): {} not in the fleet schema; the node configs hold              them",
            extras.join(", ")
        ));
    }
    let vip_count = i64::try_from(vips.len()).unwrap_or(i64::MAX);
    group.insert("vips".into(), Value::Array(vips));
    if let Some(vrid) = instance.get("vrid").and_then(Value::as_integer) {
        group.insert("first_vrid".into(), vrid.into());
        if vip_count > 1 {
            notes.push(format!(
                "fleet: group {name}: the fleet runs one instance per VIP, so its {vip_count} \
                 VIPs get VRIDs {vrid} to {}, and spreads mastership over the nodes (VIP i on \
                 node i mod N) where keepalived has one master for all of them",
                vrid + vip_count - 1
            ));
        }
    }
    for key in [
        "advert_interval",
        "version",
        "checksum",
        "auth_pass",
        "preempt",
        "preempt_delay",
    ] {
        if let Some(value) = instance.get(key) {
            group.insert(key.into(), value.clone());
        }
    }
    let unicast = instance.get("unicast_peers").is_some();
    group.insert(
        "transport".into(),
        if unicast { "unicast" } else { "multicast" }.into(),
    );
    // Tracking, with the definitions it names, when every node tracks alike.
    let mut track = Table::new();
    let mut definitions: Vec<(&str, Vec<Value>)> = Vec::new();
    for (key, short, section) in [
        ("track_interface", "interface", None),
        ("track_script", "script", Some("script")),
        ("track_process", "process", Some("process")),
        ("track_file", "file", Some("track_file")),
        ("track_probe", "probe", Some("probe")),
    ] {
        let Some(references) = instance.get(key) else {
            continue;
        };
        let alike = (members.iter()).all(|(_, other)| other.get(key) == Some(references));
        if !alike {
            notes.push(format!(
                "fleet: group {name}: the nodes differ in {key}; left out of the group (every \
                 node of a fleet group tracks alike)"
            ));
            continue;
        }
        track.insert(short.into(), references.clone());
        let Some(section) = section else { continue };
        let wanted: BTreeSet<&str> = (references.as_array().into_iter().flatten())
            .filter_map(|reference| match reference {
                Value::String(name) => Some(name.as_str()),
                Value::Table(table) => table.get("name").and_then(Value::as_str),
                _ => None,
            })
            .collect();
        let defined: Vec<Value> = tables(&documents[lead], section)
            .filter(|definition| {
                (definition.get("name").and_then(Value::as_str)).is_some_and(|n| wanted.contains(n))
            })
            .map(|definition| Value::Table(definition.clone()))
            .collect();
        definitions.push((section, defined));
    }
    if !track.is_empty() {
        group.insert("track".into(), Value::Table(track));
    }
    for (section, defined) in definitions {
        group.insert(section.into(), Value::Array(defined));
    }
    let mut nodes = Vec::new();
    for (index, member) in &members {
        let Some(address) = member.get("source_address").and_then(Value::as_str) else {
            notes.push(format!(
                "fleet: group {name}: node {} sets no source address (unicast_src_ip or \
                 mcast_src_ip), which the fleet needs as the node's address on the segment; \
                 set it in keepalived.conf or write the fleet file by hand",
                names[*index]
            ));
            return None;
        };
        let mut node = Table::new();
        node.insert("name".into(), names[*index].into());
        node.insert("address".into(), address.into());
        if member.get("interface") != interface.as_ref()
            && let Some(own) = member.get("interface")
        {
            node.insert("interface".into(), own.clone());
        }
        nodes.push(Value::Table(node));
    }
    group.insert("node".into(), Value::Array(nodes));
    Some(group)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::fleet;
    use crate::import::{ImportedNode, import_keepalived_text};

    fn node(name: &str, priority: u8, source: Option<&str>) -> ImportedNode {
        let source = source.map_or(String::new(), |s| format!(" unicast_src_ip {s}\n"));
        let text = format!(
            "global_defs {{ router_id {name} }}\nvrrp_instance VI_1 {{\n interface eth0\n \
             virtual_router_id 51\n priority {priority}\n{source} virtual_ipaddress {{\n \
             192.0.2.100/24\n 192.0.2.101/24\n }}\n}}\n"
        );
        import_keepalived_text(&text, Path::new(&format!("{name}.conf")))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn the_keepalived_master_masters_the_first_vip_of_the_fleet_group() {
        // The backup's file comes first; the master must still lead the group.
        let nodes = [
            node("lb-b", 100, Some("192.0.2.12")),
            node("lb-a", 200, Some("192.0.2.11")),
        ];
        let (text, notes) = fleet(&nodes);
        let text = text.unwrap_or_else(|| panic!("{notes:?}"));
        let expanded = hav_proto::fleet::expand("fleet.toml", &text)
            .unwrap_or_else(|errors| panic!("{errors}\n{text}"));
        let vips: Vec<(String, u8, String)> = (expanded.layout[0].vips.iter())
            .map(|vip| (vip.address.to_string(), vip.vrid, vip.master.clone()))
            .collect();
        assert_eq!(
            vips,
            [
                ("192.0.2.100".into(), 51, "lb-a".into()),
                ("192.0.2.101".into(), 52, "lb-b".into())
            ]
        );
        assert!(
            notes.iter().any(|note| note.contains("VRIDs 51 to 52")),
            "{notes:?}"
        );
    }

    #[test]
    fn no_fleet_without_the_nodes_addresses() {
        let nodes = [node("lb-a", 200, None), node("lb-b", 100, None)];
        let (text, notes) = fleet(&nodes);
        assert_eq!(text, None);
        assert!(
            notes.iter().any(|note| note.contains("unicast_src_ip")),
            "{notes:?}"
        );
    }
}
