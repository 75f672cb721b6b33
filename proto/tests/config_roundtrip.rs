//! Canonical TOML round trip: for any valid config, `parse_node_config(config.to_toml())` gives
//! back an equal config, and its canonical form is the same text. Also the defaults a minimal
//! config gets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hav_proto::config::{
    Command, GarpSchedule, Instance, MailAddress, NodeConfig, NodeSettings, Notify, NotifyFifo,
    Probe, ProbeKind, ProbeUrl, ProcessMatch, RealtimePriority, SamplingRatio, Script, Smtp,
    SmtpHost, SmtpServer, SyncGroup, Telemetry, Track, TrackFile, TrackTarget, TrackWeight,
    TrackedProcess, Transport, UnicastPeer, Vip, parse_node_config,
};
use hav_vrrp::{AdvertInterval, Auth, Family, Priority, V3Checksum, Version, VrId};
use proptest::prelude::*;
use proptest::sample::subsequence;
use rustls::pki_types::ServerName;

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let config = parse_node_config(
        "[node]\nname = \"n1\"\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 9\nvips = [\"198.51.100.9\"]\n",
        "minimal",
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(
        config.node,
        NodeSettings {
            name: "n1".into(),
            state_dir: PathBuf::from("/var/lib/hav"),
            status_socket: None,
            handover_port: 7401,
            strict: false,
            notify_fifo: None,
            smtp: None,
            max_auto_priority: None,
        }
    );
    let instance = &config.instances[0];
    let expected = Instance {
        name: "VI_1".into(),
        interface: "eth0".into(),
        vrid: VrId::new(9).expect("9 is a vrid"),
        version: Version::V3,
        family: Family::V4,
        priority: Priority::DEFAULT,
        advert_interval: AdvertInterval::DEFAULT,
        preempt: true,
        preempt_delay: Duration::ZERO,
        connection_drain: Duration::ZERO,
        accept: true,
        checksum: V3Checksum::PseudoHeader,
        source_address: None,
        transport: Transport::Multicast,
        auth: Auth::None,
        vips: vec![Vip {
            address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)),
            prefix_len: 32,
            dev: "eth0".into(),
            label: None,
        }],
        track: vec![],
        notify: Notify::default(),
        smtp_alert: None,
        garp: GarpSchedule {
            master_repeat: 5,
            master_delay: Duration::from_secs(5),
            master_refresh: None,
            interval: Duration::ZERO,
        },
        strict: false,
        vmac: None,
        routes: vec![],
        rules: vec![],
    };
    assert_eq!(instance, &expected);
}

