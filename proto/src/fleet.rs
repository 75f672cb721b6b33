//! The fleet config: intent for many pairs, expanded into one node config per node.
//!
//! An operator describes groups of nodes (usually pairs) with the VIPs they share; the expansion
//! decides everything VRRP needs: one instance per VIP with a VRID unique on its L2 segment,
//! priorities that spread mastership evenly (VIP `i` of a group of `N` nodes is mastered by node
//! `i mod N`), the unicast peers with their priorities, and the tracked services on every
//! instance. The result is each node's validated config ([`NodeConfig`]): the expansion writes a
//! document in the node schema and hands it to the same validation the agent runs
//! ([`config::node_config_from_document`]); no text is printed and read back.
//!
//! Guarantees: expansion is deterministic (same file, same configs); the fleet file is parsed
//! once; nothing is returned unless the whole fleet is valid; every problem is reported at once,
//! naming the file, the group, the node and the key. Commented example: `deploy/fleet/fleet.toml`.
//!
//! ```toml
//! [[group]]
//! name = "web"                   # also the rollout group: its nodes change one at a time
//! segment = "dc1-vlan10"         # L2 segment: VRIDs are unique per segment (default "default")
//! interface = "eth0"             # default interface of the nodes
//! vips = ["198.51.100.100/24", "198.51.100.101/24"]
//! first_vrid = 10                # VIP i gets first_vrid + i (default: lowest free on the segment)
//! dns_name = "web.example.net"
//! advert_interval = "1s"
//! version = 3
//! transport = "unicast"          # or "multicast"
//! [group.track]                  # what every instance follows (as a node's track_<kind>):
//! script = ["chk_squid"]         # interface, script, process, file, probe
//! [[group.script]]               # tracked services, copied to every node of the group:
//! name = "chk_squid"             # [[group.script]], [[group.process]], [[group.probe]],
//! program = "/usr/sbin/squid"    # [[group.track_file]] as in a node config
//! notify_master = ["/usr/local/sbin/hav-notify", "web", "master"]  # and notify, notify_backup,
//!                                # notify_fault, notify_stop, garp = {…}, smtp_alert: on every
//!                                # instance of the group (a node may override the hooks)
//! [group.sync_group]             # the group's VIPs fail over together (one master for all),
//! notify_master = ["/usr/local/sbin/hav-notify", "web-all", "master"]   # with the group's hooks
//! [[group.node]]
//! name = "lb-1"
//! address = "198.51.100.11"      # the node's address on the segment: adverts' source, peers
//! [group.node.track]             # this node's instances also follow these
//! interface = ["eth1"]
//! [[group.node]]
//! name = "lb-2"
//! address = "198.51.100.12"
//! ```
//!
//! A VIP is an address (`"198.51.100.100/24"`) or a table that adds to it: `{ address = …,
//! interface = "eth1", label = "eth1:gw", garp = {…}, track = {…}, vmac = {…}, route = […],
//! rule = […] }` (its own interface, address label, GARP settings, trackers instead of the
//! group's, and its instance's virtual MAC, routes and rules as in a node config). `strict` on
//! the group is every instance's strict mode.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::config::{self, NodeConfig};

/// Highest priority given (to the master of a VIP); the others get 10 less per rank.
pub const MASTER_PRIORITY: u8 = 150;
/// Priority step between the nodes of a group for one VIP.
pub const PRIORITY_STEP: u8 = 10;
/// Most nodes a group can have and still give every node a distinct priority above 0.
pub const MAX_GROUP_NODES: usize = (MASTER_PRIORITY / PRIORITY_STEP) as usize;

/// A fleet file after expansion and validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Node name → its validated config ([`NodeConfig::to_toml`] is the text a node is sent).
    pub nodes: BTreeMap<String, NodeConfig>,
    /// Rollout groups (one per fleet group; groups that share a node are merged), in file order.
    pub groups: Vec<RolloutGroup>,
    /// What the expansion decided, per fleet group (for DNS, status and the operator).
    pub layout: Vec<GroupLayout>,
}

/// Nodes that are changed one after the other, stopping at the first failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutGroup {
    pub name: String,
    pub nodes: Vec<String>,
}

/// One fleet group as expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLayout {
    pub name: String,
    pub segment: String,
    pub dns_name: Option<String>,
    /// Per VIP, in file order.
    pub vips: Vec<VipLayout>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipLayout {
    /// The instance name on every node (`<group>-vip<i>`).
    pub instance: String,
    pub address: IpAddr,
    pub vrid: u8,
    /// The node that masters it while healthy.
    pub master: String,
    /// Node → priority for this VIP.
    pub priorities: BTreeMap<String, u8>,
}

