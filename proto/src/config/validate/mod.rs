//! Turns the document as written ([`raw`](super::raw)) into a [`NodeConfig`], checking every value
//! and every cross-reference and reporting each problem with its key path.
//!
//! Validation never stops at the first problem: it checks everything it can and returns a config
//! only when nothing was wrong. Names of definitions are collected from the document as written,
//! so a definition with a bad value does not also make every reference to it an error.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hav_vrrp::Family;

mod alerts;
mod definitions;
mod instance;
mod network;
mod strict;
mod telemetry;
mod values;
mod virtual_server;

use definitions::{
    coordinator_link, node_settings, probe, process, script, sync_group, track_file,
};
use instance::instance;
use values::{family_name, family_of};
use virtual_server::{check_virtual_servers_together, virtual_server};

pub use virtual_server::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DELAY_BEFORE_RETRY, DEFAULT_DELAY_LOOP, DEFAULT_FLOW_TIMEOUT,
    MAX_REAL_SERVERS, MAX_WEIGHT,
};

use super::error::{Collector, KeyPath, Problem};
use super::node::{NodeConfig, TrackWeight};
use super::raw::{RawInstance, RawNodeConfig, RawVip, StringOr};

/// Default `[node] state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hav";

/// Checks `raw`; `None` when `errors` received anything.
pub(crate) fn validate(raw: &RawNodeConfig, errors: &mut Collector) -> Option<NodeConfig> {
    let root = KeyPath::root();
    let defined = Defined::collect(raw);

    let node = match &raw.node {
        Some(node) => node_settings(node, &root.key("node"), errors),
        None => {
            errors.missing(
                root.key("node"),
                "expected a [node] table with at least `name`",
            );
            None
        }
    };
    let scripts = each(raw.script.as_deref(), &root.key("script"), errors, script);
    let processes = each(
        raw.process.as_deref(),
        &root.key("process"),
        errors,
        process,
    );
    let track_files = each(
        raw.track_file.as_deref(),
        &root.key("track_file"),
        errors,
        track_file,
    );
    let probes = each(raw.probe.as_deref(), &root.key("probe"), errors, probe);
    let mut instances = each(
        raw.instance.as_deref(),
        &root.key("instance"),
        errors,
        |raw, path, errors| instance(raw, path, &defined, errors),
    );
    strict::apply(raw, &mut instances, errors);
    network::check_vmac_names(&instances, errors);
    let sync_groups = each(
        raw.sync_group.as_deref(),
        &root.key("sync_group"),
        errors,
        sync_group,
    );

    let raw_instances = raw.instance.as_deref().unwrap_or_default();
    let virtual_servers = each(
        raw.virtual_server.as_deref(),
        &root.key("virtual_server"),
        errors,
        |raw, path, errors| virtual_server(raw, path, raw_instances, errors),
    );

    let telemetry = match &raw.telemetry {
        Some(table) => telemetry::telemetry(table, &root.key("telemetry"), errors),
        None => Some(Default::default()),
    };
    let coordinator = match &raw.coordinator {
        Some(link) => coordinator_link(link, &root.key("coordinator"), errors).map(Some),
        None => Some(None),
    };

    check_unique_names(raw, errors);
    check_instances_together(raw.instance.as_deref().unwrap_or_default(), errors);
    check_sync_membership(raw, &defined, errors);
    check_virtual_servers_together(raw.virtual_server.as_deref().unwrap_or_default(), errors);

    if !errors.is_empty() {
        return None;
    }
    Some(NodeConfig {
        node: node?,
        instances: instances.into_iter().collect::<Option<_>>()?,
        scripts: scripts.into_iter().collect::<Option<_>>()?,
        processes: processes.into_iter().collect::<Option<_>>()?,
        track_files: track_files.into_iter().collect::<Option<_>>()?,
        probes: probes.into_iter().collect::<Option<_>>()?,
        sync_groups: sync_groups.into_iter().collect::<Option<_>>()?,
        virtual_servers: virtual_servers.into_iter().collect::<Option<_>>()?,
        coordinator: coordinator?,
        telemetry: telemetry?,
    })
}

/// Names defined in each section, as written.
struct Defined {
    instances: HashSet<String>,
    /// Each name with the weight its definition gives references without their own.
    scripts: HashMap<String, TrackWeight>,
    processes: HashMap<String, TrackWeight>,
    track_files: HashMap<String, TrackWeight>,
    probes: HashMap<String, TrackWeight>,
}

impl Defined {
    fn collect(raw: &RawNodeConfig) -> Self {
        /// A definition whose weight is out of range is reported where it is defined; its
        /// references then see `FAULT`, and the config is refused anyway.
        fn weighted<T>(
            items: Option<&[T]>,
            entry: fn(&T) -> (Option<&String>, Option<i64>),
            default: i64,
        ) -> HashMap<String, TrackWeight> {
            (items.unwrap_or_default().iter())
                .filter_map(|item| {
                    let (name, weight) = entry(item);
                    let weight = i16::try_from(weight.unwrap_or(default))
                        .ok()
                        .and_then(TrackWeight::new);
                    Some((name?.clone(), weight.unwrap_or(TrackWeight::FAULT)))
                })
                .collect()
        }
        Self {
            instances: (raw.instance.as_deref().unwrap_or_default().iter())
                .filter_map(|item| item.name.clone())
                .collect(),
            scripts: weighted(
                raw.script.as_deref(),
                |item| (item.name.as_ref(), item.weight),
                0,
            ),
            processes: weighted(
                raw.process.as_deref(),
                |item| (item.name.as_ref(), item.weight),
                0,
            ),
            track_files: weighted(
                raw.track_file.as_deref(),
                |item| (item.name.as_ref(), item.weight),
                1,
            ),
            probes: weighted(
                raw.probe.as_deref(),
                |item| (item.name.as_ref(), item.weight),
                0,
            ),
        }
    }
}

