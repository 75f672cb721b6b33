//! Smoke tests of the namespace harness itself, and the keepalived reference failover that the
//! hav-agent tests mirror. Needs root (namespaces), iproute2, ping and keepalived.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hav_tests::bench::{self, BenchConfig, HavContender, KeepalivedContender, Scenario, Timing};
use hav_tests::keepalived::{Keepalived, KeepalivedConfig, VrrpInstance, VrrpState};
use hav_tests::netns::{self, NetnsError, NsProcess, Presence, RunPrefix, SpawnSpec};
use hav_tests::probe::{self, ProbeConfig, Prober};
use hav_tests::topology::{Lab, LanSpec, Pair};

const WAIT: Duration = Duration::from_secs(10);
const HTTPD: &str = env!("CARGO_BIN_EXE_hav-test-httpd");

fn two_hosts() -> Result<Lab, NetnsError> {
    let mut lab = Lab::new()?;
    lab.add_lan("lan", LanSpec::PRIMARY)?;
    lab.add_host("a")?;
    lab.add_host("b")?;
    lab.attach("a", "lan", 11)?;
    lab.attach("b", "lan", 12)?;
    Ok(lab)
}

fn ping(lab: &Lab, from: &str, to: &str) -> bool {
    lab.exec(from, &["ping", "-c", "1", "-W", "1", "-n", "-q", to])
        .expect("ping runs")
        .success()
}

#[test]
fn ping_crosses_the_lan_and_a_link_cut_stops_it() {
    let lab = two_hosts().expect("topology");
    let b_iface = lab.prefix().name("lan").expect("fits");
    assert!(ping(&lab, "a", "198.51.100.12"), "a reaches b over IPv4");
    assert!(ping(&lab, "a", "2001:db8::c"), "a reaches b over IPv6");

    lab.link_down("b", &b_iface).expect("cut b");
    assert!(
        !ping(&lab, "a", "198.51.100.12"),
        "b unreachable after the cut"
    );

    lab.link_up("b", &b_iface).expect("restore b");
    assert!(ping(&lab, "a", "198.51.100.12"), "b reachable again");
}

#[test]
fn hosts_on_two_lans_reach_each_other_on_both_and_cuts_are_per_lan() {
    let mut lab = Lab::new().expect("lab");
    lab.add_lan("lan", LanSpec::PRIMARY).expect("lan");
    lab.add_lan("wan", LanSpec::SECONDARY).expect("wan");
    for (host, octet) in [("a", 11), ("b", 12)] {
        lab.add_host(host).expect("host");
        lab.attach(host, "lan", octet).expect("attach lan");
        lab.attach(host, "wan", octet).expect("attach wan");
    }
    assert!(ping(&lab, "a", "203.0.113.12"), "a reaches b over the WAN");
    assert!(
        ping(&lab, "a", "2001:db8:0:1::c"),
        "a reaches b over the WAN (IPv6)"
    );

    let wan_iface = lab.prefix().name("wan").expect("fits");
    lab.link_down("a", &wan_iface).expect("cut a's WAN link");
    assert!(!ping(&lab, "a", "203.0.113.12"), "WAN cut");
    assert!(ping(&lab, "a", "198.51.100.12"), "LAN unaffected");
}

#[test]
fn address_waits_follow_netlink_events() {
    let lab = two_hosts().expect("topology");
    let iface = lab.prefix().name("lan").expect("fits");
    let extra: IpAddr = Ipv4Addr::new(198, 51, 100, 77).into();

    let listed = lab.addresses("a", &iface).expect("list");
    assert!(
        listed.contains(&"198.51.100.11".parse().expect("literal")),
        "{listed:?}"
    );
    assert!(
        listed.contains(&"2001:db8::b".parse().expect("literal")),
        "{listed:?}"
    );

    // Absent now: returns at once from the initial dump.
    lab.wait_address("a", extra, Presence::Absent, WAIT)
        .expect("absent at start");
    // Present never happens: the timeout is reported as such.
    let err = lab
        .wait_address("a", extra, Presence::Present, Duration::from_millis(200))
        .expect_err("nobody adds it");
    assert!(matches!(err, NetnsError::Timeout { .. }), "{err}");

    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| lab.wait_address("a", extra, Presence::Present, WAIT));
        lab.host("a")
            .expect("host")
            .ip(&["addr", "add", "198.51.100.77/32", "dev", &iface])
            .expect("add address");
        waiter.join().expect("no panic").expect("address seen");
    });
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| lab.wait_address("a", extra, Presence::Absent, WAIT));
        lab.host("a")
            .expect("host")
            .ip(&["addr", "del", "198.51.100.77/32", "dev", &iface])
            .expect("del address");
        waiter.join().expect("no panic").expect("removal seen");
    });
}

