//! The state both services and orchestration share: the store, the registry of live agents, the
//! write-behind queues, the cached latest config version, and the audit log writer.
//!
//! Guarantees: store calls never run on the async runtime ([`blocking`]); the cached latest
//! version only moves forward and is fed by every config version this process writes
//! ([`LatestConfig::offer`]) and, through the store's watch, by every version another
//! coordinator sharing the store writes ([`follow_config_versions`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::error::ControlError;
use crate::leader::Leadership;
use crate::node_state_writer::{NodeStateWriter, TransitionWriter};
use crate::registry::Registry;
use crate::store::{AuditRecord, Change, ConfigVersionRecord, Revision, Store, StoreError};
use crate::telemetry::Metrics;
use crate::unix_ms;

/// State both services share.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    /// Where reported node states go (write-behind, batched).
    pub node_states: Arc<NodeStateWriter>,
    /// Agents' transitions on their way to the audit log (write-behind, batched, in order).
    pub transitions: Arc<TransitionWriter>,
    /// The latest config version, kept in memory for the connect path.
    pub latest: LatestConfig,
    /// Whether the store holds no priority intent, known without reading it (the connect path).
    pub intents: crate::priority::IntentsWatch,
    /// How long to wait for an agent's ack.
    pub command_timeout: Duration,
    /// Becomes true when the coordinator shuts down: long-lived streams end.
    pub stopping: watch::Receiver<bool>,
    /// Counters of the fleet operations (served on `/metrics` when configured).
    pub metrics: Arc<Metrics>,
    /// Whether this coordinator runs the singletons, and who does.
    pub leadership: Leadership,
    /// The other coordinators sharing the store (on etcd; `None` alone on redb).
    pub relay: Option<Arc<crate::relay::Relay>>,
}

impl Shared {
    /// Appends one entry to the audit log, committed before it returns. A failed write is logged:
    /// the operation it records has already happened.
    pub async fn audit(&self, who: &str, action: &str, detail: String, allowed: bool) {
        let record = AuditRecord {
            unix_ms: unix_ms(),
            who: who.to_owned(),
            action: action.to_owned(),
            detail,
            allowed,
        };
        if let Err(e) = blocking(&self.store, move |s| s.append_audit(&record)).await {
            tracing::error!("audit log write failed: {e}");
        }
    }
}

/// The newest config version this process has read or written, so that an agent connecting does
/// not decode the whole fleet's config from the store (at 10,000 nodes, megabytes per connect).
///
/// Every version this process writes goes through [`LatestConfig::offer`] after it commits, and
/// [`follow_config_versions`] offers those other coordinators sharing the store write, as the
/// store's watch announces them (read again whole when the watch lagged). It only ever moves to
/// a higher version, so a slow reader cannot put an older one back. A store found without any
/// version is remembered as such until a version is offered, so a new fleet's agents connecting
/// cost no store read either.
#[derive(Default)]
pub struct LatestConfig {
    cached: std::sync::Mutex<Cached>,
}

/// What [`LatestConfig`] knows of the store's latest version.
#[derive(Debug, Clone, Default)]
enum Cached {
    /// Nothing yet: the next [`LatestConfig::get`] reads the store.
    #[default]
    Unread,
    /// The store held no version when read, and none has been offered since.
    NoVersion,
    Version(Arc<ConfigVersionRecord>),
}

impl LatestConfig {
    /// The latest version: from memory, or read from the store once.
    pub async fn get(
        &self,
        store: &Arc<dyn Store>,
    ) -> Result<Option<Arc<ConfigVersionRecord>>, ControlError> {
        match self.lock().clone() {
            Cached::Version(cached) => return Ok(Some(cached)),
            Cached::NoVersion => return Ok(None),
            Cached::Unread => {}
        }
        let read = blocking(store, |s| s.latest_config_version()).await?;
        Ok(match read {
            Some(record) => Some(self.offer(record)),
            None => self.found_none(),
        })
    }

    /// The version cached now (0: none).
    pub fn version(&self) -> u64 {
        match &*self.lock() {
            Cached::Version(record) => record.version,
            Cached::Unread | Cached::NoVersion => 0,
        }
    }

    /// Records `record` unless a newer version is already known; returns the newest.
    pub fn offer(&self, record: ConfigVersionRecord) -> Arc<ConfigVersionRecord> {
        let mut cached = self.lock();
        match &*cached {
            Cached::Version(known) if known.version >= record.version => known.clone(),
            _ => {
                let record = Arc::new(record);
                *cached = Cached::Version(record.clone());
                record
            }
        }
    }