#[test]
fn definition_weights_apply_to_references_without_their_own() {
    let config = parse_node_config(
        r#"
[node]
name = "n1"
[[script]]
name = "chk"
program = "/bin/true"
weight = -40
[[track_file]]
name = "maint"
path = "/etc/maint"
[[instance]]
name = "VI_1"
interface = "eth0"
vrid = 9
vips = ["198.51.100.9/24"]
track_interface = ["eth1"]
track_script = ["chk", ]
track_file = ["maint"]
"#,
        "weights",
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let weights: Vec<(TrackTarget, i16)> = config.instances[0]
        .track
        .iter()
        .map(|track| (track.target.clone(), track.weight.get()))
        .collect();
    assert_eq!(
        weights,
        [
            (TrackTarget::Interface("eth1".into()), 0),
            (TrackTarget::Script("chk".into()), -40),
            (TrackTarget::File("maint".into()), 1),
        ]
    );
    assert_eq!(config.scripts[0].timeout, config.scripts[0].interval);
}

fn millis(max: u64) -> impl Strategy<Value = Duration> {
    (0..=max).prop_map(Duration::from_millis)
}

fn positive_millis(max: u64) -> impl Strategy<Value = Duration> {
    (1..=max).prop_map(Duration::from_millis)
}

fn weight() -> impl Strategy<Value = TrackWeight> {
    (-253i16..=253).prop_map(|weight| TrackWeight::new(weight).expect("in range by construction"))
}

fn command() -> impl Strategy<Value = Command> {
    (
        "/[a-z]{1,8}(/[a-z0-9_.-]{1,8}){0,2}",
        prop::collection::vec("[ -~]{0,12}", 0..3),
    )
        .prop_map(|(program, args)| Command {
            program: PathBuf::from(program),
            args,
        })
}

fn notify() -> impl Strategy<Value = Notify> {
    (
        prop::option::of(command()),
        prop::option::of(command()),
        prop::option::of(command()),
        prop::option::of(command()),
        prop::option::of(command()),
    )
        .prop_map(|(any, master, backup, fault, stop)| Notify {
            any,
            master,
            backup,
            fault,
            stop,
        })
}

fn script(index: usize) -> impl Strategy<Value = Script> {
    (
        command(),
        positive_millis(600_000),
        prop::option::of(positive_millis(600_000)),
        1u32..=10,
        1u32..=10,
        weight(),
        prop::option::of("[a-z]{1,8}"),
        prop::option::of("[a-z]{1,8}"),
    )
        .prop_map(
            move |(command, interval, timeout, fall, rise, weight, user, group)| Script {
                name: format!("script{index}"),
                command,
                interval,
                timeout: timeout.unwrap_or(interval),
                fall,
                rise,
                weight,
                user,
                group,
            },
        )
}

fn process(index: usize) -> impl Strategy<Value = TrackedProcess> {
    let matcher = prop_oneof![
        "[a-z]{1,15}".prop_map(ProcessMatch::Name),
        "/run/[a-z]{1,8}\\.pid".prop_map(|path| ProcessMatch::PidFile(PathBuf::from(path))),
    ];
    (matcher, 1u32..=4, weight()).prop_map(move |(matcher, min_procs, weight)| TrackedProcess {
        name: format!("process{index}"),
        matcher,
        min_procs,
        weight,
    })
}

fn track_file(index: usize) -> impl Strategy<Value = TrackFile> {
    ("/etc/[a-z]{1,8}", weight()).prop_map(move |(path, weight)| TrackFile {
        name: format!("file{index}"),
        path: PathBuf::from(path),
        weight,
    })
}

fn socket_address() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), 1u16..)
            .prop_map(|(octets, port)| SocketAddr::new(IpAddr::from(octets), port)),
        (any::<[u8; 16]>(), 1u16..)
            .prop_map(|(octets, port)| SocketAddr::new(IpAddr::from(octets), port)),
    ]
}

fn probe(index: usize) -> impl Strategy<Value = Probe> {
    let kind = prop_oneof![
        socket_address().prop_map(|address| ProbeKind::Tcp { address }),
        (
            "https?://[a-z]{1,8}(\\.[a-z]{2,3})?(:[1-9][0-9]{1,3})?(/[a-z]{0,6})?",
            prop::collection::vec(100u16..=599, 1..4),
            prop::option::of(socket_address()),
            prop::option::of("/etc/hav/[a-z]{1,8}\\.pem"),
            prop::option::of(prop_oneof![
                "[a-z]{1,8}\\.example".prop_map(String::from),
                any::<[u8; 4]>().prop_map(|octets| IpAddr::from(octets).to_string()),
            ]),
        )
            .prop_map(|(url, expect_status, proxy, ca_file, server_name)| {
                let url: ProbeUrl = url.parse().expect("the strategy makes valid URLs");
                // The TLS options belong to https:// URLs only.
                let tls = url.is_tls();
                ProbeKind::Http {
                    url,
                    expect_status,
                    proxy,
                    ca_file: ca_file.filter(|_| tls).map(PathBuf::from),
                    server_name: server_name.filter(|_| tls).map(|name| {
                        ServerName::try_from(name)
                            .expect("the strategy makes valid names")
                            .to_owned()
                    }),
                }
            }),
    ];
    (
        kind,
        positive_millis(60_000),
        positive_millis(60_000),
        1u32..=5,
        1u32..=5,
        weight(),
    )
        .prop_map(move |(kind, interval, timeout, fall, rise, weight)| Probe {
            name: format!("probe{index}"),
            kind,
            interval,
            timeout,
            fall,
            rise,
            weight,
        })
}

