//! Two hav-coordinators sharing a real three-member etcd cluster (`--etcd`), one pair of real
//! agents in network namespaces that list both coordinators, each its own first (p1a on the
//! leader, p1b on the follower: every command to p1b and every report of it crosses etcd),
//! havctl dialling both:
//!
//! - the leading coordinator is SIGKILLed in the middle of a rollout; the other takes the lead
//!   within the leader TTL + 1 s, the leader's agent moves to it (the other was there all
//!   along), it resumes the job and finishes it, and the audit log shows who started the job
//!   and who resumed it;
//! - etcd's raft leader is SIGKILLed: the leading coordinator (with a TTL that spans etcd's
//!   election) keeps leading, and a push, a drain, an undrain and a status all succeed on the
//!   two members left;
//! - the leading coordinator is SIGKILLed while a drain it runs waits for the drained node's
//!   connections: an undrain through the next leader gives the VIP back (the drain's moves were
//!   recorded before its first override was sent), and none of those connections is broken;
//! - every coordinator and every etcd member is stopped and started again on the same data
//!   directories: config versions, the audit log, the rollout job, the SLA figures, the DNS
//!   layout (published by a real BIND) and a drain's priority overrides are all still there.

use std::path::Path;
use std::time::{Duration, Instant};

use hav_tests::agent::start_echo_httpd;
use hav_tests::dns::DnsServer;
use hav_tests::fleet::{
    CLIENT_HOST, CLIENT_OCTET, Error, FleetLab, NamespacedEtcd, wait_file_count,
};
use hav_tests::flows::Flows;
use hav_tests::netns::NsProcess;
use hav_tests::topology::LanSpec;

const NODES: [(&str, u8); 2] = [("p1a", 11), ("p1b", 12)];
const VIPS: [&str; 2] = ["198.51.100.100", "198.51.100.101"];
const LEADER_TTL: Duration = Duration::from_secs(2);
/// A leader TTL that spans an election among etcd's members (their election timeout is 1 s, a
/// few rounds of it on a loaded machine): renewed every third of it, a lead outlives the loss
/// of etcd's raft leader.
const SPANNING_TTL: Duration = Duration::from_secs(5);
const PORTS: [u16; 2] = [7400, 7401];
const WAIT: Duration = Duration::from_secs(30);

fn fleet(lab: &FleetLab) -> String {
    fleet_with(lab, "200ms", "")
}

/// The pair's fleet file with `interval` adverts and `extra` group keys (e.g. `dns_name`).
fn fleet_with(lab: &FleetLab, interval: &str, extra: &str) -> String {
    let iface = &lab.nodes["p1a"].1;
    let mut text = format!(
        "[[group]]\nname = \"one\"\ninterface = \"{iface}\"\n\
         vips = [\"{}/24\", \"{}/24\"]\nfirst_vrid = 10\nadvert_interval = \"{interval}\"\n{extra}",
        VIPS[0], VIPS[1]
    );
    for (name, octet) in NODES {
        text.push_str(&format!(
            "[[group.node]]\nname = \"{name}\"\naddress = \"{}\"\n",
            LanSpec::PRIMARY.ipv4(octet)
        ));
    }
    text
}

fn json_documents(stdout: &str) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .collect()
}

fn log_contains(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle))
}

