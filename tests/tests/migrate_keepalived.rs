//! A running keepalived pair moved to hav one node at a time, backup first, with the configs
//! `havctl import-keepalived` writes from the pair's own keepalived.conf, while a client opens a
//! connection to the VIP every 5 ms: not one fails, and the VIP never leaves the master (seen
//! by netlink watchers on both nodes, so there is never a moment with no holder or two).
//!
//! The backup is replaced first (stopping a keepalived backup changes nothing on the wire);
//! then keepalived on the master is killed with SIGKILL, so it removes nothing, and hav-agent
//! starts there with `--adopt`: the instance finds its VIP on the interface, starts as master
//! and adverts at once, so the new hav backup never sees a silent master. Needs root.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{WAIT, counter};
use hav_tests::agent::{Agent, find_instance, start_httpd};
use hav_tests::bench::sibling_binary;
use hav_tests::chaos::observe::{Observers, Recorder, WatchedNode};
use hav_tests::keepalived::{Keepalived, KeepalivedConfig, VrrpInstance, VrrpState};
use hav_tests::netns::Presence;
use hav_tests::topology::Pair;

/// keepalived.conf for `node` as a site writes it: VRRPv2, 1 s adverts, preemption.
fn keepalived_config(pair: &Pair, node: &str, priority: u8, vip: IpAddr) -> KeepalivedConfig {
    let iface = &pair.node(node).expect("node").iface;
    KeepalivedConfig {
        router_id: node.to_owned(),
        instances: vec![VrrpInstance::new(
            2,
            51,
            priority,
            Duration::from_secs(1),
            iface,
            vec![(vip, 24)],
        )],
        garp: Default::default(),
    }
}

/// The node config the importer wrote for `node`, with its state dir and status socket moved
/// into the test's agent directory (the only lines the test changes).
fn converted(pair: &Pair, out: &Path, node: &str) -> String {
    let text = std::fs::read_to_string(out.join(format!("{node}.toml")))
        .unwrap_or_else(|e| panic!("{node}.toml: {e}"));
    let section = format!("[node]\nname = {node:?}\n");
    assert!(text.contains(&section), "no [node] section in\n{text}");
    let dir = Agent::dir_of(&pair.lab, node);
    let placed = format!(
        "{section}state_dir = {:?}\nstatus_socket = {:?}\n",
        dir.join("state").display().to_string(),
        dir.join("status.sock").display().to_string()
    );
    text.replace(&section, &placed)
}

