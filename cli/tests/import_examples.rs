//! The classic keepalived setups in deploy/examples/keepalived convert into hav configs that load,
//! with the values keepalived runs and every unconverted item listed at its line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use hav_proto::config::{
    Instance, NodeConfig, ProbeKind, ProcessMatch, TrackTarget, Transport, parse_node_config,
};
use hav_vrrp::{Auth, Version};
use havctl::import::{FindingKind, ImportReport, ImportedNode, import_keepalived};

fn setup(name: &str) -> ImportReport {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/keepalived")
        .join(name);
    let files = [dir.join("node-a.conf"), dir.join("node-b.conf")];
    let report = import_keepalived(&files).unwrap_or_else(|error| panic!("{name}: {error}"));
    for node in &report.nodes {
        // The text handed to the operator is the config returned.
        let again = parse_node_config(&node.toml, "import output")
            .unwrap_or_else(|errors| panic!("{name}: {errors}"));
        assert_eq!(again, node.config, "{name}");
    }
    report
}

fn instance<'a>(config: &'a NodeConfig, name: &str) -> &'a Instance {
    config
        .instance(name)
        .unwrap_or_else(|| panic!("no instance {name}"))
}

/// (file name, line, start of the item) of every finding of `kind`.
fn findings(node: &ImportedNode, kind: FindingKind) -> Vec<(String, usize, String)> {
    node.findings
        .iter()
        .filter(|finding| finding.kind == kind)
        .map(|finding| {
            let file = finding
                .location
                .file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned());
            (
                file.unwrap_or_default(),
                finding.location.line,
                finding.item.clone(),
            )
        })
        .collect()
}

fn track_weight(instance: &Instance, target: &TrackTarget) -> i16 {
    instance
        .track
        .iter()
        .find(|track| &track.target == target)
        .map(|track| track.weight.get())
        .unwrap_or_else(|| panic!("{} does not track {target:?}", instance.name))
}

fn peers(instance: &Instance) -> Vec<(IpAddr, Option<u8>)> {
    match &instance.transport {
        Transport::Unicast(peers) => peers
            .iter()
            .map(|peer| (peer.address, peer.priority.map(|p| p.get())))
            .collect(),
        Transport::Multicast => Vec::new(),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|_| panic!("{text}"))
}

