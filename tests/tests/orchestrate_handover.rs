//! `havctl drain` of a node whose instances keep connections (`connection_drain` in the fleet
//! file), with real agents, a real coordinator and a real client: the drain reports the
//! connections the node still served when its VIPs moved and waits for them; `havctl status`
//! shows the node draining; connections that end on their own are not broken; those that
//! outlive `--deadline` are broken at it and counted. A rollout waits for them the same way,
//! over one pair and over three pairs (mixed waves, never both nodes of a pair out). Needs
//! root.

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

/// Three pairs: `pNa` first (VIP 0 of its group), `pNb` second (VIP 1).
const FLEET: [(&str, u8); 6] = [
    ("p1a", 11),
    ("p1b", 12),
    ("p2a", 13),
    ("p2b", 14),
    ("p3a", 15),
    ("p3b", 16),
];
const GROUPS: [(&str, [&str; 2], u8); 3] = [
    ("one", ["198.51.100.100", "198.51.100.101"], 10),
    ("two", ["198.51.100.110", "198.51.100.111"], 20),
    ("three", ["198.51.100.120", "198.51.100.121"], 30),
];
/// Connections through each VIP (so through each node).
const PER_VIP: usize = 20;

/// The fleet of three pairs with a connection drain, balanced, an echo service on every node.
fn three_pairs() -> Result<(FleetLab, Vec<NsProcess>), Error> {
    let mut lab = FleetLab::new(&FLEET)?;
    let servers = (FLEET.iter())
        .map(|(node, _)| start_echo_httpd(&lab.lab, node))
        .collect::<Result<Vec<_>, _>>()?;
    lab.start_coordinator()?;
    for (node, _) in FLEET {
        lab.start_agent(node)?;
    }
    for (node, _) in FLEET {
        lab.wait_link_up(node, 1)?;
    }
    let iface = lab.nodes["p1a"].1.clone();
    let mut fleet = String::new();
    for ((group, vips, vrid), nodes) in GROUPS.iter().zip(FLEET.chunks(2)) {
        fleet.push_str(&format!(
            "[[group]]\nname = \"{group}\"\ninterface = \"{iface}\"\n\
             vips = [\"{}/24\", \"{}/24\"]\nfirst_vrid = {vrid}\nadvert_interval = \"200ms\"\n\
             connection_drain = \"60s\"\n",
            vips[0], vips[1]
        ));
        for (name, octet) in nodes {
            fleet.push_str(&format!(
                "[[group.node]]\nname = \"{name}\"\naddress = \"{}\"\n",
                LanSpec::PRIMARY.ipv4(*octet)
            ));
        }
    }
    let path = lab.write("fleet.toml", &fleet)?;
    let out = lab.havctl(&["push-config", "--fleet", &path])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let mut masters = Vec::new();
    for ((group, vips, _), nodes) in GROUPS.iter().zip(FLEET.chunks(2)) {
        for (i, (vip, (node, _))) in vips.iter().zip(nodes).enumerate() {
            lab.wait_vip(node, vip.parse()?, true)?;
            masters.push((format!("{group}-vip{i}"), *node));
        }
    }
    let masters: Vec<(&str, &str)> = masters.iter().map(|(i, n)| (i.as_str(), *n)).collect();
    lab.wait_masters(&masters)?;
    Ok((lab, servers))
}

/// Every job a followed `havctl maintenance rollout -o json` printed so far, in order.
fn job_updates(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The step of `node` in a job update.
fn step<'a>(job: &'a serde_json::Value, node: &str) -> &'a str {
    (job["nodes"].as_array().into_iter().flatten())
        .find(|n| n["node"] == node)
        .and_then(|n| n["step"].as_str())
        .unwrap_or_default()
}

/// The waves of a job update (node names by wave number, in order).
fn waves(job: &serde_json::Value) -> Vec<Vec<String>> {
    let mut waves: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for node in job["nodes"].as_array().into_iter().flatten() {
        if let (Some(wave), Some(name)) = (node["wave"].as_u64(), node["node"].as_str()) {
            waves.entry(wave).or_default().push(name.to_owned());
        }
    }
    waves.into_values().collect()
}

/// The other node of `node`'s pair.
fn peer_of(node: &str) -> &'static str {
    let index = FLEET.iter().position(|(n, _)| *n == node).unwrap_or(0);
    FLEET[index ^ 1].0
}

