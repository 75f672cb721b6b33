//! Leadership among coordinators sharing an etcd prefix (`hav_coordinator::leader`), against a
//! real three-member cluster on loopback: one leader at a time, a resigned leader replaced at
//! once, a dead one within the lease, a leader cut off from etcd stepping down within it, and a
//! deposed leader's fenced write refused by etcd while the new leader's goes through.
//! Then two coordinators in this process on one prefix: status says who leads; each serves an
//! agent and holds the other's in its view, with its reports; a command through either reaches
//! an agent on the other, an agent's event reaches a watcher on the other; a rollout on the
//! follower is refused naming the leader; havctl given both talks to the leader; a stopped
//! coordinator's agents are disconnected in the other's view at once.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hav_agent::control::LinkState;
use hav_coordinator::leader::{Fence, Leadership, Resign, Role};
use hav_coordinator::store::{Store, StoreError};
use hav_coordinator::store_etcd::{EtcdConfig, EtcdStore};
use hav_coordinator::{RunningCoordinator, StoreConfig};
use hav_proto::identity::Role as OperatorRole;
use hav_proto::v1::{
    AboutRequest, Event, InstanceState, ListNodesRequest, SetPriorityRequest, StartRolloutRequest,
    StateSnapshot, Transition, VrrpState, WatchEventsRequest, event, fleet_event,
};
use hav_tests::etcd::EtcdCluster;
use havctl::client;
use support::{Pki, await_link, start_with};
use tokio::sync::watch;

const TTL: Duration = Duration::from_secs(2);
/// Safety net for an election that should be over in well under a TTL.
const WAIT: Duration = Duration::from_secs(15);

fn store(cluster: &EtcdCluster, prefix: &str) -> Arc<EtcdStore> {
    let config = EtcdConfig::new(cluster.endpoints(), None)
        .unwrap()
        .with_prefix(prefix)
        .unwrap();
    Arc::new(EtcdStore::connect(config).unwrap())
}

/// Waits for a role that satisfies `wanted`; the role it reached.
async fn until(role: &mut watch::Receiver<Role>, wanted: impl Fn(&Role) -> bool) -> Role {
    let reached = tokio::time::timeout(WAIT, role.wait_for(|r| wanted(r)))
        .await
        .expect("role reached in time")
        .expect("the election runs");
    reached.clone()
}