#[test]
fn squid_active_passive() {
    let report = setup("squid-active-passive");
    let [a, b] = &report.nodes[..] else {
        panic!("two nodes")
    };
    assert_eq!(a.config.node.name, "proxy-a");
    assert_eq!(b.config.node.name, "proxy-b");
    let vi_a = instance(&a.config, "VI_PROXY");
    let vi_b = instance(&b.config, "VI_PROXY");
    assert_eq!(vi_a.vrid.get(), 51);
    assert_eq!(
        vi_a.version,
        Version::V2,
        "keepalived's default version is 2"
    );
    assert_eq!((vi_a.priority.get(), vi_b.priority.get()), (150, 100));
    assert_eq!(vi_a.advert_interval.as_duration(), Duration::from_secs(1));
    assert!(vi_a.preempt);
    assert_eq!(vi_a.source_address, Some(ip("198.51.100.11")));
    // Each peer carries the other node's priority.
    assert_eq!(peers(vi_a), [(ip("198.51.100.12"), Some(100))]);
    assert_eq!(peers(vi_b), [(ip("198.51.100.11"), Some(150))]);
    assert_eq!(vi_a.auth, Auth::SimpleText(*b"s3cret42"));
    assert_eq!(vi_a.vips.len(), 1);
    assert_eq!(vi_a.vips[0].address, ip("198.51.100.100"));
    assert_eq!(vi_a.vips[0].prefix_len, 24);
    assert_eq!(vi_a.vips[0].dev, "eth0");
    assert_eq!(vi_a.vips[0].label.as_deref(), Some("eth0:vip"));
    assert_eq!(
        track_weight(vi_a, &TrackTarget::Script("chk_squid".into())),
        -60
    );
    assert_eq!(track_weight(vi_a, &TrackTarget::Process("squid".into())), 0);
    assert_eq!(
        track_weight(vi_a, &TrackTarget::File("maintenance".into())),
        -100
    );
    let notify_master = vi_a
        .notify
        .master
        .as_ref()
        .map(|c| (c.program.clone(), c.args.clone()));
    assert_eq!(
        notify_master,
        Some((
            PathBuf::from("/usr/local/sbin/proxy-notify"),
            vec!["VI_PROXY".to_owned(), "master".to_owned()]
        ))
    );
    let script = &a.config.scripts[0];
    assert_eq!(script.command.program, PathBuf::from("/usr/sbin/squid"));
    assert_eq!(script.command.args, ["-k", "check"]);
    assert_eq!(
        (script.interval, script.timeout),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    assert_eq!((script.fall, script.rise), (2, 2));
    assert_eq!(script.user.as_deref(), Some("root"), "script_user applies");
    assert_eq!(
        a.config.processes[0].matcher,
        ProcessMatch::Name("squid".into())
    );
    assert_eq!(a.config.processes[0].min_procs, 1);
    assert_eq!(
        a.config.track_files[0].path,
        PathBuf::from("/etc/keepalived/maintenance")
    );
    assert_eq!(vi_a.garp.master_refresh, Some(Duration::from_secs(60)));
    assert_eq!(
        findings(a, FindingKind::NotConverted),
        [("node-a.conf".into(), 18, "delay 2".into())]
    );
    // Mail as keepalived sends it: to the recipients through the relay, from its default
    // sender, for the instance with smtp_alert.
    let smtp = a.config.node.smtp.as_ref().expect("[node.smtp]");
    assert_eq!(smtp.server.to_string(), "127.0.0.1:25");
    assert_eq!(
        smtp.to.iter().map(|to| to.as_str()).collect::<Vec<_>>(),
        ["noc@example.org"]
    );
    assert_eq!(smtp.from.as_str(), "keepalived@proxy-a");
    assert!(!smtp.alert);
    assert_eq!(vi_a.smtp_alert, Some(true));
    assert!(
        findings(a, FindingKind::Note)
            .iter()
            .any(|(_, line, item)| *line == 12 && item == "smtp_server 127.0.0.1"),
        "{:?}",
        a.findings
    );
}

#[test]
fn squid_active_active_each_node_masters_one_vip() {
    let report = setup("squid-active-active");
    let [a, b] = &report.nodes[..] else {
        panic!("two nodes")
    };
    for (node, master_of, backup_of) in [(a, "VI_1", "VI_2"), (b, "VI_2", "VI_1")] {
        let master = instance(&node.config, master_of);
        let backup = instance(&node.config, backup_of);
        assert_eq!((master.priority.get(), backup.priority.get()), (150, 100));
        assert_eq!(master.version, Version::V3);
        assert_eq!(
            master.advert_interval.as_duration(),
            Duration::from_millis(500)
        );
        assert_eq!(master.transport, Transport::Multicast);
        assert_eq!(master.garp.master_repeat, 3);
        assert_eq!(master.garp.master_delay, Duration::from_secs(2));
        assert_eq!(master.garp.master_refresh, Some(Duration::from_secs(60)));
        assert_eq!(
            track_weight(master, &TrackTarget::Probe("chk_squid_port".into())),
            0
        );
        assert!(master.notify.any.is_some());
        assert_eq!(node.not_converted().count(), 0, "{:?}", node.findings);
    }
    assert_eq!(
        instance(&a.config, "VI_1").vips[0].address,
        ip("198.51.100.101")
    );
    assert_eq!(
        instance(&a.config, "VI_2").vips[0].address,
        ip("198.51.100.102")
    );
    // The shell TCP check became a built-in probe.
    let probe = &a.config.probes[0];
    assert_eq!(
        probe.kind,
        ProbeKind::Tcp {
            address: "127.0.0.1:3128".parse().unwrap_or_else(|_| unreachable!())
        }
    );
    assert_eq!((probe.fall, probe.rise), (3, 3));
    assert!(
        report
            .pair_notes
            .iter()
            .any(|note| note.contains("VRID 62") && note.starts_with("VRID 62 IPv4: edge-b (150)"))
    );
}

#[test]
fn nginx_sync_group_with_includes() {
    let report = setup("nginx-sync-group");
    let a = &report.nodes[0];
    assert_eq!(
        a.files.len(),
        3,
        "node-a.conf and its two includes: {:?}",
        a.files
    );
    let group = &a.config.sync_groups[0];
    assert_eq!(group.name, "G_WEB");
    assert_eq!(group.instances, ["VI_WAN", "VI_LAN"]);
    assert_eq!(
        group.notify.master.as_ref().map(|c| c.args.clone()),
        Some(vec!["group".to_owned(), "master".to_owned()])
    );
    let wan = instance(&a.config, "VI_WAN");
    let lan = instance(&a.config, "VI_LAN");
    assert_eq!(
        (wan.interface.as_str(), lan.interface.as_str()),
        ("eth0", "eth1")
    );
    assert_eq!(wan.vips.len(), 1, "the IPv6 excluded address is not a VIP");
    assert_eq!(lan.vips[0].label.as_deref(), Some("eth1:gw"));
    assert_eq!(track_weight(wan, &TrackTarget::Interface("eth1".into())), 0);
    assert_eq!(
        track_weight(wan, &TrackTarget::Process("chk_nginx".into())),
        0
    );
    assert_eq!(wan.garp.interval, Duration::from_millis(1));
    assert_eq!(
        lan.routes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["192.0.2.0/24 via 198.51.100.254 dev eth1 table 254"]
    );
    assert_eq!(
        instance(&report.nodes[1].config, "VI_WAN").priority.get(),
        100
    );
    assert_eq!(
        findings(a, FindingKind::NotConverted),
        [
            ("wan.conf".into(), 10, "2001:db8:71::10/64 dev eth0".into()),
            ("node-a.conf".into(), 8, "vrrp_skip_check_adv_addr".into()),
        ]
    );
}

#[test]
fn haproxy_positive_weight_becomes_base_priority() {
    let report = setup("haproxy-http-check");
    let [a, b] = &report.nodes[..] else {
        panic!("two nodes")
    };
    let vi_a = instance(&a.config, "VI_LB");
    let vi_b = instance(&b.config, "VI_LB");
    // keepalived: 101 + 50 while curl succeeds; hav: 151 - 50 while it fails.
    assert_eq!((vi_a.priority.get(), vi_b.priority.get()), (151, 150));
    assert_eq!(
        track_weight(vi_a, &TrackTarget::Script("chk_haproxy_http".into())),
        -50
    );
    assert_eq!(peers(vi_a), [(ip("198.51.100.22"), Some(150))]);
    assert_eq!(peers(vi_b), [(ip("198.51.100.21"), Some(151))]);
    assert!(
        !vi_a.preempt && !vi_b.preempt,
        "nopreempt with state BACKUP is kept"
    );
    assert_eq!(
        a.config.processes[0].matcher,
        ProcessMatch::Name("haproxy".into())
    );
    assert!(
        vi_a.notify.any.is_none(),
        "the notify with a redirection is not converted"
    );
    assert_eq!(
        findings(a, FindingKind::NotConverted),
        [
            (
                "node-a.conf".into(),
                9,
                "vrrp_garp_master_refresh_repeat 2".into()
            ),
            (
                "node-a.conf".into(),
                38,
                "198.51.100.80/24 option brd 198.51.100.255".into()
            ),
            ("node-a.conf".into(), 41, "198.51.100.81/24".into()),
            (
                "node-a.conf".into(),
                47,
                "notify \"/usr/local/sbin/lb-notify >> /var/log/lb-notify.log\"".into()
            ),
        ]
    );
}

/// `text` as posts and wikis print it: comments removed, every line joined onto one.
fn flattened(text: &str) -> String {
    let mut words = Vec::new();
    for line in text.lines() {
        let mut quote = None;
        let end = line
            .char_indices()
            .find(|&(_, c)| {
                match quote {
                    Some(open) if c == open => quote = None,
                    None if c == '"' || c == '\'' => quote = Some(c),
                    _ => {}
                }
                quote.is_none() && (c == '#' || c == '!')
            })
            .map_or(line.len(), |(index, _)| index);
        let kept = line[..end].trim();
        if !kept.is_empty() {
            words.push(kept);
        }
    }
    words.join(" ")
}

#[test]
fn every_example_flattened_onto_one_line_converts_to_the_same_config() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/keepalived");
    for setup in [
        "squid-active-passive",
        "squid-active-active",
        "haproxy-http-check",
        "lvs-dr",
        "lvs-nat-http",
        "gateway-vmac",
        "nginx-sync-group/conf.d-a",
        "nginx-sync-group/conf.d-b",
    ] {
        let files: Vec<PathBuf> = match setup.split_once('/') {
            // The sync-group example includes its instances: join them into one file.
            Some(_) => vec![
                root.join(setup).join("lan.conf"),
                root.join(setup).join("wan.conf"),
            ],
            None => vec![
                root.join(setup).join("node-a.conf"),
                root.join(setup).join("node-b.conf"),
            ],
        };
        let texts: Vec<String> = (files.iter())
            .map(|file| std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let texts = match setup.split_once('/') {
            Some(_) => vec![texts.concat()],
            None => texts,
        };
        for (index, text) in texts.iter().enumerate() {
            let name = format!("{setup}#{index}");
            let convert = |text: &str| {
                havctl::import::import_keepalived_text(text, std::path::Path::new("k.conf"))
                    .unwrap_or_else(|error| panic!("{name}: {error}"))
            };
            let multi_line = convert(text);
            let one_line = convert(&flattened(text));
            assert_eq!(one_line.config, multi_line.config, "{name}");
            let items = |node: &ImportedNode| -> Vec<(FindingKind, String)> {
                let mut items: Vec<_> = (node.findings.iter())
                    .map(|finding| (finding.kind, finding.item.clone()))
                    .collect();
                items.sort_by(|a, b| a.1.cmp(&b.1));
                items
            };
            assert_eq!(items(&one_line), items(&multi_line), "{name}");
        }
    }
}
