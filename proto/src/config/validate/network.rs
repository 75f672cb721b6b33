//! Checks of an instance's network extras: `[instance.vmac]`, `[[instance.route]]`,
//! `[[instance.rule]]`.
//!
//! A macvlan name fits the kernel and is not the instance's own interface; IPv6 needs
//! `xmit_base` (adverts from a macvlan would need the base's link-local address on it, which a
//! backup would then answer for with the virtual MAC). Routes and rules have one family, the
//! instance's, prefixes without host bits, and a table other than 0.

use std::net::IpAddr;

use hav_vrrp::{Family, VrId};

use super::values::{family_name, family_of, interface_name, optional};
use crate::config::error::{Collector, KeyPath, Problem};
use crate::config::network::{MAIN_TABLE, Prefix, RouteKind, VirtualRoute, VirtualRule, Vmac};
use crate::config::node::{Instance, Vip};
use crate::config::raw::{RawInstance, RawRoute, RawRule, StringOr};

/// `[instance.vmac]`: `Some(None)` when absent, `None` when refused.
pub(super) fn vmac(
    raw: &RawInstance,
    path: &KeyPath,
    interface: Option<&str>,
    family: Option<Family>,
    vrid: Option<VrId>,
    errors: &mut Collector,
) -> Option<Option<Vmac>> {
    let Some(table) = &raw.vmac else {
        return Some(None);
    };
    let path = path.key("vmac");
    let name = match (&table.name, family, vrid) {
        (Some(name), _, _) => interface_name(name, &path.key("name"), errors)?,
        (None, Some(family), Some(vrid)) => Vmac::default_name(family, vrid),
        // The family or VRID was refused already.
        (None, _, _) => return None,
    };
    if interface == Some(name.as_str()) {
        errors.push(
            path.key("name"),
            Problem::Conflict(format!(
                "{name:?} is the instance's own interface; the macvlan needs a name of its own"
            )),
        );
        return None;
    }
    let xmit_base = table.xmit_base.unwrap_or(false);
    if family == Some(Family::V6) && !xmit_base {
        errors.push(
            path.key("xmit_base"),
            Problem::Conflict(
                "an IPv6 instance with a vmac needs xmit_base = true (adverts from the base \
                 interface's link-local address)"
                    .into(),
            ),
        );
        return None;
    }
    Some(Some(Vmac { name, xmit_base }))
}

/// A vmac and `connection_drain` exclude each other: a drain keeps the VIPs on the old master
/// while the new one serves them, and with a vmac both would then send from one MAC (switches
/// would follow whichever sent last). `false` (reported) when both are set.
pub(super) fn vmac_fits(instance: &Instance, path: &KeyPath, errors: &mut Collector) -> bool {
    if instance.vmac.is_some() && !instance.connection_drain.is_zero() {
        errors.push(
            path.key("connection_drain"),
            Problem::Conflict(
                "not with [instance.vmac]: the old master would keep serving from the virtual \
                 MAC the new master answers from"
                    .into(),
            ),
        );
        return false;
    }
    true
}

/// Each macvlan name belongs to one instance and is no instance's interface: two instances on
/// one name would replace each other's macvlan at every link change.
pub(super) fn check_vmac_names(instances: &[Option<Instance>], errors: &mut Collector) {
    let root = KeyPath::root().key("instance");
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (index, instance) in instances.iter().enumerate() {
        let Some(vmac) = instance
            .as_ref()
            .and_then(|instance| instance.vmac.as_ref())
        else {
            continue;
        };
        let path = root.index(index).key("vmac").key("name");
        if let Some(first) = seen.insert(&vmac.name, index) {
            errors.push(
                path,
                Problem::Duplicate(format!(
                    "macvlan {:?} is already {}'s; give one of them another `name`",
                    vmac.name,
                    root.index(first)
                )),
            );
        } else if let Some(other) = (instances.iter()).position(|other| {
            other
                .as_ref()
                .is_some_and(|other| other.interface == vmac.name)
        }) {
            errors.push(
                path,
                Problem::Conflict(format!(
                    "{:?} is the interface of {}; the macvlan needs a name of its own",
                    vmac.name,
                    root.index(other)
                )),
            );
        }
    }
}

/// With a vmac, the VIPs written without a `dev` of their own go on the macvlan.
pub(super) fn place_vips_on_vmac(raw: &RawInstance, vmac: Option<&Vmac>, vips: &mut [Vip]) {
    let Some(vmac) = vmac else { return };
    let entries = raw.vips.as_deref().unwrap_or_default();
    for (vip, entry) in vips.iter_mut().zip(entries) {
        let own_dev = matches!(entry, StringOr::Table(table) if table.dev.is_some());
        if !own_dev {
            vip.dev = vmac.name.clone();
        }
    }
}

