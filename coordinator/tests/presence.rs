//! The fleet view never believes a dead node: real agent links (the agent's own control client)
//! whose daemon side is dropped, as a `kill -9` drops it, in front of a coordinator on mTLS.
//! A node whose session ended does not count for split brain at all; once its lease has run
//! out it is `unknown`, and what it last reported no longer counts for the SLA or anywhere else.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use hav_agent::control::{DaemonSide, LinkState};
use hav_proto::identity::Role;
use hav_proto::v1::fleet_service_client::FleetServiceClient;
use hav_proto::v1::{
    InstanceState, ListNodesRequest, NodePresence, NodeStatus, SlaRequest, StateSnapshot,
    VrrpState, WatchEventsRequest, fleet_event,
};
use havctl::client;
use support::{Pki, TIMEOUT, await_link, start_with};
use tonic::transport::Channel;

const VIP: &str = "198.51.100.110/24";
/// The presence lease of the tests that wait for it to run out.
const TTL: Duration = Duration::from_millis(300);

fn snapshot(instances: Vec<InstanceState>) -> StateSnapshot {
    StateSnapshot {
        config_version: 1,
        instances,
        drained: false,
        unix_ms: hav_coordinator::unix_ms(),
    }
}

fn instance(master: bool, priority: u32) -> InstanceState {
    InstanceState {
        name: "vip-10".into(),
        vrid: 10,
        state: if master {
            VrrpState::Master
        } else {
            VrrpState::Backup
        } as i32,
        effective_priority: priority,
        configured_priority: priority,
        vips_held: if master { vec![VIP.to_owned()] } else { vec![] },
        interface: "eth0".into(),
        ..InstanceState::default()
    }
}

