//! `hav-lab --ha`: the control plane made highly available. Three hav-coordinators share a
//! three-member etcd cluster (on the coordinator host's loopback); the agents and havctl know all
//! three, each agent in its own order (spread over the three: any coordinator serves any agent,
//! and the leader reaches web2 on coord-b through etcd). The leading coordinator is SIGKILLed
//! while a drain it runs is in flight: another leads within the leader TTL, the agents that were
//! on it move to another coordinator while the others stay where they were, the undrain goes
//! through the new leader, and a client probing a VIP every 5 ms is served throughout.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hav_tests::fleet::{CLIENT_HOST, FleetLab, wait_file_count};
use hav_tests::netns::NsProcess;
use hav_tests::probe::{ProbeConfig, Prober};
use hav_tests::topology::LanSpec;

use super::{
    BALANCED, Doing, HTTP_PORT, Measured, NODES, PROBED_VIP, banner, explain, fleet_config,
    havctl_show, indent, wait_report, wait_status_settled,
};

/// The coordinators: name and port, all on the coordinator host (198.51.100.1).
const COORDINATORS: [(&str, u16); 3] = [("coord-a", 7400), ("coord-b", 7401), ("coord-c", 7402)];
/// The leader TTL: a dead leader's successor leads within about this.
const LEADER_TTL: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(30);

