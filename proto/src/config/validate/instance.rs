//! Checks of one `[[instance]]`: identity, protocol values, addresses, tracking, GARP.
//!
//! Each check reports what it finds and yields `None` for a value it refused, so one instance can
//! report many problems at once.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use hav_vrrp::{AdvertInterval, Auth, Family, Priority, V3Checksum, Version, VrId};

use super::Defined;
use super::network;
use super::values::{
    address_of_family, duration_or, family_name, family_of, identifier, interface_name, notify,
    optional, required, track_weight,
};
use crate::config::duration;

/// The longest `connection_drain`: a node stops or resigns within this, whatever its clients do.
const MAX_CONNECTION_DRAIN: Duration = Duration::from_secs(3600);
use crate::config::error::{Collector, KeyPath, Problem};
use crate::config::node::{
    GarpSchedule, Instance, Track, TrackTarget, TrackWeight, Transport, UnicastPeer, Vip,
};
use crate::config::raw::{RawInstance, RawVip, StringOr};

pub(super) fn instance(
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
    .and_then(|value| {
        let vrid = u8::try_from(*value).ok().and_then(VrId::new);
        if vrid.is_none() {
            errors.invalid(
                path.key("vrid"),
                format!("expected a virtual router id 1..=255, got {value}"),
            );
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
    let connection_drain = duration_or(
        raw.connection_drain.as_deref(),
        Duration::ZERO,
        &path.key("connection_drain"),
        errors,
    )
    .and_then(|drain| {
        if drain > MAX_CONNECTION_DRAIN {
            errors.push(
                path.key("connection_drain"),
                Problem::Invalid(format!(
                    "at most {}s (an operator's drain can wait longer)",
                    MAX_CONNECTION_DRAIN.as_secs()
                )),
            );
            None
        } else {
            Some(drain)
        }
    });
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
    let vmac = network::vmac(raw, path, interface.as_deref(), family, vrid, errors);
    let routes = network::routes(raw, path, family, errors);
    let rules = network::rules(raw, path, family, errors);

    let mut instance = Instance {
        name: name?,
        interface: interface?,
        vrid: vrid?,
        version: version?,
        family: family?,
        priority: priority?,
        advert_interval: advert_interval?,
        preempt: raw.preempt.unwrap_or(true),
        preempt_delay: preempt_delay?,
        connection_drain: connection_drain?,
        accept: raw.accept.unwrap_or(true),
        checksum: checksum?,
        source_address: source_address?,
        transport: transport?,
        auth: auth?,
        vips: vips?,
        track: track?,
        notify: notify?,
        smtp_alert: raw.smtp_alert,
        garp: garp?,
        // Set by the strict-mode pass over the whole document.
        strict: false,
        vmac: vmac?,
        routes: routes?,
        rules: rules?,
    };
    network::place_vips_on_vmac(raw, instance.vmac.as_ref(), &mut instance.vips);
    network::vmac_fits(&instance, path, errors).then_some(instance)
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
        if address.is_unspecified() || address.is_multicast() {
            errors.invalid(
                address_path,
                format!("{address} is not the unicast address of a peer"),
            );
            all_ok = false;
            continue;
        }
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
    // (key, references, definitions they resolve to, the section defining them)
    let lists = [
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
