//! From a validated [`NodeConfig`] to everything the daemon runs: the engine's config, the VRRP
//! sockets, the VIPs' netlink details, the trackers and the hooks.
//!
//! Planning only reads the host (interface addresses); it changes nothing, so a config that
//! cannot be planned is refused before anything moves. [`plan`] (start-up, reload) and
//! [`check`] (`hav-agent --check`) are one path: every check of the config, the engine's and
//! each tracker spec's included, runs in both and refuses alike; what depends on the host
//! ([`HostProblem`]) stops start-up only where the daemon cannot run without it (no address to
//! send adverts from) and is a warning naming the instance in `--check`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use hav_proto::config::{
    Command, Instance, NodeConfig, Notify, ProbeKind, ProcessMatch as ConfigProcessMatch,
    TrackTarget, Transport,
};
use hav_vrrp::Family;
use hav_vrrp::engine::{
    AnnounceSchedule, EngineConfig, Peer, Peers, Preempt, RouterConfig, SyncGroupConfig,
};

use crate::hooks::HookConfig;
use crate::net::socket::{Mode, SocketSpec};
use crate::net::vip::Vip;
use crate::track::{
    FileSpec, HttpSpec, InterfaceSpec, ProbeSchedule, ProcessMatch, ProcessSpec, Program, RunAs,
    ScriptSpec, TcpSpec, TrackSpec,
};

/// Everything derived from one config.
#[derive(Debug, Clone)]
pub struct Plan {
    pub engine: EngineConfig,
    /// The socket each router sends and receives on.
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
}

#[derive(Debug, Clone)]
pub struct PlannedTracker {
    pub spec: TrackSpec,
    pub fingerprint: String,
}

impl Plan {
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

/// Why a config cannot be run on this host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Something the host lacks that the daemon cannot start without.
    #[error(transparent)]
    Host(#[from] HostProblem),
    #[error("instance {instance}: tracked object {target} is not defined")]
    UnresolvedTracker { instance: String, target: String },
    #[error("instance {instance}: tracker {tracker}: {reason}")]
    Tracker {
        instance: String,
        tracker: String,
        reason: String,
    },
    /// The reason is in the message, not a source, so that `{:#}` does not say it twice.
    #[error("engine refused the config: {0}")]
    Engine(hav_vrrp::engine::EngineConfigError),
}

impl From<hav_vrrp::engine::EngineConfigError> for PlanError {
    fn from(error: hav_vrrp::engine::EngineConfigError) -> Self {
        PlanError::Engine(error)
    }
}

/// Something a config needs from the host that this host does not have. Start-up refuses the
/// config for [`HostProblem::NoSourceAddress`] and [`HostProblem::Addresses`] (found while
/// planning) and fails later for a missing interface or a tracker that cannot start;
/// `hav-agent --check` reports each as a warning, since the config may be meant for another host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostProblem {
    #[error(
        "instance {instance}: interface {interface} has no {family} address to send adverts from; set source_address"
    )]
    NoSourceAddress {
        instance: String,
        interface: String,
        family: &'static str,
    },
    #[error("cannot read interface addresses: {0}")]
    Addresses(String),
    #[error("instance {instance}: no interface {interface} on this host")]
    NoInterface { instance: String, interface: String },
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

/// Plans `config` against the host's current interface addresses. Fails on any problem of the
/// config and on a host without the addresses the instances send from.
pub fn plan(config: &NodeConfig) -> Result<Plan, PlanError> {
    let addresses = interface_addresses()?;
    let (plan, problems) = plan_on(config, &addresses)?;
    match problems.into_iter().next() {
        Some(problem) => Err(problem.into()),
        None => Ok(plan),
    }
}

