//! A fleet of two pairs brought up purely by `havctl push-config --fleet`, bad fleets refused
//! with nothing changed anywhere, and a push that fails on one node stopped and rolled back.
//!
//! Real hav-agents in network namespaces, a real hav-coordinator on the LAN, real mTLS
//! certificates from `havctl certs`. The agents start with only `[node]` and `[coordinator]`.

use std::net::IpAddr;

use hav_tests::fleet::{Error, FleetLab};
use hav_tests::topology::LanSpec;

const NODES: [(&str, u8); 4] = [("a1", 11), ("a2", 12), ("b1", 13), ("b2", 14)];

fn vip(octet: u8) -> IpAddr {
    IpAddr::V4(LanSpec::PRIMARY.ipv4(octet))
}

/// Two pairs on one segment: alpha (VIPs .100 → a1, .101 → a2), beta (.110 → b1, .111 → b2).
/// `alpha_extra` goes into alpha's table, `a1_extra` into a1's, `tail` after everything.
fn fleet(lab: &FleetLab, alpha_extra: &str, a1_extra: &str, beta_vips: &str, tail: &str) -> String {
    let iface = &lab.nodes["a1"].1;
    let node = |name: &str, extra: &str| {
        let octet = lab.nodes[name].0;
        format!(
            "[[group.node]]\nname = \"{name}\"\naddress = \"{}\"\n{extra}\n",
            LanSpec::PRIMARY.ipv4(octet)
        )
    };
    format!(
        "[[group]]\nname = \"alpha\"\nsegment = \"lan\"\ninterface = \"{iface}\"\n\
         vips = [\"198.51.100.100/24\", \"198.51.100.101/24\"]\nfirst_vrid = 10\n\
         advert_interval = \"200ms\"\n{alpha_extra}\n{}{}\
         [[group]]\nname = \"beta\"\nsegment = \"lan\"\ninterface = \"{iface}\"\n\
         vips = [{beta_vips}]\nfirst_vrid = 20\nadvert_interval = \"200ms\"\n{}{}{tail}",
        node("a1", a1_extra),
        node("a2", ""),
        node("b1", ""),
        node("b2", ""),
    )
}

const BETA_VIPS: &str = "\"198.51.100.110/24\", \"198.51.100.111/24\"";

fn up(lab: &mut FleetLab) -> Result<String, Error> {
    lab.start_coordinator()?;
    for (node, _) in NODES {
        lab.start_agent(node)?;
    }
    for (node, _) in NODES {
        lab.wait_link_up(node, 1)?;
    }
    let text = fleet(lab, "", "", BETA_VIPS, "");
    let path = lab.write("fleet.toml", &text)?;

    let dry = lab.havctl(&["push-config", "--fleet", &path, "--dry-run"])?;
    assert!(dry.success(), "{}", dry.stderr);
    for (node, _) in NODES {
        assert!(
            dry.stdout.contains(&format!("{node}: added, dry_run")),
            "{}",
            dry.stdout
        );
        assert_eq!(lab.applied_version(node), 0, "a dry run changes nothing");
    }
    assert!(dry.stdout.contains("+ vrid = 10"), "{}", dry.stdout);

    let pushed = lab.havctl(&["push-config", "--fleet", &path, "--comment", "bring-up"])?;
    assert!(pushed.success(), "{}\n{}", pushed.stdout, pushed.stderr);
    assert!(
        pushed.stdout.contains("config version 1"),
        "{}",
        pushed.stdout
    );
    for (node, _) in NODES {
        assert!(
            pushed.stdout.contains(&format!("{node}: added, applied")),
            "{}",
            pushed.stdout
        );
        assert_eq!(lab.applied_version(node), 1, "{node} keeps what it applied");
    }
    // The layout: VIP i of a pair is mastered by node i.
    for (host, octet, peer) in [
        ("a1", 100, "a2"),
        ("a2", 101, "a1"),
        ("b1", 110, "b2"),
        ("b2", 111, "b1"),
    ] {
        lab.wait_vip(host, vip(octet), true)?;
        // The first node configured may hold every VIP until its peer preempts it.
        lab.wait_vip(peer, vip(octet), false)?;
        lab.agent(host)?.wait_state(
            &format!(
                "{}-vip{}",
                if host.starts_with('a') {
                    "alpha"
                } else {
                    "beta"
                },
                octet % 10 % 2
            ),
            "Master",
            std::time::Duration::from_secs(5),
        )?;
        assert!(
            lab.client_reaches(vip(octet))?,
            "client cannot reach {}",
            vip(octet)
        );
    }
    Ok(path)
}

