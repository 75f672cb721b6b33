//! Wire interop of hav-agent with real keepalived (2.2.7) on one LAN, v2 and v3, each side master
//! in turn, takeover in both directions; and tshark's reading of hav's adverts as captured on the
//! client. keepalived 2.2.7 has no option for the RFC 9568 IPv4 checksum (no pseudo-header;
//! `old_unicast_checksum` is another, pre-1.3.6 unicast form): it sends and verifies the
//! pseudo-header form only, so hav's default (`pseudo-header`) interoperates and `rfc9568` does
//! not: keepalived drops those adverts (asserted), while hav verifies either form on receipt.
//! Needs root, keepalived and tshark.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{WAIT, assert_vip_stays_away, counter, figure, instance, takeover};
use hav_tests::agent::{Agent, AgentConfig, find_instance, start_httpd};
use hav_tests::keepalived::{Keepalived, KeepalivedConfig, VrrpInstance, VrrpState};
use hav_tests::netns::{NsProcess, Presence};
use hav_tests::topology::Pair;
use nix::sys::signal::Signal;

const VRID: u8 = 51;

fn interval(version: u8) -> Duration {
    if version == 2 {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(100)
    }
}

fn keepalived_config(pair: &Pair, node: &str, version: u8, priority: u8) -> KeepalivedConfig {
    let iface = &pair.node(node).expect("node").iface;
    KeepalivedConfig {
        router_id: node.to_owned(),
        instances: vec![VrrpInstance::new(
            version,
            VRID,
            priority,
            interval(version),
            iface,
            vec![(IpAddr::V4(pair.vip4), 24)],
        )],
        garp: Default::default(),
    }
}

fn start_keepalived(pair: &Pair, node: &str, version: u8, priority: u8, run: u32) -> Keepalived {
    Keepalived::start(
        pair.lab.host(node).expect("host"),
        &pair.lab.log_dir().join(format!("keepalived-{node}-{run}")),
        &keepalived_config(pair, node, version, priority),
    )
    .expect("keepalived starts")
}

fn hav_config(pair: &Pair, node: &str, version: u8, priority: u8) -> AgentConfig {
    let mut spec = instance(pair, node, priority);
    spec.version = version;
    spec.advert_interval = interval(version);
    AgentConfig::new(node, vec![spec])
}

fn httpds(pair: &Pair) -> [NsProcess; 2] {
    [
        start_httpd(&pair.lab, "a").expect("httpd a"),
        start_httpd(&pair.lab, "b").expect("httpd b"),
    ]
}

/// keepalived on a (150) is master, hav on b (100) backs it up; keepalived stops (priority 0):
/// hav takes over; keepalived comes back and preempts hav.
fn keepalived_master_hav_backup(version: u8) {
    let pair = Pair::new().expect("pair");
    let lab = &pair.lab;
    let vip = IpAddr::V4(pair.vip4);
    let _httpd = httpds(&pair);
    let mut keepalived = start_keepalived(&pair, "a", version, 150, 0);
    keepalived
        .wait_state("VI_1", VrrpState::Master, WAIT)
        .expect("keepalived master");
    lab.wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a");
    let mut hav = Agent::start(lab, "b", &hav_config(&pair, "b", version, 100)).expect("hav");
    let heard = hav
        .wait_status("hav backup of keepalived", WAIT, |s| {
            find_instance(s, "VI_1").is_some_and(|i| {
                i["state"] == "Backup" && i["master"] == pair.a.ipv4.to_string().as_str()
            })
        })
        .expect("hav hears keepalived");
    assert_eq!(
        heard["counters"]["checksum_errors"].as_u64().unwrap_or(0),
        0,
        "{heard}"
    );
    let probe = common::prober(lab, vip);
    probe
        .wait_for_reply("a", Instant::now(), WAIT)
        .expect("client reaches keepalived's node");

    let fault = Instant::now();
    keepalived
        .process()
        .signal(Signal::SIGTERM)
        .expect("SIGTERM keepalived");
    let moved = takeover(lab, probe, vip, fault, "b");
    keepalived.stop(WAIT).expect("keepalived stops");
    figure(
        &format!("v{version}: keepalived master stops (priority 0) -> hav"),
        &moved,
    );
    let status = hav.wait_state("VI_1", "Master", WAIT).expect("hav master");
    assert!(counter(&status, "rcvd_priority_zero") >= 1, "{status}");
    // Priority 0 means the skew time, not the master-down interval.
    let master_down = interval(version) * 3;
    assert!(
        moved.vip_moved < master_down,
        "takeover after {:?}",
        moved.vip_moved
    );

    // keepalived comes back with the higher priority and preempts hav.
    let probe = common::prober(lab, vip);
    probe
        .wait_for_reply("b", Instant::now(), WAIT)
        .expect("client reaches hav");
    let restart = Instant::now();
    let mut keepalived = start_keepalived(&pair, "a", version, 150, 1);
    let back = takeover(lab, probe, vip, restart, "a");
    figure(
        &format!("v{version}: keepalived restarts and preempts hav"),
        &back,
    );
    keepalived
        .wait_state("VI_1", VrrpState::Master, WAIT)
        .expect("keepalived master again");
    hav.wait_state("VI_1", "Backup", WAIT)
        .expect("hav yields to keepalived");
    lab.wait_address("b", vip, Presence::Absent, WAIT)
        .expect("hav released the VIP");
}

