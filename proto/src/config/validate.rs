//! Turns the document as written ([`raw`](super::raw)) into a [`NodeConfig`], checking every value
//! and every cross-reference and reporting each problem with its key path.
//!
//! Validation never stops at the first problem: it checks everything it can and returns a config
//! only when nothing was wrong. Names of definitions are collected from the document as written,
//! so a definition with a bad value does not also make every reference to it an error.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hav_vrrp::{AdvertInterval, Auth, Family, Priority, V3Checksum, Version, VrId};

use super::duration;
use super::error::{Collector, KeyPath, Problem};
use super::node::{
    Command, GarpSchedule, Instance, NodeConfig, NodeSettings, Notify, Probe, ProbeKind,
    ProcessMatch, Script, SyncGroup, Track, TrackFile, TrackTarget, TrackWeight, TrackedProcess,
    Transport, UnicastPeer, Vip,
};
use super::raw::{
    RawInstance, RawNode, RawNodeConfig, RawProbe, RawProcess, RawScript, RawSyncGroup,
    RawTrackFile, RawTrackRef, RawVip, StringOr,
};

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
    let instances = each(
        raw.instance.as_deref(),
        &root.key("instance"),
        errors,
        |raw, path, errors| instance(raw, path, &defined, errors),
    );
    let sync_groups = each(
        raw.sync_group.as_deref(),
        &root.key("sync_group"),
        errors,
        sync_group,
    );

    check_unique_names(raw, errors);
    check_instances_together(raw.instance.as_deref().unwrap_or_default(), errors);
    check_sync_membership(raw, &defined, errors);

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

fn node_settings(raw: &RawNode, path: &KeyPath, errors: &mut Collector) -> Option<NodeSettings> {
    let name = required(raw.name.as_ref(), &path.key("name"), "a node name", errors)
        .and_then(|name| identifier(name, &path.key("name"), errors));
    let state_dir = absolute_path(
        raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR),
        &path.key("state_dir"),
        errors,
    );
    let status_socket = optional(raw.status_socket.as_deref(), |socket| {
        absolute_path(socket, &path.key("status_socket"), errors)
    })?;
    Some(NodeSettings {
        name: name?,
        state_dir: state_dir?,
        status_socket,
    })
}

fn instance(
    raw: &RawInstance,
    path: &KeyPath,
    defined: &Defined,
    errors: &mut Collector,
) -> Option<Instance> {
    let name = required(
        raw.name.as_ref(),
        &path.key("name"),
        "an instance name",
        errors,
    )
    .and_then(|name| identifier(name, &path.key("name"), errors));
    let interface = required(
        raw.interface.as_ref(),
        &path.key("interface"),
        "an interface name",
        errors,
    )
    .and_then(|interface| interface_name(interface, &path.key("interface"), errors));
    let vrid = required(
        raw.vrid.as_ref(),
        &path.key("vrid"),
        "a virtual router id 1..=255",
        errors,
    )
    .and_then(|vrid| {
        let vrid = u8::try_from(*vrid).ok().and_then(VrId::new);
        if vrid.is_none() {
            errors.invalid(path.key("vrid"), "expected a virtual router id 1..=255");
        }
        vrid
    });
    let version = match raw.version {
        None | Some(3) => Some(Version::V3),
        Some(2) => Some(Version::V2),
        Some(other) => {
            errors.invalid(path.key("version"), format!("expected 2 or 3, got {other}"));
            None
        }
    };
    let priority = match raw.priority {
        None => Some(Priority::DEFAULT),
        Some(0) => {
            errors.invalid(
                path.key("priority"),
                "priority 0 is reserved for a master that resigns; expected 1..=255",
            );
            None
        }
        Some(value) => match u8::try_from(value) {
            Ok(value) => Some(Priority(value)),
            Err(_) => {
                errors.invalid(
                    path.key("priority"),
                    format!("expected 1..=255, got {value}"),
                );
                None
            }
        },
    };

    let (vips, family) = vips(raw, path, interface.as_deref(), version, errors);
    let advert_interval = version.and_then(|version| advert_interval(raw, path, version, errors));
    let preempt_delay = duration_or(
        raw.preempt_delay.as_deref(),
        Duration::ZERO,
        &path.key("preempt_delay"),
        errors,
    );
    let checksum = checksum(raw, path, version, family, errors);
    let source_address = optional(raw.source_address.as_deref(), |text| {
        address_of_family(text, family, &path.key("source_address"), errors)
    });
    let transport = transport(raw, path, family, source_address.flatten(), errors);
    let auth = auth(raw, path, version, errors);
    let track = tracks(raw, path, defined, errors);
    let notify = notify(
        [
            &raw.notify,
            &raw.notify_master,
            &raw.notify_backup,
            &raw.notify_fault,
            &raw.notify_stop,
        ],
        path,
        errors,
    );
    let garp = garp(raw, path, errors);

    Some(Instance {
        name: name?,
        interface: interface?,
        vrid: vrid?,
        version: version?,
        family: family?,
        priority: priority?,
        advert_interval: advert_interval?,
        preempt: raw.preempt.unwrap_or(true),
        preempt_delay: preempt_delay?,
        accept: raw.accept.unwrap_or(true),
        checksum: checksum?,
        source_address: source_address?,
        transport: transport?,
        auth: auth?,
        vips: vips?,
        track: track?,
        notify: notify?,
        garp: garp?,
    })
}