/// One reason a fleet file was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub struct FleetError {
    pub file: String,
    /// The fleet group concerned, if any.
    pub group: Option<String>,
    /// The node concerned, if any.
    pub node: Option<String>,
    /// Key path in the fleet file (e.g. `group[0].vips[1]`), or in the node config expanded for
    /// `node`; `(file)` for a syntax error.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some(group) = &self.group {
            write!(f, "group {group}: ")?;
        }
        if let Some(node) = &self.node {
            write!(f, "node {node}: ")?;
        }
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Every reason a fleet file was refused, one per line when printed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub struct FleetErrors(pub Vec<FleetError>);

impl fmt::Display for FleetErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    #[serde(default)]
    group: Vec<RawGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    #[serde(default)]
    segment: Option<String>,
    #[serde(default)]
    interface: Option<String>,
    vips: Vec<toml::Value>,
    #[serde(default)]
    first_vrid: Option<u8>,
    #[serde(default)]
    dns_name: Option<String>,
    #[serde(default)]
    advert_interval: Option<String>,
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    auth_pass: Option<String>,
    #[serde(default)]
    transport: Option<String>,
    #[serde(default)]
    preempt: Option<bool>,
    #[serde(default)]
    preempt_delay: Option<String>,
    #[serde(default)]
    connection_drain: Option<String>,
    #[serde(default)]
    notify: Option<toml::Value>,
    #[serde(default)]
    notify_master: Option<toml::Value>,
    #[serde(default)]
    notify_backup: Option<toml::Value>,
    #[serde(default)]
    notify_fault: Option<toml::Value>,
    #[serde(default)]
    notify_stop: Option<toml::Value>,
    #[serde(default)]
    garp: Option<toml::Table>,
    #[serde(default)]
    smtp_alert: Option<bool>,
    /// Strict mode (keepalived's `vrrp_strict`) on every instance of the group.
    #[serde(default)]
    strict: Option<bool>,
    /// Present: the group's instances on each node form one sync group (named after the group)
    /// with these keys of a node's `[[sync_group]]` (hooks, `smtp_alert`).
    #[serde(default)]
    sync_group: Option<toml::Table>,
    #[serde(default)]
    track: RawTrack,
    #[serde(default)]
    script: Vec<toml::Table>,
    #[serde(default)]
    process: Vec<toml::Table>,
    #[serde(default)]
    track_file: Vec<toml::Table>,
    #[serde(default)]
    probe: Vec<toml::Table>,
    #[serde(default)]
    node: Vec<RawMember>,
}

/// `[group.track]`: what every instance of the group follows; each list as the node schema's
/// `track_<kind>` (names, or tables with a weight).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrack {
    #[serde(default)]
    interface: Option<toml::Value>,
    #[serde(default)]
    script: Option<toml::Value>,
    #[serde(default)]
    process: Option<toml::Value>,
    #[serde(default)]
    file: Option<toml::Value>,
    #[serde(default)]
    probe: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: String,
    address: IpAddr,
    /// Its address of the other family, for VIPs of that family (IPv6 next to IPv4).
    #[serde(default)]
    address6: Option<IpAddr>,
    #[serde(default)]
    interface: Option<String>,
    /// Overrides of what the peers must agree on (for migrations; refused if peers disagree).
    #[serde(default)]
    advert_interval: Option<String>,
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    auth_pass: Option<String>,
    /// Trackers this node's instances of the group follow besides the group's.
    #[serde(default)]
    track: RawTrack,
    /// This node's own hooks instead of the group's.
    #[serde(default)]
    notify: Option<toml::Value>,
    #[serde(default)]
    notify_master: Option<toml::Value>,
    #[serde(default)]
    notify_backup: Option<toml::Value>,
    #[serde(default)]
    notify_fault: Option<toml::Value>,
    #[serde(default)]
    notify_stop: Option<toml::Value>,
}

/// One VIP of a group: its address and what it sets for itself.
#[derive(Debug, Clone, Default)]
struct VipSpec {
    /// As written (`address/prefix`), for messages.
    text: String,
    interface: Option<String>,
    label: Option<String>,
    garp: Option<toml::Table>,
    track: Option<RawTrack>,
    /// `[instance.vmac]`, `[[instance.route]]` and `[[instance.rule]]` of the VIP's instance,
    /// as in a node config.
    vmac: Option<toml::Table>,
    routes: Option<toml::Value>,
    rules: Option<toml::Value>,
}

