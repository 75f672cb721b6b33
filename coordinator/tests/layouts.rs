//! Group layouts live in the config version next to the configs they came with: a fleet push
//! stores them, node pushes and rollbacks keep the current ones, a fleet push that only lays its
//! groups out anew is a version of its own, and a store written before versions kept layouts is
//! still read (its layouts are the `layouts` records of that time). Availability reports list the
//! groups in force, which is how the tests see them.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use hav_coordinator::store::{ConfigVersionRecord, GroupLayout, RedbStore, Store};
use hav_proto::identity::Role;
use hav_proto::v1::fleet_service_client::FleetServiceClient;
use hav_proto::v1::{
    HistoryRequest, NodeConfigEntry, PushConfigRequest, RollbackRequest, SlaRequest,
};
use havctl::client;
use support::{Pki, start};
use tonic::transport::Channel;

const FLEET: &str = r#"
[[group]]
name = "web"
interface = "eth0"
vips = ["198.51.100.100/24"]
dns_name = "web.example.test"
[[group.node]]
name = "lb-1"
address = "198.51.100.11"
[[group.node]]
name = "lb-2"
address = "198.51.100.12"
"#;

fn node_toml(node: &str, vrid: u8) -> String {
    format!(
        "[node]\nname = \"{node}\"\n[[instance]]\nname = \"web\"\ninterface = \"eth0\"\n\
         vrid = {vrid}\nvips = [\"198.51.100.100/24\"]\n"
    )
}

/// A store as a coordinator that kept layouts apart left it: version 1 without layouts, and the
/// layout of group `legacy` in the `layouts` records.
fn old_store(dir: &std::path::Path) {
    let store = RedbStore::open(dir).unwrap();
    let text = hav_proto::config::parse_node_config(&node_toml("lb-1", 51), "old")
        .unwrap()
        .to_toml();
    store
        .put_config_version(&ConfigVersionRecord {
            version: 1,
            unix_ms: 1,
            author: "ana".into(),
            comment: "before layouts were versioned".into(),
            nodes: BTreeMap::from([("lb-1".to_owned(), text)]),
            node_versions: BTreeMap::from([("lb-1".to_owned(), 1)]),
            nodes_changed: vec!["lb-1".into()],
            rollback_of: 0,
            groups: BTreeMap::new(),
            layouts: None,
        })
        .unwrap();
    let legacy = GroupLayout {
        name: "legacy".into(),
        dns_name: None,
        vips: vec!["198.51.100.100".parse().unwrap()],
        nodes: vec!["lb-1".into()],
    };
    store
        .put_record("layouts", "legacy", &serde_json::to_vec(&legacy).unwrap())
        .unwrap();
}

async fn groups_in_force(fleet: &mut FleetServiceClient<Channel>) -> Vec<String> {
    let sla = fleet.sla(SlaRequest::default()).await.unwrap().into_inner();
    sla.groups.into_iter().map(|g| g.name).collect()
}

fn fleet_push(text: &str) -> PushConfigRequest {
    PushConfigRequest {
        fleet: text.into(),
        fleet_name: "fleet.toml".into(),
        ..PushConfigRequest::default()
    }
}

#[tokio::test]
async fn layouts_follow_fleet_pushes_and_stay_through_node_pushes_and_rollbacks() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    old_store(data.path());
    let coordinator = start(&pki, data.path()).await;
    let operator = pki.operator(&coordinator, "olga", Role::Operator);
    let mut fleet = client::connect(&operator).await.unwrap();
    assert_eq!(groups_in_force(&mut fleet).await, ["legacy"]);

    let pushed = fleet
        .push_config(fleet_push(FLEET))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pushed.version, 2);
    assert_eq!(groups_in_force(&mut fleet).await, ["web"]);

    // The same file again: nothing changes, no version.
    let again = fleet
        .push_config(fleet_push(FLEET))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.version, 0);

    // Only the DNS name changes: no node config does, the layouts do.
    let renamed = FLEET.replace("web.example.test", "www.example.test");
    let relaid = fleet
        .push_config(fleet_push(&renamed))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(relaid.version, 3);
    let history = fleet
        .history(HistoryRequest { limit: 1 })
        .await
        .unwrap()
        .into_inner();
    assert!(history.versions[0].nodes_changed.is_empty());
    assert_eq!(history.audit[0].detail, "version 3: group layouts");

    // A node config pushed alone keeps the layouts.
    let node_push = PushConfigRequest {
        configs: vec![NodeConfigEntry {
            node: "lb-1".into(),
            toml: node_toml("lb-1", 60),
        }],
        ..PushConfigRequest::default()
    };
    let node_pushed = fleet.push_config(node_push).await.unwrap().into_inner();
    assert_eq!(node_pushed.version, 4);
    assert_eq!(groups_in_force(&mut fleet).await, ["web"]);

    // A rollback to the version from before layouts were versioned restores its configs and
    // keeps the layouts in force.
    let rolled = fleet
        .rollback(RollbackRequest {
            version: 1,
            comment: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rolled.version, 5);
    assert_eq!(groups_in_force(&mut fleet).await, ["web"]);
    drop(fleet);
    coordinator.shutdown().await.unwrap();

    let store = RedbStore::open(data.path()).unwrap();
    let latest = store.latest_config_version().unwrap().unwrap();
    assert_eq!(latest.rollback_of, 1);
    assert_eq!(latest.nodes.keys().collect::<Vec<_>>(), ["lb-1"]);
    let layouts = latest.layouts.unwrap();
    assert_eq!(layouts.len(), 1);
    assert_eq!(layouts[0].dns_name.as_deref(), Some("www.example.test"));
    assert_eq!(layouts[0].nodes, ["lb-1", "lb-2"]);
}
