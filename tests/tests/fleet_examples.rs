//! Every example setup of deploy/examples, written as a fleet file (deploy/fleet/examples), is
//! pushed through a real coordinator to real agents: the coordinator expands and validates it,
//! both nodes apply it, and they run the instances, sync groups and trackers it describes. The
//! files' interface names and node addresses are replaced by the lab's, nothing else.

use std::time::Duration;

use hav_tests::fleet::{Error, FleetLab};
use hav_tests::topology::LanSpec;

fn push_example(name: &str, nodes: [(&str, u8); 2], addresses: &[&str]) -> Result<(), Error> {
    let mut lab = FleetLab::new(&nodes)?;
    lab.start_coordinator()?;
    for (node, _) in nodes {
        lab.start_agent(node)?;
    }
    for (node, _) in nodes {
        lab.wait_link_up(node, 1)?;
    }
    let path = format!(
        "{}/../deploy/fleet/examples/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let iface = lab.nodes[nodes[0].0].1.clone();
    let mut text = std::fs::read_to_string(&path)?
        .replace("\"eth0\"", &format!("{iface:?}"))
        .replace("\"eth1\"", &format!("{iface:?}"))
        .replace("\"eth1:", &format!("\"{iface}:"));
    for ((_, octet), address) in nodes.iter().zip(addresses) {
        text = text.replace(
            &format!("address = \"{address}\""),
            &format!("address = \"{}\"", LanSpec::PRIMARY.ipv4(*octet)),
        );
    }
    let file = lab.write(&format!("{name}.toml"), &text)?;
    let out = lab.havctl(&["push-config", "--fleet", &file, "-o", "json"])?;
    assert!(out.success(), "{name}: {}\n{}", out.stdout, out.stderr);
    let pushed: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let version = pushed["version"].as_u64().ok_or("a version")?;
    // Both nodes run what the file describes.
    let expanded = hav_proto::fleet::expand(&file, &text).map_err(|e| e.to_string())?;
    for (node, _) in nodes {
        let agent = lab.agent(node)?;
        let status = agent.wait_status(
            &format!("{node} running the pushed config"),
            Duration::from_secs(20),
            |status| {
                status["instances"]
                    .as_array()
                    .is_some_and(|i| !i.is_empty())
            },
        )?;
        let mut running: Vec<&str> = status["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["name"].as_str())
            .collect();
        running.sort_unstable();
        let mut wanted: Vec<&str> = expanded.nodes[node]
            .instances
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        wanted.sort_unstable();
        assert_eq!(running, wanted, "{name}: {node}'s instances");
    }
    let status = lab.status()?;
    for node in status.as_array().into_iter().flatten() {
        assert_eq!(
            node["config_version"].as_u64(),
            Some(version),
            "{name}: {node}"
        );
    }
    Ok(())
}

#[test]
fn the_squid_active_passive_fleet_file_runs() -> Result<(), Error> {
    push_example(
        "squid-active-passive",
        [("proxy-a", 11), ("proxy-b", 12)],
        &["198.51.100.11", "198.51.100.12"],
    )
}

#[test]
fn the_squid_active_active_fleet_file_runs() -> Result<(), Error> {
    push_example(
        "squid-active-active",
        [("edge-a", 11), ("edge-b", 12)],
        &["198.51.100.11", "198.51.100.12"],
    )
}

#[test]
fn the_haproxy_fleet_file_runs() -> Result<(), Error> {
    push_example(
        "haproxy-http-probe",
        [("lb-a", 21), ("lb-b", 22)],
        &["198.51.100.21", "198.51.100.22"],
    )
}

#[test]
fn the_nginx_sync_group_fleet_file_runs() -> Result<(), Error> {
    push_example(
        "nginx-sync-group",
        [("web-a", 11), ("web-b", 12)],
        &["203.0.113.11", "203.0.113.12"],
    )
}
