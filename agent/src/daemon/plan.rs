//! From a validated [`NodeConfig`] to everything the daemon runs: the engine's config, the VRRP
//! sockets, the VIPs' netlink details, the trackers and the hooks.
//!
//! Planning reads the host only through a [`Host`] snapshot (links and their addresses) and
//! changes nothing, so a config that cannot be planned is refused before anything moves.
//! [`plan`] (start-up, reload, push) and [`check`] (`hav-agent --check`) are one path: every
//! check of the config, the engine's and each tracker spec's included, runs in both and refuses
//! alike. What the host lacks is never a refusal: an instance whose interface is missing, or has
//! no address to advertise from, is planned [`Binding::Unbound`] (it runs in Fault, with no
//! socket) and is bound again when the host changes; `--check` names it in a warning
//! ([`HostProblem`]), with whatever else this host lacks (a user, a program, trust anchors).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use hav_proto::config::{
    Command, Instance, NodeConfig, Notify, ProbeKind, ProcessMatch as ConfigProcessMatch,
    TrackTarget, Transport,
};
use hav_vrrp::engine::{
    AnnounceSchedule, EngineConfig, Peer, Peers, Preempt, RouterConfig, SyncGroupConfig,
};
use hav_vrrp::{Family, Priority};

use crate::hooks::HookConfig;
use crate::lb::PlannedService;
use crate::net::nft::{Nft, NftError};
use crate::net::socket::{Mode, SocketSpec};
use crate::net::vip::Vip;
use crate::net::{NetworkEntries, RouteSpec, RuleSpec};
use crate::notify::NotifyPlan;
use crate::track::{
    FileSpec, HttpSpec, InterfaceSpec, ProbeSchedule, ProcessMatch, ProcessSpec, Program, RunAs,
    ScriptSpec, TcpSpec, TrackSpec,
};

/// Everything derived from one config.
#[derive(Debug, Clone)]
pub struct Plan {
    pub engine: EngineConfig,
    /// Per router, where on this host it runs (or why it cannot).
    pub bindings: BTreeMap<String, Binding>,
    /// The socket each bound router sends and receives on.
    pub router_sockets: HashMap<String, SocketSpec>,
    /// Per router, the netlink details of each VIP.
    pub vips: HashMap<String, HashMap<IpAddr, Vip>>,
    /// Trackers by key (`kind:name`), with a fingerprint to tell a changed definition on reload.
    pub trackers: BTreeMap<String, PlannedTracker>,
    /// Per router, the trackers it follows and the weight of each.
    pub tracker_refs: HashMap<String, Vec<(String, i32)>>,
    /// Hooks per instance and per sync group.
    pub instance_hooks: HashMap<String, HookConfig>,
    pub group_hooks: HashMap<String, HookConfig>,
    /// The virtual servers, each with the interface of its VIP.
    pub virtual_servers: Vec<PlannedService>,
    /// Per router that keeps its connections through a planned hand-over, for how long at most.
    pub connection_drains: HashMap<String, Duration>,
    /// The UDP port of the hand-over beacons.
    pub handover_port: u16,
    /// Per router, the rules and routes it holds while master.
    pub routing: HashMap<String, (Vec<RuleSpec>, Vec<RouteSpec>)>,
    /// Every macvlan, route and rule of the config (journaled ahead of need).
    pub network: NetworkEntries,
    /// The macvlans that carry a VRRP socket of an IPv4 instance: their IGMP is dropped
    /// ([`crate::net::nft::vmac`]).
    pub quiet_vmacs: BTreeSet<String>,
    /// The notify FIFO and SMTP alerts.
    pub notifications: NotifyPlan,
}

/// Where a router runs on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Its interface exists (with this index) and has the address adverts come from.
    Bound { ifindex: u32, primary: IpAddr },
    /// It cannot send or hear adverts: it runs in Fault until the host changes.
    Unbound(Unbound),
}

impl Binding {
    pub fn is_bound(&self) -> bool {
        matches!(self, Binding::Bound { .. })
    }
}

/// Why a router cannot run on this host now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unbound {
    #[error("interface {interface} not found")]
    NoInterface { interface: String },
    #[error("interface {interface} has no {family} address to send adverts from")]
    NoAddress {
        interface: String,
        family: &'static str,
    },
}

/// The links of this host, by name, with their index and addresses (kernel order: primary
/// first), read in one `getifaddrs` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    links: BTreeMap<String, (u32, Vec<IpAddr>)>,
}