#[test]
fn a_keepalived_pair_moves_to_hav_node_by_node_with_no_failed_connection() {
    let pair = Pair::new().expect("pair topology");
    let vip = IpAddr::V4(pair.vip4);
    let _servers = [
        start_httpd(&pair.lab, "a").expect("httpd a"),
        start_httpd(&pair.lab, "b").expect("httpd b"),
    ];
    let start_keepalived = |node: &str, priority: u8| {
        Keepalived::start(
            pair.lab.host(node).expect("host"),
            &pair.lab.log_dir().join(format!("keepalived-{node}")),
            &keepalived_config(&pair, node, priority, vip),
        )
        .expect("keepalived starts")
    };
    let mut keepalived_a = start_keepalived("a", 150);
    keepalived_a
        .wait_state("VI_1", VrrpState::Master, WAIT)
        .expect("keepalived a master");
    let mut keepalived_b = start_keepalived("b", 100);
    keepalived_b
        .wait_state("VI_1", VrrpState::Backup, WAIT)
        .expect("keepalived b backup");
    pair.lab
        .wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a");

    // From here on, every appearance and disappearance of the VIP on either node is recorded.
    let recorder = Recorder::new(1, &["a".to_owned(), "b".to_owned()]);
    let watched = [
        WatchedNode {
            namespace: pair.lab.host("a").expect("a"),
            node: 0,
        },
        WatchedNode {
            namespace: pair.lab.host("b").expect("b"),
            node: 1,
        },
    ];
    let observers = Observers::start(recorder.clone(), &watched, &[vip], pair.lab.log_dir())
        .expect("holder watchers");
    let prober = common::prober(&pair.lab, vip);
    prober
        .wait_for_reply("a", Instant::now(), WAIT)
        .expect("the client reaches keepalived's master");

    // The operator converts both nodes' keepalived.conf in one run.
    let out = pair.lab.log_dir().join("converted");
    let havctl = sibling_binary("havctl").expect("havctl built");
    let import = Command::new(havctl)
        .arg("import-keepalived")
        .arg("--out-dir")
        .arg(&out)
        .args([keepalived_a.dir(), keepalived_b.dir()].map(|dir| dir.join("keepalived.conf")))
        .output()
        .expect("havctl runs");
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    // The backup first: keepalived stops, hav-agent starts on the converted config and is the
    // backup of keepalived's master.
    keepalived_b.stop(WAIT).expect("keepalived b stops");
    let mut hav_b =
        Agent::start_text_with(&pair.lab, "b", &converted(&pair, &out, "b"), |spec| spec)
            .expect("hav-agent on b");
    let a_address = IpAddr::V4(pair.a.ipv4).to_string();
    hav_b
        .wait_status("hav b backup of keepalived a", WAIT, |status| {
            find_instance(status, "VI_1")
                .is_some_and(|i| i["state"] == "Backup" && i["master"].as_str() == Some(&a_address))
        })
        .expect("hav b backup of keepalived a");

    // Then the master: keepalived dies without releasing the VIP, hav-agent adopts it.
    keepalived_a.crash().expect("keepalived a killed");
    let mut hav_a = Agent::start_text_with(&pair.lab, "a", &converted(&pair, &out, "a"), |spec| {
        spec.arg("--adopt")
    })
    .expect("hav-agent on a");
    let adopted = hav_a
        .wait_state("VI_1", "Master", WAIT)
        .expect("hav a adopts as master");
    // At once, not after a master-down interval as backup with the VIP nobody's.
    assert!(
        adopted["last_cause"]
            .as_str()
            .is_some_and(|cause| cause.contains("adopted")),
        "{adopted}"
    );
    hav_a
        .wait_log("adopting the VIPs found on the interface", WAIT)
        .expect("hav a says it adopted");
    // b hears hav a's adverts (its master-down timer restarts on each), so it never takes over.
    let heard = counter(
        &hav_b.instance("VI_1").expect("b status"),
        "rcvd_advertisements",
    );
    hav_b
        .wait_status("b hears hav a", WAIT, |status| {
            find_instance(status, "VI_1").is_some_and(|i| {
                i["state"] == "Backup" && counter(i, "rcvd_advertisements") >= heard + 2
            })
        })
        .expect("hav b stays backup of hav a");
    let since = Instant::now();
    prober
        .wait_for_reply("a", since, WAIT)
        .expect("the client still reaches a");

    let samples = prober.stop();
    let observed = recorder.snapshot();
    drop(observers);
    let failed: Vec<_> = samples.iter().filter(|s| s.outcome.is_err()).collect();
    eprintln!(
        "keepalived -> hav, node by node: {} connections, {} failed; VIP events {:?}",
        samples.len(),
        failed.len(),
        observed.holder_events
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(samples.len() > 100, "{} probes", samples.len());
    assert!(samples.iter().all(|s| s.node() != Some("b")), "b answered");
    // The VIP stayed on a, and only there: it never left a and never appeared on b.
    assert!(
        observed
            .holder_events
            .iter()
            .all(|e| e.node == 0 && e.present),
        "{:?}",
        observed.holder_events
    );
    assert!(
        observed.harness_errors.is_empty(),
        "{:?}",
        observed.harness_errors
    );
    common::assert_vip_absent(&pair.lab, "b", &pair.b.iface, vip);
}
