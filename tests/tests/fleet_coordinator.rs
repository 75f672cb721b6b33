//! The coordinator is never on the failover path: killed, a failover still happens and is
//! reported once it is back; restarted, its history is intact and the agents reconnect. Agents
//! keep their last pushed config across their own restarts while the coordinator is away.
//!
//! Real hav-agents in network namespaces, a real hav-coordinator on the LAN, real certificates.

use std::net::IpAddr;
use std::time::Duration;

use hav_tests::fleet::{Error, FleetLab, wait_file_count};
use hav_tests::topology::LanSpec;

const NODES: [(&str, u8); 2] = [("a1", 11), ("a2", 12)];
const VIP: &str = "198.51.100.100";

fn vip() -> IpAddr {
    VIP.parse().expect("literal address")
}

fn fleet(lab: &FleetLab, vips: &str) -> String {
    let iface = &lab.nodes["a1"].1;
    let mut text = format!(
        "[[group]]\nname = \"alpha\"\ninterface = \"{iface}\"\nvips = [{vips}]\n\
         first_vrid = 10\nadvert_interval = \"200ms\"\n"
    );
    for (name, octet) in NODES {
        text.push_str(&format!(
            "[[group.node]]\nname = \"{name}\"\naddress = \"{}\"\n",
            LanSpec::PRIMARY.ipv4(octet)
        ));
    }
    text
}

fn up(lab: &mut FleetLab) -> Result<(), Error> {
    lab.start_coordinator()?;
    for (node, _) in NODES {
        lab.start_agent(node)?;
    }
    for (node, _) in NODES {
        lab.wait_link_up(node, 1)?;
    }
    let path = lab.write("fleet.toml", &fleet(lab, &format!("\"{VIP}/24\"")))?;
    let out = lab.havctl(&["push-config", "--fleet", &path])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    lab.wait_vip("a1", vip(), true)?;
    lab.agent("a2")?
        .wait_state("alpha-vip0", "Backup", Duration::from_secs(10))?;
    Ok(())
}

fn coordinator_log(lab: &FleetLab, start: u32) -> std::path::PathBuf {
    lab.lab.log_dir().join(format!("coordinator-{start}.log"))
}

#[test]
fn with_the_coordinator_killed_a_failover_still_happens_and_is_reported_when_it_returns()
-> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    up(&mut lab)?;

    lab.kill_coordinator()?;
    let iface = lab.nodes["a1"].1.clone();
    lab.lab.link_down("a1", &iface)?;
    // VRRP alone moves the VIP.
    lab.wait_vip("a2", vip(), true)?;
    lab.agent("a2")?
        .wait_state("alpha-vip0", "Master", Duration::from_secs(10))?;
    assert!(
        lab.client_reaches(vip())?,
        "the client reaches the VIP on a2"
    );

    lab.start_coordinator()?;
    lab.wait_link_up("a2", 2)?;
    // The queued transition reaches the coordinator's history.
    let log = coordinator_log(&lab, 1);
    wait_file_count(&log, "transition recorded", 1, Duration::from_secs(20))?;
    let history = lab.havctl_as("operator-vera", &["history", "-o", "json"])?;
    assert!(history.success(), "{}", history.stderr);
    let history: serde_json::Value = serde_json::from_str(&history.stdout)?;
    let reported = (history["audit"].as_array().into_iter().flatten()).any(|entry| {
        entry["who"] == "node a2"
            && entry["action"] == "transition"
            && entry["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("alpha-vip0: BACKUP -> MASTER"))
    });
    assert!(reported, "{history:#}");
    // And the live state says who is master now.
    let status = lab.status()?;
    let a2 = (status.as_array().into_iter().flatten())
        .find(|node| node["name"] == "a2")
        .ok_or("a2 missing")?;
    assert_eq!(a2["connected"], true);
    assert_eq!(a2["instances"][0]["state"], "master", "{a2}");
    assert_eq!(a2["instances"][0]["vips_held"][0], format!("{VIP}/24"));
    Ok(())
}

