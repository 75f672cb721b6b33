//! Agents and havctl given several coordinators: a dead one first in the list is passed over, and
//! an agent whose coordinator stops moves to the next one and is served there.

#![allow(clippy::unwrap_used)]

mod support;

use hav_agent::control::LinkState;
use hav_proto::identity::Role;
use hav_proto::v1::{ListNodesRequest, StateSnapshot};
use havctl::client::{self, Target};
use support::{Pki, await_link, start};

/// An address nothing listens on (bound, then closed).
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

async fn connected_nodes(target: &Target) -> Vec<String> {
    let mut fleet = client::connect(target).await.unwrap();
    let nodes = fleet
        .list_nodes(ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    nodes
        .into_iter()
        .filter(|n| n.connected)
        .map(|n| n.name)
        .collect()
}

#[tokio::test]
async fn an_agent_moves_to_the_next_coordinator_when_its_own_stops() {
    let pki = Pki::new();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = start(&pki, data_a.path()).await;
    let second = start(&pki, data_b.path()).await;
    let on_second = pki.operator(&second, "vera", Role::Viewer);

    let mut agent = pki.agent_of(
        vec![first.local_addr.to_string(), second.local_addr.to_string()],
        "lb-1",
        "lb-1",
    );
    agent.snapshots.send_replace(StateSnapshot::default());
    await_link(&mut agent, |s| *s == LinkState::Connected).await;
    assert!(connected_nodes(&on_second).await.is_empty(), "on the first");

    first.shutdown().await.unwrap();
    await_link(&mut agent, |s| matches!(s, LinkState::Disconnected { .. })).await;
    await_link(&mut agent, |s| *s == LinkState::Connected).await;
    assert_eq!(connected_nodes(&on_second).await, ["lb-1"]);
}

#[tokio::test]
async fn a_dead_coordinator_first_in_the_list_is_passed_over() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let live = start(&pki, data.path()).await;
    let mut agent = pki.agent_of(
        vec![dead_address(), live.local_addr.to_string()],
        "lb-1",
        "lb-1",
    );
    agent.snapshots.send_replace(StateSnapshot::default());
    await_link(&mut agent, |s| *s == LinkState::Connected).await;

    // havctl likewise: the first address refuses, the second serves.
    let mut operator = pki.operator(&live, "olga", Role::Operator);
    operator.coordinator = format!("{},{}", dead_address(), live.local_addr);
    assert_eq!(connected_nodes(&operator).await, ["lb-1"]);
}
