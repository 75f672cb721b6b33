//! The routes and policy rules an instance holds while master (keepalived's `virtual_routes` and
//! `virtual_rules`), through rtnetlink.
//!
//! Adding and removing are idempotent: adding a route or rule that is there (`EEXIST`) and
//! removing one that is not (`ESRCH`, `ENOENT`, or a `dev` that is gone) succeed. A call on several
//! tries every one and returns the first failure after all were tried. Requests are answered by
//! the kernel at once (no program runs), like the VIPs' own. Routes and rules are serialisable
//! so the journal can list them for the crash cleanup.

use std::fmt;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteMessage, RouteScope, RouteType};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use super::vip::errno;
use hav_proto::config::{RouteKind, VirtualRoute, VirtualRule};

/// One route, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub to: IpAddr,
    pub prefix_len: u8,
    /// `unicast`, `blackhole`, `unreachable` or `prohibit`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    pub table: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

impl From<&VirtualRoute> for RouteSpec {
    fn from(route: &VirtualRoute) -> Self {
        Self {
            to: route.to.address,
            prefix_len: route.to.len,
            kind: route.kind.name().to_owned(),
            via: route.via,
            dev: route.dev.clone(),
            src: route.src,
            table: route.table,
            metric: route.metric,
        }
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != "unicast" {
            write!(f, "{} ", self.kind)?;
        }
        write!(f, "{}/{}", self.to, self.prefix_len)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        write!(f, " table {}", self.table)?;
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        Ok(())
    }
}

/// One policy rule, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub ipv6: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<(IpAddr, u8)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<(IpAddr, u8)>,
    pub table: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oif: Option<String>,
}

impl From<&VirtualRule> for RuleSpec {
    fn from(rule: &VirtualRule) -> Self {
        Self {
            ipv6: rule.family == hav_vrrp::Family::V6,
            from: rule.from.map(|prefix| (prefix.address, prefix.len)),
            to: rule.to.map(|prefix| (prefix.address, prefix.len)),
            table: rule.table,
            priority: rule.priority,
            fwmark: rule.fwmark,
            iif: rule.iif.clone(),
            oif: rule.oif.clone(),
        }
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(priority) = self.priority {
            write!(f, "priority {priority} ")?;
        }
        match self.from {
            Some((address, len)) => write!(f, "from {address}/{len}")?,
            None => f.write_str("from all")?,
        }
        if let Some((address, len)) = self.to {
            write!(f, " to {address}/{len}")?;
        }
        if let Some(mark) = self.fwmark {
            write!(f, " fwmark {mark:#x}")?;
        }
        if let Some(iif) = &self.iif {
            write!(f, " iif {iif}")?;
        }
        if let Some(oif) = &self.oif {
            write!(f, " oif {oif}")?;
        }
        write!(f, " table {}", self.table)
    }
}

