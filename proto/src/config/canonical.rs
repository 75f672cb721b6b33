//! The canonical TOML form of a validated config: every default written out, one spelling per
//! value, so that parsing it gives back an equal [`NodeConfig`].

use std::net::IpAddr;
use std::time::Duration;

use hav_vrrp::{Auth, V3Checksum, Version};

use super::duration;
use super::node::{CheckKind, RealServer, VirtualPorts, VirtualServer};
use super::node::{
    Command, GarpSchedule, Instance, NodeConfig, Notify, Probe, ProbeKind, ProcessMatch, Script,
    SyncGroup, Telemetry, Track, TrackFile, TrackTarget, TrackedProcess, Transport, Vip,
};
use super::raw::{
    OneOrMany, RawCoordinator, RawGarp, RawInstance, RawNode, RawNodeConfig, RawPeer, RawProbe,
    RawProcess, RawScript, RawSyncGroup, RawTelemetry, RawTrackFile, RawTrackRef, RawVip, StringOr,
};
use super::raw::{RawMetricsTls, RawRealServer, RawRealServerCheck, RawVirtualServer};

impl NodeConfig {
    /// The config as canonical TOML; [`parse_node_config`](super::parse_node_config) of it gives
    /// back a value equal to `self`.
    pub fn to_toml(&self) -> String {
        // The raw structs hold only strings, integers, booleans, arrays and tables, each of which
        // TOML represents, and every table key is a plain field name.
        toml::to_string(&self.to_raw()).expect("the raw config is representable in TOML")
    }

    /// The canonical TOML of what a push sets on a node: the config without the sections the
    /// agent always takes from its local file ([`NodeConfig::keep_local`]); `[node]` keeps only
    /// the name, which says whose config it is. Two configs that differ only in local sections
    /// push the same text.
    pub fn pushed_toml(&self) -> String {
        let mut raw = self.to_raw();
        raw.node = Some(RawNode {
            name: Some(self.node.name.clone()),
            ..RawNode::default()
        });
        raw.telemetry = None;
        raw.coordinator = None;
        // As in `to_toml`: the raw structs are representable in TOML.
        toml::to_string(&raw).expect("the raw config is representable in TOML")
    }

    fn to_raw(&self) -> RawNodeConfig {
        RawNodeConfig {
            node: Some(RawNode {
                name: Some(self.node.name.clone()),
                state_dir: Some(self.node.state_dir.display().to_string()),
                status_socket: self
                    .node
                    .status_socket
                    .as_ref()
                    .map(|path| path.display().to_string()),
                handover_port: (self.node.handover_port
                    != crate::config::node::DEFAULT_HANDOVER_PORT)
                    .then_some(self.node.handover_port),
                strict: self.node.strict.then_some(true),
                notify_fifo: (self.node.notify_fifo.as_ref())
                    .map(|fifo| fifo.path.display().to_string()),
                notify_fifo_script: (self.node.notify_fifo.as_ref())
                    .and_then(|fifo| fifo.script.as_ref())
                    .map(argv),
                max_auto_priority: (self.node.max_auto_priority)
                    .map(|priority| priority.get().into()),
                smtp: self.node.smtp.as_ref().map(super::alerts::canonical_smtp),
            }),
            instance: non_empty(
                (self.instances.iter())
                    .map(|one| {
                        super::canonical_network::extras(instance(one), one, self.node.strict)
                    })
                    .collect(),
            ),
            script: non_empty(self.scripts.iter().map(script).collect()),
            process: non_empty(self.processes.iter().map(process).collect()),
            track_file: non_empty(self.track_files.iter().map(track_file).collect()),
            probe: non_empty(self.probes.iter().map(probe).collect()),
            sync_group: non_empty(self.sync_groups.iter().map(sync_group).collect()),
            virtual_server: non_empty(self.virtual_servers.iter().map(virtual_server).collect()),
            telemetry: (!self.telemetry.is_default()).then(|| telemetry(&self.telemetry)),
            coordinator: self.coordinator.as_ref().map(|link| RawCoordinator {
                address: Some(match link.addresses.as_slice() {
                    [one] => OneOrMany::One(one.clone()),
                    many => OneOrMany::Many(many.to_vec()),
                }),
                ca: Some(link.ca.display().to_string()),
                cert: Some(link.cert.display().to_string()),
                key: Some(link.key.display().to_string()),
            }),
        }
    }
}

