//! What the engine runs: virtual routers, their peers and announce schedules, and sync groups.
//!
//! [`EngineConfig::validate`] is the only way into the engine ([`super::Engine::new`] and
//! [`super::Engine::reconfigure`] call it), so the state machine never sees a router it could
//! not advertise: every address is of the router's family, the interval fits its version, and
//! names, VRIDs and sync-group memberships are unique.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use thiserror::Error;

use crate::types::{AdvertInterval, Auth, Family, Priority, V3Checksum, Version, VrId};

/// Every virtual router of one node, and the sync groups they form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineConfig {
    pub routers: Vec<RouterConfig>,
    pub sync_groups: Vec<SyncGroupConfig>,
}

/// One virtual router: one VRID on one interface for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Stable operator-chosen name; identifies the router across reconfigurations.
    pub name: String,
    pub interface: String,
    pub vrid: VrId,
    pub version: Version,
    pub family: Family,
    /// Base priority: 1..=254, or 255 for the address owner.
    pub priority: Priority,
    pub advert_interval: AdvertInterval,
    pub preempt: Preempt,
    /// Whether the master accepts packets addressed to the VIPs (RFC 5798 `Accept_Mode`).
    pub accept: bool,
    /// The source address of our adverts; also the tie-breaker between equal priorities.
    pub primary_address: IpAddr,
    pub peers: Peers,
    pub vips: Vec<IpAddr>,
    /// v2 only; must be [`Auth::None`] for v3.
    pub auth: Auth,
    /// v3 over IPv4 only: the checksum form we send.
    pub checksum: V3Checksum,
    pub announce: AnnounceSchedule,
    /// Strict mode (keepalived's `vrrp_strict`): an advert whose address list differs from
    /// `vips` is dropped (counted as an address list error) instead of only counted.
    pub strict: bool,
}

/// Whether a higher-priority backup takes over from a lower-priority master (RFC 5798
/// `Preempt_Mode`). The address owner (priority 255) always preempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preempt {
    Off,
    /// keepalived's `preempt_delay`: a backup that could preempt waits `delay` first, counted
    /// from start-up or from first hearing the lower-priority master.
    On {
        delay: Duration,
    },
}

impl Default for Preempt {
    fn default() -> Self {
        Preempt::On {
            delay: Duration::ZERO,
        }
    }
}

/// Where adverts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// To the VRRP group (224.0.0.18 or ff02::12).
    Multicast,
    /// To each peer; adverts from anyone else are dropped and counted.
    Unicast(Vec<Peer>),
}

/// A unicast peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    /// The peer's priority if known from configuration: a master whose own priority falls
    /// below it resigns at once instead of waiting to be preempted.
    pub priority: Option<Priority>,
}

/// When a new master announces its VIPs (gratuitous ARP / unsolicited NA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceSchedule {
    /// Announcements per burst (keepalived `garp_master_repeat`, default 5).
    pub repeat: u32,
    /// Between announcements of one burst (keepalived `garp_interval`, default 0).
    pub interval: Duration,
    /// A second burst this long after becoming master (keepalived `garp_master_delay`).
    pub second_burst_after: Option<Duration>,
    /// Then one announcement every `refresh` while master (keepalived `garp_master_refresh`).
    pub refresh: Option<Duration>,
}

impl Default for AnnounceSchedule {
    fn default() -> Self {
        Self {
            repeat: 5,
            interval: Duration::ZERO,
            second_burst_after: Some(Duration::from_secs(5)),
            refresh: None,
        }
    }
}

/// Routers that fail over together (keepalived `vrrp_sync_group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupConfig {
    pub name: String,
    /// Router names.
    pub members: Vec<String>,
}