/// `[[instance.route]]`: `None` when any was refused.
pub(super) fn routes(
    raw: &RawInstance,
    path: &KeyPath,
    family: Option<Family>,
    errors: &mut Collector,
) -> Option<Vec<VirtualRoute>> {
    let entries = raw.route.as_deref().unwrap_or_default();
    let path = path.key("route");
    let checked: Vec<Option<VirtualRoute>> = (entries.iter().enumerate())
        .map(|(index, entry)| route(entry, &path.index(index), family, errors))
        .collect();
    let routes: Vec<VirtualRoute> = checked.into_iter().collect::<Option<_>>()?;
    for (index, route) in routes.iter().enumerate() {
        if let Some(first) = routes[..index]
            .iter()
            .position(|other| same_route(other, route))
        {
            errors.push(
                path.index(index),
                Problem::Duplicate(format!(
                    "route to {} in table {} is already at {}",
                    route.to,
                    route.table,
                    path.index(first)
                )),
            );
            return None;
        }
    }
    Some(routes)
}

/// What the kernel tells routes apart by.
fn same_route(a: &VirtualRoute, b: &VirtualRoute) -> bool {
    a.to == b.to && a.table == b.table && a.metric == b.metric
}

fn route(
    raw: &RawRoute,
    path: &KeyPath,
    family: Option<Family>,
    errors: &mut Collector,
) -> Option<VirtualRoute> {
    let to = match &raw.to {
        Some(text) => prefix(text, &path.key("to"), family, errors),
        None => {
            errors.missing(
                path.key("to"),
                "expected a destination such as \"203.0.113.0/24\" or \"default\"",
            );
            None
        }
    };
    let route_family = to.map(|to| to.family()).or(family);
    let kind = match raw.kind.as_deref() {
        None => Some(RouteKind::Unicast),
        Some(text) => RouteKind::parse(text).or_else(|| {
            errors.invalid(
                path.key("type"),
                format!(
                    "{text:?} is not a route type; expected \"unicast\", \"blackhole\", \
                     \"unreachable\" or \"prohibit\""
                ),
            );
            None
        }),
    };
    let via = optional(raw.via.as_deref(), |text| {
        address_in(text, route_family, &path.key("via"), errors)
    });
    let src = optional(raw.src.as_deref(), |text| {
        address_in(text, route_family, &path.key("src"), errors)
    });
    let dev = optional(raw.dev.as_deref(), |name| {
        interface_name(name, &path.key("dev"), errors)
    });
    let table = table(raw.table, &path.key("table"), errors);
    let metric = match raw.metric {
        None => Some(None),
        Some(value) => match u32::try_from(value) {
            Ok(metric) => Some(Some(metric)),
            Err(_) => {
                errors.invalid(
                    path.key("metric"),
                    format!("expected 0..=4294967295, got {value}"),
                );
                None
            }
        },
    };
    let (to, kind, via, src, dev, table, metric) = (to?, kind?, via?, src?, dev?, table?, metric?);
    match kind {
        RouteKind::Unicast if via.is_none() && dev.is_none() => {
            errors.push(
                path.clone(),
                Problem::Missing("a unicast route needs `via`, `dev` or both".into()),
            );
            return None;
        }
        RouteKind::Unicast => {}
        other => {
            for (key, present) in [("via", via.is_some()), ("dev", dev.is_some())] {
                if present {
                    errors.push(
                        path.key(key),
                        Problem::Conflict(format!(
                            "a {} route forwards nowhere; `{key}` belongs to unicast routes",
                            other.name()
                        )),
                    );
                    return None;
                }
            }
        }
    }
    Some(VirtualRoute {
        to,
        kind,
        via,
        dev,
        src,
        table,
        metric,
    })
}

/// `[[instance.rule]]`: `None` when any was refused.
pub(super) fn rules(
    raw: &RawInstance,
    path: &KeyPath,
    family: Option<Family>,
    errors: &mut Collector,
) -> Option<Vec<VirtualRule>> {
    let entries = raw.rule.as_deref().unwrap_or_default();
    let path = path.key("rule");
    let checked: Vec<Option<VirtualRule>> = (entries.iter().enumerate())
        .map(|(index, entry)| rule(entry, &path.index(index), family, errors))
        .collect();
    let rules: Vec<VirtualRule> = checked.into_iter().collect::<Option<_>>()?;
    for (index, rule) in rules.iter().enumerate() {
        if let Some(first) = rules[..index].iter().position(|other| other == rule) {
            errors.push(
                path.index(index),
                Problem::Duplicate(format!("the same rule is already at {}", path.index(first))),
            );
            return None;
        }
    }
    Some(rules)
}