/// The virtual addresses and the family they set (that of the first one).
fn vips(
    raw: &RawInstance,
    path: &KeyPath,
    interface: Option<&str>,
    version: Option<Version>,
    errors: &mut Collector,
) -> (Option<Vec<Vip>>, Option<Family>) {
    let path = path.key("vips");
    let entries = raw.vips.as_deref().unwrap_or_default();
    if entries.is_empty() {
        errors.missing(
            path,
            "expected at least one virtual address, such as \"198.51.100.100/24\"",
        );
        return (None, None);
    }
    let mut family = None;
    let mut first_path = None;
    let mut all_ok = true;
    let mut result = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let entry_path = path.index(index);
        let Some(vip) = vip(entry, &entry_path, interface, errors) else {
            all_ok = false;
            continue;
        };
        let vip_family = family_of(vip.address);
        match family {
            None => {
                family = Some(vip_family);
                first_path = Some(entry_path.clone());
            }
            Some(instance_family) if instance_family != vip_family => {
                let first = first_path
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                errors.push(
                    entry_path.clone(),
                    Problem::Conflict(format!(
                        "{} is {} but the instance is {} (set by {first}); one instance holds one family",
                        vip.address,
                        family_name(vip_family),
                        family_name(instance_family),
                    )),
                );
                all_ok = false;
                continue;
            }
            Some(_) => {}
        }
        if vip_family == Family::V6 && version == Some(Version::V2) {
            errors.push(
                entry_path,
                Problem::Conflict(format!(
                    "{} is IPv6, which needs version = 3 (this instance has version = 2)",
                    vip.address
                )),
            );
            all_ok = false;
            continue;
        }
        if vip.label.is_some() && vip_family == Family::V6 {
            errors.push(
                entry_path.key("label"),
                Problem::Conflict("address labels exist for IPv4 only".into()),
            );
            all_ok = false;
            continue;
        }
        result.push(vip);
    }
    (all_ok.then_some(result), family)
}