/// Most announcements per burst; more would flood the segment.
pub const MAX_ANNOUNCE_REPEAT: u32 = 100;
/// Most VIPs per router: the advert's count field is one octet.
pub const MAX_VIPS: usize = 255;
/// Longest preempt delay or announce period accepted (a day); keeps deadlines representable.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// A configuration the engine cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EngineConfigError {
    #[error("router name {name:?} is used twice")]
    DuplicateRouter { name: String },
    #[error("routers {first:?} and {second:?} both use VRID {vrid} for {family:?} on {interface}")]
    DuplicateVrid {
        first: String,
        second: String,
        interface: String,
        family: Family,
        vrid: VrId,
    },
    #[error("router {router:?}: {reason}")]
    Router {
        router: String,
        reason: RouterConfigError,
    },
    #[error("sync group name {name:?} is used twice")]
    DuplicateSyncGroup { name: String },
    #[error("sync group {group:?}: member {member:?} is not a configured router")]
    UnknownMember { group: String, member: String },
    #[error("router {member:?} is in sync groups {first:?} and {second:?}; at most one is allowed")]
    MemberOfTwoGroups {
        member: String,
        first: String,
        second: String,
    },
    #[error("the engine has been shut down and cannot be reconfigured")]
    ShutDown,
}

/// Why one router's configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RouterConfigError {
    #[error("the name is empty")]
    EmptyName,
    #[error("the interface name is empty")]
    EmptyInterface,
    #[error("priority 0 is reserved for a resigning master; use 1..=254, or 255 for the owner")]
    ZeroPriority,
    #[error("VRRP version 2 is defined for IPv4 only")]
    V2OverIpv6,
    #[error("advert interval {interval} cannot be carried by VRRP version {version}")]
    IntervalDoesNotFit {
        interval: AdvertInterval,
        version: u8,
    },
    #[error("{what} {address} is not of the router's address family")]
    WrongFamily { what: &'static str, address: IpAddr },
    #[error("no virtual addresses")]
    NoVips,
    #[error("{count} virtual addresses, an advert carries at most {MAX_VIPS}")]
    TooManyVips { count: usize },
    #[error("virtual address {address} is listed twice")]
    DuplicateVip { address: IpAddr },
    #[error("unicast peers configured, but the list is empty")]
    NoPeers,
    #[error("peer {address} is our own primary address")]
    PeerIsSelf { address: IpAddr },
    #[error("VRRPv3 has no authentication")]
    AuthWithV3,
    #[error("announce repeat {repeat} is more than {MAX_ANNOUNCE_REPEAT}")]
    TooManyAnnouncements { repeat: u32 },
    #[error("announce refresh period is zero")]
    ZeroRefresh,
    #[error("{what} of {value:?} is longer than a day")]
    TooLong { what: &'static str, value: Duration },
}

impl EngineConfig {
    /// Checks everything the engine relies on; see the module documentation.
    pub fn validate(&self) -> Result<(), EngineConfigError> {
        let mut names = HashSet::new();
        for (index, router) in self.routers.iter().enumerate() {
            router
                .validate()
                .map_err(|reason| EngineConfigError::Router {
                    router: router.name.clone(),
                    reason,
                })?;
            if !names.insert(router.name.as_str()) {
                return Err(EngineConfigError::DuplicateRouter {
                    name: router.name.clone(),
                });
            }
            if let Some(first) = self.routers[..index]
                .iter()
                .find(|other| other.key() == router.key())
            {
                return Err(EngineConfigError::DuplicateVrid {
                    first: first.name.clone(),
                    second: router.name.clone(),
                    interface: router.interface.clone(),
                    family: router.family,
                    vrid: router.vrid,
                });
            }
        }
        let mut group_names = HashSet::new();
        let mut member_of: Vec<(&str, &str)> = Vec::new();
        for group in &self.sync_groups {
            if !group_names.insert(group.name.as_str()) {
                return Err(EngineConfigError::DuplicateSyncGroup {
                    name: group.name.clone(),
                });
            }
            for member in &group.members {
                if !names.contains(member.as_str()) {
                    return Err(EngineConfigError::UnknownMember {
                        group: group.name.clone(),
                        member: member.clone(),
                    });
                }
                if let Some((_, first)) = member_of.iter().find(|(name, _)| name == member) {
                    return Err(EngineConfigError::MemberOfTwoGroups {
                        member: member.clone(),
                        first: (*first).to_owned(),
                        second: group.name.clone(),
                    });
                }
                member_of.push((member, &group.name));
            }
        }
        Ok(())
    }
}

/// What identifies a virtual router on the wire of one node.
pub(crate) type RouterKey<'a> = (&'a str, Family, VrId);

