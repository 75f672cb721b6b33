//! The validated network extras of an instance: its virtual MAC interface ([`Vmac`]), and the
//! routes and policy rules it holds while master ([`VirtualRoute`], [`VirtualRule`]).
//!
//! Every value here was checked: names fit the kernel, prefixes have no host bits, every address
//! of a route or rule has the route's (or rule's) family, tables are never 0.

use std::fmt;
use std::net::IpAddr;

use hav_vrrp::{Family, VrId};

/// keepalived's `use_vmac`: a macvlan on the instance's interface with the VRRP virtual MAC
/// (RFC 5798 section 7.3), carrying the instance's VIPs (those without a `dev` of their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vmac {
    /// The macvlan's name; default `vrrp.<vrid>` (IPv6: `vrrp6.<vrid>`).
    pub name: String,
    /// Adverts leave from the base interface (with its MAC) rather than from the macvlan.
    /// Required for IPv6.
    pub xmit_base: bool,
}

impl Vmac {
    /// keepalived's default name.
    pub fn default_name(family: Family, vrid: VrId) -> String {
        match family {
            Family::V4 => format!("vrrp.{}", vrid.get()),
            Family::V6 => format!("vrrp6.{}", vrid.get()),
        }
    }

    /// The virtual router MAC address: 00-00-5E-00-01-{VRID} for IPv4, 00-00-5E-00-02-{VRID}
    /// for IPv6 (RFC 5798 section 7.3).
    pub fn mac(family: Family, vrid: VrId) -> [u8; 6] {
        let kind = match family {
            Family::V4 => 0x01,
            Family::V6 => 0x02,
        };
        [0x00, 0x00, 0x5e, 0x00, kind, vrid.get()]
    }
}

/// An address prefix with no host bits set, such as `203.0.113.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub address: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn family(&self) -> Family {
        match self.address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

/// The routing table of a route or rule unless it names one (`main`).
pub const MAIN_TABLE: u32 = 254;

/// What a route does with the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Forwarded (`via` and/or `dev`).
    Unicast,
    /// Dropped silently.
    Blackhole,
    /// Dropped with ICMP unreachable.
    Unreachable,
    /// Dropped with ICMP administratively prohibited.
    Prohibit,
}

impl RouteKind {
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Unicast => "unicast",
            RouteKind::Blackhole => "blackhole",
            RouteKind::Unreachable => "unreachable",
            RouteKind::Prohibit => "prohibit",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "unicast" => RouteKind::Unicast,
            "blackhole" => RouteKind::Blackhole,
            "unreachable" => RouteKind::Unreachable,
            "prohibit" => RouteKind::Prohibit,
            _ => return None,
        })
    }
}

/// `[[instance.route]]` (keepalived's `virtual_routes` entry): present while the instance is
/// master. A unicast route has `via` or `dev`; the other kinds have neither.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VirtualRoute {
    pub to: Prefix,
    pub kind: RouteKind,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    /// The preferred source address (often a VIP of the instance).
    pub src: Option<IpAddr>,
    /// 1..=2^32-1; default [`MAIN_TABLE`].
    pub table: u32,
    pub metric: Option<u32>,
}

impl fmt::Display for VirtualRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != RouteKind::Unicast {
            write!(f, "{} ", self.kind.name())?;
        }
        write!(f, "{}", self.to)?;
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

/// `[[instance.rule]]` (keepalived's `virtual_rules` entry): a policy routing rule present while
/// the instance is master, looking packets up in `table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VirtualRule {
    /// Of `from` and `to` when given, else the instance's.
    pub family: Family,
    pub from: Option<Prefix>,
    pub to: Option<Prefix>,
    pub table: u32,
    /// The rule's position (lower first); the kernel picks one when unset.
    pub priority: Option<u32>,
    pub fwmark: Option<u32>,
    pub iif: Option<String>,
    pub oif: Option<String>,
}

impl fmt::Display for VirtualRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(priority) = self.priority {
            write!(f, "priority {priority} ")?;
        }
        match self.from {
            Some(from) => write!(f, "from {from}")?,
            None => f.write_str("from all")?,
        }
        if let Some(to) = self.to {
            write!(f, " to {to}")?;
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
