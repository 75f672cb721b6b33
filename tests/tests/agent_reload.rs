//! Reload (SIGHUP) of a running hav-agent master: an instance the new config leaves unchanged
//! makes no transition and never drops its VIP while another instance is added; a changed
//! priority takes effect; an invalid file is refused with file, key path and reason, and the
//! old config keeps running. Needs root.

mod common;

use std::time::Instant;

use common::{WAIT, counter, start_duo, takeover, vip4};
use hav_tests::agent::{AddressLog, InstanceSpec};
use hav_tests::netns::Presence;

#[test]
fn reload_adding_an_instance_leaves_the_unchanged_one_alone() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let vip = duo.vip;
    let before = duo.a.instance("VI_1").expect("a status");
    let b_before = duo.b.instance("VI_1").expect("b status");
    let vip2 = format!("{}/24", hav_tests::topology::LanSpec::PRIMARY.ipv4(2));
    let mut config = duo.a_config.clone();
    let mut second = InstanceSpec::new(&duo.pair.a.iface, 52, 150, &[&vip2]);
    second.name = "VI_2".into();
    config.instances.push(second);
    duo.a.write_config(&config).expect("new config");

    let prober = duo.prober_on("a");
    let vip_log = AddressLog::start(duo.lab(), "a", vip).expect("watch the VIP");
    let reload = Instant::now();
    duo.a.reload().expect("SIGHUP");
    duo.a
        .wait_log("config reloaded", WAIT)
        .expect("reload applied");
    duo.a
        .wait_state("VI_2", "Master", WAIT)
        .expect("the new instance runs");
    let vip_events = vip_log.stop().expect("VIP events");
    assert!(
        vip_events.is_empty(),
        "VI_1's VIP changed on a during the reload: {vip_events:?}"
    );
    let after = duo.a.instance("VI_1").expect("a status");
    assert_eq!(after["state"], "Master", "{after}");
    assert_eq!(
        counter(&after, "master_transitions"),
        counter(&before, "master_transitions"),
        "VI_1 made a transition: {before} then {after}"
    );
    assert!(
        after["since_secs"].as_f64() > before["since_secs"].as_f64(),
        "VI_1's state clock restarted: {before} then {after}"
    );
    let b_after = duo.b.instance("VI_1").expect("b status");
    assert_eq!(b_after["state"], "Backup", "{b_after}");
    assert_eq!(
        counter(&b_after, "master_transitions"),
        counter(&b_before, "master_transitions")
    );
    let samples = prober.stop();
    let during: Vec<_> = samples.iter().filter(|s| s.sent >= reload).collect();
    assert!(!during.is_empty());
    let failed = during.iter().filter(|s| s.outcome.is_err()).count();
    eprintln!(
        "FIGURE reload with VI_1 unchanged: {failed} failed probes of {}",
        during.len()
    );
    assert!(
        during.iter().all(|s| s.node() == Some("a")),
        "a client probe did not reach a during the reload: {:?}",
        during.iter().find(|s| s.node() != Some("a"))
    );
}

#[test]
fn reload_lowering_the_priority_hands_the_vip_over() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let vip = duo.vip;
    let mut config = duo.a_config.clone();
    config.instances[0].priority = 50;
    duo.a.write_config(&config).expect("new config");
    let prober = duo.prober_on("a");
    let reload = Instant::now();
    duo.a.reload().expect("SIGHUP");
    let moved = takeover(duo.lab(), prober, vip, reload, "b");
    common::figure("reload priority 150 -> 50, a -> b", &moved);
    duo.a
        .wait_state("VI_1", "Backup", WAIT)
        .expect("a backup at 50");
    let a = duo.a.instance("VI_1").expect("a");
    assert_eq!(a["base_priority"], 50, "{a}");
    duo.lab()
        .wait_address("a", vip, Presence::Absent, WAIT)
        .expect("a released the VIP");
}

#[test]
fn reload_of_an_invalid_file_is_refused_and_the_old_config_keeps_running() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let vip = duo.vip;
    let good = duo
        .a_config
        .render(duo.a.config_path().parent().expect("config in a directory"));
    let bad = good.replace("priority = 150", "priority = 300");
    assert_ne!(good, bad);
    duo.a.write_config_text(&bad).expect("bad config");
    let prober = duo.prober_on("a");
    duo.a.reload().expect("SIGHUP");
    let log = duo.a.wait_log("reload refused", WAIT).expect("refused");
    let path = duo.a.config_path().display().to_string();
    let line = log
        .lines()
        .find(|l| l.contains("instance[0].priority"))
        .unwrap_or_else(|| panic!("no line names the key path:\n{log}"));
    assert!(line.contains(&path), "the file is not named: {line}");
    assert!(line.contains("300"), "the reason is not given: {line}");
    assert!(duo.a.process().is_running(), "a exited:\n{log}");
    let a = duo.a.instance("VI_1").expect("a status");
    assert_eq!(a["state"], "Master", "{a}");
    assert_eq!(a["base_priority"], 150, "{a}");
    assert_eq!(counter(&a, "master_transitions"), 1, "{a}");
    assert!(
        duo.lab()
            .addresses("a", &duo.pair.a.iface)
            .expect("list")
            .contains(&vip)
    );
    let after_reload = Instant::now();
    prober
        .wait_for_reply("a", after_reload, WAIT)
        .expect("client still reaches a");
    let samples = prober.stop();
    assert!(samples.iter().all(|s| s.node() == Some("a")), "{samples:?}");

    // A good file afterwards is taken.
    duo.a
        .write_config_text(&good.replace("priority = 150", "priority = 160"))
        .expect("good");
    duo.a.reload().expect("SIGHUP");
    duo.a
        .wait_status("priority 160", WAIT, |s| {
            hav_tests::agent::find_instance(s, "VI_1").is_some_and(|i| i["base_priority"] == 160)
        })
        .expect("the fixed config is applied");
}
