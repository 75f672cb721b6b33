//! The coordinator's alerts reach a webhook receiver in Alertmanager's format: a failover pages
//! nobody; a node gone fires when its lease runs out and resolves when it is back; a pair gone
//! whole leaves its VIP without a holder, which fires after the hold time and resolves when the
//! VIP is held again; a receiver that answers 503 gets the same alert again.
//!
//! Real hav-agents in network namespaces, a real hav-coordinator, a receiver in the test process
//! inside the coordinator's namespace.

use std::net::IpAddr;
use std::time::Duration;

use hav_tests::fleet::{COORDINATOR_HOST, Error, FleetLab};
use hav_tests::topology::LanSpec;
use hav_tests::webhook::Receiver;

const NODES: [(&str, u8); 2] = [("a1", 11), ("a2", 12)];
const VIP: &str = "198.51.100.100";
const WAIT: Duration = Duration::from_secs(20);

fn vip() -> IpAddr {
    VIP.parse().expect("literal address")
}

fn labels(received: &hav_tests::webhook::Received, alertname: &str) -> serde_json::Value {
    received.body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["labels"]["alertname"] == alertname)
        .map(|a| a["labels"].clone())
        .unwrap_or_default()
}

#[test]
fn alerts_fire_and_resolve_at_a_webhook_and_a_failover_pages_nobody() -> Result<(), Error> {
    let mut lab = FleetLab::new(&NODES)?;
    // The first delivery is refused: the coordinator must try again.
    let receiver = Receiver::start(lab.lab.host(COORDINATOR_HOST)?, vec![503])?;
    lab.coordinator_args = vec![
        "--alert-webhook".into(),
        format!("http://{}/hav", receiver.address),
        "--alert-hold".into(),
        "1s".into(),
        "--presence-ttl".into(),
        "1s".into(),
    ];
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

    // A crash of the master: a2 takes the VIP within the hold time, so only a1's absence is an
    // alert, once its lease (1 s) has run out.
    lab.agent("a1")?.kill()?;
    lab.wait_vip("a2", vip(), true)?;
    let (refused, before) = receiver
        .wait_alert("HavNodeDown", "firing", WAIT)
        .map_err(|seen| format!("no HavNodeDown; got {seen:#?}"))?;
    assert!(before.is_empty(), "nothing came before: {before:#?}");
    assert_eq!(refused.status, 503, "the script refuses the first delivery");
    let down = receiver
        .next(WAIT)
        .ok_or("the refused alert was not sent again")?;
    assert_eq!(down.status, 200);
    assert_eq!(
        down.body["alerts"][0]["fingerprint"], refused.body["alerts"][0]["fingerprint"],
        "the same alert retried: {down:#?}"
    );
    assert_eq!(down.path, "/hav");
    assert_eq!(down.body["version"], "4");
    assert_eq!(down.body["status"], "firing");
    assert_eq!(down.body["receiver"], "hav-coordinator");
    assert_eq!(labels(&down, "HavNodeDown")["node"], "a1");
    assert_eq!(labels(&down, "HavNodeDown")["severity"], "critical");

    lab.restart_agent("a1")?;
    let (back, seen) = receiver
        .wait_alert("HavNodeDown", "resolved", WAIT)
        .map_err(|seen| format!("a1's return not told; got {seen:#?}"))?;
    assert_eq!(labels(&back, "HavNodeDown")["node"], "a1");
    assert!(
        !seen
            .iter()
            .any(|r| labels(r, "HavVipWithoutHolder").is_object()),
        "a failover paged: {seen:#?}"
    );

    // The whole pair gone: the VIP has no holder the coordinator believes.
    lab.agent("a1")?.kill()?;
    lab.agent("a2")?.kill()?;
    let (unheld, _) = receiver
        .wait_alert("HavVipWithoutHolder", "firing", WAIT)
        .map_err(|seen| format!("no HavVipWithoutHolder; got {seen:#?}"))?;
    assert_eq!(labels(&unheld, "HavVipWithoutHolder")["vip"], VIP);
    lab.restart_agent("a1")?;
    lab.restart_agent("a2")?;
    let (held, _) = receiver
        .wait_alert("HavVipWithoutHolder", "resolved", WAIT)
        .map_err(|seen| format!("the VIP held again not told; got {seen:#?}"))?;
    let alert = held.body["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["labels"]["alertname"] == "HavVipWithoutHolder")
        .cloned()
        .unwrap_or_default();
    assert_ne!(alert["endsAt"], "0001-01-01T00:00:00Z", "{alert}");
    Ok(())
}