#[test]
fn a_restarted_coordinator_keeps_history_and_agents_reconnect_and_keep_their_config()
-> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    up(&mut lab)?;
    let grown = fleet(&lab, &format!("\"{VIP}/24\", \"198.51.100.101/24\""));
    let path = lab.write("grown.toml", &grown)?;
    let out = lab.havctl(&["push-config", "--fleet", &path, "--comment", "second vip"])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    lab.wait_vip("a2", "198.51.100.101".parse()?, true)?;
    let before = lab.havctl(&["history", "-o", "json"])?;
    let before: serde_json::Value = serde_json::from_str(&before.stdout)?;
    assert_eq!(before["versions"].as_array().map(Vec::len), Some(2));

    lab.kill_coordinator()?;
    // Autonomy: an agent restarted while the coordinator is away runs its last pushed config.
    lab.restart_agent("a2")?;
    lab.agent("a2")?
        .wait_state("alpha-vip1", "Master", Duration::from_secs(15))?;
    lab.wait_vip("a2", "198.51.100.101".parse()?, true)?;
    assert_eq!(lab.applied_version("a2"), 2);

    lab.start_coordinator()?;
    lab.wait_link_up("a1", 2)?;
    lab.wait_link_up("a2", 1)?; // a2's new process: its first link
    let after = lab.havctl(&["history", "-o", "json"])?;
    let after: serde_json::Value = serde_json::from_str(&after.stdout)?;
    assert_eq!(after["versions"], before["versions"], "history intact");
    let audit = |history: &serde_json::Value| {
        (history["audit"].as_array().into_iter().flatten())
            .filter(|entry| entry["action"] == "push config")
            .count()
    };
    assert_eq!(audit(&after), 2, "{after:#}");
    let status = lab.status()?;
    for node in status.as_array().into_iter().flatten() {
        assert_eq!(node["connected"], true, "{node}");
        assert_eq!(node["config_version"], 2, "{node}");
    }
    // The reconnected sessions carry commands again.
    let out = lab.havctl(&["rollback", "1"])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("a1: changed, applied"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("a2: changed, applied"),
        "{}",
        out.stdout
    );
    lab.wait_vip("a2", "198.51.100.101".parse()?, false)?;
    Ok(())
}

#[test]
fn drain_moves_every_vip_to_the_peer_and_undrain_brings_them_back() -> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    up(&mut lab)?;

    let out = lab.havctl(&["drain", "a1"])?;
    assert!(out.success(), "{}", out.stderr);
    assert!(out.stdout.contains("a1: drained"), "{}", out.stdout);
    lab.wait_vip("a2", vip(), true)?;
    lab.wait_vip("a1", vip(), false)?;
    lab.agent("a1")?
        .wait_state("alpha-vip0", "Backup", Duration::from_secs(5))?;
    assert!(lab.client_reaches(vip())?);
    let log = lab.agents["a1"].log();
    // Make-before-break (coordinator/src/rollout): the peer is raised first and preempts, so a1
    // yields to its advert; only then is a1 marked drained.
    let yielded = log
        .find("alpha-vip0: Master -> Backup: higher priority advert from")
        .unwrap_or_else(|| panic!("the cause is logged:\n{log}"));
    let drained = log
        .find("coordinator command done: drain")
        .unwrap_or_else(|| panic!("drain acknowledged:\n{log}"));
    assert!(
        yielded < drained,
        "the peer took over before the drain:\n{log}"
    );

    let out = lab.havctl(&["drain", "a1", "--undo"])?;
    assert!(out.success(), "{}", out.stderr);
    // Preempt (the default) brings the VIP back to its master by layout.
    lab.wait_vip("a1", vip(), true)?;
    lab.wait_vip("a2", vip(), false)?;
    assert!(lab.client_reaches(vip())?);
    Ok(())
}
