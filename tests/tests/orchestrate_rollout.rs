//! Rolling maintenance with real agents in network namespaces, a real coordinator and havctl:
//! two pairs, `havctl maintenance rollout --all --max-parallel 2 --exec …`; a client probes
//! every VIP all along (each probe resolves the VIP afresh) and the failures are counted; a
//! command failing on one node stops the job with that node failed and drained.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hav_tests::fleet::{Error, FleetLab};
use hav_tests::topology::LanSpec;

const NODES: [(&str, u8); 4] = [("p1a", 11), ("p1b", 12), ("p2a", 13), ("p2b", 14)];
const VIPS: [&str; 4] = [
    "198.51.100.100",
    "198.51.100.101",
    "198.51.100.110",
    "198.51.100.111",
];

fn fleet(lab: &FleetLab) -> String {
    let iface = &lab.nodes["p1a"].1;
    let mut text = String::new();
    for (group, vips, vrid, nodes) in [
        ("one", [VIPS[0], VIPS[1]], 10, [NODES[0], NODES[1]]),
        ("two", [VIPS[2], VIPS[3]], 20, [NODES[2], NODES[3]]),
    ] {
        text.push_str(&format!(
            "[[group]]\nname = \"{group}\"\ninterface = \"{iface}\"\n\
             vips = [\"{}/24\", \"{}/24\"]\nfirst_vrid = {vrid}\nadvert_interval = \"200ms\"\n",
            vips[0], vips[1]
        ));
        for (name, octet) in nodes {
            text.push_str(&format!(
                "[[group.node]]\nname = \"{name}\"\naddress = \"{}\"\n",
                LanSpec::PRIMARY.ipv4(octet)
            ));
        }
    }
    text
}

fn up() -> Result<FleetLab, Error> {
    let mut lab = FleetLab::new(&NODES)?;
    lab.start_coordinator()?;
    for (node, _) in NODES {
        lab.start_agent(node)?;
    }
    for (node, _) in NODES {
        lab.wait_link_up(node, 1)?;
    }
    let path = lab.write("fleet.toml", &fleet(&lab))?;
    let out = lab.havctl(&["push-config", "--fleet", &path])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    // The balanced layout: VIP i of a group on node i.
    for (vip, node) in VIPS.iter().zip(["p1a", "p1b", "p2a", "p2b"]) {
        lab.wait_vip(node, vip.parse()?, true)?;
    }
    // The coordinator must have the settled snapshots too: a drain planned on a node's
    // start-up snapshot (both nodes master for a moment) is refused.
    lab.wait_masters(&[
        ("one-vip0", "p1a"),
        ("one-vip1", "p1b"),
        ("two-vip0", "p2a"),
        ("two-vip1", "p2b"),
    ])?;
    Ok(lab)
}

/// The last JSON document of a havctl `-o json` output (a command prints one, a followed rollout
/// one per update).
fn last_job(stdout: &str) -> serde_json::Value {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .last()
        .unwrap_or_else(|| panic!("no JSON job in:\n{stdout}"))
}

#[test]
fn a_rollout_over_two_pairs_loses_no_probe_and_runs_the_command_on_every_node() -> Result<(), Error>
{
    let lab = up()?;
    let running = AtomicBool::new(true);
    let (probes, failures) = (AtomicU64::new(0), AtomicU64::new(0));
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            while running.load(Ordering::Relaxed) {
                for vip in VIPS {
                    let address: IpAddr = vip.parse().expect("literal");
                    probes.fetch_add(1, Ordering::Relaxed);
                    if !lab.client_reaches(address).unwrap_or(false) {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let out = lab.havctl(&[
            "maintenance",
            "rollout",
            "--all",
            "--max-parallel",
            "2",
            "--health-timeout",
            "30",
            "-o",
            "json",
            "--exec",
            "/bin/sh",
            "-c",
            "echo upgraded; ip -o -4 addr show | grep -c 198.51.100",
        ]);
        running.store(false, Ordering::Relaxed);
        out
    })?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let job = last_job(&out.stdout);
    assert_eq!(job["status"], "done", "{job}");
    let nodes = job["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4);
    for node in nodes {
        assert_eq!(node["step"], "done", "{node}");
        let output = node["output"].to_string();
        assert!(
            output.contains("upgraded"),
            "the command's output came back: {node}"
        );
    }
    let (probes, failures) = (probes.into_inner(), failures.into_inner());
    eprintln!("rollout probes: {probes} pings, {failures} failed");
    assert!(probes > 0);
    assert_eq!(failures, 0, "a planned rollout loses nothing");
    // The balanced layout is back.
    for (vip, node) in VIPS.iter().zip(["p1a", "p1b", "p2a", "p2b"]) {
        lab.wait_vip(node, vip.parse()?, true)?;
    }
    Ok(())
}

#[test]
fn a_failing_command_stops_the_rollout_with_the_node_left_drained() -> Result<(), Error> {
    let lab = up()?;
    // Fails on p1b only (its own address is visible in its namespace).
    let out = lab.havctl(&[
        "maintenance",
        "rollout",
        "--all",
        "--max-parallel",
        "2",
        "-o",
        "json",
        "--exec",
        "/bin/sh",
        "-c",
        "if ip -o -4 addr show | grep -q '198.51.100.12/'; then echo broken >&2; exit 3; fi",
    ])?;
    assert!(!out.success(), "{}", out.stdout);
    let job = last_job(&out.stdout);
    assert_eq!(job["status"], "failed", "{job}");
    let step = |name: &str| {
        job["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["node"] == name)
            .map(|n| n["step"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    // Waves: [p1a, p2a], [p1b, p2b]: p1b fails in the second wave; p1a, p2a are done.
    assert_eq!(step("p1a"), "done");
    assert_eq!(step("p1b"), "failed");
    assert!(
        job["error"].as_str().unwrap_or_default().contains("p1b"),
        "{job}"
    );
    // p1b stays drained: both VIPs of its pair are on p1a, and clients still reach them.
    lab.wait_vip("p1a", VIPS[1].parse()?, true)?;
    assert!(lab.client_reaches(VIPS[1].parse()?)?);
    let id = job["id"].to_string();
    let out = lab.havctl(&["maintenance", "status", &id, "-o", "json"])?;
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(last_job(&out.stdout)["status"], "failed");
    let out = lab.havctl(&["maintenance", "abort", &id])?;
    assert!(out.success(), "{}", out.stderr);
    Ok(())
}
