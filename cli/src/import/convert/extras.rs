//! keepalived's `use_vmac`/`vmac_xmit_base`, `virtual_routes`, `virtual_rules` and strict mode
//! (`vrrp_strict`, `strict_mode`) as hav's `[instance.vmac]`, `[[instance.route]]`,
//! `[[instance.rule]]` and `strict`.
//!
//! Only what the schema accepts is written: a route or rule with a word hav does not take (a
//! named table other than main, local and default, `scope`, `onlink`, a mark mask, an action
//! other than a table lookup...) is left out whole with a finding naming the word; strict mode is
//! carried over only to an instance that meets it (keepalived refuses the rest too), else a
//! finding names what stands in its way. An IPv6 vmac sends from the base interface.

use std::net::IpAddr;

use super::{Converter, block, first_arg, parse_bool, parse_int};
use crate::import::draft::{InstanceDraft, RouteDraft, RuleDraft, VmacDraft};
use crate::import::parser::Statement;

impl Converter {
    /// One of the instance's keywords this module converts.
    pub(super) fn instance_extra(&mut self, item: &Statement, instance: &mut InstanceDraft) {
        let word = first_arg(item);
        match item.keyword.as_str() {
            "use_vmac" => {
                let vmac = instance.extras.vmac.get_or_insert_with(VmacDraft::default);
                match word {
                    Some(name) if interface_name(name) => vmac.name = Some(name.to_owned()),
                    Some(_) => self.not_converted(
                        item,
                        "not an interface name (1 to 15 bytes without '/', ':' or spaces); the \
                         default name vrrp.VRID is used",
                    ),
                    None => {}
                }
            }
            "vmac_xmit_base" => {
                instance
                    .extras
                    .vmac
                    .get_or_insert_with(VmacDraft::default)
                    .xmit_base = true;
            }
            "virtual_routes" => {
                for entry in block(item) {
                    match route(entry) {
                        Ok(route) => instance.extras.routes.push(route),
                        Err(reason) => self.not_converted(entry, &reason),
                    }
                }
            }
            "virtual_rules" => {
                for entry in block(item) {
                    match rule(entry) {
                        Ok(rule) => instance.extras.rules.push(rule),
                        Err(reason) => self.not_converted(entry, &reason),
                    }
                }
            }
            "strict_mode" => {
                instance.extras.strict_mode = Some(word.is_none_or(|w| parse_bool(w) == Some(true)))
            }
            _ => self.not_converted(item, "no hav equivalent"),
        }
    }

