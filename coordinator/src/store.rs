//! Durable coordinator state behind [`Store`]: config versions (the fleet's desired config and its
//! history), the audit log, and the last state each node reported. Every write bumps a global
//! revision and is announced on [`Store::watch`], the shape an etcd backend has natively
//! (revision = etcd mod_revision, watch = etcd watch, node presence = a lease-bound key; presence
//! is kept in memory by the registry here, so no lease API is needed yet).
//!
//! [`RedbStore`] keeps everything in one redb file: a write is committed (fsync) before the call
//! returns, so a coordinator restart loses nothing that was acknowledged.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::leader::Fence;

/// A monotonically increasing number stamped on every write.
pub type Revision = u64;

/// One fleet config version: the complete desired config of every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersionRecord {
    pub version: u64,
    pub unix_ms: u64,
    pub author: String,
    pub comment: String,
    /// Node name → canonical TOML of its config.
    pub nodes: BTreeMap<String, String>,
    /// Node name → the version in which its config last changed (the `NodeConfigDoc.version`
    /// the node is sent).
    pub node_versions: BTreeMap<String, u64>,
    /// Nodes whose config differs from the previous version.
    pub nodes_changed: Vec<String>,
    /// Non-zero when this version restored an older one.
    pub rollback_of: u64,
    /// Rollout groups: name → nodes changed one at a time, in order.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// What the fleet file these configs came from laid out per group (DNS name, VIPs), by group
    /// name, kept here so that nothing expands the file again. `None` in versions stored before
    /// versions kept their layouts (their layouts are the `layouts` records of that time).
    #[serde(default)]
    pub layouts: Option<Vec<GroupLayout>>,
}

/// One group of a fleet file as DNS publishing and availability accounting see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLayout {
    pub name: String,
    pub dns_name: Option<String>,
    pub vips: Vec<IpAddr>,
    /// The members of its rollout group (empty when groups sharing a node were merged into one).
    pub nodes: Vec<String>,
}

/// Who did what, and whether it was allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub unix_ms: u64,
    pub who: String,
    pub action: String,
    pub detail: String,
    pub allowed: bool,
}

/// The last thing a node told us, kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStateRecord {
    pub software_version: String,
    pub protocol_version: u32,
    pub last_seen_unix_ms: u64,
    /// The last `StateSnapshot`, protobuf-encoded (base64 text in the record).
    #[serde(with = "payload")]
    pub snapshot: Vec<u8>,
    /// The coordinator that held the node's session when it reported this (its `--name`;
    /// empty in records written before coordinators had names).
    #[serde(default)]
    pub coordinator: String,
}

/// What changed at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    ConfigVersion(u64),
    Audit,
    NodeState(String),
    /// A record of an orchestration module (`space`, `key`), see [`Store::put_record`].
    Record(String, String),
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("store: {0}")]
    Backend(String),
    #[error("store record is corrupt: {0}")]
    Corrupt(String),
    #[error("config version {expected} expected next, but the store is at {actual}")]
    Conflict { expected: u64, actual: u64 },
    /// A singleton's write from a coordinator that no longer leads (its leader key is gone or
    /// another's): refused, nothing written.
    #[error(
        "refused: this coordinator no longer leads (leader key {key} is not the one it created)"
    )]
    Deposed { key: String },
}