/// A VIP entry: a string, or a table with `address` and the VIP's own keys.
fn vip_spec(value: &toml::Value) -> Result<VipSpec, String> {
    match value {
        toml::Value::String(text) => Ok(VipSpec {
            text: text.clone(),
            ..VipSpec::default()
        }),
        toml::Value::Table(table) => {
            let mut spec = VipSpec::default();
            for (key, value) in table {
                match (key.as_str(), value) {
                    ("address", toml::Value::String(text)) => spec.text = text.clone(),
                    ("interface", toml::Value::String(name)) => spec.interface = Some(name.clone()),
                    ("label", toml::Value::String(label)) => spec.label = Some(label.clone()),
                    ("garp", toml::Value::Table(garp)) => spec.garp = Some(garp.clone()),
                    ("vmac", toml::Value::Table(vmac)) => spec.vmac = Some(vmac.clone()),
                    ("route", routes @ toml::Value::Array(_)) => spec.routes = Some(routes.clone()),
                    ("rule", rules @ toml::Value::Array(_)) => spec.rules = Some(rules.clone()),
                    ("track", track @ toml::Value::Table(_)) => {
                        let track: RawTrack = track
                            .clone()
                            .try_into()
                            .map_err(|e: toml::de::Error| format!("track: {}", e.message()))?;
                        spec.track = Some(track);
                    }
                    ("address" | "interface" | "label", _) => {
                        return Err(format!("{key}: expected a string"));
                    }
                    ("garp" | "track" | "vmac", _) => {
                        return Err(format!("{key}: expected a table"));
                    }
                    ("route" | "rule", _) => {
                        return Err(format!("{key}: expected an array of tables"));
                    }
                    (other, _) => {
                        return Err(format!(
                            "unknown key {other:?}: a VIP takes address, interface, label, garp, \
                             track, vmac, route, rule"
                        ));
                    }
                }
            }
            if spec.text.is_empty() {
                return Err("a VIP table needs an address".into());
            }
            Ok(spec)
        }
        _ => Err("expected an address or a table with one".into()),
    }
}

/// Parses, expands and validates a fleet file. `file` names it in errors.
pub fn expand(file: &str, text: &str) -> Result<FleetConfig, FleetErrors> {
    let mut errors = Errors {
        file: file.to_owned(),
        found: Vec::new(),
    };
    let raw: RawFleet = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(
                None,
                None,
                "(file)",
                e.to_string().trim().replace('\n', " "),
            );
            return Err(FleetErrors(errors.found));
        }
    };
    if raw.group.is_empty() {
        errors.push(None, None, "group", "at least one [[group]] is required");
    }
    let plans = plan_groups(&raw, &mut errors);
    let vrids = assign_vrids(&raw, &plans, &mut errors);
    check_node_vrids(&raw, &plans, &vrids, &mut errors);
    if !errors.found.is_empty() {
        return Err(FleetErrors(errors.found));
    }
    let (documents, layout) = node_documents(&raw, &plans, &vrids);
    let mut nodes = BTreeMap::new();
    for (node, document) in documents {
        match config::node_config_from_document(&document, &format!("{file} (node {node})")) {
            Ok(config) => {
                nodes.insert(node, config);
            }
            Err(problems) => {
                for problem in problems.errors() {
                    let group = group_of_path(&raw, &node, &problem.path.to_string());
                    errors.push(
                        group.as_deref(),
                        Some(&node),
                        &problem.path.to_string(),
                        problem.problem.to_string(),
                    );
                }
            }
        }
    }
    check_peers_agree(&raw, &plans, &nodes, &mut errors);
    if !errors.found.is_empty() {
        return Err(FleetErrors(errors.found));
    }
    Ok(FleetConfig {
        nodes,
        groups: rollout_groups(&raw),
        layout,
    })
}

struct Errors {
    file: String,
    found: Vec<FleetError>,
}

impl Errors {
    fn push(
        &mut self,
        group: Option<&str>,
        node: Option<&str>,
        key: &str,
        reason: impl Into<String>,
    ) {
        self.found.push(FleetError {
            file: self.file.clone(),
            group: group.map(str::to_owned),
            node: node.map(str::to_owned),
            key: key.to_owned(),
            reason: reason.into(),
        });
    }
}

/// A group's checked addresses.
struct GroupPlan {
    segment: String,
    /// Per VIP: address and prefix length, `None` where unparsable (already reported).
    vips: Vec<Option<(IpAddr, u8)>>,
    /// Per VIP: what it sets for itself.
    specs: Vec<VipSpec>,
}