fn telemetry(telemetry: &Telemetry) -> RawTelemetry {
    RawTelemetry {
        metrics_listen: telemetry.metrics_listen.map(|address| address.to_string()),
        metrics_tls: telemetry.metrics_tls.as_ref().map(|tls| RawMetricsTls {
            cert: Some(tls.cert.display().to_string()),
            key: Some(tls.key.display().to_string()),
            client_ca: tls.client_ca.as_ref().map(|ca| ca.display().to_string()),
        }),
        otlp_endpoint: (telemetry.otlp_endpoint.as_ref()).map(|endpoint| endpoint.to_string()),
        sampling_ratio: Some(telemetry.sampling_ratio.get()),
        resource: (!telemetry.resource.is_empty()).then(|| telemetry.resource.clone()),
    }
}

fn instance(instance: &Instance) -> RawInstance {
    let [
        notify,
        notify_master,
        notify_backup,
        notify_fault,
        notify_stop,
    ] = notify(&instance.notify);
    let track = |wanted: fn(&TrackTarget) -> Option<&String>| {
        non_empty(
            (instance.track.iter())
                .filter_map(|track| wanted(&track.target).map(|name| track_ref(name, track)))
                .collect(),
        )
    };
    RawInstance {
        name: Some(instance.name.clone()),
        interface: Some(instance.interface.clone()),
        vrid: Some(instance.vrid.get().into()),
        version: Some(instance.version.number().into()),
        priority: Some(instance.priority.get().into()),
        advert_interval: Some(duration::format(instance.advert_interval.as_duration())),
        preempt: Some(instance.preempt),
        preempt_delay: Some(duration::format(instance.preempt_delay)),
        connection_drain: (!instance.connection_drain.is_zero())
            .then(|| duration::format(instance.connection_drain)),
        accept: Some(instance.accept),
        checksum: checksum(instance),
        source_address: instance.source_address.map(|address| address.to_string()),
        unicast_peers: match &instance.transport {
            Transport::Multicast => None,
            Transport::Unicast(peers) => {
                let short = peers.iter().all(|peer| peer.priority.is_none());
                Some(
                    (peers.iter())
                        .map(|peer| {
                            if short {
                                StringOr::Short(peer.address.to_string())
                            } else {
                                StringOr::Table(RawPeer {
                                    address: Some(peer.address.to_string()),
                                    priority: peer.priority.map(|priority| priority.get().into()),
                                })
                            }
                        })
                        .collect(),
                )
            }
        },
        auth_pass: match instance.auth {
            Auth::None => None,
            Auth::SimpleText(octets) => {
                let length = octets
                    .iter()
                    .position(|octet| *octet == 0)
                    .unwrap_or(octets.len());
                Some(String::from_utf8_lossy(&octets[..length]).into_owned())
            }
        },
        vips: Some(vips(instance)),
        track_interface: track(|target| match target {
            TrackTarget::Interface(name) => Some(name),
            _ => None,
        }),
        track_script: track(|target| match target {
            TrackTarget::Script(name) => Some(name),
            _ => None,
        }),
        track_process: track(|target| match target {
            TrackTarget::Process(name) => Some(name),
            _ => None,
        }),
        track_file: track(|target| match target {
            TrackTarget::File(name) => Some(name),
            _ => None,
        }),
        track_probe: track(|target| match target {
            TrackTarget::Probe(name) => Some(name),
            _ => None,
        }),
        notify,
        notify_master,
        notify_backup,
        notify_fault,
        notify_stop,
        smtp_alert: instance.smtp_alert,
        garp: Some(garp(&instance.garp)),
        strict: None,
        vmac: None,
        route: None,
        rule: None,
    }
}