fn vip(
    entry: &StringOr<RawVip>,
    path: &KeyPath,
    interface: Option<&str>,
    errors: &mut Collector,
) -> Option<Vip> {
    let expected = "expected an address with an optional prefix length, such as \"198.51.100.100/24\" or \"2001:db8::100/64\"";
    let (text, prefix, prefix_path, dev, label) = match entry {
        StringOr::Short(text) => (text.as_str(), None, path.clone(), None, None),
        StringOr::Table(table) => {
            let text = required(
                table.address.as_ref(),
                &path.key("address"),
                expected,
                errors,
            )?;
            (
                text.as_str(),
                table.prefix,
                path.key("prefix"),
                table.dev.as_ref(),
                table.label.as_ref(),
            )
        }
    };
    let address_path = match entry {
        StringOr::Short(_) => path.clone(),
        StringOr::Table(_) => path.key("address"),
    };
    let (address_text, inline_prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let Ok(address) = address_text.parse::<IpAddr>() else {
        errors.invalid(
            address_path,
            format!("{text:?} is not an address; {expected}"),
        );
        return None;
    };
    let max = match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix_len = match (inline_prefix, prefix) {
        (Some(_), Some(_)) => {
            errors.push(
                prefix_path,
                Problem::Conflict(
                    "the prefix length is given both in `address` and in `prefix`".into(),
                ),
            );
            return None;
        }
        (Some(inline), None) => match inline.parse::<u8>() {
            Ok(length) if length <= max => length,
            _ => {
                errors.invalid(
                    address_path,
                    format!("{text:?} has a bad prefix length; expected 0..={max}"),
                );
                return None;
            }
        },
        (None, Some(length)) => match u8::try_from(length) {
            Ok(length) if length <= max => length,
            _ => {
                errors.invalid(
                    prefix_path,
                    format!("expected a prefix length 0..={max}, got {length}"),
                );
                return None;
            }
        },
        (None, None) => max,
    };
    let dev = match dev {
        Some(dev) => interface_name(dev, &path.key("dev"), errors)?,
        None => interface?.to_owned(),
    };
    let label = match label {
        Some(label) => {
            if label.len() > 15 || !label.starts_with(dev.as_str()) {
                errors.invalid(
                    path.key("label"),
                    format!("label {label:?} must begin with the interface name {dev:?} and be at most 15 bytes"),
                );
                return None;
            }
            Some(label.clone())
        }
        None => None,
    };
    Some(Vip {
        address,
        prefix_len,
        dev,
        label,
    })
}

fn advert_interval(
    raw: &RawInstance,
    path: &KeyPath,
    version: Version,
    errors: &mut Collector,
) -> Option<AdvertInterval> {
    let path = path.key("advert_interval");
    let interval = duration_or(
        raw.advert_interval.as_deref(),
        Duration::from_secs(1),
        &path,
        errors,
    )?;
    let millis = interval.as_millis();
    let fitted = match version {
        Version::V2 => (millis % 1000 == 0)
            .then(|| u8::try_from(millis / 1000).ok())
            .flatten()
            .and_then(AdvertInterval::from_secs),
        _ => (millis % 10 == 0)
            .then(|| u16::try_from(millis / 10).ok())
            .flatten()
            .and_then(AdvertInterval::from_centis)
            .filter(|interval| interval.fits(Version::V3)),
    };
    if fitted.is_none() {
        let expected = match version {
            Version::V2 => "VRRPv2 carries whole seconds: expected 1s..=255s",
            _ => "VRRPv3 carries centiseconds: expected 10ms..=40950ms in steps of 10ms",
        };
        errors.invalid(
            path,
            format!("{} cannot be sent; {expected}", duration::format(interval)),
        );
    }
    fitted
}

fn checksum(
    raw: &RawInstance,
    path: &KeyPath,
    version: Option<Version>,
    family: Option<Family>,
    errors: &mut Collector,
) -> Option<V3Checksum> {
    let Some(text) = &raw.checksum else {
        return Some(V3Checksum::default());
    };
    let path = path.key("checksum");
    if version == Some(Version::V2) || family == Some(Family::V6) {
        errors.push(
            path,
            Problem::Conflict(
                "the checksum choice applies to VRRPv3 over IPv4 only; remove it here".into(),
            ),
        );
        return None;
    }
    match text.as_str() {
        "pseudo-header" => Some(V3Checksum::PseudoHeader),
        "rfc9568" => Some(V3Checksum::NoPseudoHeader),
        other => {
            errors.invalid(
                path,
                format!("expected \"pseudo-header\" or \"rfc9568\", got {other:?}"),
            );
            None
        }
    }
}

fn transport(
    raw: &RawInstance,
    path: &KeyPath,
    family: Option<Family>,
    source: Option<IpAddr>,
    errors: &mut Collector,
) -> Option<Transport> {
    let entries = raw.unicast_peers.as_deref().unwrap_or_default();
    if entries.is_empty() {
        return Some(Transport::Multicast);
    }
    let path = path.key("unicast_peers");
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    let mut peers = Vec::new();
    let mut all_ok = true;
    for (index, entry) in entries.iter().enumerate() {
        let entry_path = path.index(index);
        let (text, priority, address_path) = match entry {
            StringOr::Short(text) => (Some(text), None, entry_path.clone()),
            StringOr::Table(table) => (
                table.address.as_ref(),
                table.priority,
                entry_path.key("address"),
            ),
        };
        let Some(text) = required(text, &address_path, "a peer address", errors) else {
            all_ok = false;
            continue;
        };
        let Some(address) = address_of_family(text, family, &address_path, errors) else {
            all_ok = false;
            continue;
        };
        let priority = match priority {
            None => None,
            Some(value) => match u8::try_from(value).ok().filter(|value| *value > 0) {
                Some(value) => Some(Priority(value)),
                None => {
                    errors.invalid(
                        entry_path.key("priority"),
                        format!("expected 1..=255, got {value}"),
                    );
                    all_ok = false;
                    continue;
                }
            },
        };
        if Some(address) == source {
            errors.push(
                address_path,
                Problem::Conflict(format!("{address} is this node's own source_address")),
            );
            all_ok = false;
            continue;
        }
        if let Some(first) = seen.insert(address, index) {
            errors.push(
                address_path,
                Problem::Duplicate(format!(
                    "{address} is already listed at {}",
                    path.index(first)
                )),
            );
            all_ok = false;
            continue;
        }
        peers.push(UnicastPeer { address, priority });
    }
    all_ok.then_some(Transport::Unicast(peers))
}

fn auth(
    raw: &RawInstance,
    path: &KeyPath,
    version: Option<Version>,
    errors: &mut Collector,
) -> Option<Auth> {
    let Some(pass) = &raw.auth_pass else {
        return Some(Auth::None);
    };
    let path = path.key("auth_pass");
    match version {
        Some(Version::V2) => {}
        Some(_) => {
            errors.push(
                path,
                Problem::Conflict(
                    "VRRPv3 has no authentication; remove auth_pass or set version = 2".into(),
                ),
            );
            return None;
        }
        None => return None,
    }
    if pass.is_empty() || pass.len() > 8 {
        errors.invalid(path, format!("expected 1 to 8 bytes, got {}", pass.len()));
        return None;
    }
    let mut octets = [0u8; 8];
    octets[..pass.len()].copy_from_slice(pass.as_bytes());
    Some(Auth::SimpleText(octets))
}

fn tracks(
    raw: &RawInstance,
    path: &KeyPath,
    defined: &Defined,
    errors: &mut Collector,
) -> Option<Vec<Track>> {
    let mut result = Vec::new();
    let mut all_ok = true;
    type Definitions = HashMap<String, TrackWeight>;
    let lists: [(
        &str,
        &Option<Vec<StringOr<RawTrackRef>>>,
        Option<&Definitions>,
        &str,
    ); 5] = [
        ("track_interface", &raw.track_interface, None, "interface"),
        (
            "track_script",
            &raw.track_script,
            Some(&defined.scripts),
            "script",
        ),
        (
            "track_process",
            &raw.track_process,
            Some(&defined.processes),
            "process",
        ),
        (
            "track_file",
            &raw.track_file,
            Some(&defined.track_files),
            "track_file",
        ),
        (
            "track_probe",
            &raw.track_probe,
            Some(&defined.probes),
            "probe",
        ),
    ];
    for (key, entries, names, section) in lists {
        let list_path = path.key(key);
        let mut seen = HashSet::new();
        for (index, entry) in entries.as_deref().unwrap_or_default().iter().enumerate() {
            let entry_path = list_path.index(index);
            let (name, weight, name_path) = match entry {
                StringOr::Short(name) => (Some(name), None, entry_path.clone()),
                StringOr::Table(table) => {
                    (table.name.as_ref(), table.weight, entry_path.key("name"))
                }
            };
            let Some(name) = required(name, &name_path, "the name of what to track", errors) else {
                all_ok = false;
                continue;
            };
            let target = match (key, names) {
                ("track_interface", _) => match interface_name(name, &name_path, errors) {
                    Some(name) => TrackTarget::Interface(name),
                    None => {
                        all_ok = false;
                        continue;
                    }
                },
                (_, Some(names)) if !names.contains_key(name) => {
                    errors.push(
                        name_path,
                        Problem::Undefined(format!("no [[{section}]] named {name:?}")),
                    );
                    all_ok = false;
                    continue;
                }
                ("track_script", _) => TrackTarget::Script(name.clone()),
                ("track_process", _) => TrackTarget::Process(name.clone()),
                ("track_file", _) => TrackTarget::File(name.clone()),
                _ => TrackTarget::Probe(name.clone()),
            };
            if !seen.insert(name.clone()) {
                errors.push(
                    name_path,
                    Problem::Duplicate(format!("{name:?} is already tracked in {list_path}")),
                );
                all_ok = false;
                continue;
            }
            let weight = match weight {
                Some(weight) => match track_weight(weight, &entry_path.key("weight"), errors) {
                    Some(weight) => weight,
                    None => {
                        all_ok = false;
                        continue;
                    }
                },
                None => names
                    .and_then(|names| names.get(name).copied())
                    .unwrap_or(TrackWeight::FAULT),
            };
            result.push(Track { target, weight });
        }
    }
    all_ok.then_some(result)
}

fn notify(
    entries: [&Option<Vec<String>>; 5],
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<Notify> {
    let keys = [
        "notify",
        "notify_master",
        "notify_backup",
        "notify_fault",
        "notify_stop",
    ];
    let mut commands: [Option<Command>; 5] = Default::default();
    let mut all_ok = true;
    for ((entry, key), slot) in entries.into_iter().zip(keys).zip(commands.iter_mut()) {
        if let Some(argv) = entry {
            match command(argv, &path.key(key), errors) {
                Some(command) => *slot = Some(command),
                None => all_ok = false,
            }
        }
    }
    let [any, master, backup, fault, stop] = commands;
    all_ok.then_some(Notify {
        any,
        master,
        backup,
        fault,
        stop,
    })
}

fn command(argv: &[String], path: &KeyPath, errors: &mut Collector) -> Option<Command> {
    let Some((program, args)) = argv.split_first() else {
        errors.invalid(
            path.clone(),
            "expected the program and its arguments, such as [\"/usr/local/sbin/notify\", \"master\"]",
        );
        return None;
    };
    let program = absolute_path(program, &path.index(0), errors)?;
    Some(Command {
        program,
        args: args.to_vec(),
    })
}

fn garp(raw: &RawInstance, path: &KeyPath, errors: &mut Collector) -> Option<GarpSchedule> {
    let defaults = GarpSchedule::default();
    let Some(garp) = &raw.garp else {
        return Some(defaults);
    };
    let path = path.key("garp");
    let master_repeat = match garp.master_repeat {
        None => Some(defaults.master_repeat),
        Some(value) => match u32::try_from(value).ok().filter(|value| *value <= 255) {
            Some(value) => Some(value),
            None => {
                errors.invalid(
                    path.key("master_repeat"),
                    format!("expected 0..=255, got {value}"),
                );
                None
            }
        },
    };
    let master_delay = duration_or(
        garp.master_delay.as_deref(),
        defaults.master_delay,
        &path.key("master_delay"),
        errors,
    );
    let master_refresh = duration_or(
        garp.master_refresh.as_deref(),
        Duration::ZERO,
        &path.key("master_refresh"),
        errors,
    );
    let interval = duration_or(
        garp.interval.as_deref(),
        defaults.interval,
        &path.key("interval"),
        errors,
    );
    Some(GarpSchedule {
        master_repeat: master_repeat?,
        master_delay: master_delay?,
        master_refresh: Some(master_refresh?).filter(|refresh| !refresh.is_zero()),
        interval: interval?,
    })
}

fn script(raw: &RawScript, path: &KeyPath, errors: &mut Collector) -> Option<Script> {
    let name = required(
        raw.name.as_ref(),
        &path.key("name"),
        "a script name",
        errors,
    )
    .and_then(|name| identifier(name, &path.key("name"), errors));
    let program = required(
        raw.program.as_ref(),
        &path.key("program"),
        "an absolute program path",
        errors,
    )
    .and_then(|program| absolute_path(program, &path.key("program"), errors));
    let (interval, timeout) = interval_and_timeout(
        raw.interval.as_deref(),
        raw.timeout.as_deref(),
        path,
        errors,
    );
    let fall = count(raw.fall, &path.key("fall"), errors);
    let rise = count(raw.rise, &path.key("rise"), errors);
    let weight = track_weight(raw.weight.unwrap_or(0), &path.key("weight"), errors);
    let user = optional(raw.user.as_deref(), |user| {
        non_empty(user, &path.key("user"), errors)
    });
    let group = optional(raw.group.as_deref(), |group| {
        non_empty(group, &path.key("group"), errors)
    });
    Some(Script {
        name: name?,
        command: Command {
            program: program?,
            args: raw.args.clone().unwrap_or_default(),
        },
        interval: interval?,
        timeout: timeout?,
        fall: fall?,
        rise: rise?,
        weight: weight?,
        user: user?,
        group: group?,
    })
}

fn process(raw: &RawProcess, path: &KeyPath, errors: &mut Collector) -> Option<TrackedProcess> {
    let name = required(
        raw.name.as_ref(),
        &path.key("name"),
        "a process entry name",
        errors,
    )
    .and_then(|name| identifier(name, &path.key("name"), errors));
    let matcher = match (&raw.process, &raw.pid_file) {
        (Some(_), Some(_)) => {
            errors.push(
                path.key("pid_file"),
                Problem::Conflict("give either `process` or `pid_file`, not both".into()),
            );
            None
        }
        (None, None) => {
            errors.missing(
                path.key("process"),
                "expected `process` (a command name) or `pid_file`",
            );
            None
        }
        (Some(comm), None) => {
            if comm.is_empty() || comm.len() > 15 {
                errors.invalid(
                    path.key("process"),
                    format!("expected a command name of 1 to 15 bytes as in /proc/PID/comm, got {} bytes", comm.len()),
                );
                None
            } else {
                Some(ProcessMatch::Name(comm.clone()))
            }
        }
        (None, Some(file)) => {
            absolute_path(file, &path.key("pid_file"), errors).map(ProcessMatch::PidFile)
        }
    };
    let min_procs = count(raw.min_procs, &path.key("min_procs"), errors);
    let weight = track_weight(raw.weight.unwrap_or(0), &path.key("weight"), errors);
    Some(TrackedProcess {
        name: name?,
        matcher: matcher?,
        min_procs: min_procs?,
        weight: weight?,
    })
}

fn track_file(raw: &RawTrackFile, path: &KeyPath, errors: &mut Collector) -> Option<TrackFile> {
    let name = required(
        raw.name.as_ref(),
        &path.key("name"),
        "a track file name",
        errors,
    )
    .and_then(|name| identifier(name, &path.key("name"), errors));
    let file = required(
        raw.path.as_ref(),
        &path.key("path"),
        "an absolute file path",
        errors,
    )
    .and_then(|file| absolute_path(file, &path.key("path"), errors));
    let weight = track_weight(raw.weight.unwrap_or(1), &path.key("weight"), errors);
    Some(TrackFile {
        name: name?,
        path: file?,
        weight: weight?,
    })
}

fn probe(raw: &RawProbe, path: &KeyPath, errors: &mut Collector) -> Option<Probe> {
    let name = required(raw.name.as_ref(), &path.key("name"), "a probe name", errors)
        .and_then(|name| identifier(name, &path.key("name"), errors));
    let kind = match raw.kind.as_deref() {
        None => {
            errors.missing(path.key("kind"), "expected \"tcp\" or \"http\"");
            None
        }
        Some("tcp") => tcp_probe(raw, path, errors),
        Some("http") => http_probe(raw, path, errors),
        Some(other) => {
            errors.invalid(
                path.key("kind"),
                format!("expected \"tcp\" or \"http\", got {other:?}"),
            );
            None
        }
    };
    let (interval, timeout) = interval_and_timeout(
        raw.interval.as_deref(),
        raw.timeout.as_deref(),
        path,
        errors,
    );
    let fall = count(raw.fall, &path.key("fall"), errors);
    let rise = count(raw.rise, &path.key("rise"), errors);
    let weight = track_weight(raw.weight.unwrap_or(0), &path.key("weight"), errors);
    Some(Probe {
        name: name?,
        kind: kind?,
        interval: interval?,
        timeout: timeout?,
        fall: fall?,
        rise: rise?,
        weight: weight?,
    })
}

fn tcp_probe(raw: &RawProbe, path: &KeyPath, errors: &mut Collector) -> Option<ProbeKind> {
    let mut ok = forbid(raw.url.is_some(), path, "url", "http", errors);
    ok &= forbid(
        raw.expect_status.is_some(),
        path,
        "expect_status",
        "http",
        errors,
    );
    ok &= forbid(raw.proxy.is_some(), path, "proxy", "http", errors);
    let address = required(
        raw.address.as_ref(),
        &path.key("address"),
        "an IP address",
        errors,
    )
    .and_then(|text| address_of_family(text, None, &path.key("address"), errors));
    let port = required(
        raw.port.as_ref(),
        &path.key("port"),
        "a port 1..=65535",
        errors,
    )
    .and_then(|port| {
        let checked = u16::try_from(*port).ok().filter(|port| *port > 0);
        if checked.is_none() {
            errors.invalid(
                path.key("port"),
                format!("expected a port 1..=65535, got {port}"),
            );
        }
        checked
    });
    ok.then_some(ProbeKind::Tcp {
        address: SocketAddr::new(address?, port?),
    })
}

fn http_probe(raw: &RawProbe, path: &KeyPath, errors: &mut Collector) -> Option<ProbeKind> {
    let mut ok = forbid(raw.address.is_some(), path, "address", "tcp", errors);
    ok &= forbid(raw.port.is_some(), path, "port", "tcp", errors);
    let url = required(
        raw.url.as_ref(),
        &path.key("url"),
        "an http:// or https:// URL",
        errors,
    )
    .and_then(|url| {
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match host {
            Some(rest)
                if !rest.is_empty()
                    && !rest.starts_with('/')
                    && !url.contains(char::is_whitespace) =>
            {
                Some(url.clone())
            }
            _ => {
                errors.invalid(
                    path.key("url"),
                    format!("expected an http:// or https:// URL with a host, got {url:?}"),
                );
                None
            }
        }
    });
    let mut expect_status = Vec::new();
    for (index, status) in raw
        .expect_status
        .as_deref()
        .unwrap_or(&[200])
        .iter()
        .enumerate()
    {
        match u16::try_from(*status)
            .ok()
            .filter(|status| (100..=599).contains(status))
        {
            Some(status) => expect_status.push(status),
            None => {
                errors.invalid(
                    path.key("expect_status").index(index),
                    format!("expected an HTTP status 100..=599, got {status}"),
                );
                ok = false;
            }
        }
    }
    if expect_status.is_empty() && ok {
        errors.invalid(
            path.key("expect_status"),
            "expected at least one HTTP status",
        );
        ok = false;
    }
    let proxy = optional(raw.proxy.as_deref(), |text| {
        match text.parse::<SocketAddr>() {
            Ok(proxy) => Some(proxy),
            Err(_) => {
                errors.invalid(
                    path.key("proxy"),
                    format!(
                        "expected an IP address and port such as \"127.0.0.1:3128\", got {text:?}"
                    ),
                );
                None
            }
        }
    });
    ok.then_some(ProbeKind::Http {
        url: url?,
        expect_status,
        proxy: proxy?,
    })
}

fn sync_group(raw: &RawSyncGroup, path: &KeyPath, errors: &mut Collector) -> Option<SyncGroup> {
    let name = required(
        raw.name.as_ref(),
        &path.key("name"),
        "a sync group name",
        errors,
    )
    .and_then(|name| identifier(name, &path.key("name"), errors));
    let instances = raw.instances.clone().unwrap_or_default();
    if instances.is_empty() {
        errors.missing(
            path.key("instances"),
            "expected the names of at least one instance",
        );
    }
    let notify = notify(
        [
            &raw.notify,
            &raw.notify_master,
            &raw.notify_backup,
            &raw.notify_fault,
            &raw.notify_stop,
        ],
        path,
        errors,
    );
    if instances.is_empty() {
        return None;
    }
    Some(SyncGroup {
        name: name?,
        instances,
        notify: notify?,
    })
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
        if let (Some(interface), Some(family), Some(vrid)) = (&instance.interface, family, vrid) {
            if let Some(first) = routers.insert((interface, family, vrid), index) {
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

fn required<'a, T>(
    value: Option<&'a T>,
    path: &KeyPath,
    expected: &str,
    errors: &mut Collector,
) -> Option<&'a T> {
    if value.is_none() {
        errors.missing(path.clone(), format!("expected {expected}"));
    }
    value
}

/// `Some(None)` when absent, `Some(Some(_))` when present and valid, `None` when invalid.
fn optional<T>(value: Option<&str>, check: impl FnOnce(&str) -> Option<T>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(value) => check(value).map(Some),
    }
}

/// Names of instances, scripts and the like: they appear in logs, metrics and file names.
fn identifier(name: &str, path: &KeyPath, errors: &mut Collector) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        errors.invalid(
            path.clone(),
            format!("{name:?} is not a name; expected 1 to 64 of A-Z a-z 0-9 _ - ."),
        );
    }
    valid.then(|| name.to_owned())
}