/// hav on a (150) is master, keepalived on b (100) backs it up; hav stops (SIGTERM, priority 0):
/// keepalived takes over; hav comes back and preempts keepalived.
fn hav_master_keepalived_backup(version: u8) {
    let pair = Pair::new().expect("pair");
    let lab = &pair.lab;
    let vip = IpAddr::V4(pair.vip4);
    let _httpd = httpds(&pair);
    let mut hav = Agent::start(lab, "a", &hav_config(&pair, "a", version, 150)).expect("hav");
    lab.wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a");
    hav.wait_state("VI_1", "Master", WAIT).expect("hav master");
    let mut keepalived = start_keepalived(&pair, "b", version, 100, 0);
    keepalived
        .wait_state("VI_1", VrrpState::Backup, WAIT)
        .expect("keepalived backup");
    // keepalived accepts hav's adverts: it stays backup well past its master-down interval.
    assert_vip_stays_away(lab, "b", vip, interval(version) * 4);
    keepalived
        .wait_state("VI_1", VrrpState::Backup, Duration::ZERO)
        .expect("keepalived still backup");
    let probe = common::prober(lab, vip);
    probe
        .wait_for_reply("a", Instant::now(), WAIT)
        .expect("client reaches hav");

    let fault = Instant::now();
    hav.terminate().expect("SIGTERM hav");
    let moved = takeover(lab, probe, vip, fault, "b");
    figure(
        &format!("v{version}: hav master SIGTERM (priority 0) -> keepalived"),
        &moved,
    );
    keepalived
        .wait_state("VI_1", VrrpState::Master, WAIT)
        .expect("keepalived master");
    assert_eq!(hav.wait_exit(WAIT).expect("hav exits"), "exit 0");
    // hav released its VIP once it heard keepalived (make-before-break).
    common::assert_vip_absent(lab, "a", &pair.a.iface, vip);
    let master_down = interval(version) * 3;
    assert!(
        moved.vip_moved < master_down,
        "takeover after {:?}",
        moved.vip_moved
    );

    // hav comes back with the higher priority and preempts keepalived.
    let probe = common::prober(lab, vip);
    probe
        .wait_for_reply("b", Instant::now(), WAIT)
        .expect("client reaches keepalived");
    let restart = Instant::now();
    hav.restart(lab).expect("restart hav");
    let back = takeover(lab, probe, vip, restart, "a");
    figure(
        &format!("v{version}: hav restarts and preempts keepalived"),
        &back,
    );
    hav.wait_state("VI_1", "Master", WAIT)
        .expect("hav master again");
    keepalived
        .wait_state("VI_1", VrrpState::Backup, WAIT)
        .expect("keepalived yields to hav");
    lab.wait_address("b", vip, Presence::Absent, WAIT)
        .expect("keepalived released the VIP");
}

#[test]
fn v3_keepalived_master_hav_backup() {
    keepalived_master_hav_backup(3);
}

#[test]
fn v3_hav_master_keepalived_backup() {
    hav_master_keepalived_backup(3);
}

#[test]
fn v2_keepalived_master_hav_backup() {
    keepalived_master_hav_backup(2);
}

#[test]
fn v2_hav_master_keepalived_backup() {
    hav_master_keepalived_backup(2);
}

#[test]
fn v3_rfc9568_checksum_is_dropped_by_keepalived_while_hav_accepts_both_forms() {
    let pair = Pair::new().expect("pair");
    let lab = &pair.lab;
    let vip = IpAddr::V4(pair.vip4);
    let mut config = hav_config(&pair, "a", 3, 150);
    config.instances[0].checksum = Some("rfc9568".into());
    let mut hav = Agent::start(lab, "a", &config).expect("hav");
    hav.wait_state("VI_1", "Master", WAIT).expect("hav master");
    lab.wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a");
    // keepalived verifies the pseudo-header form only: hav's adverts fail its check, it hears
    // no master and takes the VIP too (a split brain that this setting causes with keepalived).
    let mut keepalived = start_keepalived(&pair, "b", 3, 100, 0);
    keepalived
        .wait_state("VI_1", VrrpState::Master, WAIT)
        .expect("keepalived becomes master: it drops hav's rfc9568 adverts");
    lab.wait_address("b", vip, Presence::Present, WAIT)
        .expect("VIP on keepalived's node too");
    // hav verifies either form on receipt: it hears keepalived's (lower-priority) adverts.
    let status = hav
        .wait_status("hav hears keepalived", WAIT, |s| {
            find_instance(s, "VI_1")
                .is_some_and(|i| counter(i, "rcvd_advertisements") > 0 && i["state"] == "Master")
        })
        .expect("hav hears keepalived");
    assert_eq!(
        status["counters"]["checksum_errors"].as_u64().unwrap_or(0),
        0,
        "{status}"
    );
    let log = keepalived.process().log();
    let complaints = log
        .lines()
        .filter(|l| l.to_lowercase().contains("checksum"))
        .count();
    eprintln!(
        "FIGURE rfc9568 hav master vs keepalived backup: keepalived became master; its log names the checksum {complaints} times; hav accepted {} pseudo-header adverts",
        counter(
            find_instance(&status, "VI_1").expect("VI_1"),
            "rcvd_advertisements"
        )
    );
    assert!(
        complaints > 0,
        "keepalived did not log a checksum error:\n{log}"
    );
}