/// Checks each group on its own and the VIPs across groups.
fn plan_groups(raw: &RawFleet, errors: &mut Errors) -> Vec<GroupPlan> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut vip_owner: HashMap<IpAddr, (usize, usize)> = HashMap::new();
    let mut plans = Vec::new();
    for (g, group) in raw.group.iter().enumerate() {
        let name = group.name.as_str();
        let key = |rest: &str| format!("group[{g}].{rest}");
        if !crate::identity::valid_name(name) {
            errors.push(
                Some(name),
                None,
                &key("name"),
                "group names are 1-63 characters of a-z, 0-9, '-', '_', '.'",
            );
        }
        if let Some(first) = names.insert(name, g) {
            errors.push(
                Some(name),
                None,
                &key("name"),
                format!("group name is already used by group[{first}]"),
            );
        }
        match group.node.len() {
            0 | 1 => errors.push(
                Some(name),
                group.node.first().map(|n| n.name.as_str()),
                &key("node"),
                "priorities cannot elect a backup: a group needs at least two nodes to fail over",
            ),
            n if n > MAX_GROUP_NODES => errors.push(
                Some(name),
                None,
                &key("node"),
                format!("priorities cannot be distinct: at most {MAX_GROUP_NODES} nodes per group"),
            ),
            _ => {}
        }
        if group.vips.is_empty() {
            errors.push(Some(name), None, &key("vips"), "expected at least one VIP");
        }
        let specs: Vec<VipSpec> = (group.vips.iter().enumerate())
            .map(|(v, value)| {
                vip_spec(value).unwrap_or_else(|reason| {
                    errors.push(Some(name), None, &key(&format!("vips[{v}]")), reason);
                    VipSpec::default()
                })
            })
            .collect();
        if let Some(table) = &group.sync_group {
            for reserved in ["name", "instances"] {
                if table.contains_key(reserved) {
                    errors.push(
                        Some(name),
                        None,
                        &key(&format!("sync_group.{reserved}")),
                        "set by the expansion: the sync group is named after the group and holds its instances",
                    );
                }
            }
        }
        let mut members: HashMap<&str, usize> = HashMap::new();
        for (n, member) in group.node.iter().enumerate() {
            if !crate::identity::valid_name(&member.name) {
                errors.push(
                    Some(name),
                    Some(&member.name),
                    &key(&format!("node[{n}].name")),
                    "node names are 1-63 characters of a-z, 0-9, '-', '_', '.'",
                );
            }
            if members.insert(&member.name, n).is_some() {
                errors.push(
                    Some(name),
                    Some(&member.name),
                    &key(&format!("node[{n}].name")),
                    "node listed twice in this group",
                );
            }
            if member.interface.is_none()
                && group.interface.is_none()
                && specs.iter().any(|spec| spec.interface.is_none())
            {
                errors.push(
                    Some(name),
                    Some(&member.name),
                    &key(&format!("node[{n}].interface")),
                    "no interface: set it on the node or on the group",
                );
            }
        }
        match group.transport.as_deref() {
            None | Some("unicast" | "multicast") => {}
            Some(other) => errors.push(
                Some(name),
                None,
                &key("transport"),
                format!("{other:?}: expected \"unicast\" or \"multicast\""),
            ),
        }
        check_track_references(group, g, &specs, errors);
        if group.transport.as_deref() != Some("multicast") {
            for (n, member) in group.node.iter().enumerate() {
                for (v, spec) in specs.iter().enumerate() {
                    let text = &spec.text;
                    let Some((vip, _)) = parse_vip(text) else {
                        continue;
                    };
                    if spec.interface.is_some() {
                        errors.push(
                            Some(name),
                            Some(&member.name),
                            &key(&format!("vips[{v}].interface")),
                            "a VIP on an interface of its own needs transport = \"multicast\" (unicast \
                             peers are the nodes' addresses on the group's interface)",
                        );
                        continue;
                    }
                    if address_for(member, vip).is_none() {
                        errors.push(
                            Some(name),
                            Some(&member.name),
                            &key(&format!("node[{n}].address6")),
                            format!(
                                "unicast VIP {text} (vips[{v}]) needs an address of its family on \
                                 every node: set address6 (or use transport = \"multicast\")"
                            ),
                        );
                    }
                }
            }
        }
        let mut vips = Vec::new();
        for (v, spec) in specs.iter().enumerate() {
            let text = &spec.text;
            if text.is_empty() {
                // Already reported by vip_spec.
                vips.push(None);
                continue;
            }
            let parsed = parse_vip(text);
            match parsed {
                None => errors.push(
                    Some(name),
                    None,
                    &key(&format!("vips[{v}]")),
                    format!("{text:?} is not an address or address/prefix"),
                ),
                Some((address, _)) => {
                    if let Some((og, ov)) = vip_owner.insert(address, (g, v)) {
                        let other = &raw.group[og].name;
                        let reason = if og == g {
                            format!("{address} is listed twice (also vips[{ov}])")
                        } else {
                            format!(
                                "{address} is also a VIP of group {other} (group[{og}].vips[{ov}])"
                            )
                        };
                        errors.push(Some(name), None, &key(&format!("vips[{v}]")), reason);
                    }
                }
            }
            vips.push(parsed);
        }
        plans.push(GroupPlan {
            segment: group.segment.clone().unwrap_or_else(|| "default".into()),
            vips,
            specs,
        });
    }
    plans
}

/// Every `track_*` name refers to a definition of the same group (or, for interfaces, is an
/// interface name), so that no node is sent an instance following nothing.
fn check_track_references(group: &RawGroup, g: usize, specs: &[VipSpec], errors: &mut Errors) {
    let mut tracks: Vec<(String, &RawTrack)> = vec![("track".into(), &group.track)];
    for (v, spec) in specs.iter().enumerate() {
        if let Some(track) = &spec.track {
            tracks.push((format!("vips[{v}].track"), track));
        }
    }
    for (n, member) in group.node.iter().enumerate() {
        tracks.push((format!("node[{n}].track"), &member.track));
    }
    for (prefix, track) in tracks {
        check_track(group, g, &prefix, track, errors);
    }
}