#[test]
fn the_leading_coordinator_killed_mid_rollout_is_replaced_and_the_job_finishes() -> Result<(), Error>
{
    let mut lab = FleetLab::new(&NODES)?;
    let etcd = lab.start_etcd()?;
    let text = fleet(&lab);
    let [mut first, second] = fleet_on_etcd(&mut lab, &etcd, Duration::from_secs(2), &[], &text)?;
    let out = lab.havctl(&["status"])?;
    assert!(
        out.stdout.starts_with("coordinator coord-a: leader\n"),
        "{}",
        out.stdout
    );

    // Each node's command says it started in a file, then takes long enough to be cut short.
    let runs = lab.write("runs.log", "")?;
    let script = format!("echo run >> {runs}; sleep 2; echo upgraded");
    let out = lab.havctl(&[
        "maintenance",
        "rollout",
        "--all",
        "--detach",
        "-o",
        "json",
        "--exec",
        "/bin/sh",
        "-c",
        &script,
    ])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let id = json_documents(&out.stdout)
        .last()
        .map(|job| job["id"].to_string())
        .ok_or("no job")?;
    wait_file_count(Path::new(&runs), "run", 1, WAIT)?;

    first.kill()?;
    let killed = Instant::now();
    wait_file_count(second.log_path(), "leading", 1, WAIT)?;
    let takeover = killed.elapsed();
    eprintln!("leader failover: {takeover:?} (leader TTL {LEADER_TTL:?})");
    assert!(
        takeover < LEADER_TTL + Duration::from_secs(1),
        "the other coordinator leads within the TTL + 1 s: {takeover:?}"
    );
    // Both agents are on the coordinator left: p1b all along, p1a moved to it.
    let survivor = format!("{}:{}", LanSpec::PRIMARY.ipv4(1), PORTS[1]);
    lab.wait_link_up(NODES[0].0, 2)?;
    eprintln!("{} reconnected after {:?}", NODES[0].0, killed.elapsed());
    for (node, _) in NODES {
        let log = lab.agent(node)?.process().log();
        let last_up = log
            .lines()
            .rfind(|line| line.contains("control link up"))
            .unwrap_or_default();
        assert!(last_up.contains(&survivor), "{node}: {last_up}");
    }
    let p1b_ups = lab
        .agent(NODES[1].0)?
        .process()
        .log()
        .matches("control link up")
        .count();
    assert_eq!(
        p1b_ups, 1,
        "p1b stayed on the follower through the leader's death"
    );

    // The job runs to its end on the new leader.
    let job = wait_job_done(&lab, &id)?;
    for node in job["nodes"].as_array().ok_or("nodes")? {
        assert_eq!(node["step"], "done", "{node}");
    }
    assert!(
        std::fs::read_to_string(&runs)?.matches("run").count() >= 2,
        "the command ran on both nodes"
    );
    for (vip, (node, _)) in VIPS.iter().zip(NODES) {
        lab.wait_vip(node, vip.parse()?, true)?;
    }

    let out = lab.havctl(&["history", "-o", "json"])?;
    assert!(out.success(), "{}", out.stderr);
    let history = json_documents(&out.stdout).pop().ok_or("no history")?;
    let audit = history["audit"].as_array().ok_or("no audit")?;
    let by = |who: &str, action: &str| {
        audit
            .iter()
            .any(|entry| entry["who"] == who && entry["action"] == action)
    };
    assert!(by("olga", "rollout start"), "{audit:?}");
    assert!(by("coordinator coord-b", "rollout resume"), "{audit:?}");
    let out = lab.havctl(&["status"])?;
    assert!(
        out.stdout.starts_with("coordinator coord-b: leader\n"),
        "{}",
        out.stdout
    );
    assert!(
        !log_contains(second.log_path(), "not persisted"),
        "{}",
        second.log()
    );
    drop(etcd);
    Ok(())
}