/// Written only where it means something (VRRPv3 over IPv4), which is also the only place the
/// parser accepts it.
fn checksum(instance: &Instance) -> Option<String> {
    let applies = instance.version == Version::V3
        && instance
            .vips
            .first()
            .is_some_and(|vip| matches!(vip.address, IpAddr::V4(_)));
    applies.then(|| {
        match instance.checksum {
            V3Checksum::PseudoHeader => "pseudo-header",
            V3Checksum::NoPseudoHeader => "rfc9568",
        }
        .to_owned()
    })
}

/// Short strings when every address sits on the instance's interface without a label, tables
/// otherwise.
fn vips(instance: &Instance) -> Vec<StringOr<RawVip>> {
    // With a vmac, a VIP written without `dev` would move onto the macvlan.
    let short = instance.vmac.is_none()
        && (instance.vips.iter()).all(|vip| vip.dev == instance.interface && vip.label.is_none());
    (instance.vips.iter())
        .map(|vip: &Vip| {
            if short {
                StringOr::Short(format!("{}/{}", vip.address, vip.prefix_len))
            } else {
                StringOr::Table(RawVip {
                    address: Some(vip.address.to_string()),
                    prefix: Some(vip.prefix_len.into()),
                    dev: Some(vip.dev.clone()),
                    label: vip.label.clone(),
                })
            }
        })
        .collect()
}

fn track_ref(name: &str, track: &Track) -> StringOr<RawTrackRef> {
    StringOr::Table(RawTrackRef {
        name: Some(name.to_owned()),
        weight: Some(track.weight.get().into()),
    })
}

fn notify(notify: &Notify) -> [Option<Vec<String>>; 5] {
    [
        &notify.any,
        &notify.master,
        &notify.backup,
        &notify.fault,
        &notify.stop,
    ]
    .map(|command| command.as_ref().map(argv))
}

fn argv(command: &Command) -> Vec<String> {
    std::iter::once(command.program.display().to_string())
        .chain(command.args.iter().cloned())
        .collect()
}

fn garp(garp: &GarpSchedule) -> RawGarp {
    RawGarp {
        master_repeat: Some(garp.master_repeat.into()),
        master_delay: Some(duration::format(garp.master_delay)),
        master_refresh: Some(duration::format(
            garp.master_refresh.unwrap_or(Duration::ZERO),
        )),
        interval: Some(duration::format(garp.interval)),
    }
}

fn script(script: &Script) -> RawScript {
    RawScript {
        name: Some(script.name.clone()),
        program: Some(script.command.program.display().to_string()),
        args: Some(script.command.args.clone()),
        interval: Some(duration::format(script.interval)),
        timeout: Some(duration::format(script.timeout)),
        fall: Some(script.fall.into()),
        rise: Some(script.rise.into()),
        weight: Some(script.weight.get().into()),
        user: script.user.clone(),
        group: script.group.clone(),
    }
}

fn process(process: &TrackedProcess) -> RawProcess {
    let (name, pid_file) = match &process.matcher {
        ProcessMatch::Name(name) => (Some(name.clone()), None),
        ProcessMatch::PidFile(path) => (None, Some(path.display().to_string())),
    };
    RawProcess {
        name: Some(process.name.clone()),
        process: name,
        pid_file,
        min_procs: Some(process.min_procs.into()),
        weight: Some(process.weight.get().into()),
    }
}

fn track_file(file: &TrackFile) -> RawTrackFile {
    RawTrackFile {
        name: Some(file.name.clone()),
        path: Some(file.path.display().to_string()),
        weight: Some(file.weight.get().into()),
    }
}

fn probe(probe: &Probe) -> RawProbe {
    let mut raw = RawProbe {
        name: Some(probe.name.clone()),
        interval: Some(duration::format(probe.interval)),
        timeout: Some(duration::format(probe.timeout)),
        fall: Some(probe.fall.into()),
        rise: Some(probe.rise.into()),
        weight: Some(probe.weight.get().into()),
        ..RawProbe::default()
    };
    match &probe.kind {
        ProbeKind::Tcp { address } => {
            raw.kind = Some("tcp".into());
            raw.address = Some(address.ip().to_string());
            raw.port = Some(address.port().into());
        }
        ProbeKind::Http {
            url,
            expect_status,
            proxy,
            ca_file,
            server_name,
        } => {
            raw.kind = Some("http".into());
            raw.url = Some(url.to_string());
            raw.expect_status = Some(
                expect_status
                    .iter()
                    .map(|status| (*status).into())
                    .collect(),
            );
            raw.proxy = proxy.map(|proxy| proxy.to_string());
            raw.ca_file = ca_file.as_ref().map(|path| path.display().to_string());
            raw.server_name = server_name.as_ref().map(|name| name.to_str().into_owned());
        }
    }
    raw
}