fn check_track(group: &RawGroup, g: usize, prefix: &str, track: &RawTrack, errors: &mut Errors) {
    let defined = |items: &[toml::Table]| -> BTreeSet<String> {
        items
            .iter()
            .filter_map(|t| t.get("name").and_then(|n| n.as_str()).map(str::to_owned))
            .collect()
    };
    let checks = [
        (
            "script",
            &track.script,
            defined(&group.script),
            "group.script",
        ),
        (
            "process",
            &track.process,
            defined(&group.process),
            "group.process",
        ),
        (
            "file",
            &track.file,
            defined(&group.track_file),
            "group.track_file",
        ),
        ("probe", &track.probe, defined(&group.probe), "group.probe"),
    ];
    for (key, references, defined, section) in checks {
        let Some(toml::Value::Array(references)) = references else {
            continue;
        };
        for (i, reference) in references.iter().enumerate() {
            let name = match reference {
                toml::Value::String(name) => Some(name.as_str()),
                toml::Value::Table(table) => table.get("name").and_then(|n| n.as_str()),
                _ => None,
            };
            if let Some(name) = name
                && !defined.contains(name)
            {
                errors.push(
                    Some(&group.name),
                    None,
                    &format!("group[{g}].{prefix}.{key}[{i}]"),
                    format!("tracks {name:?}, which no [[{section}]] of this group defines"),
                );
            }
        }
    }
}

fn parse_vip(text: &str) -> Option<(IpAddr, u8)> {
    match text.split_once('/') {
        Some((address, prefix)) => {
            let address: IpAddr = address.parse().ok()?;
            let prefix: u8 = prefix.parse().ok()?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            (prefix <= max).then_some((address, prefix))
        }
        None => {
            let address: IpAddr = text.parse().ok()?;
            Some((address, if address.is_ipv4() { 32 } else { 128 }))
        }
    }
}

/// VRID of each (group, VIP): explicit ones first (`first_vrid + i`), refusing collisions on one
/// segment and family; then the others get the lowest free VRIDs, groups in file order.
fn assign_vrids(
    raw: &RawFleet,
    plans: &[GroupPlan],
    errors: &mut Errors,
) -> BTreeMap<(usize, usize), u8> {
    type Slot = (String, bool, u8);
    let mut taken: HashMap<Slot, (usize, usize)> = HashMap::new();
    let mut vrids = BTreeMap::new();
    for (g, group) in raw.group.iter().enumerate() {
        let Some(first) = group.first_vrid else {
            continue;
        };
        for (v, vip) in plans[g].vips.iter().enumerate() {
            let key = format!("group[{g}].first_vrid");
            let Some((address, _)) = vip else { continue };
            let Some(vrid) = u8::try_from(usize::from(first) + v)
                .ok()
                .filter(|id| *id > 0)
            else {
                errors.push(
                    Some(&group.name),
                    None,
                    &key,
                    format!(
                        "VIP {v} would get VRID {}, outside 1..=255",
                        usize::from(first) + v
                    ),
                );
                continue;
            };
            let slot = (plans[g].segment.clone(), address.is_ipv4(), vrid);
            if let Some((og, ov)) = taken.insert(slot, (g, v)) {
                errors.push(
                    Some(&group.name),
                    None,
                    &format!("group[{g}].vips[{v}]"),
                    format!(
                        "VRID {vrid} collides on segment {:?} with group {} VIP {} (group[{og}].vips[{ov}])",
                        plans[g].segment, raw.group[og].name, group_vip(plans, og, ov)
                    ),
                );
            }
            vrids.insert((g, v), vrid);
        }
    }
    for (g, group) in raw.group.iter().enumerate() {
        if group.first_vrid.is_some() {
            continue;
        }
        for (v, vip) in plans[g].vips.iter().enumerate() {
            let Some((address, _)) = vip else { continue };
            let free = (1..=255u8).find(|id| {
                !taken.contains_key(&(plans[g].segment.clone(), address.is_ipv4(), *id))
            });
            match free {
                Some(vrid) => {
                    taken.insert((plans[g].segment.clone(), address.is_ipv4(), vrid), (g, v));
                    vrids.insert((g, v), vrid);
                }
                None => errors.push(
                    Some(&group.name),
                    None,
                    &format!("group[{g}].vips[{v}]"),
                    format!("no VRID left on segment {:?}", plans[g].segment),
                ),
            }
        }
    }
    vrids
}

fn group_vip(plans: &[GroupPlan], g: usize, v: usize) -> &str {
    plans[g].specs.get(v).map_or("?", |spec| spec.text.as_str())
}