async fn elected(store: &EtcdStore, name: &str) -> (Leadership, Resign, Fence) {
    let (leadership, resign) = store.elect(name.into(), TTL);
    let role = until(&mut leadership.subscribe(), Role::leads).await;
    (leadership, resign, role.fence().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_coordinator_leads_and_a_deposed_leaders_write_is_refused() {
    let cluster = EtcdCluster::start().unwrap();
    let prefix = "/leadership-under-test/";
    let (first, second) = (store(&cluster, prefix), store(&cluster, prefix));

    let (first_leadership, first_resign, first_fence) = elected(&first, "coord-a").await;
    let (second_leadership, second_resign) = second.elect("coord-b".into(), TTL);
    let mut second_role = second_leadership.subscribe();
    let following = until(&mut second_role, |r| {
        !matches!(r, Role::Follower { leader: None })
    })
    .await;
    assert_eq!(
        following,
        Role::Follower {
            leader: Some("coord-a".into())
        },
        "the second coordinator follows the first"
    );
    assert_eq!(second_leadership.leader().as_deref(), Some("coord-a"));
    first
        .put_record_fenced(&first_fence, "rollouts", "1", b"by a")
        .expect("the leader writes");

    // The first resigns; the second takes over at once (no TTL to wait for).
    let resigned = Instant::now();
    first_resign.resign(WAIT).await;
    assert!(!first_leadership.role().leads());
    let role = until(&mut second_role, Role::leads).await;
    let takeover = resigned.elapsed();
    assert!(
        takeover < TTL,
        "a resignation hands over without waiting out the lease: {takeover:?}"
    );
    let second_fence = role.fence().unwrap();
    assert_ne!(first_fence, second_fence);

    // The first still holds its old fence, as a leader that has not noticed would: refused.
    let refused = first.put_record_fenced(&first_fence, "rollouts", "1", b"stale write by a");
    assert!(
        matches!(refused, Err(StoreError::Deposed { .. })),
        "{refused:?}"
    );
    second
        .put_record_fenced(&second_fence, "rollouts", "1", b"by b")
        .expect("the new leader writes");
    let records = second.records("rollouts").unwrap();
    assert_eq!(
        records.get("1").map(Vec::as_slice),
        Some(&b"by b"[..]),
        "the deposed leader's write left nothing"
    );
    // A batch wider than one etcd transaction: every part checks the fence.
    let batch: Vec<(String, Vec<u8>)> = (0..300)
        .map(|n| (format!("vip-{n}"), n.to_string().into_bytes()))
        .collect();
    let refused = first.put_records_fenced(&first_fence, "sla", &batch);
    assert!(
        matches!(refused, Err(StoreError::Deposed { .. })),
        "{refused:?}"
    );
    assert!(second.records("sla").unwrap().is_empty(), "nothing of it");
    second
        .put_records_fenced(&second_fence, "sla", &batch)
        .expect("the new leader writes the batch");
    assert_eq!(
        second.records("sla").unwrap(),
        batch.into_iter().collect::<BTreeMap<_, _>>()
    );
    println!("takeover after a resignation: {takeover:?}");
    second_resign.resign(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_store_is_gone_is_replaced_within_the_lease() {
    let cluster = EtcdCluster::start().unwrap();
    let prefix = "/leadership-expiry/";
    let first = store(&cluster, prefix);
    let (first_leadership, _first_resign, first_fence) = elected(&first, "coord-a").await;
    let second = store(&cluster, prefix);
    let (second_leadership, _second_resign) = second.elect("coord-b".into(), TTL);
    let mut second_role = second_leadership.subscribe();
    until(&mut second_role, |r| {
        !matches!(r, Role::Follower { leader: None })
    })
    .await;

    // The first coordinator's client dies with its runtime, as with a process killed: its lease
    // is no longer renewed.
    let died = Instant::now();
    drop(first_leadership);
    drop(first);
    let role = until(&mut second_role, Role::leads).await;
    let takeover = died.elapsed();
    println!("takeover after the leader died: {takeover:?}");
    assert!(
        takeover < TTL + Duration::from_secs(1),
        "another leads within the TTL + 1 s: {takeover:?}"
    );
    // Its fence proves nothing any more.
    let refused = second.put_record_fenced(&first_fence, "sla", "198.51.100.1", b"stale");
    assert!(
        matches!(refused, Err(StoreError::Deposed { .. })),
        "{refused:?}"
    );
    second
        .put_record_fenced(&role.fence().unwrap(), "sla", "198.51.100.1", b"fresh")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_leading_within_the_lease_and_leads_again_once_it_is_back()
{
    let mut cluster = EtcdCluster::start().unwrap();
    let leader = store(&cluster, "/cut-off/");
    let (leadership, _resign, _fence) = elected(&leader, "coord-a").await;
    let mut role = leadership.subscribe();
    // Every member gone: no renewal can succeed (as for a coordinator partitioned from etcd).
    let cut = Instant::now();
    for member in 0..cluster.len() {
        cluster.kill(member).unwrap();
    }
    until(&mut role, |r| !r.leads()).await;
    let stepped_down = cut.elapsed();
    println!("leader stepped down {stepped_down:?} after losing etcd");
    assert!(
        stepped_down <= TTL + Duration::from_millis(500),
        "no longer than the lease: {stepped_down:?}"
    );
    // etcd back on its data (its new raft leader extends every lease, so the key of the lost term
    // would stand another TTL): the coordinator revokes that term's lease and leads at once.
    cluster.restart_stopped().unwrap();
    let back = Instant::now();
    until(&mut role, |r| r.leads()).await;
    let regained = back.elapsed();
    println!("leading again {regained:?} after etcd served again");
    assert!(
        regained < TTL,
        "sooner than the old key's TTL: {regained:?}"
    );
}

async fn coordinator_on(
    pki: &Pki,
    etcd: &EtcdConfig,
    name: &str,
) -> (RunningCoordinator, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let coordinator = start_with(pki, data.path(), |config| {
        config.store = StoreConfig::Etcd(etcd.clone());
        config.name = name.into();
        config.leader_ttl = TTL;
    })
    .await;
    (coordinator, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_coordinator_serves_any_agent_and_passes_commands_and_events_to_the_others() {
    let cluster = EtcdCluster::start().unwrap();
    let prefix = "/two-coordinators/";
    let etcd = EtcdConfig::new(cluster.endpoints(), None)
        .unwrap()
        .with_prefix(prefix)
        .unwrap();
    let pki = Pki::new();
    let (first, _first_data) = coordinator_on(&pki, &etcd, "coord-a").await;
    until(&mut first.leadership.subscribe(), Role::leads).await;
    let (second, _second_data) = coordinator_on(&pki, &etcd, "coord-b").await;
    until(&mut second.leadership.subscribe(), |r| {
        *r == Role::Follower {
            leader: Some("coord-a".into()),
        }
    })
    .await;

    for (coordinator, name, leads) in [(&first, "coord-a", true), (&second, "coord-b", false)] {
        let viewer = pki.operator(coordinator, &format!("vera-{name}"), OperatorRole::Viewer);
        let status = client::connect(&viewer)
            .await
            .unwrap()
            .list_nodes(ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .coordinator
            .unwrap();
        assert_eq!(
            (
                status.name.as_str(),
                status.leader,
                status.leader_name.as_str()
            ),
            (name, leads, "coord-a")
        );
        assert!(status.shared_store);
    }

    // Any coordinator serves any agent. lb-1 connects to the follower, lb-2 to the leader; each
    // coordinator's view holds both, with what the other's agent reported.
    let observer = store(&cluster, prefix);
    let mut lb1 = pki.agent(&second, "lb-1", "lb-1");
    lb1.snapshots
        .send_replace(snapshot("vi_1", VrrpState::Backup));
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    let mut lb2 = pki.agent(&first, "lb-2", "lb-2");
    lb2.snapshots
        .send_replace(snapshot("vi_1", VrrpState::Master));
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;
    for coordinator in [&first, &second] {
        let viewer = pki.operator(coordinator, "vera", OperatorRole::Viewer);
        let mut fleet = client::connect(&viewer).await.unwrap();
        let seen = tokio::time::timeout(WAIT, async {
            loop {
                let nodes = fleet
                    .list_nodes(ListNodesRequest {})
                    .await
                    .unwrap()
                    .into_inner()
                    .nodes;
                let state = |name: &str| {
                    nodes
                        .iter()
                        .find(|n| n.name == name && n.connected)
                        .and_then(|n| n.snapshot.as_ref())
                        .and_then(|s| s.instances.first())
                        .map(|i| i.state)
                };
                if state("lb-1") == Some(VrrpState::Backup as i32)
                    && state("lb-2") == Some(VrrpState::Master as i32)
                {
                    return nodes;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("both nodes connected with their reports in every coordinator's view");
        assert!(seen.iter().all(|n| !n.peer_address.is_empty()), "{seen:?}");
    }
    assert_eq!(
        observer.node_states().unwrap()["lb-1"].coordinator,
        "coord-b"
    );

    // A command through either coordinator reaches a node connected to the other: the leader
    // sets a priority on lb-1 (on the follower), the follower on lb-2 (on the leader).
    for (through, agent, node) in [(&first, &mut lb1, "lb-1"), (&second, &mut lb2, "lb-2")] {
        let operator = pki.operator(through, &format!("olga-{node}"), OperatorRole::Operator);
        let answer = async {
            let pending = tokio::time::timeout(WAIT, agent.commands.recv())
                .await
                .expect("the command arrives")
                .unwrap();
            let asked = format!("{:?}", pending.command);
            pending.ack(Ok::<(), String>(()));
            asked
        };
        let ask = async {
            client::connect(&operator)
                .await
                .unwrap()
                .set_priority(SetPriorityRequest {
                    node: node.into(),
                    instance: "vi_1".into(),
                    priority: 200,
                    reason: "relay test".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
        };
        let (asked, response) = tokio::join!(answer, ask);
        assert!(
            asked.contains("SetPriorityOverride") && asked.contains("vi_1"),
            "{asked}"
        );
        assert!(response.applied, "{node}: {response:?}");
    }

    // lb-1's events (on the follower) reach a watcher on the leader.
    let viewer = pki.operator(&first, "wanda", OperatorRole::Viewer);
    let mut events = client::connect(&viewer)
        .await
        .unwrap()
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    lb1.events.send(Event {
        unix_ms: 1,
        kind: Some(event::Kind::Transition(Transition {
            instance: "vi_1".into(),
            from: VrrpState::Backup as i32,
            to: VrrpState::Master as i32,
            cause: "relay test".into(),
        })),
    });
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.message().await.unwrap().unwrap();
            if event.node == "lb-1"
                && matches!(&event.kind, Some(fleet_event::Kind::Agent(a)) if a.unix_ms == 1)
            {
                return;
            }
        }
    })
    .await
    .expect("the follower's agent's event reaches the leader's watcher");

    // Rollouts are the leader's: refused on the follower, naming the leader.
    let on_follower = pki.operator(&second, "otto", OperatorRole::Operator);
    let refused = client::connect(&on_follower)
        .await
        .unwrap()
        .start_rollout(StartRolloutRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("coord-b does not lead")
            && refused.message().contains("coord-a"),
        "{refused:?}"
    );

    // havctl given both, the follower first, talks to the leader.
    let mut both = pki.operator(&second, "olga-both", OperatorRole::Operator);
    both.coordinator = format!("{},{}", second.local_addr, first.local_addr);
    let about = client::connect(&both)
        .await
        .unwrap()
        .about(AboutRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((about.name.as_str(), about.leader), ("coord-a", true));

    // The follower stops: lb-1's session there ends with its membership, in the leader's view
    // at once (not a TTL later), and not as a split brain or a lingering master.
    second.shutdown().await.unwrap();
    let viewer = pki.operator(&first, "vera-after", OperatorRole::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(TTL, async {
        loop {
            let nodes = fleet
                .list_nodes(ListNodesRequest {})
                .await
                .unwrap()
                .into_inner()
                .nodes;
            if nodes.iter().any(|n| n.name == "lb-1" && !n.connected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("lb-1 disconnected in the leader's view within the TTL");
    assert!(started.elapsed() < TTL);
    drop((lb1, lb2));
    first.shutdown().await.unwrap();
}

fn snapshot(instance: &str, state: VrrpState) -> StateSnapshot {
    StateSnapshot {
        instances: vec![InstanceState {
            name: instance.into(),
            vrid: 51,
            state: state as i32,
            effective_priority: 100,
            configured_priority: 100,
            ..InstanceState::default()
        }],
        ..StateSnapshot::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_cut_off_from_etcd_ends_its_agents_sessions_and_they_move_to_another() {
    let mut cluster = EtcdCluster::start().unwrap();
    let prefix = "/cut-off-serving/";
    // coord-a reaches etcd through member 0 only: killing it cuts coord-a off, and only it.
    let only_first = EtcdConfig::new(vec![cluster.endpoint(0)], None)
        .unwrap()
        .with_prefix(prefix)
        .unwrap();
    let others = EtcdConfig::new(vec![cluster.endpoint(1), cluster.endpoint(2)], None)
        .unwrap()
        .with_prefix(prefix)
        .unwrap();
    let pki = Pki::new();
    let (first, _first_data) = coordinator_on(&pki, &only_first, "coord-a").await;
    let (second, _second_data) = coordinator_on(&pki, &others, "coord-b").await;
    let mut lb1 = pki.agent_of(
        vec![first.local_addr.to_string(), second.local_addr.to_string()],
        "lb-1",
        "lb-1",
    );
    lb1.snapshots
        .send_replace(snapshot("vi_1", VrrpState::Master));
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    let on_second = pki.operator(&second, "vera", OperatorRole::Viewer);
    let mut fleet = client::connect(&on_second).await.unwrap();
    let held_by = |nodes: &[hav_proto::v1::NodeStatus]| {
        nodes
            .iter()
            .find(|n| n.name == "lb-1" && n.connected)
            .map(|n| n.peer_address.clone())
    };
    tokio::time::timeout(WAIT, async {
        while held_by(
            &fleet
                .list_nodes(ListNodesRequest {})
                .await
                .unwrap()
                .into_inner()
                .nodes,
        )
        .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("coord-b sees lb-1 on coord-a");

    let cut = Instant::now();
    cluster.kill(0).unwrap();
    // coord-a loses its membership within the lease and ends lb-1's session; lb-1 moves on.
    await_link(&mut lb1, |s| matches!(s, LinkState::Disconnected { .. })).await;
    let ended = cut.elapsed();
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    let moved = cut.elapsed();
    println!(
        "lb-1's session on the cut-off coordinator ended after {ended:?}, back on the other after {moved:?}"
    );
    assert!(
        ended <= TTL + Duration::from_millis(500),
        "no longer than the membership lease: {ended:?}"
    );
    tokio::time::timeout(WAIT, async {
        loop {
            let status = fleet
                .list_nodes(ListNodesRequest {})
                .await
                .unwrap()
                .into_inner();
            if status.nodes.iter().any(|n| n.name == "lb-1" && n.connected)
                && second.leadership.role().leads()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("lb-1 connected to coord-b, which leads");
    drop(lb1);
    second.shutdown().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), first.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_etcds_history_keeping_the_latest_values() {
    let cluster = EtcdCluster::start().unwrap();
    let leader = store(&cluster, "/compaction/");
    let (leadership, _resign, _fence) = elected(&leader, "coord-a").await;
    leader.put_record("jobs", "1", b"first").unwrap();
    leader.put_record("jobs", "1", b"second").unwrap();
    let written = i64::try_from(leader.revision().unwrap()).unwrap();
    leader.compact_history(leadership, Duration::from_millis(300));
    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    // History before the last interval goes: reading the first write's revision is refused.
    tokio::time::timeout(WAIT, async {
        loop {
            let options = etcd_client::GetOptions::new().with_revision(written - 1);
            match client.get("/compaction/", Some(options)).await {
                Err(e) if e.to_string().contains("compacted") => return,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("history compacted by the leader");
    assert_eq!(leader.records("jobs").unwrap()["1"], b"second".to_vec());
}