impl Host {
    /// Reads the links and addresses of the calling thread's network namespace.
    pub fn read() -> Result<Host, PlanError> {
        let mut host = Host::default();
        for entry in nix::ifaddrs::getifaddrs().map_err(PlanError::Addresses)? {
            let name = entry.interface_name;
            if !host.links.contains_key(&name) {
                // A link removed between the two calls is left out: the next read sees it gone.
                let Ok(index) = nix::net::if_::if_nametoindex(name.as_str()) else {
                    continue;
                };
                host.links.insert(name.clone(), (index, Vec::new()));
            }
            let Some(address) = entry.address else {
                continue;
            };
            let address = if let Some(v4) = address.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = address.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if let Some((_, addresses)) = host.links.get_mut(&name) {
                addresses.push(address);
            }
        }
        Ok(host)
    }

    /// A host with these links (tests).
    pub fn with_links<'a>(links: impl IntoIterator<Item = (&'a str, u32, Vec<IpAddr>)>) -> Host {
        Host {
            links: links
                .into_iter()
                .map(|(name, index, addresses)| (name.to_owned(), (index, addresses)))
                .collect(),
        }
    }

    /// The index of link `name`, if it exists.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.links.get(name).map(|(index, _)| *index)
    }

    fn addresses_of(&self, name: &str) -> &[IpAddr] {
        self.links
            .get(name)
            .map_or(&[][..], |(_, addresses)| addresses.as_slice())
    }
}

#[derive(Debug, Clone)]
pub struct PlannedTracker {
    pub spec: TrackSpec,
    pub fingerprint: String,
}

impl Plan {
    /// Routers that cannot run on this host now, with the reason.
    pub fn unbound(&self) -> impl Iterator<Item = (&str, &Unbound)> {
        self.bindings
            .iter()
            .filter_map(|(name, binding)| match binding {
                Binding::Unbound(why) => Some((name.as_str(), why)),
                Binding::Bound { .. } => None,
            })
    }

    /// Every VIP of every instance.
    pub fn all_vips(&self) -> Vec<Vip> {
        self.vips
            .values()
            .flat_map(|vips| vips.values().cloned())
            .collect()
    }

    /// The trackers a router follows.
    pub fn refs_of(&self, router: &str) -> &[(String, i32)] {
        self.tracker_refs
            .get(router)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// Why a config cannot be run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("instance {instance}: tracked object {target} is not defined")]
    UnresolvedTracker { instance: String, target: String },
    #[error("instance {instance}: tracker {tracker}: {reason}")]
    Tracker {
        instance: String,
        tracker: String,
        reason: String,
    },
    #[error("cannot read interface addresses: {0}")]
    Addresses(#[source] nix::Error),
    /// The reason is in the message, not a source, so that `{:#}` does not say it twice.
    #[error("engine refused the config: {0}")]
    Engine(hav_vrrp::engine::EngineConfigError),
    /// The cause is part of the message (not a `source`), so `--check` shows it on one line.
    #[error(
        "instance {instance}: accept = false needs nftables (or set accept = true; in strict \
         mode it is the default below priority 255): {cause}"
    )]
    AcceptModeNeedsNft { instance: String, cause: NftError },
    #[error("virtual server {service}: load balancing needs nftables: {cause}")]
    VirtualServerNeedsNft { service: String, cause: NftError },
    #[error("instance {instance}: connection_drain needs nftables: {cause}")]
    ConnectionDrainNeedsNft { instance: String, cause: NftError },
    #[error(
        "instance {instance}: a vmac that carries adverts needs nftables (its IGMP reports would \
         teach switches the virtual MAC at a backup), or set xmit_base = true: {cause}"
    )]
    VmacNeedsNft { instance: String, cause: NftError },
}

impl From<hav_vrrp::engine::EngineConfigError> for PlanError {
    fn from(error: hav_vrrp::engine::EngineConfigError) -> Self {
        PlanError::Engine(error)
    }
}

/// Something a config needs from the host that this host does not have: `hav-agent --check`
/// reports each as a warning (the config may be meant for another host); the daemon runs such
/// an instance in Fault, or lets the tracker report it down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostProblem {
    /// The instance cannot send or hear adverts here.
    #[error("instance {instance}: {why}; it runs in Fault until that changes")]
    Unbound { instance: String, why: Unbound },
    #[error("instance {instance}: no interface {interface} for VIP {vip}")]
    NoVipDevice {
        instance: String,
        interface: String,
        vip: IpAddr,
    },
    #[error("instance {instance}: source_address {address} is not an address of this host")]
    ForeignSource { instance: String, address: IpAddr },
    /// A tracker or notify program of an instance (or of a sync group) cannot run here.
    #[error("{owner}: {what}: {reason}")]
    Needs {
        /// `instance VI_1` or `sync group G_WEB`.
        owner: String,
        /// The tracker (`probe:web`) or the hooks (`notify_master, notify_backup`).
        what: String,
        reason: String,
    },
}