/// The coordinator's durable state. Synchronous: callers on the async runtime use
/// `spawn_blocking` (see `crate::state::blocking`).
pub trait Store: Send + Sync + 'static {
    /// Stores `record` as the next version; fails with [`StoreError::Conflict`] unless
    /// `record.version` is exactly the latest version + 1 (compare-and-swap).
    fn put_config_version(&self, record: &ConfigVersionRecord) -> Result<Revision, StoreError>;
    fn config_version(&self, version: u64) -> Result<Option<ConfigVersionRecord>, StoreError>;
    fn latest_config_version(&self) -> Result<Option<ConfigVersionRecord>, StoreError>;
    /// The number of the latest version (0: none yet), without reading the version.
    fn latest_config_version_number(&self) -> Result<u64, StoreError>;
    /// The newest `limit` versions, newest first.
    fn config_history(&self, limit: usize) -> Result<Vec<ConfigVersionRecord>, StoreError>;
    fn append_audit(&self, record: &AuditRecord) -> Result<Revision, StoreError> {
        self.append_audits(std::slice::from_ref(record))
    }
    /// Appends `records` in order, in one transaction.
    fn append_audits(&self, records: &[AuditRecord]) -> Result<Revision, StoreError>;
    /// The newest `limit` audit records, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    fn put_node_state(&self, node: &str, record: &NodeStateRecord) -> Result<Revision, StoreError>;
    /// Stores several node states in one transaction (one revision, one commit).
    fn put_node_states(&self, states: &[(String, NodeStateRecord)])
    -> Result<Revision, StoreError>;
    fn node_states(&self) -> Result<BTreeMap<String, NodeStateRecord>, StoreError>;
    /// Stores an opaque record of an orchestration module (SLA ledgers, rollout jobs, drains)
    /// under `space`/`key`, replacing any older one.
    fn put_record(&self, space: &str, key: &str, value: &[u8]) -> Result<Revision, StoreError>;
    /// Stores a record of a singleton ([`crate::leader`]) only while `fence` still proves this
    /// coordinator leads, checked in the same transaction as the write; else
    /// [`StoreError::Deposed`] and nothing is written. A store with one coordinator has nothing
    /// to check.
    fn put_record_fenced(
        &self,
        fence: &Fence,
        space: &str,
        key: &str,
        value: &[u8],
    ) -> Result<Revision, StoreError> {
        self.put_records_fenced(fence, space, &[(key.to_owned(), value.to_vec())])
    }
    /// Stores several records of `space` as [`Store::put_record_fenced`] does one, in as few
    /// transactions as the backend allows (one on redb), each checking the fence.
    fn put_records_fenced(
        &self,
        fence: &Fence,
        space: &str,
        records: &[(String, Vec<u8>)],
    ) -> Result<Revision, StoreError>;
    /// Removes the record `space`/`key` (absent is fine).
    fn delete_record(&self, space: &str, key: &str) -> Result<Revision, StoreError>;
    /// Every record of `space`, by key.
    fn records(&self, space: &str) -> Result<BTreeMap<String, Vec<u8>>, StoreError>;
    /// The current revision.
    fn revision(&self) -> Result<Revision, StoreError>;
    /// Changes from now on (a slow receiver lags; it never blocks writers).
    fn watch(&self) -> broadcast::Receiver<(Revision, Change)>;
}

const CONFIGS: TableDefinition<u64, &[u8]> = TableDefinition::new("config_versions");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("node_state");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Orchestration records, keyed `space` + NUL + `key` (neither may contain NUL).
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const REVISION_KEY: &str = "revision";

/// The most of the database file redb keeps in the coordinator's memory (its default is 1 GiB).
/// The store is written far more than it is read: a write needs the pages on its path through
/// the tree, which stay cached, and a full read (at start, or of the history) is served from
/// the kernel's page cache, which the kernel can reclaim. Without a bound the process would keep
/// every page it ever wrote: every node's last snapshot, every config version pushed.
const REDB_CACHE_BYTES: usize = 4 << 20;

/// [`Store`] on an embedded redb database file.
pub struct RedbStore {
    db: Database,
    changes: broadcast::Sender<(Revision, Change)>,
}

impl RedbStore {
    /// Opens (or creates) `dir/coordinator.redb`.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        let path = dir.join("coordinator.redb");
        let db = Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(CONFIGS).map_err(backend)?;
            txn.open_table(AUDIT).map_err(backend)?;
            txn.open_table(NODES).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
            txn.open_table(RECORDS).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        let (changes, _) = broadcast::channel(256);
        Ok(RedbStore { db, changes })
    }

    /// Runs `write` in one transaction that also bumps the revision; announces `changes`.
    fn write<F>(&self, changes: Vec<Change>, write: F) -> Result<Revision, StoreError>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    {
        let txn = self.db.begin_write().map_err(backend)?;
        write(&txn)?;
        let revision = {
            let mut meta = txn.open_table(META).map_err(backend)?;
            let next = meta
                .get(REVISION_KEY)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0)
                + 1;
            meta.insert(REVISION_KEY, next).map_err(backend)?;
            next
        };
        txn.commit().map_err(backend)?;
        for change in changes {
            // No receivers is fine: nobody is watching.
            let _ = self.changes.send((revision, change));
        }
        Ok(revision)
    }

    fn newest<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(table).map_err(backend)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(backend)?.rev().take(limit) {
            let (_, value) = entry.map_err(backend)?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }
}

