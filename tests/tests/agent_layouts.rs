//! Transports, versions, families and layouts with real hav-agents: multicast and unicast, v2
//! (with authentication) and v3 (both IPv4 checksum forms), IPv4 and IPv6, two VIPs with each
//! node master of one, a sync group across two LANs, three nodes. Each test crashes (SIGKILL)
//! or cuts the master and asserts who holds the VIP and that the client reaches it. Needs root.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{WAIT, figure, prober, start_duo, takeover, vip4};
use hav_tests::agent::{Agent, AgentConfig, InstanceSpec, start_httpd};
use hav_tests::netns::Presence;
use hav_tests::topology::{Lab, LanSpec, Pair};

/// Starts the pair with `configure`, SIGKILLs the master and checks the takeover end to end.
fn crash_takeover(
    label: &str,
    vip_of: impl Fn(&Pair) -> IpAddr,
    configure: impl Fn(&Pair, &str, &mut AgentConfig),
) {
    let mut duo = start_duo(vip_of, configure);
    let vip = duo.vip;
    let prober = duo.prober_on("a");
    let fault = Instant::now();
    duo.a.kill().expect("SIGKILL a");
    let moved = takeover(duo.lab(), prober, vip, fault, "b");
    figure(label, &moved);
    duo.b.wait_state("VI_1", "Master", WAIT).expect("b master");
    assert_eq!(moved.client.before.as_deref(), Some("a"));
    // Every advert b heard from a was valid.
    let status = duo.b.status().expect("b status");
    for name in [
        "checksum_errors",
        "malformed_datagrams",
        "auth_failures",
        "version_errors",
    ] {
        assert_eq!(
            status["counters"][name].as_u64().unwrap_or(0),
            0,
            "{name}: {status}"
        );
    }
    let b = common::counter(&status["instances"][0], "rcvd_advertisements");
    assert!(b > 0, "b heard no advert: {status}");
}

fn vip6(pair: &Pair) -> IpAddr {
    IpAddr::V6(pair.vip6)
}

#[test]
fn unicast_v3_ipv4() {
    crash_takeover(
        "unicast v3 IPv4, SIGKILL a -> b",
        vip4,
        |pair, node, config| {
            let peer = if node == "a" { &pair.b } else { &pair.a };
            config.instances[0].unicast_peers = vec![(IpAddr::V4(peer.ipv4), None)];
        },
    );
}

#[test]
fn multicast_v3_ipv4_rfc9568_checksum() {
    crash_takeover(
        "multicast v3 IPv4 rfc9568 checksum, SIGKILL a -> b",
        vip4,
        |_, _, config| {
            config.instances[0].checksum = Some("rfc9568".into());
        },
    );
}

#[test]
fn multicast_v2_ipv4_with_authentication() {
    crash_takeover(
        "multicast v2 IPv4 1 s auth, SIGKILL a -> b",
        vip4,
        |_, _, config| {
            let instance = &mut config.instances[0];
            instance.version = 2;
            instance.advert_interval = Duration::from_secs(1);
            instance.auth_pass = Some("s3cret".into());
        },
    );
}

#[test]
fn unicast_v2_ipv4() {
    crash_takeover(
        "unicast v2 IPv4 1 s, SIGKILL a -> b",
        vip4,
        |pair, node, config| {
            let peer = if node == "a" { &pair.b } else { &pair.a };
            let instance = &mut config.instances[0];
            instance.version = 2;
            instance.advert_interval = Duration::from_secs(1);
            instance.unicast_peers = vec![(IpAddr::V4(peer.ipv4), None)];
        },
    );
}

#[test]
fn multicast_v3_ipv6() {
    crash_takeover(
        "multicast v3 IPv6, SIGKILL a -> b",
        vip6,
        |pair, _, config| {
            config.instances[0].vips = vec![format!("{}/64", pair.vip6)];
        },
    );
}

#[test]
fn unicast_v3_ipv6() {
    crash_takeover(
        "unicast v3 IPv6, SIGKILL a -> b",
        vip6,
        |pair, node, config| {
            let (own, peer) = if node == "a" {
                (&pair.a, &pair.b)
            } else {
                (&pair.b, &pair.a)
            };
            let instance = &mut config.instances[0];
            instance.vips = vec![format!("{}/64", pair.vip6)];
            instance.unicast_peers = vec![(IpAddr::V6(peer.ipv6.expect("IPv6 LAN")), None)];
            instance.source_address = own.ipv6.map(IpAddr::V6);
        },
    );
}