    /// The store was read and held no version: remembered unless a version was offered
    /// meanwhile (a write that committed after the read), which is then the answer.
    fn found_none(&self) -> Option<Arc<ConfigVersionRecord>> {
        let mut cached = self.lock();
        match &*cached {
            Cached::Version(known) => Some(known.clone()),
            Cached::Unread | Cached::NoVersion => {
                *cached = Cached::NoVersion;
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        // Every critical section is one clone or one assignment: a poisoned lock is still whole.
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps `shared.latest` up to date with the config versions written to the store by anyone
/// from this call on, until the store's watch ends.
pub fn follow_config_versions(shared: Arc<Shared>) -> impl Future<Output = ()> + Send + 'static {
    let store = shared.store.clone();
    let changes = store.watch();
    let known = shared.clone();
    follow_versions(
        store,
        changes,
        move || known.latest.version(),
        move |record| {
            shared.latest.offer(record);
        },
    )
}

/// Hands `offer` every config version announced on `changes`, as read from `store`; after a
/// lag, the latest if it is newer than `known` says (every write announces a change, so a busy
/// fleet lags often, and a version is megabytes at 10,000 nodes).
async fn follow_versions(
    store: Arc<dyn Store>,
    mut changes: broadcast::Receiver<(Revision, Change)>,
    known: impl Fn() -> u64,
    offer: impl Fn(ConfigVersionRecord),
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let read = match changes.recv().await {
            Ok((_, Change::ConfigVersion(version))) => {
                blocking(&store, move |s| s.config_version(version)).await
            }
            Ok(_) => continue,
            Err(RecvError::Lagged(_)) => {
                let known = known();
                blocking(&store, move |s| {
                    let latest = s.latest_config_version_number()?;
                    if latest > known {
                        s.config_version(latest)
                    } else {
                        Ok(None)
                    }
                })
                .await
            }
            Err(RecvError::Closed) => return,
        };
        match read {
            Ok(Some(record)) => offer(record),
            Ok(None) => {}
            Err(e) => tracing::warn!("a config version announced by the store is unreadable: {e}"),
        }
    }
}

/// Runs a store call off the async runtime.
pub async fn blocking<T, F>(store: &Arc<dyn Store>, call: F) -> Result<T, ControlError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(store.as_ref()))
        .await
        .map_err(|e| ControlError::Store(StoreError::Backend(e.to_string())))?
        .map_err(ControlError::from)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config_version(version: u64) -> ConfigVersionRecord {
        ConfigVersionRecord {
            version,
            unix_ms: 0,
            author: "ana".into(),
            comment: String::new(),
            nodes: BTreeMap::new(),
            node_versions: BTreeMap::new(),
            nodes_changed: Vec::new(),
            rollback_of: 0,
            groups: BTreeMap::new(),
            layouts: None,
        }
    }

    #[tokio::test]
    async fn the_latest_config_is_read_once_and_never_goes_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> =
            Arc::new(crate::store::RedbStore::open(dir.path()).expect("open"));
        let latest = LatestConfig::default();
        assert!(latest.get(&store).await.expect("get").is_none());
        // The store's lack of a version is remembered: a version written behind the cache's
        // back is not read (every writer offers what it commits).
        store.put_config_version(&config_version(1)).expect("v1");
        assert!(latest.get(&store).await.expect("get").is_none());
        latest.offer(config_version(1));
        assert_eq!(
            latest.get(&store).await.expect("get").expect("v1").version,
            1
        );
        // Written behind the cache's back: still the cached version (one writer: this process).
        store.put_config_version(&config_version(2)).expect("v2");
        assert_eq!(
            latest.get(&store).await.expect("get").expect("v1").version,
            1
        );
        assert_eq!(latest.offer(config_version(3)).version, 3);
        // A reader that read an older version cannot put it back.
        assert_eq!(latest.offer(config_version(2)).version, 3);
        assert_eq!(
            latest.get(&store).await.expect("get").expect("v3").version,
            3
        );
    }

    #[tokio::test]
    async fn versions_written_by_another_coordinator_reach_the_cache() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> =
            Arc::new(crate::store::RedbStore::open(dir.path()).expect("open"));
        let latest = Arc::new(LatestConfig::default());
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let known = latest.clone();
        let follower = tokio::spawn(follow_versions(
            store.clone(),
            store.watch(),
            move || known.version(),
            {
                let latest = latest.clone();
                move |record| {
                    let _ = seen_tx.send(latest.offer(record).version);
                }
            },
        ));
        store.put_config_version(&config_version(1)).expect("v1");
        assert_eq!(seen.recv().await, Some(1));
        // Written by someone else, announced by the store: the cache has it.
        assert_eq!(
            latest.get(&store).await.expect("get").expect("v1").version,
            1
        );
        store.put_config_version(&config_version(2)).expect("v2");
        assert_eq!(seen.recv().await, Some(2));
        assert_eq!(
            latest.get(&store).await.expect("get").expect("v2").version,
            2
        );
        follower.abort();
    }

    #[tokio::test]
    async fn a_lagging_follower_reads_a_version_only_when_it_is_newer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> =
            Arc::new(crate::store::RedbStore::open(dir.path()).expect("open"));
        let latest = Arc::new(LatestConfig::default());
        store.put_config_version(&config_version(1)).expect("v1");
        latest.offer(config_version(1));
        let lag = |store: &Arc<dyn Store>| {
            // More changes than the watch holds, before the follower reads any.
            for n in 0..300 {
                store
                    .put_record("sla", &n.to_string(), b"x")
                    .expect("record");
            }
        };
        // Subscribed before the lag: the follower finds it lagged at its first read.
        let follow = |changes| {
            let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel();
            let (known, latest) = (latest.clone(), latest.clone());
            let follower = tokio::spawn(follow_versions(
                store.clone(),
                changes,
                move || known.version(),
                move |record: ConfigVersionRecord| {
                    let _ = seen_tx.send(record.version);
                    latest.offer(record);
                },
            ));
            (follower, seen)
        };
        let changes = store.watch();
        lag(&store);
        let (follower, mut seen) = follow(changes);
        // The lag found nothing newer than version 1: the next version offered is 2.
        store.put_config_version(&config_version(2)).expect("v2");
        assert_eq!(seen.recv().await, Some(2));
        follower.abort();

        // A version announced only inside a lag is still read.
        let changes = store.watch();
        store.put_config_version(&config_version(3)).expect("v3");
        lag(&store);
        let (follower, mut seen) = follow(changes);
        assert_eq!(seen.recv().await, Some(3));
        follower.abort();
    }
}