/// Errors of route and rule management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The route is not one the kernel could take.
    #[error("route {route}: {reason}")]
    Invalid { route: String, reason: String },
    /// The route's `dev` does not exist (on add; on remove this is success).
    #[error("route {route}: interface not found")]
    NoSuchInterface { route: String },
    /// The kernel refused the request.
    #[error("{what}: {op} failed")]
    Netlink {
        /// `add`, `remove` or `link lookup`.
        op: &'static str,
        /// The route or rule.
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Adds and removes routes and rules over one rtnetlink connection.
#[derive(Debug, Clone)]
pub struct RouteManager {
    handle: Handle,
}

impl RouteManager {
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }

    /// Adds every rule, then every route (a present one succeeds).
    pub async fn add(&self, rules: &[RuleSpec], routes: &[RouteSpec]) -> Result<(), RouteError> {
        let mut first_error = None;
        for rule in rules {
            let mut request = self.handle.rule().add();
            *request.message_mut() = rule_message(rule);
            match request.execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(source) => {
                    first_error.get_or_insert(RouteError::Netlink {
                        op: "add",
                        what: format!("rule {rule}"),
                        source,
                    });
                }
            }
        }
        for route in routes {
            let result = match self.route_message(route).await {
                Ok(Some(message)) => match self.handle.route().add(message).execute().await {
                    Ok(()) => Ok(()),
                    Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
                    Err(source) => Err(RouteError::Netlink {
                        op: "add",
                        what: format!("route {route}"),
                        source,
                    }),
                },
                Ok(None) => Err(RouteError::NoSuchInterface {
                    route: route.to_string(),
                }),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes every route, then every rule (an absent one succeeds). Returns what was there
    /// and is gone now, as the kernel answered each deletion.
    pub async fn remove(
        &self,
        rules: &[RuleSpec],
        routes: &[RouteSpec],
    ) -> Result<Vec<String>, RouteError> {
        let mut first_error = None;
        let mut removed = Vec::new();
        for route in routes {
            let message = match self.route_message(route).await {
                Ok(Some(message)) => message,
                // Its interface is gone, and the route with it.
                Ok(None) => continue,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            match self.handle.route().del(message).execute().await {
                Ok(()) => removed.push(format!("route {route}")),
                Err(e) if matches!(errno(&e), Some(libc::ESRCH | libc::ENOENT | libc::ENODEV)) => {}
                Err(source) => {
                    first_error.get_or_insert(RouteError::Netlink {
                        op: "remove",
                        what: format!("route {route}"),
                        source,
                    });
                }
            }
        }
        for rule in rules {
            match self.handle.rule().del(rule_message(rule)).execute().await {
                Ok(()) => removed.push(format!("rule {rule}")),
                Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ESRCH)) => {}
                Err(source) => {
                    first_error.get_or_insert(RouteError::Netlink {
                        op: "remove",
                        what: format!("rule {rule}"),
                        source,
                    });
                }
            }
        }
        first_error.map_or(Ok(removed), Err)
    }

    /// The route's message; `None` when its `dev` does not exist.
    async fn route_message(&self, route: &RouteSpec) -> Result<Option<RouteMessage>, RouteError> {
        let invalid = |reason: String| RouteError::Invalid {
            route: route.to_string(),
            reason,
        };
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.to, route.prefix_len)
            .map_err(|e| invalid(e.to_string()))?
            .table_id(route.table)
            .kind(match RouteKind::parse(&route.kind) {
                Some(RouteKind::Unicast) => RouteType::Unicast,
                Some(RouteKind::Blackhole) => RouteType::BlackHole,
                Some(RouteKind::Unreachable) => RouteType::Unreachable,
                Some(RouteKind::Prohibit) => RouteType::Prohibit,
                None => return Err(invalid(format!("unknown route type {:?}", route.kind))),
            });
        match route.via {
            Some(via) => builder = builder.gateway(via).map_err(|e| invalid(e.to_string()))?,
            // As `ip route add PREFIX dev DEV`: on the link.
            None if route.kind == "unicast" => builder = builder.scope(RouteScope::Link),
            None => {}
        }
        if let Some(src) = route.src {
            builder = builder
                .pref_source(src)
                .map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(metric) = route.metric {
            builder = builder.priority(metric);
        }
        if let Some(dev) = &route.dev {
            let mut links = self.handle.link().get().match_name(dev.clone()).execute();
            let index = match links.try_next().await {
                Ok(Some(link)) => link.header.index,
                Ok(None) => return Ok(None),
                Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(None),
                Err(source) => {
                    return Err(RouteError::Netlink {
                        op: "link lookup",
                        what: format!("route {route}"),
                        source,
                    });
                }
            };
            builder = builder.output_interface(index);
        }
        Ok(Some(builder.build()))
    }
}

/// The message that adds the rule, and (the kernel matching on what it names) deletes it.
fn rule_message(rule: &RuleSpec) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header.family = if rule.ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    message.header.action = RuleAction::ToTable;
    // Tables above 255 travel only in the attribute; the header says "see the attribute".
    message.header.table = u8::try_from(rule.table).unwrap_or(0);
    message.attributes.push(RuleAttribute::Table(rule.table));
    if let Some((address, len)) = rule.from {
        message.header.src_len = len;
        message.attributes.push(RuleAttribute::Source(address));
    }
    if let Some((address, len)) = rule.to {
        message.header.dst_len = len;
        message.attributes.push(RuleAttribute::Destination(address));
    }
    if let Some(priority) = rule.priority {
        message.attributes.push(RuleAttribute::Priority(priority));
    }
    if let Some(mark) = rule.fwmark {
        message.attributes.push(RuleAttribute::FwMark(mark));
    }
    if let Some(iif) = &rule.iif {
        message.attributes.push(RuleAttribute::Iifname(iif.clone()));
    }
    if let Some(oif) = &rule.oif {
        message.attributes.push(RuleAttribute::Oifname(oif.clone()));
    }
    message
}
