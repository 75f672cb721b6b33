//! Planned hand-overs that break no connection, with real agents in namespaces and a real
//! client: long-lived TCP connections (a byte each way every 20 ms) opened through the master
//! survive its graceful stop and a preempt failback; the old master serves them silently while
//! the new master passes their packets on, and lets go of the VIP once the last one ends. A
//! killed old master stops the forwarding within a master-down interval. The same connections
//! through a keepalived pair stopped gracefully are the reference: every one is broken. Needs
//! root.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{WAIT, instance};
use hav_tests::agent::{Agent, AgentConfig, InstanceSpec, find_instance, start_echo_httpd};
use hav_tests::flows::{Flows, greeter, try_greeter};
use hav_tests::keepalived::{VrrpState, start_pair};
use hav_tests::netns::{NsProcess, Presence};
use hav_tests::topology::{Lab, LanSpec, Pair};

const DRAIN: Duration = Duration::from_secs(20);

/// `a` (150) master and `b` (100) backup with a connection drain, each with an echo service.
struct Setup {
    pair: Pair,
    a: Agent,
    b: Agent,
    a_config: AgentConfig,
    vip: IpAddr,
    _servers: Vec<NsProcess>,
}

fn setup() -> Setup {
    setup_family(false)
}

/// [`setup`] with the pair's IPv4 VIP, or with its IPv6 VIP (adverts, and so the forwarding
/// target, from link-local addresses).
fn setup_family(ipv6: bool) -> Setup {
    setup_with(ipv6, |_, _, _| {})
}

/// [`setup_family`] with the multicast VRRP turned into unicast: each node sends its adverts to
/// the other's address on the LAN (IPv6: from and to the global addresses, so the forwarding
/// target is the peer's global address).
fn setup_unicast(ipv6: bool) -> Setup {
    setup_with(ipv6, |pair, node, spec| {
        let (own, peer) = if node == "a" {
            (&pair.a, &pair.b)
        } else {
            (&pair.b, &pair.a)
        };
        let peer = if ipv6 {
            spec.source_address = own.ipv6.map(IpAddr::V6);
            IpAddr::V6(peer.ipv6.expect("IPv6 LAN"))
        } else {
            IpAddr::V4(peer.ipv4)
        };
        spec.unicast_peers = vec![(peer, None)];
    })
}