/// A node in several groups must not get one VRID twice on one interface and family.
fn check_node_vrids(
    raw: &RawFleet,
    plans: &[GroupPlan],
    vrids: &BTreeMap<(usize, usize), u8>,
    errors: &mut Errors,
) {
    let mut seen: HashMap<(String, String, bool, u8), (usize, usize)> = HashMap::new();
    for (g, group) in raw.group.iter().enumerate() {
        for member in &group.node {
            for (v, vip) in plans[g].vips.iter().enumerate() {
                let (Some((address, _)), Some(vrid)) = (vip, vrids.get(&(g, v))) else {
                    continue;
                };
                let interface = vip_interface(group, member, &plans[g].specs[v]).to_owned();
                let slot = (
                    member.name.clone(),
                    interface.clone(),
                    address.is_ipv4(),
                    *vrid,
                );
                match seen.get(&slot) {
                    Some((og, _)) if *og != g => errors.push(
                        Some(&group.name),
                        Some(&member.name),
                        &format!("group[{g}].vips[{v}]"),
                        format!(
                            "node {} is also in group {} with VRID {vrid} on {interface}",
                            member.name, raw.group[*og].name
                        ),
                    ),
                    _ => {
                        seen.insert(slot, (g, v));
                    }
                }
            }
        }
    }
}

/// The node's address of `vip`'s family, if it has one.
fn address_for(member: &RawMember, vip: IpAddr) -> Option<IpAddr> {
    [Some(member.address), member.address6]
        .into_iter()
        .flatten()
        .find(|address| address.is_ipv4() == vip.is_ipv4())
}

fn interface_of<'a>(group: &'a RawGroup, member: &'a RawMember) -> &'a str {
    member
        .interface
        .as_deref()
        .or(group.interface.as_deref())
        .unwrap_or_default()
}

/// The interface of VIP `spec` on `member`: the VIP's own, else the node's, else the group's.
fn vip_interface<'a>(group: &'a RawGroup, member: &'a RawMember, spec: &'a VipSpec) -> &'a str {
    spec.interface
        .as_deref()
        .unwrap_or_else(|| interface_of(group, member))
}

/// The position that decides VIP `v`'s master: its own, or 0 for every VIP of a group that
/// fails over as one (a sync group has one master).
fn mastership(group: &RawGroup, v: usize) -> usize {
    if group.sync_group.is_some() { 0 } else { v }
}

/// The priority of the node at position `n` for VIP `v` in a group of `count` nodes: the VIP's
/// master (`v mod count`) gets [`MASTER_PRIORITY`], each following node 10 less.
pub fn priority(v: usize, n: usize, count: usize) -> u8 {
    let rank = (n + count - v % count) % count;
    // `plan_groups` refuses groups of more than MAX_GROUP_NODES, so rank * step < 150.
    MASTER_PRIORITY
        - PRIORITY_STEP * u8::try_from(rank).unwrap_or(MASTER_PRIORITY / PRIORITY_STEP - 1)
}

/// Each node's config as a document in the node schema, and the layout decided.
fn node_documents(
    raw: &RawFleet,
    plans: &[GroupPlan],
    vrids: &BTreeMap<(usize, usize), u8>,
) -> (BTreeMap<String, toml::Table>, Vec<GroupLayout>) {
    let mut tables: BTreeMap<String, toml::Table> = BTreeMap::new();
    let mut layout = Vec::new();
    for (g, group) in raw.group.iter().enumerate() {
        let count = group.node.len();
        let mut group_layout = GroupLayout {
            name: group.name.clone(),
            segment: plans[g].segment.clone(),
            dns_name: group.dns_name.clone(),
            vips: Vec::new(),
        };
        for (v, vip) in plans[g].vips.iter().enumerate() {
            let (Some((address, _)), Some(vrid)) = (vip, vrids.get(&(g, v))) else {
                continue;
            };
            group_layout.vips.push(VipLayout {
                instance: instance_name(group, v),
                address: *address,
                vrid: *vrid,
                master: group.node[mastership(group, v) % count].name.clone(),
                priorities: (group.node.iter().enumerate())
                    .map(|(n, member)| {
                        (
                            member.name.clone(),
                            priority(mastership(group, v), n, count),
                        )
                    })
                    .collect(),
            });
        }
        for (n, member) in group.node.iter().enumerate() {
            let table = tables.entry(member.name.clone()).or_insert_with(|| {
                let mut table = toml::Table::new();
                let mut node = toml::Table::new();
                node.insert("name".into(), member.name.clone().into());
                table.insert("node".into(), node.into());
                table
            });
            for (section, items) in [
                ("script", &group.script),
                ("process", &group.process),
                ("track_file", &group.track_file),
                ("probe", &group.probe),
            ] {
                let list = table
                    .entry(section)
                    .or_insert_with(|| toml::Value::Array(Vec::new()));
                if let toml::Value::Array(list) = list {
                    for item in items {
                        // The same definition from two groups is written once; two different
                        // ones with one name are refused by the node schema.
                        if !list
                            .iter()
                            .any(|existing| existing.as_table() == Some(item))
                        {
                            list.push(item.clone().into());
                        }
                    }
                }
            }
            if let Some(sync) = &group.sync_group {
                let mut entry = sync.clone();
                entry.insert("name".into(), group.name.clone().into());
                let instances: Vec<toml::Value> = (0..plans[g].vips.len())
                    .filter(|v| plans[g].vips[*v].is_some() && vrids.contains_key(&(g, *v)))
                    .map(|v| instance_name(group, v).into())
                    .collect();
                entry.insert("instances".into(), instances.into());
                let list = table
                    .entry("sync_group")
                    .or_insert_with(|| toml::Value::Array(Vec::new()));
                if let toml::Value::Array(list) = list {
                    list.push(entry.into());
                }
            }
            for (v, vip) in plans[g].vips.iter().enumerate() {
                let (Some((address, prefix)), Some(vrid)) = (vip, vrids.get(&(g, v))) else {
                    continue;
                };
                let spec = &plans[g].specs[v];
                let instance =
                    instance_table(group, member, spec, n, v, (*address, *prefix), *vrid);
                let list = table
                    .entry("instance")
                    .or_insert_with(|| toml::Value::Array(Vec::new()));
                if let toml::Value::Array(list) = list {
                    list.push(instance.into());
                }
            }
        }
        layout.push(group_layout);
    }
    for table in tables.values_mut() {
        table.retain(|_, value| !matches!(value, toml::Value::Array(list) if list.is_empty()));
    }
    (tables, layout)
}