#[test]
fn drop_removes_every_namespace_even_when_the_test_panics() {
    let lab = two_hosts().expect("topology");
    let prefix = lab.prefix().as_str().to_owned();
    let names = lab.namespace_names();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        netns::list_namespaces()
            .expect("list")
            .iter()
            .any(|n| n.starts_with(&prefix))
    );
    drop(lab);
    assert!(no_namespace_with(&prefix), "left over after drop");

    let panicking_prefix = Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let lab = two_hosts().expect("topology");
        *panicking_prefix.lock().expect("not poisoned") = lab.prefix().as_str().to_owned();
        let _sleeper = lab
            .spawn("a", SpawnSpec::new("sleeper", "/bin/sleep").arg("600"))
            .expect("spawn");
        panic!("test failure inside a topology");
    });
    assert!(result.is_err());
    let prefix = panicking_prefix.into_inner().expect("not poisoned");
    assert!(!prefix.is_empty());
    assert!(no_namespace_with(&prefix), "left over after panic");
    // Logs are kept after a panic by design; this panic was staged.
    let _ = std::fs::remove_dir_all(Path::new(netns::LOG_ROOT).join(&prefix));
}

#[test]
fn spawned_processes_are_terminated_killed_and_logged() {
    let lab = two_hosts().expect("topology");
    let script = "echo started; trap 'echo terminating; exit 3' TERM; while :; do sleep 0.05; done";
    let mut graceful = lab
        .spawn(
            "a",
            SpawnSpec::new("graceful", "/bin/sh").args(["-c", script]),
        )
        .expect("spawn");
    assert_eq!(
        graceful
            .wait_timeout(Duration::from_millis(100))
            .expect("wait"),
        None,
        "still running"
    );
    let status = graceful.terminate(WAIT).expect("terminate");
    assert_eq!(status.code(), Some(3), "{}", graceful.log());
    let log = graceful.log();
    assert!(
        log.contains("started") && log.contains("terminating"),
        "{log}"
    );

    let mut stubborn = lab
        .spawn("a", SpawnSpec::new("stubborn", "/bin/sleep").arg("600"))
        .expect("spawn");
    stubborn.kill().expect("kill");
    assert_eq!(stubborn.describe_exit(), "killed by signal 9");

    // The process runs inside the namespace: it sees the host's interface, not the root's.
    let iface = lab.prefix().name("lan").expect("fits");
    let out = lab.exec("a", &["ip", "-o", "link", "show"]).expect("exec");
    assert!(
        out.success() && out.stdout.contains(&iface),
        "{}",
        out.stdout
    );
    let bridge = lab.prefix().name("br").expect("fits");
    assert!(!out.stdout.contains(&bridge), "{}", out.stdout);

    // A process that exits without reporting ready is an error, not a hang.
    let mut silent = lab
        .spawn("a", SpawnSpec::new("silent", "/bin/true").ready_pipe())
        .expect("spawn");
    let err = silent.wait_ready(WAIT).expect_err("never ready");
    assert!(matches!(err, NetnsError::NotReady { .. }), "{err}");
}

#[test]
fn failover_bench_pipeline_measures_keepalived_and_hav() {
    let mut config = BenchConfig::new(HTTPD.into());
    config.fault_jitter = Duration::ZERO;
    let result = bench::run_once(
        &KeepalivedContender,
        Scenario::GracefulStop,
        Timing::V3_20MS,
        &config,
    )
    .expect("run");
    assert_eq!(result.report.before.as_deref(), Some("a"));
    assert!(result.report.outage.is_some(), "{:?}", result.report);
    let hav = bench::run_once(
        &HavContender::default(),
        Scenario::GracefulStop,
        Timing::V3_20MS,
        &config,
    )
    .expect("hav run");
    assert_eq!(hav.report.before.as_deref(), Some("a"));
    assert!(hav.report.outage.is_some(), "{:?}", hav.report);
}

#[test]
fn a_mixed_idle_measurement_takes_each_side_from_the_pair_it_ran_in() {
    let mut config = BenchConfig::new(HTTPD.into());
    config.idle_settle = Duration::ZERO;
    let costs = bench::measure_idle(
        &[&HavContender::default()],
        Some(&KeepalivedContender),
        Timing::V3_20MS,
        Duration::from_secs(1),
        1,
        &config,
    )
    .expect("measure");
    let [hav] = costs.as_slice() else {
        panic!("one cost per contender: {costs:?}");
    };
    assert_eq!((hav.contender, hav.peer), ("hav", Some("keepalived")));
    // hav-agent is one process and keepalived two: each side is hav's own node, the master
    // from the pair beside keepalived's backup, the backup from the pair beside its master.
    assert_eq!(hav.processes, (1, 1), "{hav:?}");
    assert_eq!(hav.windows.len(), 1);
    // A master sends every 20 ms; a backup hearing a settled master holds the repeats.
    let (master, backup) = hav.wakeups_per_second;
    assert!(master > 30.0 && backup < master, "{hav:?}");
    assert!(hav.cpu_percent_schedstat.0 > 0.0, "{hav:?}");
}