#[test]
fn two_pairs_come_up_from_one_fleet_file_and_bad_fleets_change_nothing() -> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    let path = up(&mut lab)?;

    let three = |name: &str, segment: &str, nodes: &[&str], vrid: u8| {
        let mut text = format!(
            "[[group]]\nname = \"{name}\"\nsegment = \"{segment}\"\ninterface = \"{}\"\n\
             vips = [\"198.51.100.120/24\"]\nfirst_vrid = {vrid}\n",
            lab.nodes["a1"].1
        );
        for node in nodes {
            text.push_str(&format!(
                "[[group.node]]\nname = \"{node}\"\naddress = \"{}\"\n",
                LanSpec::PRIMARY.ipv4(lab.nodes[*node].0)
            ));
        }
        text
    };
    let bad = [
        (
            "vrid collision",
            fleet(&lab, "", "", BETA_VIPS, "").replace("first_vrid = 20", "first_vrid = 11"),
            "group beta: group[1].vips[0]: VRID 11 collides on segment \"lan\" with group alpha",
        ),
        (
            "peers disagree",
            fleet(&lab, "", "advert_interval = \"1s\"", BETA_VIPS, ""),
            "group alpha: node a2: alpha-vip0.advert_interval: peers of instance alpha-vip0 disagree",
        ),
        (
            "vip in two groups",
            fleet(
                &lab,
                "",
                "",
                "\"198.51.100.101/24\", \"198.51.100.111/24\"",
                "",
            ),
            "group beta: group[1].vips[0]: 198.51.100.101 is also a VIP of group alpha",
        ),
        (
            "node in two groups on one vrid",
            fleet(
                &lab,
                "",
                "",
                BETA_VIPS,
                &three("gamma", "other", &["a1", "b1"], 10),
            ),
            "group gamma: node a1: group[2].vips[0]: node a1 is also in group alpha with VRID 10",
        ),
        (
            "cannot elect",
            fleet(&lab, "", "", BETA_VIPS, &three("gamma", "lan", &["a1"], 30)),
            "group gamma: node a1: group[2].node: priorities cannot elect a backup",
        ),
        (
            "unreachable tracking reference",
            fleet(
                &lab,
                "[group.track]\nscript = [\"chk_gone\"]",
                "",
                BETA_VIPS,
                "",
            ),
            "group alpha: group[0].track.script[0]: tracks \"chk_gone\", which no [[group.script]]",
        ),
    ];
    for (kind, text, expected) in bad {
        let bad_path = lab.write("bad.toml", &text)?;
        let out = lab.havctl(&["push-config", "--fleet", &bad_path])?;
        assert!(!out.success(), "{kind}: accepted:\n{}", out.stdout);
        assert!(out.stderr.contains(expected), "{kind}: {}", out.stderr);
        assert!(
            out.stderr.contains(&bad_path),
            "{kind}: names the file: {}",
            out.stderr
        );
        for (node, _) in NODES {
            assert_eq!(lab.applied_version(node), 1, "{kind}: {node} changed");
        }
    }
    let history = lab.havctl(&["history", "-o", "json"])?;
    let history: serde_json::Value = serde_json::from_str(&history.stdout)?;
    assert_eq!(
        history["versions"][0]["version"], 1,
        "no version stored: {history}"
    );
    // Every node still runs and reports version 1.
    let status = lab.status()?;
    for node in status.as_array().into_iter().flatten() {
        assert_eq!(node["connected"], true, "{node}");
        assert_eq!(node["config_version"], 1, "{node}");
    }
    let _ = path;
    Ok(())
}

#[test]
fn a_push_failing_on_one_node_is_stopped_rolled_back_and_rollback_works() -> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    up(&mut lab)?;

    // Valid for the coordinator; a1 has no such interface, so its agent refuses the config.
    let broken = fleet(
        &lab,
        "preempt_delay = \"1s\"",
        "interface = \"nosuch0\"",
        BETA_VIPS,
        "",
    );
    let broken_path = lab.write("broken.toml", &broken)?;
    let out = lab.havctl(&["push-config", "--fleet", &broken_path])?;
    assert!(!out.success(), "{}", out.stdout);
    assert!(out.stdout.contains("config version 2"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("a1: changed, failed: config version 2 refused, version 1 keeps running"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("nosuch0"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("a2: changed, held: not sent: a1 failed first"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("push stopped: "), "{}", out.stderr);
    // a1 keeps its old config and VIP; its peer was never touched.
    assert_eq!(lab.applied_version("a1"), 1);
    assert_eq!(lab.applied_version("a2"), 1);
    lab.wait_vip("a1", vip(100), true)?;
    lab.agent("a1")?
        .wait_state("alpha-vip0", "Master", std::time::Duration::from_secs(5))?;
    assert!(lab.client_reaches(vip(100))?);
    // The coordinator records what the fleet runs: a1 and a2 at version 1, as a new version.
    let history = lab.havctl(&["history", "-o", "json"])?;
    let history: serde_json::Value = serde_json::from_str(&history.stdout)?;
    assert_eq!(history["versions"][0]["version"], 3, "{history}");
    let comment = history["versions"][0]["comment"]
        .as_str()
        .unwrap_or_default();
    assert!(comment.contains("version 2 stopped"), "{comment}");
    let status = lab.status()?;
    for node in status.as_array().into_iter().flatten() {
        if ["a1", "a2"].contains(&node["name"].as_str().unwrap_or_default()) {
            assert_eq!(node["desired_config_version"], 1, "{node}");
            assert_eq!(node["config_version"], 1, "{node}");
        }
    }

    // A good change: a third VIP for alpha (mastered by a1, as VIP 2 of 2 nodes).
    let grown = fleet(&lab, "", "", BETA_VIPS, "").replace(
        "\"198.51.100.101/24\"]",
        "\"198.51.100.101/24\", \"198.51.100.102/24\"]",
    );
    let grown_path = lab.write("grown.toml", &grown)?;
    let out = lab.havctl(&["push-config", "--fleet", &grown_path])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("config version 4"), "{}", out.stdout);
    assert!(
        out.stdout.contains("b1: unchanged, unchanged"),
        "{}",
        out.stdout
    );
    lab.wait_vip("a1", vip(102), true)?;
    assert_eq!(lab.applied_version("a1"), 4);

    // Back to version 1: the third VIP goes, everything else stays.
    let out = lab.havctl(&["rollback", "1"])?;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("config version 5"), "{}", out.stdout);
    lab.wait_vip("a1", vip(102), false)?;
    assert_eq!(lab.applied_version("a1"), 5);
    assert_eq!(
        lab.applied_version("b1"),
        1,
        "unchanged nodes are not sent anything"
    );
    lab.wait_vip("a1", vip(100), true)?;
    assert!(lab.client_reaches(vip(101))?);
    Ok(())
}
