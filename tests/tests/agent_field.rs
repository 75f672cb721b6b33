//! What real hosts do to an agent: links deleted and created again under a running pair, an
//! interface that is missing at start, stray signals, a master frozen by SIGSTOP. Real
//! hav-agents in namespaces; needs root.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{WAIT, assert_vip_stays_away, start_duo, vip4};
use hav_tests::agent::{Agent, AgentConfig, InstanceSpec, agent_binary, find_instance};
use hav_tests::netns::Presence;
use hav_tests::topology::{Lab, LanSpec};
use nix::sys::signal::Signal;

/// A link deleted and created again (ifdown/ifup of a VLAN, a re-plumbed container link) under
/// the master: its sockets were bound to the old link, so it must open new ones and join the
/// group again, or the pair ends up with two masters for good.
#[test]
fn a_link_replaced_under_the_master_leaves_one_master() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let (vip, iface) = (duo.vip, duo.pair.a.iface.clone());
    let lab = &duo.pair.lab;
    lab.delete_link("a", &iface).expect("delete a's link");
    lab.recreate_link("a", &iface)
        .expect("create a's link again");
    // "was replaced" (one event for both) or "is back" (seen gone first).
    duo.a
        .wait_log(&format!("instance VI_1: link {iface} "), WAIT)
        .expect("a follows its link");
    // a (150) wins again: its adverts reach b through the new link.
    duo.a.wait_state("VI_1", "Master", WAIT).expect("a master");
    let lab = &duo.pair.lab;
    lab.wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a's new link");
    duo.b
        .wait_status("b backup of a", WAIT, |status| {
            find_instance(status, "VI_1").is_some_and(|s| {
                s["state"] == "Backup" && s["master"] == duo.pair.a.ipv4.to_string()
            })
        })
        .expect("b hears a again");
    lab.wait_address("b", vip, Presence::Absent, WAIT)
        .expect("b gave the VIP back");
    // And it stays that way: one holder.
    assert_vip_stays_away(lab, "b", vip, Duration::from_secs(1));
    assert!(
        lab.addresses("a", &iface).expect("a").contains(&vip),
        "a lost the VIP"
    );
}

/// The same with the link gone for a while: a is in Fault with the link as its cause, b takes
/// over, and a takes the VIP back once the link returns.
#[test]
fn a_link_gone_for_a_while_faults_only_its_instance_and_it_elects_when_back() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let (vip, iface) = (duo.vip, duo.pair.a.iface.clone());
    duo.pair
        .lab
        .delete_link("a", &iface)
        .expect("delete a's link");
    duo.a
        .wait_status("a in Fault because of its link", WAIT, |status| {
            find_instance(status, "VI_1").is_some_and(|s| {
                s["state"] == "Fault"
                    && s["last_cause"]
                        .as_str()
                        .is_some_and(|cause| cause.contains(&iface))
            })
        })
        .expect("a in Fault");
    duo.b.wait_state("VI_1", "Master", WAIT).expect("b master");
    let lab = &duo.pair.lab;
    lab.wait_address("b", vip, Presence::Present, WAIT)
        .expect("VIP on b");
    lab.recreate_link("a", &iface)
        .expect("create a's link again");
    duo.a.wait_state("VI_1", "Master", WAIT).expect("a master");
    let lab = &duo.pair.lab;
    lab.wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP back on a");
    lab.wait_address("b", vip, Presence::Absent, WAIT)
        .expect("b gave the VIP back");
    // Once the link is back, every advert leaves on the new socket.
    let log = duo.a.log();
    let back = log
        .find(&format!("link {iface} is back"))
        .expect("a logged the link back");
    assert!(
        !log[back..].contains("advert not sent"),
        "a sent on a dead socket after the link returned:\n{log}"
    );
}