/// Distinct addresses per instance and per role, so configs are valid by construction.
fn address(family: Family, instance: usize, role: u8, index: usize) -> IpAddr {
    let low = u8::try_from(instance * 16 + index + 1).expect("few instances and entries");
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(198, 51, role, low)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            u16::from(role),
            0,
            0,
            0,
            0,
            u16::from(low),
        )),
    }
}

struct Names {
    scripts: Vec<String>,
    processes: Vec<String>,
    files: Vec<String>,
    probes: Vec<String>,
}

fn tracks(names: &Names) -> impl Strategy<Value = Vec<Track>> + use<> {
    fn some(
        names: &[String],
        target: fn(String) -> TrackTarget,
    ) -> impl Strategy<Value = Vec<Track>> + use<> {
        let len = names.len();
        subsequence(names.to_vec(), 0..=len).prop_flat_map(move |chosen| {
            let count = chosen.len();
            prop::collection::vec(weight(), count).prop_map(move |weights| {
                (chosen.iter().cloned().zip(weights))
                    .map(|(name, weight)| Track {
                        target: target(name),
                        weight,
                    })
                    .collect::<Vec<_>>()
            })
        })
    }
    let interfaces: Vec<String> = vec!["eth0".into(), "eth1".into(), "bond0.100".into()];
    (
        some(&interfaces, TrackTarget::Interface),
        some(&names.scripts, TrackTarget::Script),
        some(&names.processes, TrackTarget::Process),
        some(&names.files, TrackTarget::File),
        some(&names.probes, TrackTarget::Probe),
    )
        .prop_map(|(a, b, c, d, e)| [a, b, c, d, e].concat())
}