/// The pair with `configure` adjusting each node's instance after the drain and the VIP are
/// set.
fn setup_with(ipv6: bool, configure: impl Fn(&Pair, &str, &mut InstanceSpec)) -> Setup {
    let pair = Pair::new().expect("pair topology");
    let vip = if ipv6 {
        IpAddr::V6(pair.vip6)
    } else {
        IpAddr::V4(pair.vip4)
    };
    let servers = vec![
        start_echo_httpd(&pair.lab, "a").expect("echo a"),
        start_echo_httpd(&pair.lab, "b").expect("echo b"),
    ];
    let config = |node: &str, priority: u8| {
        let mut spec = instance(&pair, node, priority);
        spec.connection_drain = Some(DRAIN);
        if ipv6 {
            spec.vips = vec![format!("{}/64", pair.vip6)];
        }
        configure(&pair, node, &mut spec);
        AgentConfig::new(node, vec![spec])
    };
    let a_config = config("a", 150);
    let mut a = Agent::start(&pair.lab, "a", &a_config).expect("start a");
    a.wait_state("VI_1", "Master", WAIT).expect("a master");
    pair.lab
        .wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a");
    let mut b = Agent::start(&pair.lab, "b", &config("b", 100)).expect("start b");
    b.wait_status("b backup of a", WAIT, |status| {
        find_instance(status, "VI_1")
            .is_some_and(|s| s["state"] == "Backup" && !s["master"].is_null())
    })
    .expect("b backup of a");
    // b arms its forwarding toward the master it hears, ahead of any takeover.
    wait_until("b armed toward a", || forwarding(&pair.lab, "b", vip));
    Setup {
        pair,
        a,
        b,
        a_config,
        vip,
        _servers: servers,
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `host` passes unowned flows to `vip` on (its `ip hav` or `ip6 hav` table holds a
/// `dup` rule).
fn forwarding(lab: &Lab, host: &str, vip: IpAddr) -> bool {
    let family = if vip.is_ipv6() { "ip6" } else { "ip" };
    lab.exec(host, &["nft", "list", "table", family, "hav"])
        .is_ok_and(|out| out.success() && out.stdout.contains("dup to"))
}

#[test]
fn connections_through_a_master_survive_its_graceful_stop_and_it_lets_go_after_the_last() {
    graceful_stop_keeps_connections(setup_family(false));
}

#[test]
fn ipv6_connections_survive_a_graceful_stop_through_link_local_forwarding() {
    graceful_stop_keeps_connections(setup_family(true));
}

#[test]
fn unicast_vrrp_connections_survive_a_graceful_stop_and_the_old_master_lets_go_after_the_last() {
    graceful_stop_keeps_connections(setup_unicast(false));
}

#[test]
fn unicast_ipv6_connections_survive_a_graceful_stop_through_forwarding_to_the_peer() {
    graceful_stop_keeps_connections(setup_unicast(true));
}

fn graceful_stop_keeps_connections(mut s: Setup) {
    let flows = Flows::open(&s.pair.lab, s.vip, 200);
    flows.run_rounds(5);

    s.a.terminate().expect("SIGTERM a");
    s.b.wait_state("VI_1", "Master", WAIT)
        .expect("b takes over");
    s.a.wait_log("serving its connections until they end", WAIT)
        .expect("a parks its VIP");
    // The loop never waits for `nft`: until the parked VIP's rules are in, a new connection
    // that reaches a is one of a's own flows (served, not broken).
    s.a.wait_log("1 silent", WAIT)
        .expect("a's hand-over rules silence the parked VIP");
    // New connections go to the new master, while a still holds the VIP (silently); also
    // those of a client still sending to a's MAC: a serves only the flows it has.
    assert_eq!(greeter(&s.pair.lab, s.vip), "b");
    point_client_at(&s, "a");
    assert_eq!(greeter(&s.pair.lab, s.vip), "b");
    assert!(
        s.pair
            .lab
            .addresses("a", &s.pair.a.iface)
            .expect("a's addresses")
            .contains(&s.vip),
        "a keeps the VIP for its connections"
    );
    // A second of traffic through the hand-over.
    flows.run_rounds(50);
    let report = flows.close();
    eprintln!("graceful stop, VIP {}: {report:?}", s.vip);
    assert_eq!(report.greeted.get("a"), Some(&200), "{report:?}");
    assert!(
        report.broken.is_empty(),
        "{} connections broke, the first: {:?}",
        report.broken.len(),
        report.broken.first()
    );

    // The last connection closed: a lets go within a second and exits.
    let closed = Instant::now();
    s.pair
        .lab
        .wait_address("a", s.vip, Presence::Absent, Duration::from_secs(3))
        .expect("a lets go of the VIP");
    let let_go = closed.elapsed();
    eprintln!(
        "old master let go {} ms after the last connection closed",
        let_go.as_millis()
    );
    assert!(let_go < Duration::from_secs(1), "{let_go:?}");
    assert_eq!(
        s.a.wait_exit(WAIT).expect("a exits"),
        "exit 0",
        "{}",
        s.a.log()
    );
    assert!(s.a.log().contains("no connection left"), "{}", s.a.log());
    // b forwards nothing any more: the old master told it so.
    wait_until("b's forwarding removed", || {
        !forwarding(&s.pair.lab, "b", s.vip)
    });
}

#[test]
fn connections_survive_a_preempt_failback_both_ways() {
    let mut s = setup();
    // a steps down: lower priority by reload, so it resigns at once to b.
    let through_a = Flows::open(&s.pair.lab, s.vip, 50);
    let mut lower = s.a_config.clone();
    lower.instances[0].priority = 50;
    s.a.write_config(&lower).expect("config");
    s.a.reload().expect("SIGHUP");
    s.b.wait_state("VI_1", "Master", WAIT)
        .expect("b takes over");
    through_a.run_rounds(25);
    let through_b = Flows::open(&s.pair.lab, s.vip, 50);
    // a's priority back: it preempts b; b keeps serving what it accepted.
    s.a.write_config(&s.a_config).expect("config");
    s.a.reload().expect("SIGHUP");
    s.a.wait_state("VI_1", "Master", WAIT).expect("a preempts");
    through_a.run_rounds(25);
    through_b.run_rounds(25);
    let (first, second) = (through_a.close(), through_b.close());
    eprintln!("failback: {first:?} {second:?}");
    assert_eq!(first.greeted.get("a"), Some(&50), "{first:?}");
    assert_eq!(second.greeted.get("b"), Some(&50), "{second:?}");
    assert!(first.broken.is_empty(), "through a: {:?}", first.broken);
    assert!(second.broken.is_empty(), "through b: {:?}", second.broken);
    // b lets go once its connections are gone.
    s.pair
        .lab
        .wait_address("b", s.vip, Presence::Absent, Duration::from_secs(3))
        .expect("b lets go");
}

#[test]
fn a_killed_old_master_ends_the_forwarding_within_a_master_down_interval() {
    let mut s = setup();
    let flows = Flows::open(&s.pair.lab, s.vip, 20);
    s.a.terminate().expect("SIGTERM a");
    s.b.wait_state("VI_1", "Master", WAIT)
        .expect("b takes over");
    s.a.wait_log("serving its connections until they end", WAIT)
        .expect("a parks its VIP");
    // a's first Holding leaves as soon as its VIPs are silenced (an nft run): from then on b's
    // lease is three beacon intervals, no longer the first one's wait for a to park.
    wait_until("a silences its VIP", || {
        s.pair
            .lab
            .exec("a", &["nft", "list", "table", "arp", "hav"])
            .is_ok_and(|out| out.success())
    });
    flows.run_rounds(5);
    assert!(
        forwarding(&s.pair.lab, "b", s.vip),
        "b forwards during the drain"
    );
    let killed = Instant::now();
    s.a.kill().expect("kill a");
    wait_until("b stops forwarding", || {
        !forwarding(&s.pair.lab, "b", s.vip)
    });
    let stopped = killed.elapsed();
    eprintln!(
        "forwarding ended {} ms after the old master died",
        stopped.as_millis()
    );
    // Beacons every 100 ms: three missed plus one interval (400 ms), then an nft run, which a
    // loaded machine can make slow; without the lease the rule would stay for good.
    assert!(stopped < Duration::from_secs(2), "{stopped:?}");
    // From then on the new master answers those flows itself (with resets), as without a drain.
    flows.run_rounds(5);
    let report = flows.close();
    assert_eq!(report.broken.len(), 20, "{report:?}");
    assert_eq!(greeter(&s.pair.lab, s.vip), "b");
}

/// The reference, in the same run: the same connections through a keepalived pair whose master
/// stops gracefully. keepalived drops the VIP at once and the new master resets every one.
#[test]
fn the_same_connections_through_a_keepalived_pair_stopped_gracefully_are_all_broken() {
    let pair = Pair::new().expect("pair topology");
    let vip = IpAddr::V4(pair.vip4);
    let _servers = [
        start_echo_httpd(&pair.lab, "a").expect("echo a"),
        start_echo_httpd(&pair.lab, "b").expect("echo b"),
    ];
    let (mut a, mut b) = start_pair(&pair, vip, 24, WAIT).expect("keepalived pair");
    let flows = Flows::open(&pair.lab, vip, 200);
    flows.run_rounds(5);
    a.stop(WAIT).expect("keepalived on a stops");
    b.wait_state("VI_1", VrrpState::Master, WAIT)
        .expect("b takes over");
    flows.run_rounds(10);
    let report = flows.close();
    eprintln!(
        "keepalived reference: {} of 200 connections broken by a graceful stop",
        report.broken.len()
    );
    assert_eq!(report.greeted.get("a"), Some(&200), "{report:?}");
    assert_eq!(report.broken.len(), 200, "{report:?}");
}

/// A client opening a new connection every 5 ms (an HTTP request each) through consecutive
/// planned hand-overs, both ways (priority lowered and restored by SIGHUP): none fails, not
/// even those in flight as the VIP moves. `HAV_HANDOVERS` runs more than the suite's 20.
#[test]
fn a_client_connecting_every_5_ms_loses_nothing_through_20_planned_handovers() {
    let handovers: usize = std::env::var("HAV_HANDOVERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let mut s = setup();
    let prober = common::prober(&s.pair.lab, s.vip);
    prober
        .wait_for_reply("a", Instant::now(), WAIT)
        .expect("client reaches a");
    let mut lower = s.a_config.clone();
    lower.instances[0].priority = 50;
    for handover in 0..handovers {
        let (config, master) = if handover % 2 == 0 {
            (&lower, "b")
        } else {
            (&s.a_config, "a")
        };
        s.a.write_config(config).expect("config");
        let asked = Instant::now();
        s.a.reload().expect("SIGHUP");
        if master == "b" {
            s.b.wait_state("VI_1", "Master", WAIT)
                .expect("b takes over");
        } else {
            s.a.wait_state("VI_1", "Master", WAIT)
                .expect("a takes back");
        }
        prober
            .wait_for_reply(master, asked, WAIT)
            .expect("the client reaches the new master");
    }
    let samples = prober.stop();
    let failed: Vec<_> = samples.iter().filter(|s| s.outcome.is_err()).collect();
    eprintln!(
        "{handovers} planned hand-overs: {} connections, {} failed",
        samples.len(),
        failed.len()
    );
    // The client really probed all along: on a loaded machine still dozens per hand-over.
    assert!(samples.len() > 20 * handovers, "{} probes", samples.len());
    assert!(failed.is_empty(), "{failed:?}");
}

/// `a` (150) master and `b` (100) backup of two instances in one sync group, each with its VIP
/// and a connection drain, and an echo service on each node.
struct SyncPair {
    pair: Pair,
    a: Agent,
    b: Agent,
    a_config: AgentConfig,
    vips: [IpAddr; 2],
    _servers: Vec<NsProcess>,
}

const SYNCED: [&str; 2] = ["VI_1", "VI_2"];

/// `second_interval` is the advert interval of `VI_2` (`VI_1`: 100 ms): longer, `VI_1` takes
/// over first on `b` and `VI_2` follows it as the group's rule, not by its own timer.
fn setup_sync_group(second_interval: Duration) -> SyncPair {
    let pair = Pair::new().expect("pair topology");
    let vips = [IpAddr::V4(pair.vip4), IpAddr::V4(LanSpec::PRIMARY.ipv4(2))];
    let servers = vec![
        start_echo_httpd(&pair.lab, "a").expect("echo a"),
        start_echo_httpd(&pair.lab, "b").expect("echo b"),
    ];
    let config = |node: &str, priority: u8| {
        let iface = &pair.node(node).expect("node of the pair").iface;
        let instances = (SYNCED.iter().zip(vips).enumerate())
            .map(|(i, (name, vip))| {
                let vrid = 51 + u8::try_from(i).expect("two");
                let mut spec = InstanceSpec::new(iface, vrid, priority, &[&format!("{vip}/24")]);
                spec.name = (*name).to_owned();
                spec.connection_drain = Some(DRAIN);
                if i == 1 {
                    spec.advert_interval = second_interval;
                }
                spec
            })
            .collect();
        let mut config = AgentConfig::new(node, instances);
        config.extra = "[[sync_group]]\nname = \"G\"\ninstances = [\"VI_1\", \"VI_2\"]\n\n".into();
        config
    };
    let a_config = config("a", 150);
    let mut a = Agent::start(&pair.lab, "a", &a_config).expect("start a");
    for (name, vip) in SYNCED.iter().zip(vips) {
        a.wait_state(name, "Master", WAIT).expect("a master");
        pair.lab
            .wait_address("a", vip, Presence::Present, WAIT)
            .expect("VIP on a");
    }
    let mut b = Agent::start(&pair.lab, "b", &config("b", 100)).expect("start b");
    for (name, vip) in SYNCED.iter().zip(vips) {
        b.wait_status(&format!("b backup of a for {name}"), WAIT, |status| {
            find_instance(status, name)
                .is_some_and(|s| s["state"] == "Backup" && !s["master"].is_null())
        })
        .expect("b backup of a");
        wait_until("b armed toward a", || forwarding(&pair.lab, "b", vip));
    }
    SyncPair {
        pair,
        a,
        b,
        a_config,
        vips,
        _servers: servers,
    }
}

/// Opens `count` connections to each VIP of the group, all through `a`.
fn flows_to_both(s: &SyncPair, count: usize) -> [Flows; 2] {
    let flows = s.vips.map(|vip| Flows::open(&s.pair.lab, vip, count));
    for f in &flows {
        f.run_rounds(5);
    }
    flows
}

/// Closes the flows of both VIPs and checks that each kept all its connections through `node`.
fn none_broken(flows: [Flows; 2], node: &str, count: usize) {
    for (flows, vip) in flows.into_iter().zip(["VIP 1", "VIP 2"]) {
        let report = flows.close();
        eprintln!("sync group, {vip}: {report:?}");
        assert_eq!(report.greeted.get(node), Some(&count), "{vip}: {report:?}");
        assert!(
            report.broken.is_empty(),
            "{vip}: {} connections broke, the first: {:?}",
            report.broken.len(),
            report.broken.first()
        );
    }
}

#[test]
fn a_sync_group_hands_both_vips_over_on_a_graceful_stop_and_breaks_no_connection_on_either() {
    let mut s = setup_sync_group(Duration::from_millis(100));
    let flows = flows_to_both(&s, 100);
    s.a.terminate().expect("SIGTERM a");
    for name in SYNCED {
        s.b.wait_state(name, "Master", WAIT).expect("b takes over");
    }
    // Both parked on a (silent, still there for its connections); new ones go to b.
    for vip in s.vips {
        assert_eq!(greeter(&s.pair.lab, vip), "b", "{vip}");
    }
    let held = s
        .pair
        .lab
        .addresses("a", &s.pair.a.iface)
        .expect("a's addresses");
    assert!(
        s.vips.iter().all(|v| held.contains(v)),
        "a keeps both VIPs: {held:?}"
    );
    for f in &flows {
        f.run_rounds(50);
    }
    none_broken(flows, "a", 100);
    let closed = Instant::now();
    for vip in s.vips {
        s.pair
            .lab
            .wait_address("a", vip, Presence::Absent, Duration::from_secs(3))
            .expect("a lets go of the VIP");
    }
    let let_go = closed.elapsed();
    eprintln!(
        "sync group: a let go of both VIPs {} ms after the last connection closed",
        let_go.as_millis()
    );
    assert!(let_go < Duration::from_secs(1), "{let_go:?}");
    assert_eq!(
        s.a.wait_exit(WAIT).expect("a exits"),
        "exit 0",
        "{}",
        s.a.log()
    );
    for vip in s.vips {
        wait_until("b's forwarding removed", || {
            !forwarding(&s.pair.lab, "b", vip)
        });
    }
}

/// The group steps down (both priorities lowered by reload, as a tracker weighing on every
/// member would): `b` takes both, `VI_2` (1 s adverts) following `VI_1` (100 ms) as the
/// group's rule; then the priorities come back and `a` preempts both back the same way, `b`
/// keeping what it accepted meanwhile. No connection on either VIP breaks.
#[test]
fn a_sync_group_keeps_the_connections_of_both_vips_through_a_preempt_failback() {
    let mut s = setup_sync_group(Duration::from_secs(1));
    let through_a = flows_to_both(&s, 50);
    let mut lower = s.a_config.clone();
    for instance in &mut lower.instances {
        instance.priority = 50;
    }
    s.a.write_config(&lower).expect("config");
    s.a.reload().expect("SIGHUP");
    for name in SYNCED {
        s.b.wait_state(name, "Master", WAIT)
            .expect("b takes over both");
    }
    for f in &through_a {
        f.run_rounds(25);
    }
    let through_b = flows_to_both(&s, 50);
    s.a.write_config(&s.a_config).expect("config");
    s.a.reload().expect("SIGHUP");
    for name in SYNCED {
        s.a.wait_state(name, "Master", WAIT)
            .expect("a preempts both");
    }
    for f in through_a.iter().chain(&through_b) {
        f.run_rounds(25);
    }
    none_broken(through_a, "a", 50);
    none_broken(through_b, "b", 50);
    for vip in s.vips {
        s.pair
            .lab
            .wait_address("b", vip, Presence::Absent, Duration::from_secs(3))
            .expect("b lets go");
    }
}

/// Adverts lost both ways (a flaky link) make the backup master for a moment: it announces the
/// VIP, so the client learns it at the backup's MAC; the master, which never stopped, hears
/// nothing of it. Once adverts flow again the backup steps down and lets go. The master learns
/// from the backup's hand-over beacon (answered `NotForwarding`: it took nothing over) that
/// hosts may have the VIP at the other MAC, and announces it again: the client reaches the
/// master at once, not after its ARP entry goes stale (15 s or more).
#[test]
fn a_backup_that_held_the_vip_for_a_moment_leaves_no_client_at_its_mac() {
    let mut s = setup();
    let lab = &s.pair.lab;
    let table = format!("{}_cut", lab.prefix());
    let nft = |command: String| {
        let out = lab.exec("b", &["nft", &command]).expect("nft");
        assert!(out.success(), "nft {command}: {out:?}");
    };
    nft(format!("add table inet {table}"));
    for hook in ["input", "output"] {
        nft(format!(
            "add chain inet {table} {hook} {{ type filter hook {hook} priority 0; }}"
        ));
        nft(format!(
            "add rule inet {table} {hook} ip protocol vrrp drop"
        ));
    }
    s.b.wait_state("VI_1", "Master", WAIT)
        .expect("b master for a moment");
    let a_state = s.a.instance("VI_1").expect("a's status");
    assert_eq!(a_state["state"], "Master", "a never stopped");
    // b announced the VIP: the client now sends to b.
    assert_eq!(greeter(lab, s.vip), "b");
    // b hears a again and steps down; a still hears nothing from b (its last adverts, the one
    // sent as it steps down included, are lost): only the hand-over beacon tells a.
    nft(format!("delete chain inet {table} input"));
    s.pair
        .lab
        .wait_address("b", s.vip, Presence::Absent, WAIT)
        .expect("b lets go");
    let gone = Instant::now();
    // Connections are tried one after another, each given 300 ms.
    let mut greeted = None;
    while gone.elapsed() < Duration::from_secs(3) {
        greeted = try_greeter(lab, s.vip, Duration::from_millis(300));
        if greeted.is_some() {
            break;
        }
    }
    assert_eq!(
        greeted.as_deref(),
        Some("a"),
        "no answer for {:?} after b let go",
        gone.elapsed()
    );
    eprintln!("the client reached a {:?} after b let go", gone.elapsed());
    nft(format!("delete table inet {table}"));
}

/// A client whose neighbour entry still names the backup's MAC (it heard the backup's
/// announcements during a brief takeover, and ignores the master's within its lock time) is
/// served by the master: the backup passes every packet to a VIP it does not hold, new
/// connections included, to the master it hears. The entry is stale, as a learnt one is: the
/// client sends its SYN to the backup's MAC, and learns the master's when that one resolves it
/// in turn (an IPv6 client answers a solicitation through its entry, and a neighbour
/// advertisement passed on by the backup would lose its hop limit of 255).
#[test]
fn a_client_still_sending_to_the_backups_mac_is_served_by_the_master() {
    client_at_the_backups_mac_is_served(setup_family(false));
}

#[test]
fn an_ipv6_client_still_sending_to_the_backups_mac_is_served_by_the_master() {
    client_at_the_backups_mac_is_served(setup_family(true));
}

fn client_at_the_backups_mac_is_served(s: Setup) {
    let lab = &s.pair.lab;
    point_client_at(&s, "b");
    assert_eq!(
        try_greeter(lab, s.vip, Duration::from_secs(2)).as_deref(),
        Some("a"),
        "a new connection through b's MAC"
    );
    let family = if s.vip.is_ipv6() { "ip6" } else { "ip" };
    let table = (lab.exec("b", &["nft", "list", "table", family, "hav"])).expect("b's table");
    let passed_on = (table.stdout.lines())
        .find(|line| line.contains("!= local"))
        .and_then(|line| {
            line.split("packets ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        });
    assert!(
        passed_on.is_some_and(|packets| packets > 0),
        "b passed nothing on: {}",
        table.stdout
    );
    let status = s.b.instance("VI_1").expect("b's status");
    assert_eq!(status["state"], "Backup", "b stayed backup");
}

/// Gives the client a stale neighbour entry for the VIP naming `node`'s MAC, as one learnt from
/// that node's announcements: the client sends there until the entry is confirmed or replaced.
fn point_client_at(s: &Setup, node: &str) {
    let lab = &s.pair.lab;
    let iface = &s.pair.node(node).expect("node").iface;
    let mac = (lab.exec(node, &["cat", &format!("/sys/class/net/{iface}/address")]))
        .expect("the node's MAC");
    let (mac, vip) = (mac.stdout.trim().to_owned(), s.vip.to_string());
    let client = &s.pair.client.iface;
    let argv = [
        "ip", "neigh", "replace", &vip, "lladdr", &mac, "dev", client, "nud", "stale",
    ];
    let out = lab.exec("client", &argv).expect("ip neigh replace");
    assert!(out.success(), "ip neigh replace: {out:?}");
}