fn instance_name(group: &RawGroup, v: usize) -> String {
    format!("{}-vip{v}", group.name)
}

fn instance_table(
    group: &RawGroup,
    member: &RawMember,
    spec: &VipSpec,
    n: usize,
    v: usize,
    (address, prefix): (IpAddr, u8),
    vrid: u8,
) -> toml::Table {
    let count = group.node.len();
    let rank = mastership(group, v);
    let interface = vip_interface(group, member, spec);
    let mut t = toml::Table::new();
    t.insert("name".into(), instance_name(group, v).into());
    t.insert("interface".into(), interface.to_owned().into());
    t.insert("vrid".into(), i64::from(vrid).into());
    t.insert(
        "priority".into(),
        i64::from(priority(rank, n, count)).into(),
    );
    let protocol = effective_protocol(group, member);
    if let Some(interval) = protocol.advert_interval {
        t.insert("advert_interval".into(), interval.into());
    }
    if let Some(version) = protocol.version {
        t.insert("version".into(), version.into());
    }
    if let Some(checksum) = protocol.checksum {
        t.insert("checksum".into(), checksum.into());
    }
    if let Some(auth) = protocol.auth_pass {
        t.insert("auth_pass".into(), auth.into());
    }
    if let Some(preempt) = group.preempt {
        t.insert("preempt".into(), preempt.into());
    }
    if let Some(delay) = &group.preempt_delay {
        t.insert("preempt_delay".into(), delay.clone().into());
    }
    if let Some(drain) = &group.connection_drain {
        t.insert("connection_drain".into(), drain.clone().into());
    }
    // The node's address is on the group's interface; on a VIP's own one the agent picks.
    if spec.interface.is_none()
        && let Some(source) = address_for(member, address)
    {
        t.insert("source_address".into(), source.to_string().into());
    }
    if group.transport.as_deref() != Some("multicast") {
        let peers: Vec<toml::Value> = (group.node.iter().enumerate())
            .filter(|(other, _)| *other != n)
            .filter_map(|(other, peer)| Some((other, address_for(peer, address)?)))
            .map(|(other, peer_address)| {
                let mut entry = toml::Table::new();
                entry.insert("address".into(), peer_address.to_string().into());
                entry.insert(
                    "priority".into(),
                    i64::from(priority(rank, other, count)).into(),
                );
                entry.into()
            })
            .collect();
        t.insert("unicast_peers".into(), peers.into());
    }
    let vip: toml::Value = match &spec.label {
        None => format!("{address}/{prefix}").into(),
        Some(label) => {
            let mut entry = toml::Table::new();
            entry.insert("address".into(), address.to_string().into());
            entry.insert("prefix".into(), i64::from(prefix).into());
            entry.insert("dev".into(), interface.to_owned().into());
            entry.insert("label".into(), label.clone().into());
            entry.into()
        }
    };
    t.insert("vips".into(), vec![vip].into());
    let track = spec.track.as_ref().unwrap_or(&group.track);
    for (key, base, own) in [
        ("track_interface", &track.interface, &member.track.interface),
        ("track_script", &track.script, &member.track.script),
        ("track_process", &track.process, &member.track.process),
        ("track_file", &track.file, &member.track.file),
        ("track_probe", &track.probe, &member.track.probe),
    ] {
        let list: Vec<toml::Value> = [base, own]
            .into_iter()
            .flatten()
            .flat_map(|value| match value {
                toml::Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            })
            .collect();
        if !list.is_empty() {
            t.insert(key.into(), list.into());
        }
    }
    for (key, group_value, own) in [
        ("notify", &group.notify, &member.notify),
        ("notify_master", &group.notify_master, &member.notify_master),
        ("notify_backup", &group.notify_backup, &member.notify_backup),
        ("notify_fault", &group.notify_fault, &member.notify_fault),
        ("notify_stop", &group.notify_stop, &member.notify_stop),
    ] {
        if let Some(value) = own.as_ref().or(group_value.as_ref()) {
            t.insert(key.into(), value.clone());
        }
    }
    if let Some(garp) = spec.garp.as_ref().or(group.garp.as_ref()) {
        t.insert("garp".into(), garp.clone().into());
    }
    if let Some(alert) = group.smtp_alert {
        t.insert("smtp_alert".into(), alert.into());
    }
    if let Some(strict) = group.strict {
        t.insert("strict".into(), strict.into());
    }
    if let Some(vmac) = &spec.vmac {
        t.insert("vmac".into(), vmac.clone().into());
    }
    if let Some(routes) = &spec.routes {
        t.insert("route".into(), routes.clone());
    }
    if let Some(rules) = &spec.rules {
        t.insert("rule".into(), rules.clone());
    }
    t
}