/// What `hav-agent --check` reports: an error for anything [`plan`] refuses; otherwise
/// everything `host` lacks for the config to run, instance by instance.
pub fn check(config: &NodeConfig, host: &Host) -> Result<Vec<HostProblem>, PlanError> {
    // The daemon creates each macvlan whose base exists before it plans: so does the check.
    let mut host = host.clone();
    for instance in &config.instances {
        if let Some(vmac) = &instance.vmac
            && host.index_of(&instance.interface).is_some()
        {
            host.links
                .entry(vmac.name.clone())
                .or_insert((0, Vec::new()));
        }
    }
    let host = &host;
    let plan = plan(config, host)?;
    let local: BTreeSet<IpAddr> = (host.links.values())
        .flat_map(|(_, addresses)| addresses.iter().copied())
        .collect();
    let mut problems = Vec::new();
    for instance in &config.instances {
        let name = &instance.name;
        let owner = format!("instance {name}");
        if let Some(Binding::Unbound(why)) = plan.bindings.get(name) {
            problems.push(HostProblem::Unbound {
                instance: name.clone(),
                why: why.clone(),
            });
        }
        for vip in &instance.vips {
            if vip.dev != instance.interface && host.index_of(&vip.dev).is_none() {
                problems.push(HostProblem::NoVipDevice {
                    instance: name.clone(),
                    interface: vip.dev.clone(),
                    vip: vip.address,
                });
            }
        }
        if let Some(address) = instance.source_address
            && host.index_of(&instance.interface).is_some()
            && !local.contains(&address)
        {
            problems.push(HostProblem::ForeignSource {
                instance: name.clone(),
                address,
            });
        }
        for (key, _) in plan.refs_of(name) {
            let Some(tracker) = plan.trackers.get(key) else {
                continue;
            };
            for reason in tracker.spec.host_problems() {
                problems.push(HostProblem::Needs {
                    owner: owner.clone(),
                    what: key.clone(),
                    reason,
                });
            }
        }
        if let Some(hooks) = plan.instance_hooks.get(name) {
            problems.extend(hook_problems(&owner, hooks));
        }
    }
    for group in &config.sync_groups {
        if let Some(hooks) = plan.group_hooks.get(&group.name) {
            problems.extend(hook_problems(&format!("sync group {}", group.name), hooks));
        }
    }
    for service in &config.virtual_servers {
        let owner = format!("virtual server {}", service.name);
        let mut programs: Vec<(&str, &Command)> = Vec::new();
        programs.extend(service.quorum_up.iter().map(|c| ("quorum_up", c)));
        programs.extend(service.quorum_down.iter().map(|c| ("quorum_down", c)));
        for server in &service.real_servers {
            if let Some(hav_proto::config::RealServerCheck {
                kind: hav_proto::config::CheckKind::Misc { command },
                ..
            }) = &server.check
            {
                programs.push(("check", command));
            }
        }
        for (what, command) in programs {
            for reason in program_of(command).host_problems() {
                problems.push(HostProblem::Needs {
                    owner: owner.clone(),
                    what: what.to_owned(),
                    reason,
                });
            }
        }
    }
    for (what, reason) in crate::notify::host_problems(&plan.notifications) {
        problems.push(HostProblem::Needs {
            owner: "node".to_owned(),
            what: what.to_owned(),
            reason,
        });
    }
    Ok(problems)
}

/// The notify programs of one instance or sync group that this host cannot run, each reason
/// once with the hooks it concerns.
fn hook_problems(owner: &str, hooks: &HookConfig) -> Vec<HostProblem> {
    let mut found: Vec<(String, Vec<&str>)> = Vec::new();
    for (key, programs) in [
        ("notify", &hooks.notify),
        ("notify_master", &hooks.notify_master),
        ("notify_backup", &hooks.notify_backup),
        ("notify_fault", &hooks.notify_fault),
        ("notify_stop", &hooks.notify_stop),
    ] {
        for reason in programs.iter().flat_map(Program::host_problems) {
            match found.iter_mut().find(|(known, _)| *known == reason) {
                Some((_, keys)) => keys.push(key),
                None => found.push((reason, vec![key])),
            }
        }
    }
    found
        .into_iter()
        .map(|(reason, keys)| HostProblem::Needs {
            owner: owner.to_owned(),
            what: keys.join(", "),
            reason,
        })
        .collect()
}