#[test]
fn two_vips_each_node_master_of_one_and_one_takes_both_on_a_crash() {
    let pair = Pair::new().expect("pair");
    let lab = &pair.lab;
    let _httpd = [
        start_httpd(lab, "a").expect("httpd a"),
        start_httpd(lab, "b").expect("httpd b"),
    ];
    let vip1 = IpAddr::V4(LanSpec::PRIMARY.ipv4(1));
    let vip2 = IpAddr::V4(LanSpec::PRIMARY.ipv4(2));
    let config = |node: &str, p1: u8, p2: u8| {
        let iface = &pair.node(node).expect("node").iface;
        let mut first = InstanceSpec::new(iface, 51, p1, &[&format!("{vip1}/24")]);
        first.name = "VI_1".into();
        let mut second = InstanceSpec::new(iface, 52, p2, &[&format!("{vip2}/24")]);
        second.name = "VI_2".into();
        AgentConfig::new(node, vec![first, second])
    };
    let mut a = Agent::start(lab, "a", &config("a", 150, 100)).expect("a");
    let mut b = Agent::start(lab, "b", &config("b", 100, 150)).expect("b");
    lab.wait_address("a", vip1, Presence::Present, WAIT)
        .expect("VIP 1 on a");
    lab.wait_address("b", vip2, Presence::Present, WAIT)
        .expect("VIP 2 on b");
    a.wait_state("VI_1", "Master", WAIT).expect("a master of 1");
    a.wait_state("VI_2", "Backup", WAIT).expect("a backup of 2");
    b.wait_state("VI_1", "Backup", WAIT).expect("b backup of 1");
    b.wait_state("VI_2", "Master", WAIT).expect("b master of 2");
    lab.wait_address("a", vip2, Presence::Absent, WAIT)
        .expect("VIP 2 not on a");
    lab.wait_address("b", vip1, Presence::Absent, WAIT)
        .expect("VIP 1 not on b");
    let on_1 = prober(lab, vip1);
    let on_2 = prober(lab, vip2);
    on_1.wait_for_reply("a", Instant::now(), WAIT)
        .expect("client reaches a on VIP 1");
    on_2.wait_for_reply("b", Instant::now(), WAIT)
        .expect("client reaches b on VIP 2");
    drop(on_1);

    let fault = Instant::now();
    b.kill().expect("SIGKILL b");
    let moved = takeover(lab, on_2, vip2, fault, "a");
    figure("two VIPs, SIGKILL b: VIP 2 -> a", &moved);
    a.wait_state("VI_2", "Master", WAIT).expect("a master of 2");
    let on_1 = prober(lab, vip1);
    on_1.wait_for_reply("a", Instant::now(), WAIT)
        .expect("client still reaches a on VIP 1");
}