fn sync_group(group: &SyncGroup) -> RawSyncGroup {
    let [
        notify,
        notify_master,
        notify_backup,
        notify_fault,
        notify_stop,
    ] = notify(&group.notify);
    RawSyncGroup {
        name: Some(group.name.clone()),
        instances: Some(group.instances.clone()),
        notify,
        notify_master,
        notify_backup,
        notify_fault,
        notify_stop,
        smtp_alert: group.smtp_alert,
    }
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    if items.is_empty() { None } else { Some(items) }
}

fn virtual_server(server: &VirtualServer) -> RawVirtualServer {
    let (port, ports) = match &server.ports {
        VirtualPorts::Single(port) => (Some((*port).into()), None),
        VirtualPorts::Group(ports) => (None, Some(ports.iter().map(|p| (*p).into()).collect())),
    };
    let is_dr = server.lb_kind == super::node::LbKind::Dr;
    RawVirtualServer {
        name: Some(server.name.clone()),
        address: Some(server.address.to_string()),
        port,
        ports,
        protocol: Some(server.protocol.as_str().to_owned()),
        instance: Some(server.instance.clone()),
        lb_algo: Some(server.lb_algo.as_str().to_owned()),
        lb_kind: Some(server.lb_kind.as_str().to_owned()),
        delay_loop: Some(duration::format(server.delay_loop)),
        flow_timeout: is_dr.then(|| duration::format(server.flow_timeout)),
        quorum: Some(server.quorum.into()),
        hysteresis: Some(server.hysteresis.into()),
        quorum_up: server.quorum_up.as_ref().map(argv),
        quorum_down: server.quorum_down.as_ref().map(argv),
        sorry_server: server.sorry_server.map(|sorry| match sorry.port {
            Some(port) => std::net::SocketAddr::new(sorry.address, port).to_string(),
            None => sorry.address.to_string(),
        }),
        real_server: non_empty(server.real_servers.iter().map(real_server).collect()),
    }
}

fn real_server(server: &RealServer) -> RawRealServer {
    RawRealServer {
        address: Some(server.address.to_string()),
        port: server.port.map(Into::into),
        weight: Some(server.weight.into()),
        inhibit_on_failure: Some(server.inhibit_on_failure),
        check: server.check.as_ref().map(|check| {
            let mut raw = RawRealServerCheck {
                connect_timeout: Some(duration::format(check.connect_timeout)),
                retry: Some(check.retry.into()),
                delay_before_retry: Some(duration::format(check.delay_before_retry)),
                ..RawRealServerCheck::default()
            };
            match &check.kind {
                CheckKind::Tcp { connect } => {
                    raw.kind = Some("tcp".into());
                    raw.connect_ip = Some(connect.ip().to_string());
                    raw.connect_port = Some(connect.port().into());
                }
                CheckKind::Http {
                    connect,
                    tls,
                    path,
                    virtualhost,
                    status_code,
                    digest,
                    ca_file,
                    server_name,
                } => {
                    raw.kind = Some(if *tls { "https" } else { "http" }.into());
                    raw.connect_ip = Some(connect.ip().to_string());
                    raw.connect_port = Some(connect.port().into());
                    raw.path = Some(path.clone());
                    raw.virtualhost = virtualhost.clone();
                    raw.status_code = Some(status_code.iter().map(|s| (*s).into()).collect());
                    raw.digest = digest.clone();
                    raw.ca_file = ca_file.as_ref().map(|file| file.display().to_string());
                    raw.server_name = server_name.as_ref().map(|name| name.to_str().into_owned());
                }
                CheckKind::Misc { command } => {
                    raw.kind = Some("misc".into());
                    raw.program = Some(argv(command));
                }
            }
            raw
        }),
    }
}