    /// After the whole instance is read: the vmac's sending side, the routes' and rules' family,
    /// and strict mode (the instance's `strict_mode`, else `vrrp_strict`).
    pub(super) fn finish_extras(
        &mut self,
        statement: &Statement,
        instance: &mut InstanceDraft,
        global_strict: bool,
        earlier: &[InstanceDraft],
    ) {
        let v6 = instance.is_v6();
        if let Some(name) = vmac_name(instance)
            && let Some(other) = (earlier.iter()).find(|other| {
                vmac_name(other) == Some(name.clone()) || other.interface.as_deref() == Some(&name)
            })
        {
            instance.extras.vmac = None;
            self.not_converted(
                statement,
                &format!(
                    "use_vmac: the macvlan name {name:?} is already {}'s; give this one its own \
                     name (use_vmac NAME)",
                    other.name
                ),
            );
        }
        if let Some(vmac) = &mut instance.extras.vmac
            && v6
            && !vmac.xmit_base
        {
            vmac.xmit_base = true;
            self.note(
                statement,
                "IPv6 with use_vmac: hav sends the adverts from the base interface \
                 (vmac_xmit_base), its link-local address never on the macvlan",
            );
        }
        let family_of = |text: &str| -> Option<bool> {
            let address = text.split_once('/').map_or(text, |(address, _)| address);
            address
                .parse::<IpAddr>()
                .ok()
                .map(|address| address.is_ipv6())
        };
        let routes = std::mem::take(&mut instance.extras.routes);
        for route in routes {
            let route_v6 = if route.to == "default" {
                Some(v6)
            } else {
                family_of(&route.to)
            };
            let same = |address: Option<IpAddr>| address.is_none_or(|a| a.is_ipv6() == v6);
            if route_v6 == Some(v6) && same(route.via) && same(route.src) {
                if !instance.extras.routes.contains(&route) {
                    instance.extras.routes.push(route);
                }
            } else {
                self.not_converted(
                    statement,
                    &format!(
                        "route to {}: a hav instance holds routes of its own family only",
                        route.to
                    ),
                );
            }
        }
        if !instance.extras.routes.is_empty() || !instance.extras.rules.is_empty() {
            self.note(
                statement,
                "virtual routes and rules are added when the instance becomes master and removed \
                 when it leaves; hav does not watch them meanwhile (one deleted by hand stays \
                 deleted until the next takeover)",
            );
        }
        let rules = std::mem::take(&mut instance.extras.rules);
        for rule in rules {
            let rule_v6 = rule
                .from
                .as_deref()
                .or(rule.to.as_deref())
                .and_then(family_of);
            if rule_v6.is_none_or(|rule_v6| rule_v6 == v6) {
                if !instance.extras.rules.contains(&rule) {
                    instance.extras.rules.push(rule);
                }
            } else {
                self.not_converted(
                    statement,
                    "rule: a hav instance holds rules of its own family only",
                );
            }
        }
        if !instance.extras.strict_mode.unwrap_or(global_strict) {
            return;
        }
        let mut refused = Vec::new();
        if !instance.peers.is_empty() {
            refused.push("unicast peers");
        }
        if instance.auth_pass.is_some() {
            refused.push("authentication");
        }
        if instance.preempt_delay_ms.is_some_and(|delay| delay > 0) {
            refused.push("a preempt delay");
        }
        if instance.version == 2 && instance.accept.is_some() {
            refused.push("accept/no_accept with VRRPv2");
        }
        let link_local_first = instance.vips.first().is_none_or(|vip| match vip.address {
            IpAddr::V6(address) => address.segments()[0] & 0xffc0 == 0xfe80,
            IpAddr::V4(_) => true,
        });
        if !link_local_first {
            refused.push("a first IPv6 address that is not link-local");
        }
        if refused.is_empty() {
            instance.extras.strict = true;
            self.note(
                statement,
                "strict mode: adverts whose address list differs are dropped, and VIP traffic \
                 is accepted only by the address owner unless accept is set (hav drops it with \
                 its own nftables table)",
            );
        } else {
            self.not_converted(
                statement,
                &format!(
                    "strict mode is not carried over: this instance has {}, which strict mode \
                     refuses",
                    refused.join(", ")
                ),
            );
        }
    }
}

/// The name of the instance's macvlan as the schema will give it, if it has one.
fn vmac_name(instance: &InstanceDraft) -> Option<String> {
    let vmac = instance.extras.vmac.as_ref()?;
    match &vmac.name {
        Some(name) => Some(name.clone()),
        None => {
            let prefix = if instance.is_v6() { "vrrp6" } else { "vrrp" };
            Some(format!("{prefix}.{}", instance.vrid?))
        }
    }
}

/// The kernel's interface names, as the schema checks them.
fn interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// `[type] [src ADDR] [to] PREFIX [via|gw ADDR] [dev NAME] [table N] [metric N]`.
fn route(entry: &Statement) -> Result<RouteDraft, String> {
    let words: Vec<&str> = std::iter::once(entry.keyword.as_str())
        .chain(entry.words())
        .collect();
    let mut route = RouteDraft::default();
    let mut to = None;
    let mut index = 0;
    while index < words.len() {
        let word = words[index];
        let value = words.get(index + 1).copied();
        let mut takes_value = true;
        match (word, value) {
            ("blackhole" | "unreachable" | "prohibit", _) if to.is_none() => {
                route.kind = Some(match word {
                    "blackhole" => "blackhole",
                    "unreachable" => "unreachable",
                    _ => "prohibit",
                });
                takes_value = false;
            }
            ("unicast", _) if to.is_none() => takes_value = false,
            // hav never watches the routes it added: not tracking is all it does.
            ("no_track", _) => takes_value = false,
            ("src", Some(address)) => route.src = Some(address_of(address)?),
            ("to", _) => takes_value = false,
            ("via" | "gw", Some(address)) => route.via = Some(address_of(address)?),
            ("dev", Some(dev)) if interface_name(dev) => route.dev = Some(dev.to_owned()),
            ("table", Some(table)) => route.table = Some(table_of(table)?),
            ("metric" | "preference" | "priority", Some(metric)) => {
                route.metric = Some(
                    parse_int(metric)
                        .filter(|metric| u32::try_from(*metric).is_ok())
                        .ok_or_else(|| format!("{metric:?} is not a metric"))?,
                )
            }
            (prefix, _) if to.is_none() && (prefix == "default" || prefix_ok(prefix)) => {
                to = Some(prefix.to_owned());
                takes_value = false;
            }
            _ => {
                return Err(format!(
                    "hav takes a destination, type (blackhole, unreachable, prohibit), src, \
                     via, dev, table and metric; {word:?} is none of these (or its value is \
                     not one hav takes): add the route from notify_master / notify_backup \
                     programs instead"
                ));
            }
        }
        index += if takes_value { 2 } else { 1 };
    }
    route.to = to.ok_or("no destination prefix")?;
    match route.kind {
        None if route.via.is_none() && route.dev.is_none() => {
            Err("a route needs via or dev (or a type such as blackhole)".into())
        }
        Some(kind) if route.via.is_some() || route.dev.is_some() => Err(format!(
            "a {kind} route forwards nowhere; hav takes no via or dev with it"
        )),
        _ => Ok(route),
    }
}

