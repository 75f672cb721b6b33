//! `havctl priority`: an operator's priority intent moves a VIP, is shown in status and in the
//! audit log, survives the agent's restart (kept in its state dir, and given again by the
//! coordinator when the state dir lost it), and a clear gives the VIP back. A viewer may list
//! intents but not set them.
//!
//! Real hav-agents in network namespaces, a real hav-coordinator on the LAN, real certificates.

use std::net::IpAddr;
use std::time::Duration;

use hav_tests::fleet::{Error, FleetLab, wait_file_count};
use hav_tests::netns::{NetnsError, Presence};
use hav_tests::topology::LanSpec;

const NODES: [(&str, u8); 2] = [("a1", 11), ("a2", 12)];
const VIP: &str = "198.51.100.100";
const INSTANCE: &str = "alpha-vip0";

fn vip() -> IpAddr {
    VIP.parse().expect("literal address")
}

fn up(lab: &mut FleetLab) -> Result<(), Error> {
    lab.start_coordinator()?;
    for (node, _) in NODES {
        lab.start_agent(node)?;
    }
    for (node, _) in NODES {
        lab.wait_link_up(node, 1)?;
    }
    let iface = &lab.nodes["a1"].1;
    let mut fleet = format!(
        "[[group]]\nname = \"alpha\"\ninterface = \"{iface}\"\nvips = [\"{VIP}/24\"]\n\
         first_vrid = 10\nadvert_interval = \"200ms\"\n"
    );
    for (name, octet) in NODES {
        fleet.push_str(&format!(
            "[[group.node]]\nname = \"{name}\"\naddress = \"{}\"\n",
            LanSpec::PRIMARY.ipv4(octet)
        ));
    }
    let path = lab.write("fleet.toml", &fleet)?;
    let out = lab.havctl(&["push-config", "--fleet", &path])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    lab.wait_vip("a1", vip(), true)?;
    lab.wait_masters(&[(INSTANCE, "a1")])?;
    Ok(())
}

/// The override the coordinator's status shows for a1's instance.
fn override_of_a1(lab: &FleetLab) -> Result<Option<u64>, Error> {
    let status = lab.status()?;
    Ok(status
        .as_array()
        .into_iter()
        .flatten()
        .filter(|node| node["name"] == "a1" && node["presence"] == "connected")
        .flat_map(|node| node["instances"].as_array().cloned().unwrap_or_default())
        .find(|i| i["name"] == INSTANCE)
        .and_then(|i| i["priority_override"].as_u64()))
}

/// Polls the coordinator's status (it announces no "snapshot stored") until a1 shows `want`.
fn wait_override(lab: &FleetLab, want: Option<u64>) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen = override_of_a1(lab)?;
        if seen == want {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("a1's override stayed {seen:?}, not {want:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that the VIP does not come to a1 within `window` (its master-down interval and
/// more): the netlink wait must time out.
fn vip_stays_off_a1(lab: &FleetLab, window: Duration) {
    match lab.lab.wait_address("a1", vip(), Presence::Present, window) {
        Err(NetnsError::Timeout { .. }) => {}
        Ok(()) => panic!("{VIP} came back to a1 within {window:?}"),
        Err(e) => panic!("watching {VIP} on a1: {e}"),
    }
}

#[test]
fn a_priority_intent_moves_the_vip_outlives_agent_restarts_and_a_clear_gives_it_back()
-> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    up(&mut lab)?;

    let refused = lab.havctl_as("operator-vera", &["priority", "set", "a1", "50"])?;
    assert!(!refused.success(), "a viewer set a priority");
    assert!(refused.stderr.contains("may not"), "{}", refused.stderr);
    let bad = lab.havctl(&["priority", "set", "a1", "50", "--instance", "nope"])?;
    assert!(!bad.success());
    assert!(
        bad.stderr.contains("runs no instance `nope`"),
        "{}",
        bad.stderr
    );

    let out = lab.havctl(&[
        "priority",
        "set",
        "a1",
        "50",
        "--ttl",
        "10m",
        "--reason",
        "kernel update",
    ])?;
    assert!(out.success(), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("a1 (every instance): priority 50 set (9m59s left)")
            || out
                .stdout
                .contains("a1 (every instance): priority 50 set (10m00s left)"),
        "{}",
        out.stdout
    );
    lab.wait_vip("a2", vip(), true)?;
    lab.wait_vip("a1", vip(), false)?;
    wait_override(&lab, Some(50))?;
    let table = lab.havctl(&["status"])?;
    assert!(table.stdout.contains("50 (override)"), "{}", table.stdout);

    let list = lab.havctl_as("operator-vera", &["priority", "list", "-o", "json"])?;
    assert!(list.success(), "{}", list.stderr);
    let listed: serde_json::Value = serde_json::from_str(&list.stdout)?;
    let intent = &listed["intents"][0];
    assert_eq!(intent["node"], "a1");
    assert_eq!(intent["instance"], "*");
    assert_eq!(intent["priority"], 50);
    assert_eq!(intent["reason"], "kernel update");
    assert_eq!(intent["who"], "olga");
    assert!(intent["expires_unix_ms"].as_u64().is_some(), "{listed}");

    // A crash of a1's agent: it starts again with the override from its state dir, so the VIP
    // does not come back to it, not even before the coordinator is reached.
    lab.restart_agent("a1")?;
    vip_stays_off_a1(&lab, Duration::from_millis(1500));
    lab.wait_link_up("a1", 1)?;
    wait_override(&lab, Some(50))?;

    // The state dir lost (a rebuilt node): the coordinator gives the intent again on connect.
    lab.agent("a1")?.kill()?;
    let state = lab.lab.log_dir().join("agent-a1/state/overrides.json");
    std::fs::remove_file(&state)?;
    let coordinator_log = lab.lab.log_dir().join("coordinator-0.log");
    lab.restart_agent("a1")?;
    wait_file_count(
        &coordinator_log,
        "priority intent applied on connect",
        // The restart above was the first.
        2,
        Duration::from_secs(20),
    )?;
    wait_override(&lab, Some(50))?;
    lab.wait_vip("a2", vip(), true)?;

    let history = lab.havctl(&["history"])?;
    assert!(
        history.stdout.contains("priority-set"),
        "{}",
        history.stdout
    );

    let out = lab.havctl(&["priority", "clear", "a1", "--reason", "done"])?;
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stdout.contains("priority 50 cleared"), "{}", out.stdout);
    lab.wait_vip("a1", vip(), true)?;
    lab.wait_vip("a2", vip(), false)?;
    wait_override(&lab, None)?;
    let list = lab.havctl(&["priority", "list"])?;
    assert_eq!(list.stdout, "no priority intents\n");
    let again = lab.havctl(&["priority", "clear", "a1"])?;
    assert!(!again.success());
    assert!(
        again.stderr.contains("no priority intent"),
        "{}",
        again.stderr
    );
    Ok(())
}