/// Whether a master of `instance` drops packets addressed to its VIPs: accept mode is off and
/// the node is not the address owner, which always accepts (RFC 5798 section 6.1, `Accept_Mode`).
pub fn drops_vip_traffic(instance: &Instance) -> bool {
    !instance.accept && instance.priority != Priority::OWNER
}

/// Where each instance of `config` runs on `host` (what [`plan`] would put in
/// [`Plan::bindings`], without the rest).
pub fn bindings(config: &NodeConfig, host: &Host) -> BTreeMap<String, Binding> {
    (config.instances.iter())
        .map(|instance| (instance.name.clone(), bind(instance, host)))
        .collect()
}

/// Plans `config` against `host`.
pub fn plan(config: &NodeConfig, host: &Host) -> Result<Plan, PlanError> {
    // A config whose masters filter VIP traffic is refused where nft is missing, before anything
    // runs; every other config never needs nftables.
    if let Some(instance) = config.instances.iter().find(|i| drops_vip_traffic(i)) {
        Nft::default()
            .locate()
            .map_err(|cause| PlanError::AcceptModeNeedsNft {
                instance: instance.name.clone(),
                cause,
            })?;
    }
    let mut plan = Plan {
        engine: EngineConfig::default(),
        bindings: BTreeMap::new(),
        router_sockets: HashMap::new(),
        vips: HashMap::new(),
        trackers: BTreeMap::new(),
        tracker_refs: HashMap::new(),
        instance_hooks: HashMap::new(),
        group_hooks: HashMap::new(),
        virtual_servers: Vec::new(),
        connection_drains: HashMap::new(),
        handover_port: config.node.handover_port,
        routing: HashMap::new(),
        network: super::network::network_of(config),
        quiet_vmacs: super::network::quiet_vmacs(config),
        notifications: NotifyPlan::of(config),
    };
    if let Some(instance) = config
        .instances
        .iter()
        .find(|i| !i.connection_drain.is_zero())
    {
        Nft::default()
            .locate()
            .map_err(|cause| PlanError::ConnectionDrainNeedsNft {
                instance: instance.name.clone(),
                cause,
            })?;
    }
    if let Some(instance) = (config.instances.iter()).find(|instance| {
        plan.quiet_vmacs
            .contains(super::network::vrrp_interface(instance))
    }) {
        Nft::default()
            .locate()
            .map_err(|cause| PlanError::VmacNeedsNft {
                instance: instance.name.clone(),
                cause,
            })?;
    }
    if let Some(service) = config.virtual_servers.first() {
        Nft::default()
            .locate()
            .map_err(|cause| PlanError::VirtualServerNeedsNft {
                service: service.name.clone(),
                cause,
            })?;
    }
    for (id, service) in config.virtual_servers.iter().enumerate() {
        // Validation resolved the instance; the VIP's own device if it is one of its VIPs.
        let instance = config.instance(&service.instance);
        let device = instance
            .and_then(|i| i.vips.iter().find(|vip| vip.address == service.address))
            .map(|vip| vip.dev.clone())
            .or_else(|| instance.map(|i| i.interface.clone()))
            .unwrap_or_default();
        plan.virtual_servers.push(PlannedService {
            id,
            config: service.clone(),
            device,
        });
    }
    for instance in &config.instances {
        let binding = bind(instance, host);
        let primary = match &binding {
            Binding::Bound { primary, .. } => {
                plan.router_sockets
                    .insert(instance.name.clone(), socket_spec(instance, *primary));
                *primary
            }
            // Never used: an unbound router is in Fault and sends nothing.
            Binding::Unbound(_) => unspecified(instance.family),
        };
        plan.bindings.insert(instance.name.clone(), binding);
        plan.engine.routers.push(router_config(instance, primary));
        plan.vips.insert(
            instance.name.clone(),
            instance
                .vips
                .iter()
                .map(|vip| {
                    let mut planned = Vip::new(vip.address, vip.prefix_len, vip.dev.clone());
                    planned.label = vip.label.clone();
                    (vip.address, planned)
                })
                .collect(),
        );
        let mut refs = Vec::new();
        for track in &instance.track {
            let (key, tracker) =
                tracker_of(config, &track.target).ok_or_else(|| PlanError::UnresolvedTracker {
                    instance: instance.name.clone(),
                    target: format!("{:?}", track.target),
                })?;
            tracker
                .spec
                .validate()
                .map_err(|reason| PlanError::Tracker {
                    instance: instance.name.clone(),
                    tracker: key.clone(),
                    reason,
                })?;
            plan.trackers.entry(key.clone()).or_insert(tracker);
            refs.push((key, i32::from(track.weight.get())));
        }
        track_own_interface(instance, &mut plan.trackers, &mut refs);
        plan.tracker_refs.insert(instance.name.clone(), refs);
        plan.instance_hooks
            .insert(instance.name.clone(), hooks_of(&instance.notify));
        plan.routing
            .insert(instance.name.clone(), super::network::routing_of(instance));
        if !instance.connection_drain.is_zero() {
            plan.connection_drains
                .insert(instance.name.clone(), instance.connection_drain);
        }
    }
    merge_unicast_sockets(&mut plan.router_sockets);
    for group in &config.sync_groups {
        plan.engine.sync_groups.push(SyncGroupConfig {
            name: group.name.clone(),
            members: group.instances.clone(),
        });
        plan.group_hooks
            .insert(group.name.clone(), hooks_of(&group.notify));
    }
    plan.engine.validate()?;
    Ok(plan)
}