impl Store for RedbStore {
    fn put_config_version(&self, record: &ConfigVersionRecord) -> Result<Revision, StoreError> {
        let bytes = encode(record)?;
        self.write(vec![Change::ConfigVersion(record.version)], |txn| {
            let mut table = txn.open_table(CONFIGS).map_err(backend)?;
            let latest = table.last().map_err(backend)?.map(|(k, _)| k.value());
            let actual = latest.unwrap_or(0);
            if record.version != actual + 1 {
                return Err(StoreError::Conflict {
                    expected: record.version,
                    actual,
                });
            }
            table
                .insert(record.version, bytes.as_slice())
                .map_err(backend)?;
            Ok(())
        })
    }

    fn config_version(&self, version: u64) -> Result<Option<ConfigVersionRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(CONFIGS).map_err(backend)?;
        let value = table.get(version).map_err(backend)?;
        value.map(|v| decode(v.value())).transpose()
    }

    fn latest_config_version_number(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(CONFIGS).map_err(backend)?;
        let last = table.last().map_err(backend)?;
        Ok(last.map(|(version, _)| version.value()).unwrap_or(0))
    }

    fn latest_config_version(&self) -> Result<Option<ConfigVersionRecord>, StoreError> {
        Ok(self.newest(CONFIGS, 1)?.into_iter().next())
    }

    fn config_history(&self, limit: usize) -> Result<Vec<ConfigVersionRecord>, StoreError> {
        self.newest(CONFIGS, limit)
    }

    fn append_audits(&self, records: &[AuditRecord]) -> Result<Revision, StoreError> {
        let encoded = records.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        self.write(vec![Change::Audit], |txn| {
            let mut table = txn.open_table(AUDIT).map_err(backend)?;
            let first = table
                .last()
                .map_err(backend)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(1);
            for (key, bytes) in (first..).zip(&encoded) {
                table.insert(key, bytes.as_slice()).map_err(backend)?;
            }
            Ok(())
        })
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.newest(AUDIT, limit)
    }

    fn put_node_state(&self, node: &str, record: &NodeStateRecord) -> Result<Revision, StoreError> {
        self.put_node_states(&[(node.to_owned(), record.clone())])
    }

    fn put_node_states(
        &self,
        states: &[(String, NodeStateRecord)],
    ) -> Result<Revision, StoreError> {
        let encoded = states
            .iter()
            .map(|(node, record)| Ok((node.as_str(), encode(record)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let changes = states
            .iter()
            .map(|(node, _)| Change::NodeState(node.clone()))
            .collect();
        self.write(changes, |txn| {
            let mut table = txn.open_table(NODES).map_err(backend)?;
            for (node, bytes) in &encoded {
                table.insert(*node, bytes.as_slice()).map_err(backend)?;
            }
            Ok(())
        })
    }

    fn node_states(&self) -> Result<BTreeMap<String, NodeStateRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(NODES).map_err(backend)?;
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            out.insert(key.value().to_owned(), decode(value.value())?);
        }
        Ok(out)
    }

    fn put_record(&self, space: &str, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        let full = record_key(space, key)?;
        self.write(
            vec![Change::Record(space.to_owned(), key.to_owned())],
            |txn| {
                let mut table = txn.open_table(RECORDS).map_err(backend)?;
                table.insert(full.as_str(), value).map_err(backend)?;
                Ok(())
            },
        )
    }

    fn put_records_fenced(
        &self,
        _fence: &Fence,
        space: &str,
        records: &[(String, Vec<u8>)],
    ) -> Result<Revision, StoreError> {
        // One coordinator per redb file: it always leads.
        let keys = (records.iter())
            .map(|(key, _)| record_key(space, key))
            .collect::<Result<Vec<_>, _>>()?;
        let changes = (records.iter())
            .map(|(key, _)| Change::Record(space.to_owned(), key.clone()))
            .collect();
        self.write(changes, |txn| {
            let mut table = txn.open_table(RECORDS).map_err(backend)?;
            for (full, (_, value)) in keys.iter().zip(records) {
                table
                    .insert(full.as_str(), value.as_slice())
                    .map_err(backend)?;
            }
            Ok(())
        })
    }

    fn delete_record(&self, space: &str, key: &str) -> Result<Revision, StoreError> {
        let full = record_key(space, key)?;
        self.write(
            vec![Change::Record(space.to_owned(), key.to_owned())],
            |txn| {
                let mut table = txn.open_table(RECORDS).map_err(backend)?;
                table.remove(full.as_str()).map_err(backend)?;
                Ok(())
            },
        )
    }

    fn records(&self, space: &str) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let prefix = record_key(space, "")?;
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(RECORDS).map_err(backend)?;
        let mut out = BTreeMap::new();
        for entry in table.range(prefix.as_str()..).map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            let Some(rest) = key.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            out.insert(rest.to_owned(), value.value().to_vec());
        }
        Ok(out)
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        Ok(meta
            .get(REVISION_KEY)
            .map_err(backend)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    fn watch(&self) -> broadcast::Receiver<(Revision, Change)> {
        self.changes.subscribe()
    }
}