pub(super) fn demonstrate(fleet: &mut FleetLab, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let check = |step: &str| -> anyhow::Result<()> {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted (Ctrl-C or SIGTERM) during {step}");
        }
        Ok(())
    };
    let coordinator_ip = LanSpec::PRIMARY.ipv4(1);
    println!(
        "     coord   {coordinator_ip}    three hav-coordinators (:7400, :7401, :7402) and a \
         three-member etcd on its loopback; havctl runs here"
    );
    for (name, octet) in NODES {
        println!(
            "     {name:<7} 198.51.100.{octet:<4} hav-agent + an HTTP server on :{HTTP_PORT} (the \"proxy\")"
        );
    }
    println!("     client  198.51.100.200  probes the VIP over HTTP");
    let etcd = fleet
        .start_etcd()
        .doing("starting etcd (Debian etcd-server) on the coordinator host")?;
    explain(&format!("etcd members: {}", etcd.endpoints.join(" ")));
    let mut proxies: Vec<NsProcess> = Vec::new();
    for (name, _) in NODES {
        let httpd = hav_tests::agent::start_httpd(&fleet.lab, name)
            .with_context(|| format!("starting the HTTP server on {name}"))?;
        proxies.push(httpd);
    }
    check("set-up")?;

    banner("2. Three coordinators on one etcd: one leads, two follow");
    let args = vec![
        "--etcd".to_owned(),
        etcd.endpoints.join(","),
        "--etcd-prefix".into(),
        "/hav-lab/".into(),
        "--leader-ttl".into(),
        format!("{}s", LEADER_TTL.as_secs()),
    ];
    let mut coordinators: Vec<(&str, NsProcess)> = Vec::new();
    for (index, (name, port)) in COORDINATORS.into_iter().enumerate() {
        let process = fleet
            .spawn_coordinator(name, port, &args)
            .doing(&format!("starting {name}"))?;
        let role = if index == 0 { "leading" } else { "following" };
        wait_file_count(process.log_path(), role, 1, WAIT).doing(&format!("{name} {role}"))?;
        explain(&format!(
            "{name} on :{port}: {}",
            if index == 0 {
                "leads (it holds the key `/hav-lab/leader` under an etcd lease of 2 s)"
            } else {
                "follows (it watches the key, and campaigns when it goes)"
            }
        ));
        coordinators.push((name, process));
    }
    fleet.dial = COORDINATORS
        .iter()
        .map(|(_, port)| format!("{coordinator_ip}:{port}"))
        .collect();
    // Each agent starts its list at another coordinator, in turn.
    for (index, (name, _)) in NODES.iter().enumerate() {
        let mut own = fleet.dial.clone();
        let by = index % own.len();
        own.rotate_left(by);
        fleet.node_dial.insert((*name).to_owned(), own);
    }
    explain(
        "each agent's [coordinator] address lists all three, in its own order (web1 and api2 \
         start at coord-a, web2 at coord-b, api1 at coord-c), and so does havctl's --coordinator",
    );
    for (name, _) in NODES {
        fleet
            .start_agent(name)
            .doing(&format!("starting hav-agent on {name}"))?;
    }
    for (index, (name, _)) in NODES.iter().enumerate() {
        let first = COORDINATORS[index % COORDINATORS.len()].0;
        fleet
            .wait_link_up(name, 1)
            .doing(&format!("{name} connecting to {first}"))?;
    }
    explain(
        "any coordinator serves any agent: each announces its sessions in etcd, so every one \
         sees the whole fleet and passes commands to the coordinator holding the node",
    );
    let path = fleet
        .write("fleet.toml", &fleet_config(fleet))
        .doing("writing fleet.toml")?;
    let out = fleet
        .havctl(&["push-config", "--fleet", &path, "--comment", "lab bring-up"])
        .doing("havctl push-config")?;
    if !out.success() {
        bail!("push-config failed: {}", out.stderr);
    }
    explain(
        "$ havctl push-config --fleet fleet.toml   (stored in etcd, sent to each node through \
         the coordinator holding it)",
    );
    wait_status_settled(fleet, &BALANCED)?;
    explain("$ havctl status");
    havctl_show(fleet, &["status"])?;
    check("start-up")?;

    let target = std::net::SocketAddr::new(IpAddr::V4(PROBED_VIP), HTTP_PORT);
    let prober = Prober::start(
        fleet.lab.host(CLIENT_HOST).context("client host")?,
        ProbeConfig::new(target),
    )?;
    prober
        .wait_for_reply("web1", Instant::now(), WAIT)
        .context("the client never reached web1 through the VIP")?;
    explain(&format!(
        "the client now sends GET http://{target}/ every 5 ms; web1 answers"
    ));

    banner("3. Drain web1, and SIGKILL the leading coordinator while the drain is in flight");
    explain(
        "$ havctl drain web1 &   (the leader records the moves in etcd, raises web2 through \
         coord-b, waits)",
    );
    let fault = Instant::now();
    let mut drain = fleet
        .spawn_havctl(
            "havctl-drain",
            &["drain", "web1", "--reason", "lab: kernel update"],
        )
        .doing("starting havctl drain")?;
    fleet
        .wait_vip("web2", IpAddr::V4(PROBED_VIP), true)
        .doing("web2 taking web1's VIP")?;
    let (leader_name, leader) = &mut coordinators[0];
    leader.kill().context("killing the leader")?;
    let killed = Instant::now();
    explain(&format!(
        "web2 took {PROBED_VIP}; {leader_name} is SIGKILLed now, before the drain answered"
    ));
    // The agents that started on the dead leader move; the others stay where they are.
    let moved: Vec<&str> = NODES
        .iter()
        .enumerate()
        .filter(|(index, _)| index % COORDINATORS.len() == 0)
        .map(|(_, (name, _))| *name)
        .collect();
    for name in &moved {
        fleet
            .wait_link_up(name, 2)
            .doing(&format!("{name} moving to another coordinator"))?;
    }
    explain(&format!(
        "{} on another coordinator {} ms after the kill (they need no leader); the other agents \
         stayed where they were",
        moved.join(" and "),
        killed.elapsed().as_millis()
    ));
    let new_leader = wait_new_leader(&coordinators[1..])?;
    explain(&format!(
        "{new_leader} leads {} ms after the kill (leader TTL {} s): the dead leader's lease ran out",
        killed.elapsed().as_millis(),
        LEADER_TTL.as_secs()
    ));
    if drain.wait_timeout(WAIT).context("havctl drain")?.is_none() {
        bail!("havctl drain did not return");
    }
    explain("what the operator's havctl drain said when its coordinator died:");
    indent(drain.log().trim());
    let mut results: Vec<Measured> = vec![wait_report(
        &prober,
        fault,
        "drain web1, leader killed",
        "web2",
    )?];
    check("leader kill")?;

    banner("4. The fleet carries on: the new leader serves status and the undrain");
    let drained = [
        BALANCED[1],
        ("web2", BALANCED[0].1),
        BALANCED[2],
        BALANCED[3],
    ];
    wait_status_settled(fleet, &drained)?;
    explain("$ havctl status   (havctl tries the coordinators in turn and uses the leader)");
    havctl_show(fleet, &["status"])?;
    explain("$ havctl undrain web1   (the moves the dead leader recorded are lifted)");
    let fault = Instant::now();
    havctl_show(fleet, &["undrain", "web1"])?;
    fleet
        .wait_vip("web1", IpAddr::V4(PROBED_VIP), true)
        .doing("web1 taking its VIP back")?;
    results.push(wait_report(&prober, fault, "undrain web1", "web1")?);
    wait_status_settled(fleet, &BALANCED)?;
    check("undrain")?;

    banner("What the client saw");
    println!(
        "   {:<28} {:>14} {:>14}",
        "event", "client outage", "failed probes"
    );
    for Measured {
        event,
        report,
        silence,
    } in &results
    {
        println!(
            "   {event:<28} {:>14} {:>14}",
            format!("{} ms", silence.as_millis()),
            report.failed_probes
        );
    }
    explain("the coordinators are not on the data path: losing the leader mid-drain costs the");
    explain("client nothing, and the next leader finishes the operator's work");
    drop(prober);
    drop(proxies);
    drop(coordinators);
    drop(etcd);
    Ok(())
}

/// Waits until one of `followers` logs that it leads; its name.
fn wait_new_leader(followers: &[(&str, NsProcess)]) -> anyhow::Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        for (name, process) in followers {
            if process.log().contains("leading:") {
                return Ok((*name).to_owned());
            }
        }
        if Instant::now() > deadline {
            bail!("no coordinator took the lead within {WAIT:?}");
        }
        // Two logs to watch: polled (50 ms is small next to the TTL measured).
        std::thread::sleep(Duration::from_millis(50));
    }
}