/// Every instance follows its own interface with weight 0 (fault), as keepalived does unless told
/// `dont_track_primary`, and unless the config tracks that interface itself: a master whose link
/// is cut gives its VIPs up, and when the link returns it comes back through Backup and announces
/// the VIPs again when it wins; otherwise hosts keep the MAC of the node that stood in until their
/// ARP/ND entries expire (seconds; found by the cross-process link-cut test).
fn track_own_interface(
    instance: &Instance,
    trackers: &mut BTreeMap<String, PlannedTracker>,
    refs: &mut Vec<(String, i32)>,
) {
    let spec = TrackSpec::Interface(InterfaceSpec {
        name: instance.interface.clone(),
    });
    let key = format!("interface:{}", instance.interface);
    if refs.iter().any(|(tracked, _)| *tracked == key) {
        return;
    }
    let fingerprint = format!("{spec:?}");
    trackers
        .entry(key.clone())
        .or_insert(PlannedTracker { spec, fingerprint });
    refs.push((key, 0));
}

fn router_config(instance: &Instance, primary: IpAddr) -> RouterConfig {
    RouterConfig {
        name: instance.name.clone(),
        interface: super::network::vrrp_interface(instance).to_owned(),
        vrid: instance.vrid,
        version: instance.version,
        family: instance.family,
        priority: instance.priority,
        advert_interval: instance.advert_interval,
        preempt: if instance.preempt {
            Preempt::On {
                delay: instance.preempt_delay,
            }
        } else {
            Preempt::Off
        },
        accept: !drops_vip_traffic(instance),
        primary_address: primary,
        peers: match &instance.transport {
            Transport::Multicast => Peers::Multicast,
            Transport::Unicast(peers) => Peers::Unicast(
                peers
                    .iter()
                    .map(|peer| Peer {
                        address: peer.address,
                        priority: peer.priority,
                    })
                    .collect(),
            ),
        },
        vips: instance.vips.iter().map(|vip| vip.address).collect(),
        auth: instance.auth,
        checksum: instance.checksum,
        announce: AnnounceSchedule {
            repeat: instance.garp.master_repeat,
            interval: instance.garp.interval,
            second_burst_after: (!instance.garp.master_delay.is_zero())
                .then_some(instance.garp.master_delay),
            refresh: instance.garp.master_refresh,
        },
        strict: instance.strict,
    }
}

fn socket_spec(instance: &Instance, primary: IpAddr) -> SocketSpec {
    let mode = match &instance.transport {
        Transport::Multicast => Mode::Multicast {
            source: Some(primary),
        },
        Transport::Unicast(peers) => Mode::Unicast {
            source: primary,
            peers: peers.iter().map(|peer| peer.address).collect(),
        },
    };
    SocketSpec {
        interface: super::network::vrrp_interface(instance).to_owned(),
        family: instance.family,
        mode,
    }
}

/// Unicast instances on one interface and family, from one source, share a socket listening to
/// all their peers (two raw sockets would each see the other's peers as strangers).
fn merge_unicast_sockets(sockets: &mut HashMap<String, SocketSpec>) {
    let mut peers: HashMap<(String, Family, IpAddr), BTreeSet<IpAddr>> = HashMap::new();
    for spec in sockets.values() {
        if let Mode::Unicast { source, peers: own } = &spec.mode {
            peers
                .entry((spec.interface.clone(), spec.family, *source))
                .or_default()
                .extend(own.iter().copied());
        }
    }
    for spec in sockets.values_mut() {
        if let Mode::Unicast { source, peers: own } = &mut spec.mode
            && let Some(all) = peers.get(&(spec.interface.clone(), spec.family, *source))
        {
            *own = all.clone();
        }
    }
}