/// Re-reads ListNodes until `done` holds (the API announces no "snapshot stored").
async fn await_nodes(
    fleet: &mut FleetServiceClient<Channel>,
    what: &str,
    done: impl Fn(&[NodeStatus]) -> bool,
) -> Vec<NodeStatus> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let nodes = fleet
            .list_nodes(ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes;
        if done(&nodes) {
            return nodes;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {nodes:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node<'n>(nodes: &'n [NodeStatus], name: &str) -> Option<&'n NodeStatus> {
    nodes.iter().find(|n| n.name == name)
}

fn reported(nodes: &[NodeStatus], name: &str) -> bool {
    node(nodes, name).is_some_and(|n| {
        n.connected && n.snapshot.as_ref().is_some_and(|s| !s.instances.is_empty())
    })
}

/// The VIP's figures of the current month, re-read until `done` holds.
async fn await_sla(
    fleet: &mut FleetServiceClient<Channel>,
    what: &str,
    done: impl Fn(&hav_proto::v1::Availability) -> bool,
) -> hav_proto::v1::Availability {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let report = fleet.sla(SlaRequest::default()).await.unwrap().into_inner();
        let vip = report
            .vips
            .iter()
            .find(|v| v.name == "198.51.100.110")
            .cloned();
        if let Some(vip) = vip {
            if done(&vip) {
                return vip;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {vip:?}");
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: no VIP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// proxy-c masters the VIP at priority 150, proxy-d backs it up at 140; both reports stored.
async fn pair(
    pki: &Pki,
    coordinator: &hav_coordinator::RunningCoordinator,
    fleet: &mut FleetServiceClient<Channel>,
) -> (DaemonSide, DaemonSide) {
    let mut c = pki.agent(coordinator, "proxy-c", "proxy-c");
    let mut d = pki.agent(coordinator, "proxy-d", "proxy-d");
    await_link(&mut c, |s| *s == LinkState::Connected).await;
    await_link(&mut d, |s| *s == LinkState::Connected).await;
    c.snapshots
        .send_replace(snapshot(vec![instance(true, 150)]));
    d.snapshots
        .send_replace(snapshot(vec![instance(false, 140)]));
    await_nodes(fleet, "both reports stored", |nodes| {
        reported(nodes, "proxy-c") && reported(nodes, "proxy-d")
    })
    .await;
    (c, d)
}

#[tokio::test]
async fn the_survivor_of_a_killed_master_is_not_demoted_for_a_split_brain() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start_with(&pki, data.path(), |config| {
        config.orchestration.resolve_split_brain = true;
    })
    .await;
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let mut events = fleet
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let (c, mut d) = pair(&pki, &coordinator, &mut fleet).await;

    // kill -9 of proxy-c: its session ends with its last report saying "master".
    drop(c);
    await_nodes(&mut fleet, "proxy-c gone", |nodes| {
        node(nodes, "proxy-c").is_some_and(|n| !n.connected)
    })
    .await;
    // proxy-d takes over after the master-down interval: the only live master.
    d.snapshots
        .send_replace(snapshot(vec![instance(true, 140)]));

    // Nothing is sent to the survivor: not within the grace (one advert interval, 1 s when the
    // coordinator knows none) and not well after it.
    let command = tokio::time::timeout(Duration::from_secs(3), d.commands.recv()).await;
    assert!(
        command.is_err(),
        "the survivor was sent {:?}",
        command.map(|c| c.map(|c| c.command.clone()))
    );
    // And no split brain was announced.
    while let Ok(Ok(Some(event))) =
        tokio::time::timeout(Duration::from_millis(200), events.message()).await
    {
        assert!(
            !matches!(event.kind, Some(fleet_event::Kind::SplitBrain(_))),
            "{event:?}"
        );
    }
    drop(d);
    coordinator.shutdown().await.unwrap();
}

/// Whether `name` is `unknown` and still shows what it last reported.
fn unknown(nodes: &[NodeStatus], name: &str) -> bool {
    node(nodes, name).is_some_and(|n| {
        n.presence == NodePresence::Unknown as i32
            && !n.connected
            && n.disconnected_unix_ms > 0
            && n.snapshot.as_ref().is_some_and(|s| !s.instances.is_empty())
    })
}

#[tokio::test]
async fn a_node_gone_past_its_lease_holds_nothing_and_a_whole_pair_gone_is_an_outage() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start_with(&pki, data.path(), |config| {
        config.orchestration.presence_ttl = TTL;
    })
    .await;
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let mut events = fleet
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let (c, d) = pair(&pki, &coordinator, &mut fleet).await;

    // kill -9 of the master; its peer takes over (stamped by its own clock).
    let killed = hav_coordinator::unix_ms();
    drop(c);
    await_nodes(&mut fleet, "proxy-c gone", |nodes| {
        node(nodes, "proxy-c").is_some_and(|n| !n.connected)
    })
    .await;
    let takeover = snapshot(vec![instance(true, 140)]);
    let took_over = takeover.unix_ms;
    d.snapshots.send_replace(takeover);

    // Disconnected, then unknown once its lease ran out (announced to watchers).
    let nodes = await_nodes(&mut fleet, "proxy-c disconnected or unknown", |nodes| {
        node(nodes, "proxy-c").is_some_and(|n| n.presence != NodePresence::Connected as i32)
    })
    .await;
    assert!(node(&nodes, "proxy-c").is_some_and(|n| n.disconnected_unix_ms >= killed));
    let event = tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = events.message().await.unwrap().unwrap();
            if let Some(fleet_event::Kind::Presence(p)) = &event.kind
                && p.state == NodePresence::Unknown as i32
            {
                return event;
            }
        }
    })
    .await
    .expect("proxy-c announced unknown");
    assert_eq!(event.node, "proxy-c");
    await_nodes(&mut fleet, "proxy-c unknown", |nodes| {
        unknown(nodes, "proxy-c")
    })
    .await;
    // Its last report is not believed: the VIP had no holder from the kill to the takeover,
    // and never two.
    let vip = await_sla(&mut fleet, "proxy-c released", |v| v.failovers == 1).await;
    assert_eq!(vip.split_brain_ms, 0, "{vip:?}");
    assert!(
        vip.no_holder_ms > 0 && vip.no_holder_ms <= took_over - killed + 50,
        "{vip:?}: killed at {killed}, taken over at {took_over}"
    );

    // The whole pair gone: once the survivor's lease has run out too, the VIP is down from the
    // moment its session ended.
    let before = vip.no_holder_ms;
    drop(d);
    await_nodes(&mut fleet, "proxy-d unknown", |nodes| {
        unknown(nodes, "proxy-d")
    })
    .await;
    let vip = await_sla(&mut fleet, "the pair counted down", |v| {
        v.no_holder_ms >= before + TTL.as_millis() as u64
    })
    .await;
    assert_eq!(vip.split_brain_ms, 0, "{vip:?}");
    coordinator.shutdown().await.unwrap();
}