/// The key of a record: `space`, NUL, `key` (neither may contain NUL, so spaces never overlap).
pub(crate) fn record_key(space: &str, key: &str) -> Result<String, StoreError> {
    if space.contains('\0') || key.contains('\0') {
        return Err(StoreError::Backend(format!(
            "record key {space:?}/{key:?} contains NUL"
        )));
    }
    Ok(format!("{space}\0{key}"))
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Bytes in a JSON record as base64 text: a third larger than the bytes, where serde's default,
/// an array of numbers, is three to four times their size. Records written as arrays read too.
mod payload {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_any(Payload)
    }

    struct Payload;

    impl<'de> Visitor<'de> for Payload {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("base64 text or an array of bytes")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            STANDARD.decode(text).map_err(E::custom)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
            while let Some(byte) = seq.next_element::<u8>()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_stored_as_base64_and_the_older_array_form_still_reads() {
        let record = NodeStateRecord {
            software_version: "1.0".into(),
            protocol_version: 1,
            last_seen_unix_ms: 5,
            snapshot: vec![0, 1, 2, 250, 255],
            coordinator: "c1".into(),
        };
        let json = String::from_utf8(encode(&record).expect("encodes")).expect("JSON is UTF-8");
        assert!(json.contains(r#""snapshot":"AAEC+v8=""#), "{json}");
        assert_eq!(
            decode::<NodeStateRecord>(json.as_bytes()).expect("reads back"),
            record
        );

        let older = r#"{"software_version":"1.0","protocol_version":1,"last_seen_unix_ms":5,"snapshot":[0,1,2,250,255],"coordinator":"c1"}"#;
        assert_eq!(
            decode::<NodeStateRecord>(older.as_bytes()).expect("the array form reads"),
            record
        );
        let bad = older.replace("[0,1,2,250,255]", r#""not base64!""#);
        assert!(matches!(
            decode::<NodeStateRecord>(bad.as_bytes()),
            Err(StoreError::Corrupt(_))
        ));
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
            layouts: None,
        }
    }

    #[test]
    fn a_version_stored_before_versions_kept_layouts_still_reads() {
        let old = br#"{"version":4,"unix_ms":1,"author":"ana","comment":"","nodes":{"lb-1":"v"},
            "node_versions":{"lb-1":4},"nodes_changed":["lb-1"],"rollback_of":0,"groups":{}}"#;
        let record: ConfigVersionRecord = decode(old).expect("an old record decodes");
        assert_eq!(record.layouts, None);
        assert_eq!(record.nodes["lb-1"], "v");
        let mut new = version(5);
        new.layouts = Some(vec![GroupLayout {
            name: "web".into(),
            dns_name: Some("web.example.test".into()),
            vips: vec!["198.51.100.100".parse().expect("address")],
            nodes: vec!["lb-1".into(), "lb-2".into()],
        }]);
        let bytes = encode(&new).expect("encode");
        assert_eq!(decode::<ConfigVersionRecord>(&bytes).expect("decode"), new);
    }
}