/// Captures `count` VRRP packets on the client's interface and returns tshark's verbose
/// decoding of them with `prefs` (`-o` options).
fn capture(pair: &Pair, name: &str, count: usize, prefs: &[&str]) -> String {
    let file = pair.lab.log_dir().join(format!("{name}.pcap"));
    let count = count.to_string();
    let out = pair
        .lab
        .exec(
            "client",
            &[
                "tshark",
                "-q",
                "-i",
                &pair.client.iface,
                "-f",
                "ip proto 112 or ip6 proto 112",
                "-c",
                &count,
                "-a",
                "duration:15",
                "-w",
                &file.display().to_string(),
            ],
        )
        .expect("tshark runs");
    assert!(out.success(), "tshark capture failed: {}", out.stderr);
    let mut argv = vec!["tshark", "-r"];
    let path = file.display().to_string();
    argv.push(&path);
    argv.push("-V");
    for pref in prefs {
        argv.push("-o");
        argv.push(pref);
    }
    let decoded = pair.lab.exec("client", &argv).expect("tshark decodes");
    assert!(
        decoded.success(),
        "tshark decode failed: {}",
        decoded.stderr
    );
    decoded.stdout
}

/// Starts one hav master on a with `configure`, captures 3 adverts on the client and checks
/// tshark decodes every one as VRRP, not malformed, with the expected checksum verdict.
fn tshark_reads(
    name: &str,
    configure: impl Fn(&Pair, &mut AgentConfig),
    prefs: &[&str],
    checksum_good: bool,
) {
    let pair = Pair::new().expect("pair");
    let mut config = hav_config(&pair, "a", 3, 150);
    configure(&pair, &mut config);
    let mut hav = Agent::start(&pair.lab, "a", &config).expect("hav");
    hav.wait_state("VI_1", "Master", WAIT).expect("hav master");
    let decoded = capture(&pair, name, 3, prefs);
    let packets = decoded
        .matches("Virtual Router Redundancy Protocol")
        .count();
    assert_eq!(packets, 3, "{decoded}");
    assert!(!decoded.contains("Malformed"), "{decoded}");
    let verdict = if checksum_good {
        "[Checksum Status: Good]"
    } else {
        "[Checksum Status: Bad]"
    };
    assert_eq!(decoded.matches(verdict).count(), 3, "{name}: {decoded}");
    eprintln!("FIGURE tshark {name}: 3 adverts decoded, {verdict}");
}

#[test]
fn tshark_decodes_v3_ipv4_pseudo_header_adverts_with_a_good_checksum() {
    tshark_reads("v3-ipv4-pseudo-header", |_, _| {}, &[], true);
}

#[test]
fn tshark_flags_rfc9568_adverts_unless_told_the_v2_style_checksum() {
    let rfc9568 = |_: &Pair, config: &mut AgentConfig| {
        config.instances[0].checksum = Some("rfc9568".into());
    };
    // tshark 4.0 verifies v3 IPv4 checksums with the pseudo-header by default; RFC 9568's form
    // (the VRRP message alone) is what its `vrrp.v3_checksum_as_in_v2` preference selects.
    tshark_reads("v3-ipv4-rfc9568-default-prefs", rfc9568, &[], false);
    tshark_reads(
        "v3-ipv4-rfc9568-as-in-v2",
        rfc9568,
        &["vrrp.v3_checksum_as_in_v2:TRUE"],
        true,
    );
}

#[test]
fn tshark_decodes_v2_adverts_with_a_good_checksum() {
    tshark_reads(
        "v2-ipv4",
        |_, config| {
            config.instances[0].version = 2;
            config.instances[0].advert_interval = Duration::from_secs(1);
        },
        &[],
        true,
    );
}

#[test]
fn tshark_decodes_v3_ipv6_adverts_with_a_good_checksum() {
    tshark_reads(
        "v3-ipv6",
        |pair, config| {
            config.instances[0].vips = vec![format!("{}/64", pair.vip6)];
        },
        &[],
        true,
    );
}