/// What every peer of an instance must agree on: the group's settings with a node's overrides.
struct Protocol {
    advert_interval: Option<String>,
    version: Option<i64>,
    checksum: Option<String>,
    auth_pass: Option<String>,
}

fn effective_protocol(group: &RawGroup, member: &RawMember) -> Protocol {
    Protocol {
        advert_interval: (member.advert_interval.clone()).or_else(|| group.advert_interval.clone()),
        version: member.version.or(group.version),
        checksum: (member.checksum.clone()).or_else(|| group.checksum.clone()),
        auth_pass: (member.auth_pass.clone()).or_else(|| group.auth_pass.clone()),
    }
}

/// The peers of one instance (every node of its group) run it with the same VIPs, interval,
/// version, authentication and checksum mode, as validated by the node schema.
fn check_peers_agree(
    raw: &RawFleet,
    plans: &[GroupPlan],
    configs: &BTreeMap<String, NodeConfig>,
    errors: &mut Errors,
) {
    for (g, group) in raw.group.iter().enumerate() {
        for v in 0..plans[g].vips.len() {
            let name = instance_name(group, v);
            let mut reference: Option<(&str, &config::Instance)> = None;
            for member in &group.node {
                let Some(instance) = configs.get(&member.name).and_then(|c| c.instance(&name))
                else {
                    continue;
                };
                let Some((first, expected)) = reference else {
                    reference = Some((&member.name, instance));
                    continue;
                };
                let addresses = |i: &config::Instance| -> Vec<IpAddr> {
                    i.vips.iter().map(|vip| vip.address).collect()
                };
                let disagreements = [
                    ("vips", addresses(instance) != addresses(expected)),
                    (
                        "advert_interval",
                        instance.advert_interval != expected.advert_interval,
                    ),
                    ("version", instance.version != expected.version),
                    ("auth_pass", instance.auth != expected.auth),
                    ("checksum", instance.checksum != expected.checksum),
                ];
                for (key, differs) in disagreements {
                    if differs {
                        errors.push(
                            Some(&group.name),
                            Some(&member.name),
                            &format!("{name}.{key}"),
                            format!(
                                "peers of instance {name} disagree: {} differs from node {first}",
                                key
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// The group of `node` a node-config key path (`instance[i]...`) belongs to, if it can be told.
fn group_of_path(raw: &RawFleet, node: &str, _path: &str) -> Option<String> {
    let groups: Vec<&str> = (raw.group.iter())
        .filter(|g| g.node.iter().any(|m| m.name == node))
        .map(|g| g.name.as_str())
        .collect();
    (groups.len() == 1).then(|| groups[0].to_owned())
}

/// One rollout group per fleet group, in file order; groups that share a node are merged (so a
/// node is in one rollout group).
fn rollout_groups(raw: &RawFleet) -> Vec<RolloutGroup> {
    let mut groups: Vec<RolloutGroup> = Vec::new();
    for group in &raw.group {
        let members: Vec<String> = group.node.iter().map(|m| m.name.clone()).collect();
        match groups
            .iter_mut()
            .find(|existing| existing.nodes.iter().any(|n| members.contains(n)))
        {
            Some(existing) => {
                existing.name = format!("{}+{}", existing.name, group.name);
                for member in members {
                    if !existing.nodes.contains(&member) {
                        existing.nodes.push(member);
                    }
                }
            }
            None => groups.push(RolloutGroup {
                name: group.name.clone(),
                nodes: members,
            }),
        }
    }
    groups
}

#[cfg(test)]
mod tests;