/// What `hav-agent --check` reports: an error for anything [`plan`] refuses whatever the host;
/// otherwise everything this host lacks for the config to run, instance by instance.
pub fn check(config: &NodeConfig) -> Result<Vec<HostProblem>, PlanError> {
    let (addresses, mut problems) = match interface_addresses() {
        Ok(addresses) => (addresses, Vec::new()),
        Err(PlanError::Host(problem)) => (Vec::new(), vec![problem]),
        Err(error) => return Err(error),
    };
    let readable = problems.is_empty();
    let (plan, mut no_source) = plan_on(config, &addresses)?;
    let interfaces: BTreeSet<&str> = addresses.iter().map(|(name, _)| name.as_str()).collect();
    let local: BTreeSet<IpAddr> = addresses.iter().map(|(_, address)| *address).collect();
    for instance in &config.instances {
        let name = &instance.name;
        let owner = format!("instance {name}");
        let mut devices = vec![&instance.interface];
        devices.extend(instance.vips.iter().map(|vip| &vip.dev));
        devices.dedup();
        let missing: Vec<&String> = devices
            .into_iter()
            .filter(|device| readable && !interfaces.contains(device.as_str()))
            .collect();
        // No address on an interface that is not there goes without saying.
        let interface_missing = missing.contains(&&instance.interface);
        for device in missing {
            problems.push(HostProblem::NoInterface {
                instance: name.clone(),
                interface: device.clone(),
            });
        }
        no_source.retain(|problem| match problem {
            HostProblem::NoSourceAddress { instance, .. } if instance == name => {
                if readable && !interface_missing {
                    problems.push(problem.clone());
                }
                false
            }
            _ => true,
        });
        if let Some(address) = instance.source_address
            && readable
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
    problems.extend(no_source);
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

/// Plans `config` with `addresses` as the host's interface addresses. An instance without an
/// address to send from is planned with the unspecified address and reported, so that the
/// checks of the whole config still run.
fn plan_on(
    config: &NodeConfig,
    addresses: &[(String, IpAddr)],
) -> Result<(Plan, Vec<HostProblem>), PlanError> {
    let mut problems = Vec::new();
    let mut plan = Plan {
        engine: EngineConfig::default(),
        router_sockets: HashMap::new(),
        vips: HashMap::new(),
        trackers: BTreeMap::new(),
        tracker_refs: HashMap::new(),
        instance_hooks: HashMap::new(),
        group_hooks: HashMap::new(),
    };
    for instance in &config.instances {
        let primary = primary_address(instance, addresses).unwrap_or_else(|problem| {
            problems.push(problem);
            match instance.family {
                Family::V4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                Family::V6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            }
        });
        plan.engine.routers.push(router_config(instance, primary));
        plan.router_sockets
            .insert(instance.name.clone(), socket_spec(instance, primary));
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
    Ok((plan, problems))
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
        interface: instance.interface.clone(),
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
        accept: instance.accept,
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
        interface: instance.interface.clone(),
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

fn primary_address(
    instance: &Instance,
    addresses: &[(String, IpAddr)],
) -> Result<IpAddr, HostProblem> {
    if let Some(source) = instance.source_address {
        return Ok(source);
    }
    let mut on_interface = addresses
        .iter()
        .filter(|(name, _)| *name == instance.interface)
        .map(|(_, address)| *address);
    let found = match instance.family {
        Family::V4 => on_interface
            .filter(IpAddr::is_ipv4)
            .find(|address| !instance.vips.iter().any(|vip| vip.address == *address)),
        // RFC 5798 section 5.1.2.1: IPv6 adverts come from the link-local address.
        Family::V6 => on_interface.find(|address| match address {
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
            IpAddr::V4(_) => false,
        }),
    };
    found.ok_or_else(|| HostProblem::NoSourceAddress {
        instance: instance.name.clone(),
        interface: instance.interface.clone(),
        family: match instance.family {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6 link-local",
        },
    })
}

/// Every (interface, address) pair of the host, in the kernel's order (primary first).
fn interface_addresses() -> Result<Vec<(String, IpAddr)>, PlanError> {
    let mut found = Vec::new();
    let entries = nix::ifaddrs::getifaddrs()
        .map_err(|error| PlanError::Host(HostProblem::Addresses(error.to_string())))?;
    for entry in entries {
        let Some(address) = entry.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            found.push((entry.interface_name, IpAddr::V4(v4.ip())));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            found.push((entry.interface_name, IpAddr::V6(v6.ip())));
        }
    }
    Ok(found)
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
    use hav_vrrp::Priority;

    fn planned(instance_extra: &str) -> Plan {
        let text = format!(
            "[node]\nname = \"n\"\n\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth7\"\nvrid = 1\nsource_address = \"198.51.100.11\"\nvips = [\"198.51.100.1/24\"]\n{instance_extra}"
        );
        let config = parse_node_config(&text, "test.toml").expect("valid test config");
        plan(&config).expect("plannable: the source address is given")
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
    fn what_the_host_lacks_is_a_warning_for_check_and_stops_start_up_only_without_an_address() {
        let config = on_a_missing_interface();
        let problems = check(&config).expect("nothing wrong with the config itself");
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "instance VI_1: no interface hvnosuch0 on this host",
                "instance VI_1: probe:web: ca_file: cannot read CA certificate from /nonexistent/hav-probe-ca.pem: I/O error: No such file or directory (os error 2)",
            ]
        );
        assert!(
            matches!(
                plan(&config),
                Err(PlanError::Host(HostProblem::NoSourceAddress { ref instance, .. })) if instance == "VI_1"
            ),
            "start-up cannot send adverts"
        );
    }

    #[test]
    fn a_config_the_engine_refuses_is_refused_by_check_and_start_up_whatever_the_host() {
        let mut config = on_a_missing_interface();
        config.instances[0].priority = Priority(0);
        for (who, result) in [
            ("check", check(&config).map(drop)),
            ("plan", plan(&config).map(drop)),
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
        for (who, result) in [
            ("check", check(&config).map(drop)),
            ("plan", plan(&config).map(drop)),
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