fn each<R, T>(
    items: Option<&[R]>,
    path: &KeyPath,
    errors: &mut Collector,
    mut check: impl FnMut(&R, &KeyPath, &mut Collector) -> Option<T>,
) -> Vec<Option<T>> {
    (items.unwrap_or_default().iter().enumerate())
        .map(|(index, item)| check(item, &path.index(index), errors))
        .collect()
}

/// Definition names unique within each section.
fn check_unique_names(raw: &RawNodeConfig, errors: &mut Collector) {
    fn unique<T>(
        items: Option<&[T]>,
        section: &str,
        name: fn(&T) -> Option<&String>,
        errors: &mut Collector,
    ) {
        let path = KeyPath::root().key(section);
        let mut seen: HashMap<&String, usize> = HashMap::new();
        for (index, item) in items.unwrap_or_default().iter().enumerate() {
            let Some(name) = name(item) else { continue };
            if let Some(first) = seen.insert(name, index) {
                errors.push(
                    path.index(index).key("name"),
                    Problem::Duplicate(format!(
                        "{section} name {name:?} is already used by {}",
                        path.index(first)
                    )),
                );
            }
        }
    }
    unique(
        raw.instance.as_deref(),
        "instance",
        |item| item.name.as_ref(),
        errors,
    );
    unique(
        raw.script.as_deref(),
        "script",
        |item| item.name.as_ref(),
        errors,
    );
    unique(
        raw.process.as_deref(),
        "process",
        |item| item.name.as_ref(),
        errors,
    );
    unique(
        raw.track_file.as_deref(),
        "track_file",
        |item| item.name.as_ref(),
        errors,
    );
    unique(
        raw.probe.as_deref(),
        "probe",
        |item| item.name.as_ref(),
        errors,
    );
    unique(
        raw.sync_group.as_deref(),
        "sync_group",
        |item| item.name.as_ref(),
        errors,
    );
}

/// One router per (interface, family, vrid), and each virtual address once on the node.
fn check_instances_together(raw: &[RawInstance], errors: &mut Collector) {
    let path = KeyPath::root().key("instance");
    let mut routers: HashMap<(&str, Family, u8), usize> = HashMap::new();
    let mut addresses: HashMap<IpAddr, KeyPath> = HashMap::new();
    for (index, instance) in raw.iter().enumerate() {
        // Read from the document as written, so that an instance with an unrelated problem
        // still takes part in these checks.
        let vips: Vec<Option<IpAddr>> = (instance.vips.as_deref().unwrap_or_default().iter())
            .map(raw_vip_address)
            .collect();
        let family = vips.iter().flatten().next().copied().map(family_of);
        let vrid = instance
            .vrid
            .and_then(|vrid| u8::try_from(vrid).ok())
            .filter(|vrid| *vrid > 0);
        if let (Some(interface), Some(family), Some(vrid)) = (&instance.interface, family, vrid)
            && let Some(first) = routers.insert((interface, family, vrid), index)
        {
            errors.push(
                path.index(index).key("vrid"),
                Problem::Duplicate(format!(
                    "vrid {vrid} on {interface} for {} is already used by {} ({:?})",
                    family_name(family),
                    path.index(first),
                    raw.get(first)
                        .and_then(|first| first.name.as_deref())
                        .unwrap_or_default(),
                )),
            );
        }
        for (vip_index, address) in vips.into_iter().enumerate() {
            let Some(address) = address else { continue };
            let vip_path = path.index(index).key("vips").index(vip_index);
            match addresses.get(&address) {
                Some(first) => errors.push(
                    vip_path,
                    Problem::Duplicate(format!(
                        "{address} is already a virtual address at {first}"
                    )),
                ),
                None => {
                    addresses.insert(address, vip_path);
                }
            }
        }
    }
}

/// The address of a virtual address entry as written, if it parses.
fn raw_vip_address(entry: &StringOr<RawVip>) -> Option<IpAddr> {
    let text = match entry {
        StringOr::Short(text) => text,
        StringOr::Table(table) => table.address.as_ref()?,
    };
    let address = text
        .split_once('/')
        .map_or(text.as_str(), |(address, _)| address);
    address.parse().ok()
}

/// Sync group members exist and belong to one group each.
fn check_sync_membership(raw: &RawNodeConfig, defined: &Defined, errors: &mut Collector) {
    let path = KeyPath::root().key("sync_group");
    let mut member_of: HashMap<&String, (usize, &str)> = HashMap::new();
    for (index, group) in raw
        .sync_group
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let group_name = group.name.as_deref().unwrap_or_default();
        for (member_index, member) in group
            .instances
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let member_path = path.index(index).key("instances").index(member_index);
            if !defined.instances.contains(member) {
                errors.push(
                    member_path,
                    Problem::Undefined(format!("no [[instance]] named {member:?}")),
                );
                continue;
            }
            if let Some((first, first_name)) = member_of.insert(member, (index, group_name)) {
                let reason = if first == index {
                    format!("instance {member:?} is listed twice in this group")
                } else {
                    format!(
                        "instance {member:?} is already in sync group {first_name:?} ({})",
                        path.index(first)
                    )
                };
                errors.push(member_path, Problem::Duplicate(reason));
            }
        }
    }
}
