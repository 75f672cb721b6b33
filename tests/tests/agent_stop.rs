//! A clean stop (SIGTERM) of a single real hav-agent and its VIP journal: the VIPs the agent
//! journaled ahead of need and never held, or released before the stop, are struck without a
//! word; a VIP still on an interface when the agent stops is removed and reported. Needs root.

mod common;

use common::WAIT;
use hav_tests::agent::{Agent, AgentConfig, InstanceSpec};
use hav_tests::netns::Presence;
use hav_tests::topology::{LanSpec, Pair};

/// The warning a stop logs for VIPs it found still on an interface.
const LEFT_BEHIND: &str = "removed VIPs still on an interface at stop";

/// `a` alone on the pair's LAN: `VI_1` (VIP .1) becomes master; `VI_2` (VIP .2) tracks a file
/// with weight 0 that holds `1`, so it stays in Fault and never holds its VIP (which the agent
/// journals all the same).
fn start_alone(pair: &Pair) -> (Agent, std::path::PathBuf) {
    let iface = &pair.a.iface;
    let fault_file = pair.lab.log_dir().join("agent-a-maintenance");
    std::fs::create_dir_all(pair.lab.log_dir()).expect("log dir");
    std::fs::write(&fault_file, "1\n").expect("fault file");
    let master = InstanceSpec::new(iface, 51, 150, &[&format!("{}/24", pair.vip4)]);
    let mut faulty = InstanceSpec::new(
        iface,
        52,
        150,
        &[&format!("{}/24", LanSpec::PRIMARY.ipv4(2))],
    );
    faulty.name = "VI_2".into();
    faulty.track = vec!["track_file = [{ name = \"maintenance\", weight = 0 }]".into()];
    let mut config = AgentConfig::new("a", vec![master, faulty]);
    config.extra = format!(
        "[[track_file]]\nname = \"maintenance\"\npath = {:?}\n",
        fault_file.display().to_string()
    );
    let mut agent = Agent::start(&pair.lab, "a", &config).expect("start a");
    agent
        .wait_state("VI_1", "Master", WAIT)
        .expect("VI_1 master");
    agent.wait_state("VI_2", "Fault", WAIT).expect("VI_2 fault");
    pair.lab
        .wait_address("a", pair.vip4.into(), Presence::Present, WAIT)
        .expect("VI_1's VIP on a");
    let journal = agent
        .config_path()
        .parent()
        .expect("config in a directory")
        .join("state/vips.journal");
    (agent, journal)
}

#[test]
fn a_clean_stop_releases_every_vip_and_reports_none_left_behind() {
    let pair = Pair::new().expect("pair");
    let (mut agent, journal) = start_alone(&pair);
    let journaled = std::fs::read_to_string(&journal).expect("journal");
    let fault_vip = LanSpec::PRIMARY.ipv4(2).to_string();
    assert!(
        journaled.contains(&fault_vip),
        "VI_2's VIP is journaled ahead of need: {journaled}"
    );

    agent.terminate().expect("SIGTERM");
    let exit = agent.wait_exit(WAIT).expect("a exits");
    let log = agent.log();
    assert_eq!(exit, "exit 0", "{log}");
    assert!(log.contains("hav-agent stopped"), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .skip_while(|line| !line.contains("stopping:"))
        .filter(|line| line.contains("WARN"))
        .collect();
    assert!(
        warnings.is_empty(),
        "a clean stop warned: {warnings:#?}\n{log}"
    );
    assert!(
        !pair
            .lab
            .addresses("a", &pair.a.iface)
            .expect("addresses")
            .contains(&pair.vip4.into()),
        "VI_1's VIP released"
    );
    let after = std::fs::read_to_string(&journal).expect("journal after the stop");
    assert!(
        !after.contains(&pair.vip4.to_string()) && !after.contains(&fault_vip),
        "the stop empties the journal: {after}"
    );
}

#[test]
fn a_vip_still_on_an_interface_at_stop_is_removed_and_reported() {
    let pair = Pair::new().expect("pair");
    let (mut agent, _journal) = start_alone(&pair);
    // VI_2 is in Fault and holds nothing, yet its VIP is on the interface: what a removal that
    // failed leaves behind.
    let stray = LanSpec::PRIMARY.ipv4(2);
    let added = pair
        .lab
        .exec(
            "a",
            &[
                "ip",
                "addr",
                "add",
                &format!("{stray}/24"),
                "dev",
                &pair.a.iface,
            ],
        )
        .expect("ip addr add");
    assert!(added.success(), "{added:?}");

    agent.terminate().expect("SIGTERM");
    let exit = agent.wait_exit(WAIT).expect("a exits");
    let log = agent.log();
    assert_eq!(exit, "exit 0", "{log}");
    let line = log
        .lines()
        .find(|line| line.contains(LEFT_BEHIND))
        .unwrap_or_else(|| panic!("no `{LEFT_BEHIND}` warning:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&stray.to_string()),
        "the address is named: {line}"
    );
    assert!(
        !line.contains(&pair.vip4.to_string()),
        "VI_1's VIP was released by the engine, not left behind: {line}"
    );
    assert!(
        !pair
            .lab
            .addresses("a", &pair.a.iface)
            .expect("addresses")
            .contains(&stray.into()),
        "the stray VIP is removed"
    );
}