/// A Linux interface name (the kernel's `dev_valid_name`).
fn interface_name(name: &str, path: &KeyPath, errors: &mut Collector) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !valid {
        errors.invalid(
            path.clone(),
            format!("{name:?} is not an interface name; expected 1 to 15 bytes without '/', ':' or spaces"),
        );
    }
    valid.then(|| name.to_owned())
}

fn absolute_path(text: &str, path: &KeyPath, errors: &mut Collector) -> Option<PathBuf> {
    if text.starts_with('/') {
        Some(PathBuf::from(text))
    } else {
        errors.invalid(
            path.clone(),
            format!("expected an absolute path, got {text:?}"),
        );
        None
    }
}

fn non_empty(text: &str, path: &KeyPath, errors: &mut Collector) -> Option<String> {
    if text.is_empty() {
        errors.invalid(path.clone(), "expected a non-empty name");
        None
    } else {
        Some(text.to_owned())
    }
}

fn duration_or(
    text: Option<&str>,
    default: Duration,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<Duration> {
    match text {
        None => Some(default),
        Some(text) => match duration::parse(text) {
            Ok(duration) => Some(duration),
            Err(reason) => {
                errors.invalid(path.clone(), reason);
                None
            }
        },
    }
}

/// A check's interval (default 1 s) and timeout (default the interval), both non-zero.
fn interval_and_timeout(
    interval: Option<&str>,
    timeout: Option<&str>,
    path: &KeyPath,
    errors: &mut Collector,
) -> (Option<Duration>, Option<Duration>) {
    let interval = duration_or(
        interval,
        Duration::from_secs(1),
        &path.key("interval"),
        errors,
    )
    .and_then(|interval| non_zero(interval, &path.key("interval"), errors));
    let timeout = match timeout {
        None => interval,
        Some(text) => duration_or(Some(text), Duration::ZERO, &path.key("timeout"), errors)
            .and_then(|timeout| non_zero(timeout, &path.key("timeout"), errors)),
    };
    (interval, timeout)
}

fn non_zero(duration: Duration, path: &KeyPath, errors: &mut Collector) -> Option<Duration> {
    if duration.is_zero() {
        errors.invalid(path.clone(), "expected a duration above zero");
        None
    } else {
        Some(duration)
    }
}

/// A count such as `fall` or `min_procs`: default 1, at least 1.
fn count(value: Option<i64>, path: &KeyPath, errors: &mut Collector) -> Option<u32> {
    let value = value.unwrap_or(1);
    let checked = u32::try_from(value)
        .ok()
        .filter(|value| (1..=1_000_000).contains(value));
    if checked.is_none() {
        errors.invalid(path.clone(), format!("expected 1..=1000000, got {value}"));
    }
    checked
}

fn track_weight(value: i64, path: &KeyPath, errors: &mut Collector) -> Option<TrackWeight> {
    let weight = i16::try_from(value).ok().and_then(TrackWeight::new);
    if weight.is_none() {
        errors.invalid(
            path.clone(),
            format!("expected a weight -253..=253 (0 means fault on failure), got {value}"),
        );
    }
    weight
}

fn address_of_family(
    text: &str,
    family: Option<Family>,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<IpAddr> {
    let Ok(address) = text.parse::<IpAddr>() else {
        errors.invalid(path.clone(), format!("{text:?} is not an IP address"));
        return None;
    };
    match family {
        Some(family) if family != family_of(address) => {
            errors.push(
                path.clone(),
                Problem::Conflict(format!(
                    "{address} is {} but the instance's virtual addresses are {}",
                    family_name(family_of(address)),
                    family_name(family),
                )),
            );
            None
        }
        _ => Some(address),
    }
}

fn forbid(present: bool, path: &KeyPath, key: &str, kind: &str, errors: &mut Collector) -> bool {
    if present {
        errors.push(
            path.key(key),
            Problem::Conflict(format!("`{key}` belongs to kind = \"{kind}\" probes")),
        );
    }
    !present
}

pub(crate) fn family_of(address: IpAddr) -> Family {
    match address {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}