#[test]
fn sweep_removes_only_namespaces_of_dead_runs() {
    let dead = RunPrefix::generate().expect("prefix");
    let dead_ns = dead.name("x").expect("fits");
    std::fs::create_dir_all(netns::MARKER_DIR).expect("marker dir");
    // pid 0 is never a process: the owner is dead.
    let marker = Path::new(netns::MARKER_DIR).join(format!("{dead}.pid"));
    std::fs::write(&marker, "0 0\n").expect("marker");
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &dead_ns])
        .status()
        .expect("ip runs");
    assert!(status.success());

    let alive = two_hosts().expect("live topology");
    let removed = netns::sweep_stale().expect("sweep");
    assert!(removed.contains(&dead_ns), "{removed:?}");
    assert!(no_namespace_with(dead.as_str()));
    assert!(!marker.exists());
    let live_prefix = alive.prefix().as_str().to_owned();
    assert!(
        !removed.iter().any(|n| n.starts_with(&live_prefix)),
        "a live run was swept"
    );
    assert!(!no_namespace_with(&live_prefix));
}

#[test]
fn keepalived_pair_elects_master_and_fails_over_on_link_cut() {
    let pair = Pair::new().expect("pair topology");
    let vip = IpAddr::V4(pair.vip4);
    keepalived_failover(&pair, vip, 24, "0.0.0.0:8080");
}

#[test]
fn keepalived_pair_fails_over_an_ipv6_vip() {
    let pair = Pair::new().expect("pair topology");
    let vip = IpAddr::V6(pair.vip6);
    keepalived_failover(&pair, vip, 64, "[::]:8080");
}

/// The reference scenario the hav-agent tests mirror: a elected, VIP on a only, the client
/// reaches a; a's link cut: a releases the VIP (FAULT), b takes it, the client reaches b.
fn keepalived_failover(pair: &Pair, vip: IpAddr, prefix_len: u8, listen: &str) {
    let lab = &pair.lab;
    let mut httpd_a = start_httpd(lab, "a", listen);
    let mut httpd_b = start_httpd(lab, "b", listen);

    let mut ka_a = start_keepalived(pair, "a", 150, vip, prefix_len);
    ka_a.wait_state("VI_1", VrrpState::Master, WAIT)
        .expect("a becomes master");
    let mut ka_b = start_keepalived(pair, "b", 100, vip, prefix_len);
    ka_b.wait_state("VI_1", VrrpState::Backup, WAIT)
        .expect("b stays backup");
    lab.wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a");
    let listed = lab.addresses("b", &pair.b.iface).expect("list b");
    assert!(!listed.contains(&vip), "VIP also on b: {listed:?}");

    let prober = Prober::start(
        lab.host("client").expect("client"),
        ProbeConfig::new(SocketAddr::new(vip, 8080)),
    )
    .expect("prober");
    prober
        .wait_for_reply("a", Instant::now(), WAIT)
        .expect("client reaches a through the VIP");

    let fault = Instant::now();
    lab.link_down("a", &pair.a.iface).expect("cut a");
    lab.wait_address("b", vip, Presence::Present, WAIT)
        .expect("VIP moves to b");
    ka_b.wait_state("VI_1", VrrpState::Master, WAIT)
        .expect("b master");
    lab.wait_address("a", vip, Presence::Absent, WAIT)
        .expect("a (FAULT on carrier loss) releases the VIP");
    prober
        .wait_for_reply("b", fault, WAIT)
        .expect("client reaches b through the VIP");
    let samples = prober.stop();
    let report = probe::analyse(&samples, fault, "b");
    eprintln!("keepalived v3 100 ms link cut, VIP {vip}: {report:?}");
    assert_eq!(report.before.as_deref(), Some("a"));
    let outage = report.outage.expect("b answered");
    assert!(outage > Duration::ZERO);
    assert!(
        report.failed_probes > 0,
        "the cut must be visible to the client"
    );
    assert!(httpd_a.is_running() && httpd_b.is_running());
}

fn start_httpd(lab: &Lab, node: &str, listen: &str) -> NsProcess {
    let mut httpd = lab
        .spawn(
            node,
            SpawnSpec::new(format!("httpd-{node}"), HTTPD)
                .args(["--node", node, "--listen", listen])
                .ready_pipe(),
        )
        .expect("spawn httpd");
    httpd.wait_ready(WAIT).expect("httpd listening");
    httpd
}

fn start_keepalived(
    pair: &Pair,
    node: &str,
    priority: u8,
    vip: IpAddr,
    prefix_len: u8,
) -> Keepalived {
    let attachment = pair.node(node).expect("node");
    let instance = VrrpInstance::new(
        3,
        51,
        priority,
        Duration::from_millis(100),
        &attachment.iface,
        vec![(vip, prefix_len)],
    );
    let config = KeepalivedConfig {
        router_id: node.to_owned(),
        instances: vec![instance],
        garp: Default::default(),
    };
    Keepalived::start(
        pair.lab.host(node).expect("host"),
        &pair.lab.log_dir().join(format!("keepalived-{node}")),
        &config,
    )
    .expect("keepalived starts")
}

fn no_namespace_with(prefix: &str) -> bool {
    let start = format!("{prefix}-");
    !netns::list_namespaces()
        .expect("list")
        .iter()
        .any(|n| n.starts_with(&start))
}