fn instance(index: usize, names: &Names) -> impl Strategy<Value = Instance> + use<> {
    let version_family = prop_oneof![
        Just((Version::V2, Family::V4)),
        Just((Version::V3, Family::V4)),
        Just((Version::V3, Family::V6)),
    ];
    (version_family, tracks(names), notify()).prop_flat_map(
        move |((version, family), track, notify)| {
            let interval = match version {
                Version::V2 => (1u8..=255)
                    .prop_map(|secs| AdvertInterval::from_secs(secs).expect("non-zero"))
                    .boxed(),
                _ => (1u16..=4095)
                    .prop_map(|centis| AdvertInterval::from_centis(centis).expect("in range"))
                    .boxed(),
            };
            let checksum = match (version, family) {
                (Version::V3, Family::V4) => prop_oneof![
                    Just(V3Checksum::PseudoHeader),
                    Just(V3Checksum::NoPseudoHeader)
                ]
                .boxed(),
                _ => Just(V3Checksum::PseudoHeader).boxed(),
            };
            let auth = match version {
                Version::V2 => prop_oneof![
                    Just(Auth::None),
                    "[a-zA-Z0-9]{1,8}".prop_map(|pass| {
                        let mut octets = [0u8; 8];
                        octets[..pass.len()].copy_from_slice(pass.as_bytes());
                        Auth::SimpleText(octets)
                    }),
                ]
                .boxed(),
                _ => Just(Auth::None).boxed(),
            };
            let max_prefix = match family {
                Family::V4 => 32u8,
                Family::V6 => 128,
            };
            let vips = prop::collection::vec(
                (
                    0..=max_prefix,
                    prop_oneof![Just(None), Just(Some("eth9")), Just(Some("eth0"))],
                    any::<bool>(),
                ),
                1..4,
            )
            .prop_map(move |entries| {
                (entries.into_iter().enumerate())
                    .map(|(vip_index, (prefix_len, dev, labelled))| {
                        let dev = dev.unwrap_or("eth0").to_owned();
                        let label = (labelled && family == Family::V4)
                            .then(|| format!("{dev}:v{vip_index}"));
                        Vip {
                            address: address(family, index, 100, vip_index),
                            prefix_len,
                            dev,
                            label,
                        }
                    })
                    .collect::<Vec<_>>()
            });
            let transport = prop_oneof![
                Just(Transport::Multicast),
                prop::collection::vec(prop::option::of(1u8..=255), 1..3).prop_map(
                    move |priorities| {
                        Transport::Unicast(
                            (priorities.into_iter().enumerate())
                                .map(|(peer, priority)| UnicastPeer {
                                    address: address(family, index, 1, peer),
                                    priority: priority.map(Priority),
                                })
                                .collect(),
                        )
                    }
                ),
            ];
            let garp = (
                0u32..=255,
                millis(60_000),
                prop::option::of(positive_millis(600_000)),
                millis(1_000),
            )
                .prop_map(
                    |(master_repeat, master_delay, master_refresh, interval)| GarpSchedule {
                        master_repeat,
                        master_delay,
                        master_refresh,
                        interval,
                    },
                );
            let track = track.clone();
            let notify = notify.clone();
            (
                (
                    1u8..=255,
                    interval,
                    any::<bool>(),
                    millis(300_000),
                    any::<bool>(),
                    checksum,
                ),
                (any::<bool>(), transport, auth, vips, garp),
            )
                .prop_map(
                    move |(
                        (priority, advert_interval, preempt, preempt_delay, accept, checksum),
                        (with_source, transport, auth, vips, garp),
                    )| Instance {
                        name: format!("VI_{index}"),
                        interface: "eth0".into(),
                        vrid: VrId::new(u8::try_from(index + 1).expect("few instances"))
                            .expect("non-zero"),
                        version,
                        family,
                        priority: Priority(priority),
                        advert_interval,
                        preempt,
                        preempt_delay,
                        // Off or on, a whole number of milliseconds like every duration.
                        connection_drain: if accept {
                            preempt_delay
                        } else {
                            Duration::ZERO
                        },
                        accept,
                        checksum,
                        source_address: with_source.then(|| address(family, index, 2, 0)),
                        transport,
                        auth,
                        vips,
                        track: track.clone(),
                        notify: notify.clone(),
                        smtp_alert: accept.then_some(preempt),
                        garp,
                        strict: false,
                        // Not with a connection drain (set above when `accept`).
                        vmac: (with_source && !accept).then(|| hav_proto::config::Vmac {
                            name: format!("vrrp.{}", index + 1),
                            xmit_base: family == Family::V6 || preempt,
                        }),
                        routes: Vec::new(),
                        rules: Vec::new(),
                    },
                )
        },
    )
}

fn telemetry() -> impl Strategy<Value = Telemetry> {
    (
        prop::option::of(socket_address()),
        prop::option::of(
            (
                prop::bool::ANY,
                "[a-z][a-z0-9.-]{0,12}|\\[2001:db8::[0-9a-f]{1,4}\\]",
                prop::option::of(1u16..),
            )
                .prop_map(|(tls, host, port)| {
                    let scheme = if tls { "https" } else { "http" };
                    let port = port.map(|port| format!(":{port}")).unwrap_or_default();
                    format!("{scheme}://{host}{port}")
                }),
        ),
        prop_oneof![Just(1.0), Just(0.0), 0.0f64..=1.0],
        prop::collection::btree_map("[a-z][a-z.]{0,16}", "[ -~]{0,12}", 0..3),
    )
        .prop_map(|(metrics_listen, endpoint, ratio, resource)| {
            let text = match endpoint {
                Some(url) => {
                    format!("[node]\nname = \"x\"\n[telemetry]\notlp_endpoint = {url:?}\n")
                }
                None => "[node]\nname = \"x\"\n".to_string(),
            };
            let otlp_endpoint = parse_node_config(&text, "endpoint")
                .unwrap_or_else(|errors| panic!("{errors}"))
                .telemetry
                .otlp_endpoint;
            Telemetry {
                metrics_listen,
                metrics_tls: None,
                otlp_endpoint,
                sampling_ratio: SamplingRatio::new(ratio).expect("generated in range"),
                resource,
            }
        })
}

