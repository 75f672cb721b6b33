//! Leadership among coordinators sharing an etcd prefix (`hav_coordinator::leader`), against a
//! real three-member cluster on loopback: one leader at a time, a resigned leader replaced at
//! once, a dead one within the lease, a leader cut off from etcd stepping down within it, and a
//! deposed leader's fenced write refused by etcd while the new leader's goes through.
//! Then two coordinators in this process on one prefix: status says who leads, a follower
//! refuses agents, a push and a rollout naming the leader, a drain of a node whose session the
//! leader holds is refused by the follower naming it, and havctl given both talks to the leader.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hav_agent::control::LinkState;
use hav_coordinator::leader::{Fence, Leadership, Resign, Role};
use hav_coordinator::store::{Change, Store, StoreError};
use hav_coordinator::store_etcd::{EtcdConfig, EtcdStore};
use hav_coordinator::{RunningCoordinator, StoreConfig};
use hav_proto::identity::Role as OperatorRole;
use hav_proto::v1::{
    AboutRequest, DrainRequest, ListNodesRequest, PushConfigRequest, StartRolloutRequest,
    StateSnapshot,
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
async fn a_follower_names_the_leader_and_the_coordinator_holding_a_node() {
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

    // The follower serves no agent: lb-1 is refused there and connects to the leader; its report
    // reaches etcd naming the leader.
    let observer = store(&cluster, prefix);
    let mut changes = observer.watch();
    let mut refused = pki.agent(&second, "lb-1", "lb-1");
    let state = await_link(&mut refused, |s| {
        matches!(s, LinkState::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(&state, LinkState::Disconnected { error, .. } if error.contains("coord-b does not lead")),
        "{state:?}"
    );
    drop(refused);
    let mut agent = pki.agent(&first, "lb-1", "lb-1");
    agent.snapshots.send_replace(StateSnapshot::default());
    await_link(&mut agent, |s| *s == LinkState::Connected).await;
    tokio::time::timeout(WAIT, async {
        while !matches!(changes.recv().await.unwrap(), (_, Change::NodeState(n)) if n == "lb-1") {}
    })
    .await
    .expect("lb-1's state stored");
    assert_eq!(
        observer.node_states().unwrap()["lb-1"].coordinator,
        "coord-a"
    );

    let operator = pki.operator(&second, "olga", OperatorRole::Operator);
    let refused = client::connect(&operator)
        .await
        .unwrap()
        .drain(DrainRequest {
            node: "lb-1".into(),
            reason: "kernel upgrade".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        refused
            .message()
            .contains("connected to coordinator coord-a, not to coord-b"),
        "{refused:?}"
    );

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
    let refused = client::connect(&on_follower)
        .await
        .unwrap()
        .push_config(PushConfigRequest::default())
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("coord-b does not lead"),
        "a follower serves no agent, so it takes no push: {refused:?}"
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

    drop(agent);
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
}
