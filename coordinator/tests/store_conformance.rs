//! One conformance suite for every [`Store`] backend: the same checks run against redb (a file in
//! a temp dir) and etcd (a real three-member cluster on loopback, `hav_tests::etcd`), each check
//! on fresh state, a "restart" being a second handle on the same state. Then what only etcd
//! promises: it keeps working with one member of three killed (the leader).

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hav_coordinator::store::{
    AuditRecord, Change, ConfigVersionRecord, GroupLayout, NodeStateRecord, RedbStore, Revision,
    Store, StoreError,
};
use hav_coordinator::store_etcd::{EtcdConfig, EtcdStore, EtcdTls};
use hav_tests::etcd::{EtcdCluster, ServerTls};
use havctl::certs::{IssueRequest, Kind};
use tokio::sync::broadcast;

/// Safety net for a change to reach a watcher (etcd's watch is asynchronous).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a check keeps its state: each call of `open` is a new handle on the same state, as after
/// a coordinator restart.
trait Backend {
    fn open(&self) -> Arc<dyn Store>;
}

struct Redb(tempfile::TempDir);

impl Backend for Redb {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(RedbStore::open(self.0.path()).unwrap())
    }
}

struct Etcd {
    endpoints: Vec<String>,
    prefix: String,
}

impl Backend for Etcd {
    fn open(&self) -> Arc<dyn Store> {
        let config = EtcdConfig::new(self.endpoints.clone(), None)
            .unwrap()
            .with_prefix(&self.prefix)
            .unwrap();
        Arc::new(EtcdStore::connect(config).unwrap())
    }
}

/// A check of the suite: it gets a backend of its own.
type Check = fn(&dyn Backend);

/// The checks, by name.
const CHECKS: [(&str, Check); 7] = [
    (
        "config versions are compare-and-swapped and survive a restart",
        config_versions_are_compare_and_swapped_and_survive_a_restart,
    ),
    (
        "the audit log is append-only, in order, also under concurrent appends",
        the_audit_log_is_append_only_in_order,
    ),
    (
        "node states keep each node's last record across a restart",
        node_states_keep_each_nodes_last_record,
    ),
    (
        "records are kept per space across a restart",
        records_are_kept_per_space_across_a_restart,
    ),
    (
        "every write is announced on watch at its revision",
        every_write_is_announced_on_watch_at_its_revision,
    ),
    (
        "a limit of zero reads nothing",
        a_limit_of_zero_reads_nothing,
    ),
    (
        "a config version of megabytes is stored and read back whole",
        a_config_version_of_megabytes_is_stored_and_read_back_whole,
    ),
];

fn run_all(backend_for: impl Fn(usize) -> Box<dyn Backend>) {
    for (index, (name, check)) in CHECKS.iter().enumerate() {
        eprintln!("conformance: {name}");
        check(backend_for(index).as_ref());
    }
}

#[test]
fn the_redb_store_passes_the_conformance_suite() {
    run_all(|_| Box::new(Redb(tempfile::tempdir().unwrap())));
}

#[test]
fn the_etcd_store_passes_the_conformance_suite() {
    let cluster = EtcdCluster::start().unwrap();
    run_all(|index| {
        Box::new(Etcd {
            endpoints: cluster.endpoints(),
            prefix: format!("/conformance/{index}/"),
        })
    });
    // What a file cannot be asked: two stores (two processes) writing the same state at once.
    two_writers_at_once_neither_lose_nor_duplicate(&Etcd {
        endpoints: cluster.endpoints(),
        prefix: "/conformance/two-writers/".into(),
    });
}

