//! Two hav-coordinators sharing a real three-member etcd cluster (`--etcd`), one pair of real
//! agents in network namespaces that list both coordinators, havctl dialling both: the leading
//! coordinator (the one the agents are on: a follower serves none) is SIGKILLed in the middle of
//! a rollout; the other takes the lead within the leader TTL + 1 s, the agents move to it, it
//! resumes the job and finishes it, and the audit log shows who started the job and who resumed
//! it.

use std::path::Path;
use std::time::{Duration, Instant};

use hav_tests::fleet::{Error, FleetLab, wait_file_count};
use hav_tests::topology::LanSpec;

const NODES: [(&str, u8); 2] = [("p1a", 11), ("p1b", 12)];
const VIPS: [&str; 2] = ["198.51.100.100", "198.51.100.101"];
const LEADER_TTL: Duration = Duration::from_secs(2);
const PORTS: [u16; 2] = [7400, 7401];
const WAIT: Duration = Duration::from_secs(30);

fn fleet(lab: &FleetLab) -> String {
    let iface = &lab.nodes["p1a"].1;
    let mut text = format!(
        "[[group]]\nname = \"one\"\ninterface = \"{iface}\"\n\
         vips = [\"{}/24\", \"{}/24\"]\nfirst_vrid = 10\nadvert_interval = \"200ms\"\n",
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
    let args = vec![
        "--etcd".to_owned(),
        etcd.endpoints.join(","),
        "--etcd-prefix".into(),
        "/ha-under-test/".into(),
        "--leader-ttl".into(),
        "2s".into(),
    ];
    let mut first = lab.spawn_coordinator("coord-a", PORTS[0], &args)?;
    wait_file_count(first.log_path(), "leading", 1, WAIT)?;
    let second = lab.spawn_coordinator("coord-b", PORTS[1], &args)?;
    wait_file_count(second.log_path(), "following", 1, WAIT)?;
    let coordinator_ip = LanSpec::PRIMARY.ipv4(1);
    lab.dial = PORTS
        .iter()
        .map(|port| format!("{coordinator_ip}:{port}"))
        .collect();

    for (node, _) in NODES {
        lab.start_agent(node)?;
    }
    for (node, _) in NODES {
        lab.wait_link_up(node, 1)?;
    }
    let path = lab.write("fleet.toml", &fleet(&lab))?;
    let out = lab.havctl(&["push-config", "--fleet", &path])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    for (vip, (node, _)) in VIPS.iter().zip(NODES) {
        lab.wait_vip(node, vip.parse()?, true)?;
    }
    lab.wait_masters(&[("one-vip0", "p1a"), ("one-vip1", "p1b")])?;
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
    // The agents moved to the coordinator left (served by the leader only, they are refused
    // until it leads).
    let survivor = format!("{coordinator_ip}:{}", PORTS[1]);
    for (node, _) in NODES {
        lab.wait_link_up(node, 2)?;
        eprintln!("{node} reconnected after {:?}", killed.elapsed());
        let log = lab.agent(node)?.process().log();
        let last_up = log
            .lines()
            .rfind(|line| line.contains("control link up"))
            .unwrap_or_default();
        assert!(last_up.contains(&survivor), "{node}: {last_up}");
    }

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