#[test]
fn sync_group_moves_both_instances_when_one_link_is_cut() {
    let mut lab = Lab::new().expect("lab");
    lab.add_lan("lan", LanSpec::PRIMARY).expect("lan");
    lab.add_lan("wan", LanSpec::SECONDARY).expect("wan");
    for host in ["a", "b", "client", "wclient"] {
        lab.add_host(host).expect("host");
    }
    let mut attachments = Vec::new();
    for (host, octet) in [("a", 11), ("b", 12)] {
        attachments.push(lab.attach(host, "lan", octet).expect("attach lan"));
        attachments.push(lab.attach(host, "wan", octet).expect("attach wan"));
    }
    lab.attach("client", "lan", 100).expect("client");
    lab.attach("wclient", "wan", 100).expect("wan client");
    let _httpd = [
        start_httpd(&lab, "a").expect("httpd a"),
        start_httpd(&lab, "b").expect("httpd b"),
    ];
    let lan_vip = IpAddr::V4(LanSpec::PRIMARY.ipv4(1));
    let wan_vip = IpAddr::V4(LanSpec::SECONDARY.ipv4(1));
    let lan_if = lab.prefix().name("lan").expect("fits");
    let wan_if = lab.prefix().name("wan").expect("fits");
    let config = |node: &str, priority: u8| {
        let mut lan = InstanceSpec::new(&lan_if, 51, priority, &[&format!("{lan_vip}/24")]);
        lan.name = "VI_LAN".into();
        lan.track = vec![format!("track_interface = [\"{lan_if}\"]")];
        let mut wan = InstanceSpec::new(&wan_if, 52, priority, &[&format!("{wan_vip}/24")]);
        wan.name = "VI_WAN".into();
        wan.track = vec![format!("track_interface = [\"{wan_if}\"]")];
        let mut config = AgentConfig::new(node, vec![lan, wan]);
        config.extra =
            "[[sync_group]]\nname = \"G\"\ninstances = [\"VI_LAN\", \"VI_WAN\"]\n\n".into();
        config
    };
    let mut a = Agent::start(&lab, "a", &config("a", 150)).expect("a");
    for vip in [lan_vip, wan_vip] {
        lab.wait_address("a", vip, Presence::Present, WAIT)
            .expect("VIPs on a");
    }
    a.wait_state("VI_WAN", "Master", WAIT)
        .expect("a master WAN");
    a.wait_state("VI_LAN", "Master", WAIT)
        .expect("a master LAN");
    let mut b = Agent::start(&lab, "b", &config("b", 100)).expect("b");
    for name in ["VI_LAN", "VI_WAN"] {
        b.wait_status(&format!("{name} backup of a"), WAIT, |status| {
            hav_tests::agent::find_instance(status, name)
                .is_some_and(|s| s["state"] == "Backup" && !s["master"].is_null())
        })
        .expect("b backup of a on both LANs");
    }
    let lan_probe = prober(&lab, lan_vip);
    lan_probe
        .wait_for_reply("a", Instant::now(), WAIT)
        .expect("LAN client reaches a");
    let wan_probe = hav_tests::probe::Prober::start(
        lab.host("wclient").expect("wan client"),
        hav_tests::probe::ProbeConfig::new(std::net::SocketAddr::new(wan_vip, 8080)),
    )
    .expect("wan prober");
    wan_probe
        .wait_for_reply("a", Instant::now(), WAIT)
        .expect("WAN client reaches a");

    // Cut only a's WAN port. b's VI_WAN stops hearing a and takes over after its master-down
    // interval; a sees the carrier loss when the kernel's linkwatch reports it (up to 1 s
    // later), faults VI_WAN, and the group faults VI_LAN with it (priority 0 on the LAN).
    let fault = Instant::now();
    lab.link_down("a", &wan_if).expect("cut a's WAN");
    let lan_moved = takeover(&lab, lan_probe, lan_vip, fault, "b");
    figure("sync group, a's WAN cut: LAN VIP -> b", &lan_moved);
    let wan_moved = takeover(&lab, wan_probe, wan_vip, fault, "b");
    figure("sync group, a's WAN cut: WAN VIP -> b", &wan_moved);
    for vip in [lan_vip, wan_vip] {
        lab.wait_address("a", vip, Presence::Absent, WAIT)
            .expect("a released both VIPs");
    }
    a.wait_state("VI_WAN", "Fault", WAIT)
        .expect("a's WAN in fault");
    let a_lan = a.instance("VI_LAN").expect("a status");
    assert_ne!(a_lan["state"], "Master", "{a_lan}");
    b.wait_state("VI_LAN", "Master", WAIT)
        .expect("b master LAN");
    b.wait_state("VI_WAN", "Master", WAIT)
        .expect("b master WAN");
}

#[test]
fn three_nodes_hand_over_in_priority_order() {
    let mut pair = Pair::new().expect("pair");
    pair.lab.add_host("c").expect("host c");
    let c_attachment = pair.lab.attach("c", Pair::LAN, 13).expect("attach c");
    let lab = &pair.lab;
    let _httpd = [
        start_httpd(lab, "a").expect("httpd a"),
        start_httpd(lab, "b").expect("httpd b"),
        start_httpd(lab, "c").expect("httpd c"),
    ];
    let vip = IpAddr::V4(pair.vip4);
    let config = |node: &str, iface: &str, priority: u8| {
        AgentConfig::new(
            node,
            vec![InstanceSpec::new(
                iface,
                51,
                priority,
                &[&format!("{}/24", pair.vip4)],
            )],
        )
    };
    let mut a = Agent::start(lab, "a", &config("a", &pair.a.iface, 150)).expect("a");
    lab.wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a");
    let mut b = Agent::start(lab, "b", &config("b", &pair.b.iface, 100)).expect("b");
    let mut c = Agent::start(lab, "c", &config("c", &c_attachment.iface, 50)).expect("c");
    b.wait_state("VI_1", "Backup", WAIT).expect("b backup");
    c.wait_state("VI_1", "Backup", WAIT).expect("c backup");

    let probe = prober(lab, vip);
    probe
        .wait_for_reply("a", Instant::now(), WAIT)
        .expect("client reaches a");
    let fault = Instant::now();
    a.kill().expect("SIGKILL a");
    let moved = takeover(lab, probe, vip, fault, "b");
    figure("three nodes, SIGKILL a -> b", &moved);
    b.wait_state("VI_1", "Master", WAIT).expect("b master");
    let c_status = c.instance("VI_1").expect("c status");
    assert_eq!(c_status["state"], "Backup", "c must defer to b: {c_status}");
    common::assert_vip_absent(lab, "c", &c_attachment.iface, vip);

    let probe = prober(lab, vip);
    probe
        .wait_for_reply("b", Instant::now(), WAIT)
        .expect("client reaches b");
    let fault = Instant::now();
    b.terminate().expect("SIGTERM b");
    let moved = takeover(lab, probe, vip, fault, "c");
    figure("three nodes, SIGTERM b -> c", &moved);
    c.wait_state("VI_1", "Master", WAIT).expect("c master");
    b.wait_exit(WAIT).expect("b exits");
}