fn two_writers_at_once_neither_lose_nor_duplicate(backend: &Etcd) {
    let stores = [backend.open(), backend.open()];
    std::thread::scope(|scope| {
        for (writer, store) in stores.iter().enumerate() {
            scope.spawn(move || {
                for n in 0..25u64 {
                    store
                        .append_audit(&audit(1000 * (writer as u64 + 1) + n))
                        .unwrap();
                }
            });
        }
    });
    let order = log_order(stores[0].as_ref());
    assert_eq!(order.len(), 50, "{order:?}");
    for writer in 1..=2u64 {
        let own: Vec<u64> = order
            .iter()
            .copied()
            .filter(|n| n / 1000 == writer)
            .collect();
        assert_eq!(own, (0..25).map(|n| 1000 * writer + n).collect::<Vec<_>>());
    }
    // Both propose version 1: exactly one is stored, the other is told it conflicts.
    let outcomes: Vec<Result<Revision, StoreError>> = std::thread::scope(|scope| {
        let racers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(writer, store)| {
                scope.spawn(move || {
                    let mut record = version(1);
                    record.author = format!("writer {writer}");
                    store.put_config_version(&record)
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let won = outcomes.iter().filter(|o| o.is_ok()).count();
    let lost = outcomes
        .iter()
        .filter(|o| matches!(o, Err(StoreError::Conflict { actual: 1, .. })))
        .count();
    assert_eq!((won, lost), (1, 1), "{outcomes:?}");
    assert_eq!(stores[1].config_history(10).unwrap().len(), 1);
}

#[test]
fn the_etcd_store_keeps_working_when_the_leader_of_three_members_is_killed() {
    // The retries through the election show in the test's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("hav_coordinator=debug")
        .try_init();
    let mut cluster = EtcdCluster::start().unwrap();
    let backend = Etcd {
        endpoints: cluster.endpoints(),
        prefix: "/hav/".into(),
    };
    let store = backend.open();
    store.put_config_version(&version(1)).unwrap();
    store.append_audit(&audit(1)).unwrap();
    let before = store.revision().unwrap();

    let leader = cluster.leader().unwrap();
    cluster.kill(leader).unwrap();

    // Writes and reads go on through the two members left (after an election).
    store.put_config_version(&version(2)).unwrap();
    store.append_audit(&audit(2)).unwrap();
    store.put_node_state("lb-1", &node_state(7)).unwrap();
    store.put_record("jobs", "1", b"running").unwrap();
    assert!(store.revision().unwrap() > before);
    assert_eq!(
        store.config_history(10).unwrap(),
        vec![version(2), version(1)]
    );
    let order: Vec<u64> = log_order(store.as_ref());
    assert_eq!(order, vec![1, 2]);
    // A new handle (a coordinator restarted meanwhile) sees it all, through the members left.
    let reopened = backend.open();
    assert_eq!(reopened.latest_config_version().unwrap(), Some(version(2)));
    assert_eq!(reopened.node_states().unwrap()["lb-1"], node_state(7));
    assert_eq!(
        reopened.records("jobs").unwrap(),
        BTreeMap::from([("1".to_owned(), b"running".to_vec())])
    );
    assert!(
        !cluster.endpoints().contains(&cluster.endpoint(leader)),
        "the killed member is out"
    );
}

#[test]
fn the_etcd_store_speaks_tls_with_a_client_certificate() {
    // The fleet's own certificate kinds serve: a coordinator certificate (server auth, valid for
    // 127.0.0.1) for the member, an agent certificate (client auth) for the store.
    let pki = support::Pki::new();
    let client = pki.issue(IssueRequest::new(Kind::Agent, "etcd-client", 30));
    let server = pki.server_files();
    let cluster = EtcdCluster::start_tls(
        1,
        ServerTls {
            ca: pki.ca(),
            cert: server.cert,
            key: server.key,
            client_cert: client.cert.clone(),
            client_key: client.key.clone(),
        },
    )
    .unwrap();
    let config = |identity: Option<(PathBuf, PathBuf)>| {
        let tls = EtcdTls {
            ca: pki.ca(),
            identity,
        };
        let mut config = EtcdConfig::new(cluster.endpoints(), Some(tls)).unwrap();
        config.request_timeout = Duration::from_secs(2);
        config
    };
    let store =
        EtcdStore::connect(config(Some((client.cert.clone(), client.key.clone())))).unwrap();
    store.put_config_version(&version(1)).unwrap();
    assert_eq!(store.latest_config_version().unwrap(), Some(version(1)));
    // etcd requires a client certificate: without one the store does not open.
    let refused = EtcdStore::connect(config(None));
    assert!(refused.is_err(), "connected without a client certificate");
}

fn config_versions_are_compare_and_swapped_and_survive_a_restart(backend: &dyn Backend) {
    {
        let store = backend.open();
        assert_eq!(store.latest_config_version().unwrap(), None);
        assert_eq!(store.latest_config_version_number().unwrap(), 0);
        assert!(matches!(
            store.put_config_version(&version(2)),
            Err(StoreError::Conflict {
                expected: 2,
                actual: 0
            })
        ));
        let first = store.put_config_version(&version(1)).unwrap();
        let second = store.put_config_version(&version(2)).unwrap();
        assert!(second > first, "revisions grow: {first} then {second}");
        assert!(store.revision().unwrap() >= second);
        for stale in [1, 2, 4] {
            assert!(
                matches!(
                    store.put_config_version(&version(stale)),
                    Err(StoreError::Conflict { actual: 2, .. })
                ),
                "version {stale} after 2"
            );
        }
    }
    let store = backend.open();
    assert_eq!(
        store.config_history(10).unwrap(),
        vec![version(2), version(1)]
    );
    assert_eq!(store.config_history(1).unwrap(), vec![version(2)]);
    assert_eq!(store.latest_config_version().unwrap(), Some(version(2)));
    assert_eq!(store.config_version(1).unwrap(), Some(version(1)));
    assert_eq!(store.config_version(9).unwrap(), None);
    store.put_config_version(&version(3)).unwrap();
    assert_eq!(store.latest_config_version().unwrap(), Some(version(3)));
    assert_eq!(store.latest_config_version_number().unwrap(), 3);
}

/// 10,000 nodes of 500 bytes each: more than etcd takes in one request (1.5 MiB by default).
fn a_config_version_of_megabytes_is_stored_and_read_back_whole(backend: &dyn Backend) {
    let store = backend.open();
    let changes = store.watch();
    let mut large = version(1);
    large.nodes = (0..10_000)
        .map(|n| {
            (
                format!("proxy-{n:05}"),
                format!("# {n}\n{}", "x".repeat(490)),
            )
        })
        .collect();
    large.node_versions = large.nodes.keys().map(|node| (node.clone(), 1)).collect();
    let revision = store.put_config_version(&large).unwrap();
    // Announced once, as one version (its parts, where it has any, are not changes).
    assert_eq!(next_change(changes).1, (revision, Change::ConfigVersion(1)));
    assert_eq!(store.config_version(1).unwrap().as_ref(), Some(&large));
    assert_eq!(
        store.latest_config_version().unwrap().as_ref(),
        Some(&large)
    );
    store.put_config_version(&version(2)).unwrap();
    assert_eq!(
        store.config_history(2).unwrap(),
        vec![version(2), large.clone()]
    );
    drop(store);
    assert_eq!(backend.open().config_version(1).unwrap(), Some(large));
}

fn the_audit_log_is_append_only_in_order(backend: &dyn Backend) {
    {
        let store = backend.open();
        assert!(store.audit_log(10).unwrap().is_empty());
        store.append_audit(&audit(0)).unwrap();
        store
            .append_audits(&(1..5).map(audit).collect::<Vec<_>>())
            .unwrap();
        // A batch larger than one etcd transaction may hold (128 operations).
        store
            .append_audits(&(5..305).map(audit).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(log_order(store.as_ref()), (0..305).collect::<Vec<_>>());
        let newest: Vec<u64> = store
            .audit_log(2)
            .unwrap()
            .iter()
            .map(|r| r.unix_ms)
            .collect();
        assert_eq!(newest, vec![304, 303]);
    }
    // Concurrent writers: every entry once, each writer's entries in its own order.
    let store = backend.open();
    std::thread::scope(|scope| {
        for writer in 0..4u64 {
            let store = store.clone();
            scope.spawn(move || {
                for n in 0..20u64 {
                    store.append_audit(&audit(1000 * (writer + 1) + n)).unwrap();
                }
            });
        }
    });
    drop(store);
    let order = log_order(backend.open().as_ref());
    assert_eq!(order.len(), 305 + 80);
    assert_eq!(order[..305], (0..305).collect::<Vec<_>>());
    for writer in 1..=4u64 {
        let own: Vec<u64> = order
            .iter()
            .copied()
            .filter(|n| n / 1000 == writer)
            .collect();
        assert_eq!(own, (0..20).map(|n| 1000 * writer + n).collect::<Vec<_>>());
    }
}

fn node_states_keep_each_nodes_last_record(backend: &dyn Backend) {
    {
        let store = backend.open();
        assert!(store.node_states().unwrap().is_empty());
        store.put_node_state("lb-1", &node_state(1)).unwrap();
        // More nodes than one etcd transaction or one read page holds.
        let states: Vec<(String, NodeStateRecord)> = (0..600)
            .map(|n| (format!("lb-{n}"), node_state(n + 10)))
            .collect();
        store.put_node_states(&states).unwrap();
        store.put_node_state("lb-2", &node_state(5)).unwrap();
    }
    let states = backend.open().node_states().unwrap();
    assert_eq!(states.len(), 600);
    assert_eq!(states["lb-1"], node_state(11));
    assert_eq!(states["lb-2"], node_state(5));
    assert_eq!(states["lb-599"], node_state(609));
}

fn records_are_kept_per_space_across_a_restart(backend: &dyn Backend) {
    {
        let store = backend.open();
        store.put_record("sla", "a", b"1").unwrap();
        store.put_record("sla", "b", b"2").unwrap();
        store.put_record("slab", "a", b"other space").unwrap();
        store.put_record("sla", "a", b"3").unwrap();
        store.delete_record("sla", "b").unwrap();
        store.delete_record("sla", "absent").unwrap();
        assert!(store.put_record("bad\0space", "a", b"").is_err());
    }
    let store = backend.open();
    let sla = store.records("sla").unwrap();
    assert_eq!(sla, BTreeMap::from([("a".to_owned(), b"3".to_vec())]));
    assert_eq!(
        store.records("slab").unwrap(),
        BTreeMap::from([("a".to_owned(), b"other space".to_vec())])
    );
    assert!(store.records("none").unwrap().is_empty());
}

fn every_write_is_announced_on_watch_at_its_revision(backend: &dyn Backend) {
    let store = backend.open();
    let mut watch = store.watch();
    let writes: Vec<(Revision, Change)> = vec![
        (
            store.put_config_version(&version(1)).unwrap(),
            Change::ConfigVersion(1),
        ),
        (
            store.append_audits(&[audit(1), audit(2)]).unwrap(),
            Change::Audit,
        ),
        (
            store.put_node_state("lb-1", &node_state(1)).unwrap(),
            Change::NodeState("lb-1".into()),
        ),
        (
            store.put_record("jobs", "7", b"x").unwrap(),
            Change::Record("jobs".into(), "7".into()),
        ),
        (
            store.delete_record("jobs", "7").unwrap(),
            Change::Record("jobs".into(), "7".into()),
        ),
    ];
    for expected in writes {
        let (rest, seen) = next_change(watch);
        watch = rest;
        assert_eq!(seen, expected);
    }
}

fn a_limit_of_zero_reads_nothing(backend: &dyn Backend) {
    let store = backend.open();
    store.put_config_version(&version(1)).unwrap();
    store.append_audit(&audit(1)).unwrap();
    assert!(store.config_history(0).unwrap().is_empty());
    assert!(store.audit_log(0).unwrap().is_empty());
}

/// The next change on `watch`, waited for on a thread of its own (the checks are synchronous);
/// the receiver comes back for the next one.
fn next_change(
    mut watch: broadcast::Receiver<(Revision, Change)>,
) -> (broadcast::Receiver<(Revision, Change)>, (Revision, Change)) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let change = watch.blocking_recv();
        let _ = tx.send((watch, change));
    });
    let (watch, change) = rx
        .recv_timeout(CHANGE_TIMEOUT)
        .expect("a change within the timeout");
    (watch, change.expect("no change lost"))
}

/// The audit log oldest first, as the numbers its records carry.
fn log_order(store: &dyn Store) -> Vec<u64> {
    let mut order: Vec<u64> = store
        .audit_log(10_000)
        .unwrap()
        .iter()
        .map(|r| r.unix_ms)
        .collect();
    order.reverse();
    order
}

fn version(version: u64) -> ConfigVersionRecord {
    ConfigVersionRecord {
        version,
        unix_ms: 1,
        author: "ana".into(),
        comment: String::new(),
        nodes: BTreeMap::from([("lb-1".into(), format!("v = {version}"))]),
        node_versions: BTreeMap::from([("lb-1".into(), version)]),
        nodes_changed: vec!["lb-1".into()],
        rollback_of: 0,
        groups: BTreeMap::new(),
        layouts: version.is_multiple_of(2).then(|| {
            vec![GroupLayout {
                name: "web".into(),
                dns_name: Some("web.example.test".into()),
                vips: vec!["198.51.100.100".parse().expect("address")],
                nodes: vec!["lb-1".into(), "lb-2".into()],
            }]
        }),
    }
}

fn audit(n: u64) -> AuditRecord {
    AuditRecord {
        unix_ms: n,
        who: "olga".into(),
        action: "push".into(),
        detail: format!("#{n}"),
        allowed: true,
    }
}

fn node_state(n: u64) -> NodeStateRecord {
    NodeStateRecord {
        software_version: "test".into(),
        protocol_version: 1,
        last_seen_unix_ms: n,
        snapshot: n.to_be_bytes().to_vec(),
        coordinator: "coord-a".into(),
    }
}