/// Where `instance` runs on `host`: its interface's index and the address its adverts come
/// from (`source_address`, else the interface's first address of the family that is not a VIP;
/// for IPv6 the link-local address, RFC 5798 section 5.1.2.1).
fn bind(instance: &Instance, host: &Host) -> Binding {
    let Some(base_index) = host.index_of(&instance.interface) else {
        return Binding::Unbound(Unbound::NoInterface {
            interface: instance.interface.clone(),
        });
    };
    // With a macvlan the socket is on it, and the advert source still the base's address.
    let vrrp_interface = super::network::vrrp_interface(instance);
    let ifindex = if vrrp_interface == instance.interface {
        base_index
    } else {
        let Some(index) = host.index_of(vrrp_interface) else {
            return Binding::Unbound(Unbound::NoInterface {
                interface: vrrp_interface.to_owned(),
            });
        };
        index
    };
    if let Some(primary) = instance.source_address {
        return Binding::Bound { ifindex, primary };
    }
    let mut on_interface = host.addresses_of(&instance.interface).iter().copied();
    let found = match instance.family {
        Family::V4 => on_interface
            .filter(IpAddr::is_ipv4)
            .find(|address| !instance.vips.iter().any(|vip| vip.address == *address)),
        Family::V6 => on_interface.find(|address| match address {
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
            IpAddr::V4(_) => false,
        }),
    };
    match found {
        Some(primary) => Binding::Bound { ifindex, primary },
        None => Binding::Unbound(Unbound::NoAddress {
            interface: instance.interface.clone(),
            family: match instance.family {
                Family::V4 => "IPv4",
                Family::V6 => "IPv6 link-local",
            },
        }),
    }
}

fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// The tracker behind a reference: its key and spec; `None` if the reference does not resolve
/// (validation rules that out).
fn tracker_of(config: &NodeConfig, target: &TrackTarget) -> Option<(String, PlannedTracker)> {
    let (key, spec) = match target {
        TrackTarget::Interface(name) => (
            format!("interface:{name}"),
            TrackSpec::Interface(InterfaceSpec { name: name.clone() }),
        ),
        TrackTarget::Script(name) => {
            let script = config.scripts.iter().find(|s| &s.name == name)?;
            let mut program = program_of(&script.command);
            if let Some(user) = &script.user {
                program = program.run_as(RunAs {
                    user: user.clone(),
                    group: script.group.clone(),
                });
            }
            let mut spec = ScriptSpec::new(program);
            spec.interval = script.interval;
            spec.timeout = script.timeout;
            spec.rise = script.rise;
            spec.fall = script.fall;
            (format!("script:{name}"), TrackSpec::Script(spec))
        }
        TrackTarget::Process(name) => {
            let process = config.processes.iter().find(|p| &p.name == name)?;
            let target = match &process.matcher {
                ConfigProcessMatch::Name(comm) => ProcessMatch::Name(comm.clone()),
                ConfigProcessMatch::PidFile(path) => ProcessMatch::PidFile(path.clone()),
            };
            let mut spec = ProcessSpec::new(target);
            spec.min_procs = process.min_procs as usize;
            (format!("process:{name}"), TrackSpec::Process(spec))
        }
        TrackTarget::File(name) => {
            let file = config.track_files.iter().find(|f| &f.name == name)?;
            (
                format!("file:{name}"),
                TrackSpec::File(FileSpec {
                    path: file.path.clone(),
                }),
            )
        }
        TrackTarget::Probe(name) => {
            let probe = config.probes.iter().find(|p| &p.name == name)?;
            let schedule = ProbeSchedule {
                interval: probe.interval,
                timeout: probe.timeout,
                rise: probe.rise,
                fall: probe.fall,
                ..ProbeSchedule::default()
            };
            let spec = match &probe.kind {
                ProbeKind::Tcp { address } => TrackSpec::Tcp(TcpSpec {
                    host: address.ip().to_string(),
                    port: address.port(),
                    schedule,
                }),
                ProbeKind::Http {
                    url,
                    expect_status,
                    proxy,
                    ca_file,
                    server_name,
                } => TrackSpec::Http(HttpSpec {
                    url: url.clone(),
                    expected_status: expect_status.clone(),
                    proxy: *proxy,
                    ca_file: ca_file.clone(),
                    server_name: server_name.clone(),
                    schedule,
                }),
            };
            (format!("probe:{name}"), spec)
        }
    };
    let fingerprint = format!("{spec:?}");
    Some((key, PlannedTracker { spec, fingerprint }))
}

fn program_of(command: &Command) -> Program {
    Program::new(command.program.clone(), command.args.iter().cloned())
}