/// `[from PREFIX|all] [to PREFIX] [fwmark N] [iif NAME] [oif NAME] [priority N] table N`.
fn rule(entry: &Statement) -> Result<RuleDraft, String> {
    let words: Vec<&str> = std::iter::once(entry.keyword.as_str())
        .chain(entry.words())
        .collect();
    let mut rule = RuleDraft::default();
    let mut table = None;
    for pair in words.chunks(2) {
        let [word, value] = pair else {
            return Err(format!("{:?} has no value", pair[0]));
        };
        match *word {
            "from" if *value == "all" => {}
            "from" if prefix_ok(value) => rule.from = Some((*value).to_owned()),
            "to" if *value == "all" => {}
            "to" if prefix_ok(value) => rule.to = Some((*value).to_owned()),
            "table" | "lookup" => table = Some(table_of(value)?),
            "priority" | "preference" | "pref" | "order" => {
                rule.priority =
                    Some(number(value).ok_or_else(|| format!("{value:?} is not a priority"))?)
            }
            "fwmark" => {
                rule.fwmark =
                    Some(number(value).ok_or_else(|| {
                        format!("fwmark {value:?}: hav takes a mark without mask")
                    })?)
            }
            "iif" | "iifname" if interface_name(value) => rule.iif = Some((*value).to_owned()),
            "oif" | "oifname" if interface_name(value) => rule.oif = Some((*value).to_owned()),
            _ => {
                return Err(format!(
                    "hav takes from, to, fwmark, iif, oif, priority and table (a lookup); \
                     {word:?} is none of these (or its value is not one hav takes): add the \
                     rule from notify_master / notify_backup programs instead"
                ));
            }
        }
    }
    if rule
        .from
        .as_deref()
        .zip(rule.to.as_deref())
        .is_some_and(|(from, to)| from.contains(':') != to.contains(':'))
    {
        return Err("from and to are of different families".into());
    }
    rule.table = table.ok_or("hav takes rules that look up a table; this one names none")?;
    Ok(rule)
}

fn address_of(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// `address[/len]` with no host bits set.
fn prefix_ok(text: &str) -> bool {
    let (address, len) = match text.split_once('/') {
        Some((address, len)) => (address, Some(len)),
        None => (text, None),
    };
    let Ok(address) = address.parse::<IpAddr>() else {
        return false;
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    let Some(len) = len.map_or(Some(max), |len| {
        len.parse::<u32>().ok().filter(|l| *l <= max)
    }) else {
        return false;
    };
    match address {
        IpAddr::V4(v4) => u32::from(v4) & !u32::MAX.checked_shl(32 - len).unwrap_or(0) == 0,
        IpAddr::V6(v6) => u128::from(v6) & !u128::MAX.checked_shl(128 - len).unwrap_or(0) == 0,
    }
}

/// A table number, or the names every system has.
fn table_of(text: &str) -> Result<i64, String> {
    match text {
        "main" => Ok(254),
        "default" => Ok(253),
        "local" => Ok(255),
        _ => number(text).filter(|table| *table > 0).ok_or_else(|| {
            format!(
                "table {text:?}: hav takes a table number (1..), main, default or local, not \
                     names from rt_tables"
            )
        }),
    }
}

/// A 32-bit unsigned number, decimal or `0x` hex.
fn number(text: &str) -> Option<i64> {
    let value = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok()?,
        None => text.parse::<i64>().ok()?,
    };
    u32::try_from(value).is_ok().then_some(value)
}
