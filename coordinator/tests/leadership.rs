//! Leadership among coordinators sharing an etcd prefix (`hav_coordinator::leader`), against a
//! real three-member cluster on loopback: one leader at a time, a resigned leader replaced at
//! once, and a deposed leader's fenced write refused by etcd while the new leader's goes through.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hav_coordinator::leader::{Fence, Leadership, Resign, Role};
use hav_coordinator::store::{Store, StoreError};
use hav_coordinator::store_etcd::{EtcdConfig, EtcdStore};
use hav_tests::etcd::EtcdCluster;
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