fn hooks_of(notify: &Notify) -> HookConfig {
    let list = |command: &Option<Command>| command.iter().map(program_of).collect::<Vec<_>>();
    HookConfig {
        notify: list(&notify.any),
        notify_master: list(&notify.master),
        notify_backup: list(&notify.backup),
        notify_fault: list(&notify.fault),
        notify_stop: list(&notify.stop),
        timeout: Duration::from_secs(30),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hav_proto::config::parse_node_config;

    fn parsed(instance_extra: &str) -> NodeConfig {
        let text = format!(
            "[node]\nname = \"n\"\n\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth7\"\nvrid = 1\nsource_address = \"198.51.100.11\"\nvips = [\"198.51.100.1/24\"]\n{instance_extra}"
        );
        parse_node_config(&text, "test.toml").expect("valid test config")
    }

    fn planned(instance_extra: &str) -> Plan {
        plan(
            &parsed(instance_extra),
            &Host::with_links([("eth7", 7, Vec::new())]),
        )
        .expect("plannable: the source address is given")
    }

    fn v4(address: &str) -> IpAddr {
        address.parse().expect("address")
    }

    #[test]
    fn an_instance_on_a_missing_interface_is_planned_unbound_not_refused() {
        let text = "[node]\nname = \"n\"\n\n[[instance]]\nname = \"a\"\ninterface = \"va.100\"\nvrid = 1\nvips = [\"198.51.100.1/24\"]\n\n[[instance]]\nname = \"b\"\ninterface = \"eth7\"\nvrid = 2\nvips = [\"198.51.100.2/24\"]\n";
        let config = parse_node_config(text, "test.toml").expect("valid test config");
        let host = Host::with_links([("eth7", 7, vec![v4("198.51.100.2"), v4("198.51.100.11")])]);
        let plan = plan(&config, &host).expect("plannable");
        assert_eq!(
            plan.bindings.get("a"),
            Some(&Binding::Unbound(Unbound::NoInterface {
                interface: "va.100".into()
            }))
        );
        // The VIP is not the source of adverts.
        assert_eq!(
            plan.bindings.get("b"),
            Some(&Binding::Bound {
                ifindex: 7,
                primary: v4("198.51.100.11")
            })
        );
        assert!(!plan.router_sockets.contains_key("a"));
        assert!(plan.router_sockets.contains_key("b"));
        let no_address = plan_on(&config, &Host::with_links([("eth7", 7, Vec::new())]));
        assert!(matches!(
            no_address.bindings.get("b"),
            Some(Binding::Unbound(Unbound::NoAddress { .. }))
        ));
    }

    fn plan_on(config: &NodeConfig, host: &Host) -> Plan {
        plan(config, host).expect("plannable")
    }

    #[test]
    fn a_vmac_instance_speaks_on_its_macvlan_from_the_base_address() {
        let text = |vmac: &str| {
            format!(
                "[node]\nname = \"n\"\n\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth7\"\nvrid = 51\nvips = [\"198.51.100.1/24\"]\n[instance.vmac]\n{vmac}[[instance.route]]\nto = \"203.0.113.0/24\"\nvia = \"198.51.100.254\"\n"
            )
        };
        let config = parse_node_config(&text(""), "test.toml").expect("valid test config");
        let base = ("eth7", 7, vec![v4("198.51.100.11")]);
        let plan = plan_on(
            &config,
            &Host::with_links([base.clone(), ("vrrp.51", 9, Vec::new())]),
        );
        assert_eq!(
            plan.bindings.get("VI_1"),
            Some(&Binding::Bound {
                ifindex: 9,
                primary: v4("198.51.100.11")
            })
        );
        assert_eq!(plan.router_sockets["VI_1"].interface, "vrrp.51");
        assert_eq!(plan.engine.routers[0].interface, "vrrp.51");
        assert_eq!(plan.vips["VI_1"][&v4("198.51.100.1")].iface, "vrrp.51");
        assert_eq!(plan.network.vmacs.len(), 1);
        assert_eq!(plan.routing["VI_1"].1.len(), 1);
        // The base's link is tracked, not the macvlan's.
        assert!(plan.trackers.contains_key("interface:eth7"));
        // Before the daemon made the macvlan, the instance waits for it; `--check` counts it as
        // made (the daemon makes it before it plans).
        let host = Host::with_links([base.clone()]);
        assert_eq!(
            plan_on(&config, &host).bindings.get("VI_1"),
            Some(&Binding::Unbound(Unbound::NoInterface {
                interface: "vrrp.51".into()
            }))
        );
        assert_eq!(check(&config, &host).expect("checked"), []);
        // With xmit_base the socket stays on the base.
        let xmit =
            parse_node_config(&text("xmit_base = true\n"), "test.toml").expect("valid test config");
        let plan = plan_on(&xmit, &Host::with_links([base, ("vrrp.51", 9, Vec::new())]));
        assert_eq!(plan.router_sockets["VI_1"].interface, "eth7");
        assert_eq!(plan.vips["VI_1"][&v4("198.51.100.1")].iface, "vrrp.51");
        // Unicast adverts come to the base's MAC: the socket is on the base.
        let unicast = parse_node_config(
            "[node]\nname = \"n\"\n\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth7\"\nvrid = 51\nunicast_peers = [\"198.51.100.12\"]\nvips = [\"198.51.100.1/24\"]\n[instance.vmac]\n",
            "test.toml",
        )
        .expect("valid test config");
        let plan = plan_on(
            &unicast,
            &Host::with_links([
                ("eth7", 7, vec![v4("198.51.100.11")]),
                ("vrrp.51", 9, Vec::new()),
            ]),
        );
        assert_eq!(plan.router_sockets["VI_1"].interface, "eth7");
    }

    #[test]
    fn accept_mode_off_drops_vip_traffic_except_on_the_address_owner() {
        let drops = |extra| drops_vip_traffic(&parsed(extra).instances[0]);
        assert!(!drops(""), "accept defaults to true");
        assert!(drops("priority = 150\naccept = false\n"));
        assert!(!drops("priority = 255\naccept = false\n"));
        // The owner plans (without nftables) into a router that accepts.
        let owner = planned("priority = 255\naccept = false\n");
        assert!(owner.engine.routers[0].accept);
    }

    #[test]
    fn an_instance_follows_its_own_interface_with_weight_zero() {
        let plan = planned("");
        assert_eq!(
            plan.refs_of("VI_1"),
            [("interface:eth7".to_string(), 0)].as_slice()
        );
        assert!(matches!(
            plan.trackers.get("interface:eth7").map(|t| &t.spec),
            Some(TrackSpec::Interface(InterfaceSpec { name })) if name == "eth7"
        ));
    }

    #[test]
    fn an_explicit_track_of_the_own_interface_keeps_its_weight() {
        let plan = planned("track_interface = [{ name = \"eth7\", weight = -20 }]\n");
        assert_eq!(
            plan.refs_of("VI_1"),
            [("interface:eth7".to_string(), -20)].as_slice()
        );
    }

    /// An instance on an interface no host has, without a source address, tracking an HTTPS
    /// probe whose CA file does not exist.
    fn on_a_missing_interface() -> NodeConfig {
        let text = r#"
[node]
name = "n"

[[probe]]
name = "web"
kind = "http"
url = "https://198.51.100.80/health"
ca_file = "/nonexistent/hav-probe-ca.pem"

[[instance]]
name = "VI_1"
interface = "hvnosuch0"
vrid = 1
vips = ["198.51.100.1/24"]
track_probe = ["web"]
"#;
        parse_node_config(text, "test.toml").expect("valid test config")
    }

    #[test]
    fn what_the_host_lacks_is_a_warning_for_check_and_an_unbound_instance_for_start_up() {
        let config = on_a_missing_interface();
        let host = Host::default();
        let problems = check(&config, &host).expect("nothing wrong with the config itself");
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "instance VI_1: interface hvnosuch0 not found; it runs in Fault until that changes",
                "instance VI_1: probe:web: ca_file: cannot read CA certificate from /nonexistent/hav-probe-ca.pem: I/O error: No such file or directory (os error 2)",
            ]
        );
        let plan = plan(&config, &host).expect("start-up runs the instance in Fault");
        assert!(!plan.bindings["VI_1"].is_bound());
    }

    #[test]
    fn a_config_the_engine_refuses_is_refused_by_check_and_start_up_whatever_the_host() {
        let mut config = on_a_missing_interface();
        config.instances[0].priority = Priority(0);
        let host = Host::default();
        for (who, result) in [
            ("check", check(&config, &host).map(drop)),
            ("plan", plan(&config, &host).map(drop)),
        ] {
            assert!(
                matches!(result, Err(PlanError::Engine(_))),
                "{who}: {result:?}"
            );
        }
    }

    #[test]
    fn a_tracker_spec_that_cannot_run_is_refused_by_check_and_start_up() {
        let mut config = on_a_missing_interface();
        config.probes[0].interval = Duration::ZERO;
        let host = Host::default();
        for (who, result) in [
            ("check", check(&config, &host).map(drop)),
            ("plan", plan(&config, &host).map(drop)),
        ] {
            let Err(error) = result else {
                panic!("{who} accepted it");
            };
            assert_eq!(
                error.to_string(),
                "instance VI_1: tracker probe:web: interval must be positive",
                "{who}"
            );
        }
    }
}