impl RouterConfig {
    pub(crate) fn key(&self) -> RouterKey<'_> {
        (&self.interface, self.family, self.vrid)
    }

    /// Whether `other` is the same virtual router on the wire (a change here is remove + add).
    pub(crate) fn same_identity(&self, other: &RouterConfig) -> bool {
        self.key() == other.key() && self.version == other.version
    }

    /// Where adverts go: the VRRP group, or each unicast peer.
    pub(crate) fn destinations(&self) -> Vec<IpAddr> {
        match &self.peers {
            Peers::Multicast => vec![multicast_group(self.family)],
            Peers::Unicast(peers) => peers.iter().map(|peer| peer.address).collect(),
        }
    }

    fn validate(&self) -> Result<(), RouterConfigError> {
        use RouterConfigError as E;
        if self.name.is_empty() {
            return Err(E::EmptyName);
        }
        if self.interface.is_empty() {
            return Err(E::EmptyInterface);
        }
        if self.priority == Priority::RESIGN {
            return Err(E::ZeroPriority);
        }
        if self.version == Version::V2 && self.family == Family::V6 {
            return Err(E::V2OverIpv6);
        }
        if !self.advert_interval.fits(self.version) {
            let version = self.version.number();
            return Err(E::IntervalDoesNotFit {
                interval: self.advert_interval,
                version,
            });
        }
        if self.version == Version::V3 && self.auth != Auth::None {
            return Err(E::AuthWithV3);
        }
        let family_ok = |address: &IpAddr| family_of(*address) == self.family;
        if !family_ok(&self.primary_address) {
            return Err(E::WrongFamily {
                what: "primary address",
                address: self.primary_address,
            });
        }
        if self.vips.is_empty() {
            return Err(E::NoVips);
        }
        if self.vips.len() > MAX_VIPS {
            return Err(E::TooManyVips {
                count: self.vips.len(),
            });
        }
        for (index, vip) in self.vips.iter().enumerate() {
            if !family_ok(vip) {
                return Err(E::WrongFamily {
                    what: "virtual address",
                    address: *vip,
                });
            }
            if self.vips[..index].contains(vip) {
                return Err(E::DuplicateVip { address: *vip });
            }
        }
        if let Peers::Unicast(peers) = &self.peers {
            if peers.is_empty() {
                return Err(E::NoPeers);
            }
            for peer in peers {
                if !family_ok(&peer.address) {
                    return Err(E::WrongFamily {
                        what: "peer",
                        address: peer.address,
                    });
                }
                if peer.address == self.primary_address {
                    return Err(E::PeerIsSelf {
                        address: peer.address,
                    });
                }
            }
        }
        if self.announce.repeat > MAX_ANNOUNCE_REPEAT {
            return Err(E::TooManyAnnouncements {
                repeat: self.announce.repeat,
            });
        }
        if self.announce.refresh == Some(Duration::ZERO) {
            return Err(E::ZeroRefresh);
        }
        let durations = [
            (
                "preempt delay",
                match self.preempt {
                    Preempt::On { delay } => Some(delay),
                    Preempt::Off => None,
                },
            ),
            ("announce interval", Some(self.announce.interval)),
            (
                "announce second burst delay",
                self.announce.second_burst_after,
            ),
            ("announce refresh period", self.announce.refresh),
        ];
        for (what, value) in durations {
            if let Some(value) = value.filter(|value| *value > MAX_DELAY) {
                return Err(E::TooLong { what, value });
            }
        }
        Ok(())
    }
}

pub(crate) fn family_of(address: IpAddr) -> Family {
    match address {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// The VRRP multicast group of a family (RFC 5798 sections 5.1.1.2 and 5.1.2.2).
pub(crate) fn multicast_group(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)),
    }
}