/// The pair (group) of a node of [`FLEET`].
fn pair_of(node: &str) -> &'static str {
    let index = FLEET.iter().position(|(n, _)| *n == node).unwrap_or(0);
    GROUPS[index / 2].0
}

/// A rollout over three pairs (two nodes at a time): each wave waits while the nodes it drained
/// still serve their connections (20 through each VIP, 120 in all, every one kept by a client
/// echoing a byte every 20 ms) and moves on once they end; connections through the nodes not
/// being drained go on throughout. None breaks, no update of the job ever shows both nodes of
/// a pair out of service, and the job completes.
#[test]
fn a_rollout_over_three_pairs_waits_for_each_waves_connections_and_breaks_none() -> Result<(), Error>
{
    let (lab, _servers) = three_pairs()?;
    // The flows through each node: the VIP it is master of.
    let mut flows: std::collections::BTreeMap<&str, Flows> = std::collections::BTreeMap::new();
    for ((_, vips, _), nodes) in GROUPS.iter().zip(FLEET.chunks(2)) {
        for (vip, (node, _)) in vips.iter().zip(nodes) {
            flows.insert(node, Flows::open(&lab.lab, vip.parse()?, PER_VIP));
        }
    }
    for f in flows.values() {
        f.run_rounds(5);
    }
    let mut rollout = lab.spawn_havctl(
        "havctl-rollout",
        &[
            "maintenance",
            "rollout",
            "--all",
            "--max-parallel",
            "2",
            "--connection-deadline",
            "60",
            "-o",
            "json",
            "--exec",
            "/bin/true",
        ],
    )?;
    wait_for("the rollout's first update", || {
        Ok(!job_updates(&rollout.log()).is_empty())
    })?;
    let first = job_updates(&rollout.log()).remove(0);
    let waves = waves(&first);
    eprintln!("rollout waves: {waves:?}");
    assert_eq!(waves.iter().map(Vec::len).sum::<usize>(), 6, "{first}");
    let mut reports = Vec::new();
    for wave in &waves {
        // The wave's nodes moved their VIPs and serve their connections until they end; the
        // job waits on them.
        for node in wave {
            wait_for(
                &format!("{node} draining its {PER_VIP} connections"),
                || Ok(draining(&lab, node)? == PER_VIP as u64),
            )?;
        }
        // Meanwhile each one's peer serves both VIPs of the pair, and drains nothing.
        for node in wave {
            let peer = peer_of(node);
            let group = GROUPS
                .iter()
                .find(|g| g.0 == pair_of(node))
                .ok_or("group")?;
            for vip in group.1 {
                lab.wait_vip(peer, vip.parse()?, true)?;
            }
            assert_eq!(draining(&lab, peer)?, 0, "{peer}, peer of {node}");
        }
        for f in flows.values() {
            f.run_rounds(10);
        }
        assert!(rollout.is_running(), "the job waits for {wave:?}");
        let now = job_updates(&rollout.log()).pop().ok_or("no update")?;
        for node in wave {
            assert_eq!(step(&now, node), "draining", "{node}: {now}");
        }
        // Their connections end.
        for node in wave {
            let report = flows.remove(node.as_str()).ok_or("flows")?.close();
            eprintln!("through {node}: {report:?}");
            reports.push((node.clone(), report));
        }
    }
    rollout
        .wait_timeout(Duration::from_secs(60))?
        .ok_or("the rollout did not finish")?;
    let updates = job_updates(&rollout.log());
    let last = updates.last().ok_or("no update")?;
    assert_eq!(last["status"], "done", "{last}");
    for (node, _) in FLEET {
        assert_eq!(step(last, node), "done", "{node}: {last}");
    }
    // One node of a pair at a time, in every update the job went through.
    for update in &updates {
        let busy: Vec<&str> = (FLEET.iter())
            .map(|(node, _)| *node)
            .filter(|node| !matches!(step(update, node), "pending" | "done"))
            .collect();
        for (group, _, _) in GROUPS {
            let out = busy.iter().filter(|n| pair_of(n) == group).count();
            assert!(out <= 1, "both nodes of {group} out: {busy:?} in {update}");
        }
    }
    eprintln!("{} job updates", updates.len());
    for (node, report) in &reports {
        assert_eq!(
            report.greeted.get(node.as_str()),
            Some(&PER_VIP),
            "{node}: {report:?}"
        );
        assert!(
            report.broken.is_empty(),
            "through {node}: {} broken, the first: {:?}",
            report.broken.len(),
            report.broken.first()
        );
    }
    assert_eq!(reports.len(), 6);
    Ok(())
}