/// Polls the job until it is done (every 200 ms: havctl follows only the jobs it starts).
fn wait_job_done(lab: &FleetLab, id: &str) -> Result<serde_json::Value, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = lab.havctl(&["maintenance", "status", id, "-o", "json"])?;
        if let Some(job) = json_documents(&out.stdout).pop() {
            match job["status"].as_str() {
                Some("done") => return Ok(job),
                Some("failed" | "aborted") => return Err(format!("job ended: {job}").into()),
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(format!("job not done in time: {job}").into());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two coordinators on `etcd` (`coord-a` leading, `coord-b` following, started in that order,
/// with leader TTL `ttl` and `extra` arguments), the pair's agents on them (p1a on coord-a, p1b
/// on coord-b), `fleet_text` pushed and the pair settled:
/// `p1a` master of `one-vip0`, `p1b` of `one-vip1`.
fn fleet_on_etcd(
    lab: &mut FleetLab,
    etcd: &NamespacedEtcd,
    ttl: Duration,
    extra: &[String],
    fleet_text: &str,
) -> Result<[NsProcess; 2], Error> {
    let args = coordinator_args(etcd, ttl, extra);
    let first = lab.spawn_coordinator("coord-a", PORTS[0], &args)?;
    wait_file_count(first.log_path(), "leading", 1, WAIT)?;
    let second = lab.spawn_coordinator("coord-b", PORTS[1], &args)?;
    wait_file_count(second.log_path(), "following", 1, WAIT)?;
    let coordinator_ip = LanSpec::PRIMARY.ipv4(1);
    lab.dial = PORTS
        .iter()
        .map(|port| format!("{coordinator_ip}:{port}"))
        .collect();
    // p1b dials the follower first: the pair is spread over both coordinators.
    let reversed: Vec<String> = lab.dial.iter().rev().cloned().collect();
    lab.node_dial.insert(NODES[1].0.to_owned(), reversed);
    for (node, _) in NODES {
        lab.start_agent(node)?;
    }
    for (node, _) in NODES {
        lab.wait_link_up(node, 1)?;
    }
    let path = lab.write("fleet.toml", fleet_text)?;
    let out = lab.havctl(&["push-config", "--fleet", &path])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    for (vip, (node, _)) in VIPS.iter().zip(NODES) {
        lab.wait_vip(node, vip.parse()?, true)?;
    }
    lab.wait_masters(&[("one-vip0", "p1a"), ("one-vip1", "p1b")])?;
    Ok([first, second])
}

/// `--etcd`, `--leader-ttl` and `extra`: the arguments of every coordinator.
fn coordinator_args(etcd: &NamespacedEtcd, ttl: Duration, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "--etcd".to_owned(),
        etcd.endpoints.join(","),
        "--etcd-prefix".into(),
        "/ha-under-test/".into(),
        "--leader-ttl".into(),
        format!("{}s", ttl.as_secs()),
    ];
    args.extend_from_slice(extra);
    args
}

/// Polls `havctl status` (every 100 ms) until a coordinator answers as the leader and every node
/// is connected to it; the leader's name.
fn wait_leader_with_nodes(lab: &FleetLab, within: Duration) -> Result<String, Error> {
    let deadline = Instant::now() + within;
    loop {
        let table = lab.havctl(&["status"])?;
        let leader = table
            .stdout
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("coordinator "))
            .and_then(|line| line.strip_suffix(": leader"))
            .map(str::to_owned);
        if let Some(leader) = leader {
            let json = lab.havctl(&["status", "-o", "json"])?;
            let connected = serde_json::from_str::<serde_json::Value>(&json.stdout)
                .ok()
                .and_then(|status| {
                    status.as_array().map(|nodes| {
                        nodes.len() == NODES.len()
                            && nodes.iter().all(|n| n["presence"] == "connected")
                    })
                })
                .unwrap_or(false);
            if connected {
                return Ok(leader);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no leader serving both nodes within {within:?}: {}{}",
                table.stdout, table.stderr
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One havctl command that must succeed; its stdout as JSON documents.
fn havctl_json(lab: &FleetLab, args: &[&str]) -> Result<Vec<serde_json::Value>, Error> {
    let out = lab.havctl(&[args, &["-o", "json"]].concat())?;
    if !out.success() {
        return Err(format!("havctl {args:?}: {}{}", out.stdout, out.stderr).into());
    }
    Ok(json_documents(&out.stdout))
}

fn last(mut documents: Vec<serde_json::Value>) -> Result<serde_json::Value, Error> {
    documents.pop().ok_or_else(|| "no JSON document".into())
}

#[test]
fn an_etcd_member_killed_stops_neither_the_lead_nor_pushes_drains_and_status() -> Result<(), Error>
{
    let mut lab = FleetLab::new(&NODES)?;
    let etcd = lab.start_etcd()?;
    let text = fleet(&lab);
    let coordinators = fleet_on_etcd(&mut lab, &etcd, SPANNING_TTL, &[], &text)?;

    // The member that leads raft is the one whose loss costs most (an election).
    let member = etcd.leader()?;
    etcd.kill(member)?;
    let killed = Instant::now();
    let leader = wait_leader_with_nodes(&lab, LEADER_TTL + Duration::from_secs(10))?;
    let answered = killed.elapsed();
    eprintln!(
        "etcd member {member} (raft leader) killed: {leader} leads and serves both nodes after \
         {answered:?}"
    );
    assert_eq!(leader, "coord-a");
    // Its lead outlived etcd's election: it never lost it (how soon it serves again depends on
    // the machine's load, and is printed above).
    let log = std::fs::read_to_string(coordinators[0].log_path())?;
    assert!(
        !log.contains("leadership lost"),
        "coord-a lost the lead when an etcd member died: {log}"
    );

    // A push reaches both agents through the two members left.
    let path = lab.write("fleet-300ms.toml", &fleet_with(&lab, "300ms", ""))?;
    let pushed = last(havctl_json(
        &lab,
        &[
            "push-config",
            "--fleet",
            &path,
            "--comment",
            "after a member died",
        ],
    )?)?;
    let outcomes: Vec<&serde_json::Value> = pushed["nodes"]
        .as_array()
        .ok_or("no nodes")?
        .iter()
        .map(|n| &n["outcome"])
        .collect();
    assert_eq!(outcomes, ["applied", "applied"], "{pushed}");
    let mut applied = 0;
    for (node, _) in NODES {
        applied = lab.applied_version(node);
        assert_eq!(applied, pushed["version"].as_u64().unwrap_or(0), "{node}");
    }

    // A drain moves p1a's VIP to p1b; the undrain brings it back.
    let drained = last(havctl_json(
        &lab,
        &["drain", "p1a", "--reason", "one member gone"],
    )?)?;
    assert_eq!(drained["ok"], true, "{drained}");
    lab.wait_vip("p1b", VIPS[0].parse()?, true)?;
    lab.wait_vip("p1a", VIPS[0].parse()?, false)?;
    let undrained = last(havctl_json(&lab, &["undrain", "p1a"])?)?;
    assert_eq!(undrained["ok"], true, "{undrained}");
    lab.wait_vip("p1a", VIPS[0].parse()?, true)?;
    lab.wait_masters(&[("one-vip0", "p1a"), ("one-vip1", "p1b")])?;

    let history = last(havctl_json(&lab, &["history"])?)?;
    assert_eq!(history["versions"][0]["version"], applied, "{history}");
    assert_eq!(
        history["versions"][0]["comment"], "after a member died",
        "{history}"
    );
    let lost = coordinators
        .iter()
        .map(|c| c.log().matches("leadership lost").count())
        .sum::<usize>();
    assert_eq!(lost, 0, "the leader kept leading through etcd's election");
    for coordinator in &coordinators {
        assert!(
            !coordinator.log().contains("not persisted"),
            "{}",
            coordinator.log()
        );
    }
    drop(coordinators);
    drop(etcd);
    Ok(())
}

#[test]
fn every_coordinator_and_etcd_member_restarted_loses_nothing() -> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    let client_ip = LanSpec::PRIMARY.ipv4(CLIENT_OCTET);
    let dns = DnsServer::start(&lab.lab, CLIENT_HOST, client_ip.into())?;
    let etcd = lab.start_etcd()?;
    let dns_args = vec![
        "--dns-server".to_owned(),
        dns.address.to_string(),
        "--dns-zone".into(),
        hav_tests::dns::ZONE.into(),
        "--dns-key".into(),
        dns.key_file.display().to_string(),
        "--dns-ttl".into(),
        "5".into(),
    ];
    let dns_name = "dns_name = \"one.example.test\"\n";
    let text = fleet_with(&lab, "200ms", dns_name);
    let coordinators = fleet_on_etcd(&mut lab, &etcd, LEADER_TTL, &dns_args, &text)?;

    // A second version, a finished rollout, a drained node (its peer's priority override).
    let path = lab.write("fleet-300ms.toml", &fleet_with(&lab, "300ms", dns_name))?;
    let out = lab.havctl(&["push-config", "--fleet", &path, "--comment", "second"])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    lab.wait_masters(&[("one-vip0", "p1a"), ("one-vip1", "p1b")])?;
    // Followed to its end; `--exec` takes every argument after it.
    let out = lab.havctl(&[
        "maintenance",
        "rollout",
        "--all",
        "-o",
        "json",
        "--exec",
        "/bin/true",
    ])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let job = last(json_documents(&out.stdout))?;
    assert_eq!(job["status"], "done", "{job}");
    let id = job["id"].to_string();
    lab.wait_masters(&[("one-vip0", "p1a"), ("one-vip1", "p1b")])?;
    let drained = last(havctl_json(&lab, &["drain", "p1a", "--reason", "kept"])?)?;
    assert_eq!(drained["ok"], true, "{drained}");
    lab.wait_vip("p1b", VIPS[0].parse()?, true)?;
    lab.wait_vip("p1a", VIPS[0].parse()?, false)?;
    // The DNS follows the holders (both VIPs on p1b now: both still published).
    let dns_before = wait_dns_settled(&lab)?;

    let history_before = last(havctl_json(&lab, &["history"])?)?;
    let job_before = last(havctl_json(&lab, &["maintenance", "status", &id])?)?;
    let sla_before = last(havctl_json(&lab, &["sla"])?)?;

    // Everything of the control plane stops: the coordinators first (as systemd would), then
    // every etcd member at once, killed.
    for mut coordinator in coordinators {
        coordinator.terminate(WAIT)?;
    }
    etcd.kill_all()?;
    let stopped = Instant::now();
    etcd.restart_stopped()?;
    let args = coordinator_args(&etcd, LEADER_TTL, &dns_args);
    let coordinators = vec![
        lab.spawn_coordinator("coord-a", PORTS[0], &args)?,
        lab.spawn_coordinator("coord-b", PORTS[1], &args)?,
    ];
    let leader = wait_leader_with_nodes(&lab, WAIT)?;
    eprintln!(
        "control plane back (etcd started, {leader} leading, both nodes connected) {:?} after \
         the stop",
        stopped.elapsed()
    );

    let history = last(havctl_json(&lab, &["history"])?)?;
    assert_eq!(history["versions"], history_before["versions"]);
    let audit_before = history_before["audit"].as_array().ok_or("no audit")?;
    let audit = history["audit"].as_array().ok_or("no audit")?;
    for entry in audit_before {
        assert!(audit.contains(entry), "{entry} lost: {audit:?}");
    }
    let job = last(havctl_json(&lab, &["maintenance", "status", &id])?)?;
    assert_eq!(job, job_before);
    let sla = last(havctl_json(&lab, &["sla"])?)?;
    for vip in VIPS {
        let one_holder = |report: &serde_json::Value| {
            report["vips"]
                .as_array()
                .and_then(|all| all.iter().find(|v| v["name"] == vip))
                .and_then(|v| v["one_holder_ms"].as_u64())
        };
        let (before, after) = (one_holder(&sla_before), one_holder(&sla));
        assert!(before.is_some_and(|ms| ms > 0), "{sla_before}");
        assert!(after >= before, "{vip}: {before:?} then {after:?}: {sla}");
    }
    let dns_after = wait_dns_settled(&lab)?;
    assert_eq!(dns_after, dns_before);

    // The drain is still in force and shown: p1a drained, p1b's instance raised by an override.
    let status = lab.status()?;
    let node = |name: &str| {
        status
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(node("p1a")["drained"], true, "{status}");
    let raised = node("p1b")["instances"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["name"] == "one-vip0"))
        .map(|i| i["priority_override"].clone());
    assert!(
        raised.as_ref().is_some_and(serde_json::Value::is_u64),
        "{status}"
    );
    // The drain's record (which peer took which VIP) is still there: the undrain lifts p1b's
    // override and p1a takes its VIP back.
    let undrained = last(havctl_json(&lab, &["undrain", "p1a"])?)?;
    assert_eq!(undrained["ok"], true, "{undrained}");
    lab.wait_vip("p1a", VIPS[0].parse()?, true)?;
    lab.wait_masters(&[("one-vip0", "p1a"), ("one-vip1", "p1b")])?;
    drop(coordinators);
    drop(etcd);
    drop(dns);
    Ok(())
}

/// Polls `havctl dns show` (every 200 ms) until the group's record set is published as desired
/// with no drift and no error; the record's layout and what is published.
fn wait_dns_settled(lab: &FleetLab) -> Result<serde_json::Value, Error> {
    let deadline = Instant::now() + WAIT;
    loop {
        let shown = last(havctl_json(lab, &["dns", "show"])?)?;
        if let Some(record) = shown["records"].as_array().and_then(|r| r.first()) {
            let settled = record["error"].as_str().unwrap_or_default().is_empty()
                && record["drift"] != true
                && !record["published"].as_array().is_none_or(Vec::is_empty)
                && record["published"] == record["desired"];
            if settled {
                return Ok(serde_json::json!({
                    "group": record["group"],
                    "name": record["name"],
                    "vips": record["vips"],
                    "published": record["published"],
                }));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("the DNS never settled: {shown}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_leader_killed_mid_drain_leaves_an_undrain_that_gives_the_vip_back() -> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    let _servers = [
        start_echo_httpd(&lab.lab, "p1a")?,
        start_echo_httpd(&lab.lab, "p1b")?,
    ];
    let etcd = lab.start_etcd()?;
    let text = fleet_with(&lab, "200ms", "connection_drain = \"60s\"\n");
    let mut coordinators = fleet_on_etcd(&mut lab, &etcd, LEADER_TTL, &[], &text)?;
    let vip: std::net::IpAddr = VIPS[0].parse()?;
    let flows = Flows::open(&lab.lab, vip, 10);
    flows.run_rounds(3);

    // The drain moved p1a's VIP and now waits for p1a's 10 connections: the leader dies there.
    let mut drain = lab.spawn_havctl(
        "havctl-drain",
        &["drain", "p1a", "--deadline", "60", "-o", "json"],
    )?;
    lab.wait_vip("p1b", vip, true)?;
    wait_draining(&lab, "p1a", 10)?;
    coordinators[0].kill()?;
    let killed = Instant::now();
    wait_file_count(coordinators[1].log_path(), "leading", 1, WAIT)?;
    let leader = wait_leader_with_nodes(&lab, WAIT)?;
    assert_eq!(leader, "coord-b");
    eprintln!(
        "leader killed mid-drain: coord-b leads and serves both nodes after {:?}",
        killed.elapsed()
    );
    drain
        .wait_timeout(WAIT)?
        .ok_or("havctl drain did not return")?;
    eprintln!("the cut drain: {}", drain.log().trim());
    flows.run_rounds(10);

    // The undrain, through the new leader, lifts p1b's override: p1a takes its VIP back.
    let undrained = last(havctl_json(&lab, &["undrain", "p1a"])?)?;
    assert_eq!(undrained["ok"], true, "{undrained}");
    lab.wait_vip("p1a", vip, true)?;
    lab.wait_masters(&[("one-vip0", "p1a"), ("one-vip1", "p1b")])?;
    // The coordinator carries no connection: neither its death nor the undrain broke one.
    let report = flows.close();
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    assert_eq!(report.greeted.get("p1a"), Some(&10), "{report:?}");
    drop(coordinators);
    drop(etcd);
    Ok(())
}

/// Polls `havctl status` (every 50 ms) until `node` reports `count` connections still served on
/// the VIPs it handed over.
fn wait_draining(lab: &FleetLab, node: &str, count: u64) -> Result<(), Error> {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = lab.status()?;
        let draining: u64 = (status.as_array().into_iter().flatten())
            .filter(|n| n["name"] == node)
            .flat_map(|n| n["instances"].as_array().cloned().unwrap_or_default())
            .filter_map(|i| i["draining_connections"].as_u64())
            .sum();
        if draining == count {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{node} never reported {count} connections: {status}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