/// One node, two instances: `lan` exists, `wan` does not yet. The agent must run the first and
/// hold the second in Fault (keepalived's behaviour), `--check` must say so as a warning, and the
/// second must elect once its link appears, with no restart.
#[test]
fn an_instance_on_a_missing_interface_waits_in_fault_while_the_others_run() {
    let mut lab = Lab::new().expect("lab");
    lab.add_lan("lan", LanSpec::PRIMARY).expect("lan");
    lab.add_lan("wan", LanSpec::SECONDARY).expect("wan");
    lab.add_host("a").expect("host a");
    let lan = lab.attach("a", "lan", 11).expect("attach lan");
    let wan_iface = lab.prefix().name("wan").expect("wan name");
    let lan_vip = LanSpec::PRIMARY.ipv4(1);
    let wan_vip = LanSpec::SECONDARY.ipv4(1);
    let mut wan_instance = InstanceSpec::new(&wan_iface, 52, 150, &[&format!("{wan_vip}/24")]);
    wan_instance.name = "VI_WAN".into();
    let config = AgentConfig::new(
        "a",
        vec![
            InstanceSpec::new(&lan.iface, 51, 150, &[&format!("{lan_vip}/24")]),
            wan_instance,
        ],
    );

    // --check on this host: ok, with a warning naming the instance.
    let dir = lab.log_dir().join("check");
    std::fs::create_dir_all(&dir).expect("check dir");
    let file = dir.join("agent.toml");
    std::fs::write(&file, config.render(&dir)).expect("config");
    let binary = agent_binary().expect("hav-agent binary");
    let (binary, file) = (binary.display().to_string(), file.display().to_string());
    let check = lab
        .exec("a", &[&binary, "--check", &file])
        .expect("run --check");
    assert!(check.success(), "--check refused: {}", check.stderr);
    assert!(
        check.stdout.contains(&format!(
            "warning: instance VI_WAN: interface {wan_iface} not found"
        )),
        "no warning naming the instance: {}",
        check.stdout
    );

    let mut agent = Agent::start(&lab, "a", &config).expect("start a");
    agent.wait_state("VI_1", "Master", WAIT).expect("VI_1 runs");
    lab.wait_address("a", IpAddr::V4(lan_vip), Presence::Present, WAIT)
        .expect("lan VIP");
    let instance = agent
        .wait_state("VI_WAN", "Fault", WAIT)
        .expect("VI_WAN in Fault");
    let cause = instance["last_cause"].to_string();
    assert!(cause.contains(&wan_iface), "cause: {cause}");

    let wan = lab.attach("a", "wan", 11).expect("attach wan");
    assert_eq!(wan.iface, wan_iface);
    agent
        .wait_state("VI_WAN", "Master", WAIT)
        .expect("VI_WAN elects once its link exists");
    lab.wait_address("a", IpAddr::V4(wan_vip), Presence::Present, WAIT)
        .expect("wan VIP");
    agent
        .wait_state("VI_1", "Master", WAIT)
        .expect("VI_1 untouched");
}

/// keepalived's SIGUSR2 writes statistics; other stray signals whose default action would end a
/// process are ignored; SIGQUIT stops the agent as cleanly as SIGTERM.
#[test]
fn stray_signals_never_stop_the_agent_uncleanly() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let vip = duo.vip;
    duo.a.signal(Signal::SIGUSR2).expect("SIGUSR2");
    let log = duo
        .a
        .wait_log("statistics:", WAIT)
        .expect("statistics logged");
    assert!(
        log.contains("sent_advertisements") && log.contains("master_transitions"),
        "{log}"
    );
    for signal in [
        Signal::SIGALRM,
        Signal::SIGPWR,
        Signal::SIGIO,
        Signal::SIGPROF,
    ] {
        duo.a.signal(signal).expect("send signal");
        duo.a
            .wait_log(&format!("{signal} ignored"), WAIT)
            .unwrap_or_else(|e| panic!("{signal} not acknowledged: {e}"));
    }
    assert!(duo.a.process().is_running(), "a died:\n{}", duo.a.log());
    duo.a
        .wait_state("VI_1", "Master", WAIT)
        .expect("a still master");
    assert!(
        duo.pair
            .lab
            .addresses("a", &duo.pair.a.iface)
            .expect("a")
            .contains(&vip)
    );
    // SIGQUIT: make-before-break like SIGTERM.
    duo.a.signal(Signal::SIGQUIT).expect("SIGQUIT");
    assert_eq!(duo.a.wait_exit(WAIT).expect("a exits"), "exit 0");
    duo.pair
        .lab
        .wait_address("b", vip, Presence::Present, WAIT)
        .expect("b took over");
    duo.pair
        .lab
        .wait_address("a", vip, Presence::Absent, WAIT)
        .expect("a released the VIP");
}

/// A master frozen by SIGSTOP loses the VIP to its peer after master-down; when it resumes it
/// must not fight: one master within one advert interval.
#[test]
fn a_frozen_master_resumes_without_a_fight() {
    const ADVERT: Duration = Duration::from_secs(1);
    let mut duo = start_duo(vip4, |_, _, config| {
        config.instances[0].advert_interval = ADVERT;
    });
    let vip = duo.vip;
    duo.a.signal(Signal::SIGSTOP).expect("SIGSTOP a");
    duo.pair
        .lab
        .wait_address("b", vip, Presence::Present, WAIT)
        .expect("b takes over from the frozen master");
    duo.b.wait_state("VI_1", "Master", WAIT).expect("b master");
    let resumed = Instant::now();
    duo.a.signal(Signal::SIGCONT).expect("SIGCONT a");
    // a (150, preempt) keeps mastership; b hears it and steps back.
    duo.pair
        .lab
        .wait_address("b", vip, Presence::Absent, WAIT)
        .expect("b steps back");
    let two_masters = resumed.elapsed();
    eprintln!(
        "FIGURE frozen master: two holders for {:.1} ms after SIGCONT",
        two_masters.as_secs_f64() * 1000.0
    );
    assert!(
        two_masters < ADVERT,
        "two holders for {two_masters:?} after SIGCONT (more than one interval)"
    );
    duo.a.wait_state("VI_1", "Master", WAIT).expect("a master");
    duo.b.wait_state("VI_1", "Backup", WAIT).expect("b backup");
    assert_vip_stays_away(&duo.pair.lab, "b", vip, Duration::from_secs(1));
}