fn node_config() -> impl Strategy<Value = NodeConfig> {
    (0usize..3, 0usize..3, 0usize..3, 0usize..3, 0usize..4).prop_flat_map(
        |(scripts, processes, files, probes, instances)| {
            let names = Names {
                scripts: (0..scripts).map(|index| format!("script{index}")).collect(),
                processes: (0..processes)
                    .map(|index| format!("process{index}"))
                    .collect(),
                files: (0..files).map(|index| format!("file{index}")).collect(),
                probes: (0..probes).map(|index| format!("probe{index}")).collect(),
            };
            let instance_strategies: Vec<_> = (0..instances)
                .map(|index| instance(index, &names))
                .collect();
            let instance_names: Vec<String> =
                (0..instances).map(|index| format!("VI_{index}")).collect();
            let groups = subsequence(instance_names.clone(), 0..=instances)
                .prop_flat_map(|members| (Just(members), notify()))
                .prop_map(|(members, notify)| {
                    if members.is_empty() {
                        vec![]
                    } else {
                        vec![SyncGroup {
                            name: "G1".into(),
                            instances: members,
                            notify,
                            smtp_alert: Some(true),
                        }]
                    }
                });
            (
                (
                    "[a-z][a-z0-9-]{0,10}",
                    "/[a-z]{1,8}(/[a-z]{1,8})?",
                    prop::option::of("/run/[a-z]{1,8}\\.sock"),
                ),
                (0..scripts).map(script).collect::<Vec<_>>(),
                (0..processes).map(process).collect::<Vec<_>>(),
                (0..files).map(track_file).collect::<Vec<_>>(),
                (0..probes).map(probe).collect::<Vec<_>>(),
                instance_strategies,
                groups,
                telemetry(),
            )
                .prop_map(
                    |(
                        (name, state_dir, status_socket),
                        scripts,
                        processes,
                        track_files,
                        probes,
                        instances,
                        sync_groups,
                        telemetry,
                    )| {
                        NodeConfig {
                            node: NodeSettings {
                                handover_port: 7401
                                    + u16::try_from(state_dir.len() % 3).expect("small"),
                                notify_fifo: status_socket.as_ref().map(|_| NotifyFifo {
                                    path: PathBuf::from("/run/hav/notify.fifo"),
                                    script: (state_dir.len() % 2 == 0).then(|| Command {
                                        program: PathBuf::from("/usr/local/sbin/fifo-reader"),
                                        args: vec!["-v".into()],
                                    }),
                                }),
                                smtp: (state_dir.len() % 2 == 1).then(|| Smtp {
                                    server: SmtpServer {
                                        host: SmtpHost::Name("mail.example.net".into()),
                                        port: 25,
                                    },
                                    connect_timeout: Duration::from_secs(30),
                                    helo_name: Some("lb1.example.net".into()),
                                    from: MailAddress::new("hav@example.net").expect("valid"),
                                    to: vec![
                                        MailAddress::new("ops@example.net").expect("valid"),
                                        MailAddress::new("noc@example.net").expect("valid"),
                                    ],
                                    alert: name.len() % 2 == 0,
                                }),
                                max_auto_priority: RealtimePriority::new(
                                    i64::try_from(name.len()).expect("short") - 1,
                                ),
                                name,
                                state_dir: PathBuf::from(state_dir),
                                status_socket: status_socket.map(PathBuf::from),
                                strict: false,
                            },
                            instances,
                            scripts,
                            processes,
                            track_files,
                            probes,
                            sync_groups,
                            virtual_servers: Vec::new(),
                            telemetry,
                            coordinator: None,
                        }
                    },
                )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn canonical_toml_round_trips(config in node_config()) {
        let text = config.to_toml();
        let parsed = match parse_node_config(&text, "canonical") {
            Ok(parsed) => parsed,
            Err(errors) => return Err(TestCaseError::fail(format!("{errors}\n---\n{text}"))),
        };
        prop_assert_eq!(&parsed, &config, "canonical text:\n{}", text);
        prop_assert_eq!(parsed.to_toml(), text);
    }
}
