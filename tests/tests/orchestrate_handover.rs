//! `havctl drain` of a node whose instances keep connections (`connection_drain` in the fleet
//! file), with real agents, a real coordinator and a real client: the drain reports the
//! connections the node still served when its VIPs moved and waits for them; `havctl status`
//! shows the node draining; connections that end on their own are not broken; those that
//! outlive `--deadline` are broken at it and counted. Needs root.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hav_tests::agent::start_echo_httpd;
use hav_tests::fleet::{Error, FleetLab};
use hav_tests::flows::Flows;
use hav_tests::netns::NsProcess;
use hav_tests::topology::LanSpec;

const NODES: [(&str, u8); 2] = [("p1a", 11), ("p1b", 12)];
const VIPS: [&str; 2] = ["198.51.100.100", "198.51.100.101"];

fn up() -> Result<(FleetLab, Vec<NsProcess>), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    let servers = vec![
        start_echo_httpd(&lab.lab, "p1a")?,
        start_echo_httpd(&lab.lab, "p1b")?,
    ];
    lab.start_coordinator()?;
    for (node, _) in NODES {
        lab.start_agent(node)?;
    }
    for (node, _) in NODES {
        lab.wait_link_up(node, 1)?;
    }
    let iface = &lab.nodes["p1a"].1;
    let mut fleet = format!(
        "[[group]]\nname = \"one\"\ninterface = \"{iface}\"\nvips = [\"{}/24\", \"{}/24\"]\n\
         first_vrid = 10\nadvert_interval = \"200ms\"\nconnection_drain = \"60s\"\n",
        VIPS[0], VIPS[1]
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
    for (vip, node) in VIPS.iter().zip(["p1a", "p1b"]) {
        lab.wait_vip(node, vip.parse()?, true)?;
    }
    lab.wait_masters(&[("one-vip0", "p1a"), ("one-vip1", "p1b")])?;
    Ok((lab, servers))
}

/// The connections `node` reports still serving after a hand-over, as `havctl status` shows.
fn draining(lab: &FleetLab, node: &str) -> Result<u64, Error> {
    let status = lab.status()?;
    Ok((status.as_array().into_iter().flatten())
        .filter(|n| n["name"] == node)
        .flat_map(|n| n["instances"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["draining_connections"].as_u64())
        .sum())
}

fn wait_for(what: &str, mut done: impl FnMut() -> Result<bool, Error>) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done()? {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn drain_output(process: &mut NsProcess) -> Result<serde_json::Value, Error> {
    process
        .wait_timeout(Duration::from_secs(30))?
        .ok_or("havctl drain did not return")?;
    let log = process.log();
    let json = log
        .lines()
        .skip_while(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).map_err(|e| format!("{e}: {log}").into())
}

#[test]
fn a_drain_waits_for_the_connections_of_the_node_and_breaks_none_that_end() -> Result<(), Error> {
    let (lab, _servers) = up()?;
    let vip: IpAddr = VIPS[0].parse()?;
    let flows = Flows::open(&lab.lab, vip, 50);
    flows.run_rounds(5);
    let mut drain = lab.spawn_havctl(
        "havctl-drain",
        &["drain", "p1a", "--deadline", "30", "-o", "json"],
    )?;
    // The VIP moved; p1a still serves its 50 connections, and says so.
    wait_for("p1a draining 50 connections", || {
        Ok(draining(&lab, "p1a")? == 50)
    })?;
    lab.wait_vip("p1b", vip, true)?;
    flows.run_rounds(25);
    assert!(drain.is_running(), "the drain waits for the connections");
    let report = flows.close();
    let answer = drain_output(&mut drain)?;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["connections_at_move"], 50, "{answer}");
    assert_eq!(answer["connections_broken"], 0, "{answer}");
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    assert_eq!(report.greeted.get("p1a"), Some(&50));
    lab.wait_vip("p1a", vip, false)?;
    Ok(())
}

#[test]
fn connections_outliving_the_drain_deadline_are_broken_at_it_and_counted() -> Result<(), Error> {
    let (lab, _servers) = up()?;
    let vip: IpAddr = VIPS[1].parse()?;
    let flows = Flows::open(&lab.lab, vip, 20);
    flows.run_rounds(5);
    let started = Instant::now();
    let out = lab.havctl(&["drain", "p1b", "--deadline", "1", "-o", "json"])?;
    let took = started.elapsed();
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let answer: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(answer["connections_at_move"], 20, "{answer}");
    assert_eq!(answer["connections_broken"], 20, "{answer}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    lab.wait_vip("p1b", vip, false)?;
    flows.run_rounds(3);
    let report = flows.close();
    assert_eq!(report.broken.len(), 20, "{report:?}");
    Ok(())
}

/// A rollout counts a node drained only once the connections it still serves have ended: the
/// job waits on the node while a client keeps 30 connections through it, and none is broken.
#[test]
fn a_rollout_waits_for_a_drained_nodes_connections_and_breaks_none() -> Result<(), Error> {
    let (lab, _servers) = up()?;
    let vip: IpAddr = VIPS[0].parse()?;
    let flows = Flows::open(&lab.lab, vip, 30);
    flows.run_rounds(5);
    let mut rollout = lab.spawn_havctl(
        "havctl-rollout",
        &[
            "maintenance",
            "rollout",
            "--all",
            "--max-parallel",
            "1",
            "--connection-deadline",
            "60",
            "-o",
            "json",
            "--exec",
            "/bin/true",
        ],
    )?;
    wait_for("p1a draining its 30 connections", || {
        Ok(draining(&lab, "p1a")? == 30)
    })?;
    flows.run_rounds(25);
    assert!(rollout.is_running(), "the job waits for p1a's connections");
    let report = flows.close();
    rollout
        .wait_timeout(Duration::from_secs(60))?
        .ok_or("the rollout did not finish")?;
    let log = rollout.log();
    let job = log
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .ok_or_else(|| format!("no job in {log}"))?;
    assert_eq!(job["status"], "done", "{job}");
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    assert_eq!(report.greeted.get("p1a"), Some(&30));
    Ok(())
}