fn rule(
    raw: &RawRule,
    path: &KeyPath,
    family: Option<Family>,
    errors: &mut Collector,
) -> Option<VirtualRule> {
    let from = optional(raw.from.as_deref(), |text| {
        prefix(text, &path.key("from"), family, errors)
    });
    let to = optional(raw.to.as_deref(), |text| {
        prefix(text, &path.key("to"), family, errors)
    });
    let table = match raw.table {
        Some(_) => table(raw.table, &path.key("table"), errors),
        None => {
            errors.missing(
                path.key("table"),
                "expected the routing table to look up, 1..",
            );
            None
        }
    };
    let number = |value: Option<i64>, key: &str, errors: &mut Collector| match value {
        None => Some(None),
        Some(value) => match u32::try_from(value) {
            Ok(number) => Some(Some(number)),
            Err(_) => {
                errors.invalid(
                    path.key(key),
                    format!("expected 0..=4294967295, got {value}"),
                );
                None
            }
        },
    };
    let priority = number(raw.priority, "priority", errors);
    let fwmark = number(raw.fwmark, "fwmark", errors);
    let iif = optional(raw.iif.as_deref(), |name| {
        interface_name(name, &path.key("iif"), errors)
    });
    let oif = optional(raw.oif.as_deref(), |name| {
        interface_name(name, &path.key("oif"), errors)
    });
    let (from, to, table, priority, fwmark, iif, oif) =
        (from?, to?, table?, priority?, fwmark?, iif?, oif?);
    let rule_family = from.or(to).map(|prefix| prefix.family()).or(family)?;
    Some(VirtualRule {
        family: rule_family,
        from,
        to,
        table,
        priority,
        fwmark,
        iif,
        oif,
    })
}

fn table(value: Option<i64>, path: &KeyPath, errors: &mut Collector) -> Option<u32> {
    match value {
        None => Some(MAIN_TABLE),
        Some(value) => match u32::try_from(value) {
            Ok(table) if table > 0 => Some(table),
            _ => {
                errors.invalid(
                    path.clone(),
                    format!("expected a routing table 1..=4294967295 (254 is main), got {value}"),
                );
                None
            }
        },
    }
}

/// `address/len` with no host bits, a bare address (a host prefix) or `default`, of `family`.
fn prefix(
    text: &str,
    path: &KeyPath,
    family: Option<Family>,
    errors: &mut Collector,
) -> Option<Prefix> {
    let expected = "expected a prefix such as \"203.0.113.0/24\", an address, or \"default\"";
    if text == "default" {
        let family = family?;
        let address = match family {
            Family::V4 => IpAddr::from([0u8; 4]),
            Family::V6 => IpAddr::from([0u16; 8]),
        };
        return Some(Prefix { address, len: 0 });
    }
    let (address_text, len_text) = match text.split_once('/') {
        Some((address, len)) => (address, Some(len)),
        None => (text, None),
    };
    let Ok(address) = address_text.parse::<IpAddr>() else {
        errors.invalid(
            path.clone(),
            format!("{text:?} is not a prefix; {expected}"),
        );
        return None;
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    let len = match len_text {
        None => max,
        Some(len) => match len.parse::<u8>() {
            Ok(len) if len <= max => len,
            _ => {
                errors.invalid(
                    path.clone(),
                    format!("{text:?} has a bad prefix length; expected 0..={max}"),
                );
                return None;
            }
        },
    };
    if let Some(family) = family
        && family != family_of(address)
    {
        errors.push(
            path.clone(),
            Problem::Conflict(format!(
                "{text} is {} but the instance is {}",
                family_name(family_of(address)),
                family_name(family)
            )),
        );
        return None;
    }
    if masked(address, len) != address {
        errors.invalid(
            path.clone(),
            format!(
                "{text} has host bits set; the prefix is {}/{len}",
                masked(address, len)
            ),
        );
        return None;
    }
    Some(Prefix { address, len })
}

fn masked(address: IpAddr, len: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    }
}

fn address_in(
    text: &str,
    family: Option<Family>,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<IpAddr> {
    let Ok(address) = text.parse::<IpAddr>() else {
        errors.invalid(path.clone(), format!("{text:?} is not an IP address"));
        return None;
    };
    if let Some(family) = family
        && family != family_of(address)
    {
        errors.push(
            path.clone(),
            Problem::Conflict(format!(
                "{address} is {} but the route is {}",
                family_name(family_of(address)),
                family_name(family)
            )),
        );
        return None;
    }
    Some(address)
}
