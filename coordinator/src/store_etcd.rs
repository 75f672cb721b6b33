//! [`Store`] on an etcd v3 cluster: the coordinator's durable state kept under a key prefix, so
//! that it outlives the coordinator's host and the loss of any one member of three.
//!
//! Layout under the prefix `P` (default [`DEFAULT_PREFIX`]), values JSON as in the redb file:
//!
//! ```text
//! P config/<version, 20 digits>        a config version (or the header of its parts, `parts.rs`)
//! P meta/config-latest                 the latest version (decimal): the compare-and-swap guard
//! P audit/<sequence, 20 digits>        an audit record, in append order
//! P meta/audit-last                    the last sequence used
//! P nodes/<node>                       a node's last state
//! P records/<space> NUL <key>          an orchestration record
//! P leader                             the leading coordinator's name, under its lease
//! ```
//!
//! Guarantees: a write returns once etcd has committed it (a quorum has it). A revision is etcd's
//! own (`header.revision`): it grows with every write, this store's or anyone's in the cluster. A
//! config version is stored only if it is exactly the latest + 1, checked in the same etcd
//! transaction; audit records are appended in order, a batch in one transaction. `watch` reports
//! what etcd's watch API reports under the prefix, whoever wrote it.
//!
//! Limits etcd sets: a transaction holds at most 128 operations (`--max-txn-ops`), so a larger
//! batch of node states or audit records is written as several transactions, in order; a request
//! holds at most 1.5 MiB (`--max-request-bytes`), so a config version over 1 MiB (every node's
//! config: megabytes for thousands of nodes) is stored in parts (`parts.rs`), and watches ask
//! for fragmented responses, so no message exceeds what the client decodes (4 MiB).
//!
//! The trait is synchronous and the client async: each store owns a small tokio runtime (one
//! worker thread) that runs every etcd call, and a caller blocks on a channel until its call is
//! done, as it would on redb's fsync. A caller on another runtime therefore never nests runtimes
//! and cannot deadlock this one. Transient failures (no leader during an election, a member that
//! went away) are retried until `request_timeout`; a write whose failed try may have committed
//! anyway is checked before it is tried again, never applied twice.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    SortOrder, SortTarget, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::broadcast;

mod parts;

use crate::leader::{self, Fence, Leadership, Resign};
use crate::store::{
    AuditRecord, Change, ConfigVersionRecord, NodeStateRecord, Revision, Store, StoreError, decode,
    encode, record_key,
};

/// A key and its value, as read.
type KeyValue = (Vec<u8>, Vec<u8>);

/// The key prefix when none is given.
pub const DEFAULT_PREFIX: &str = "/hav/";
/// How long one store call may take, retries included: a member that lost its leader holds a
/// write for etcd's own request timeout (7 s with the default election timeout of 1 s) before it
/// fails, and the retry after the election needs time too.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the leader compacts etcd's history by default (`--etcd-compaction-interval`), as
/// Kubernetes' API server does.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);
/// etcd refuses a transaction of more operations than its `--max-txn-ops` (128 by default).
const MAX_TXN_OPS: usize = 128;
/// Keys read per range request when reading a whole space.
const PAGE: i64 = 500;

/// How to reach the cluster. Built by [`EtcdConfig::new`], so always consistent: every endpoint
/// is `http://` or `https://`, and TLS settings go with `https://` only.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    endpoints: Vec<String>,
    tls: Option<EtcdTls>,
    prefix: String,
    /// How long one store call may take, retries included.
    pub request_timeout: Duration,
}

/// Client TLS for `https://` endpoints.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA that signed the etcd members' certificates (PEM).
    pub ca: PathBuf,
    /// A client certificate and its key (PEM), for a cluster with `--client-cert-auth`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A refused `--etcd` setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdConfigError {
    #[error("no etcd endpoint given")]
    NoEndpoints,
    #[error("etcd endpoint {0:?}: expected http://HOST:PORT or https://HOST:PORT")]
    BadEndpoint(String),
    #[error("etcd endpoints mix http:// and https://")]
    MixedSchemes,
    #[error("https:// etcd endpoints need the CA of the members' certificates (--etcd-ca)")]
    NoCa,
    #[error("etcd TLS options (--etcd-ca, --etcd-cert, --etcd-key) need https:// endpoints")]
    TlsWithoutHttps,
    #[error("etcd key prefix {0:?}: expected a non-empty prefix without NUL")]
    BadPrefix(String),
}

impl EtcdConfig {
    /// Endpoints such as `http://10.0.0.1:2379`; `tls` is required with `https://` and refused
    /// with `http://`.
    pub fn new(endpoints: Vec<String>, tls: Option<EtcdTls>) -> Result<Self, EtcdConfigError> {
        if endpoints.is_empty() {
            return Err(EtcdConfigError::NoEndpoints);
        }
        let mut https = None;
        for endpoint in &endpoints {
            let (secure, rest) = if let Some(rest) = endpoint.strip_prefix("https://") {
                (true, rest)
            } else if let Some(rest) = endpoint.strip_prefix("http://") {
                (false, rest)
            } else {
                return Err(EtcdConfigError::BadEndpoint(endpoint.clone()));
            };
            let authority = rest.trim_end_matches('/');
            if authority.is_empty()
                || authority.contains('/')
                || authority
                    .parse::<tonic::codegen::http::uri::Authority>()
                    .map(|a| a.port_u16().is_none())
                    .unwrap_or(true)
            {
                return Err(EtcdConfigError::BadEndpoint(endpoint.clone()));
            }
            if *https.get_or_insert(secure) != secure {
                return Err(EtcdConfigError::MixedSchemes);
            }
        }
        match (https, &tls) {
            (Some(true), None) => return Err(EtcdConfigError::NoCa),
            (Some(false), Some(_)) => return Err(EtcdConfigError::TlsWithoutHttps),
            _ => {}
        }
        Ok(EtcdConfig {
            endpoints,
            tls,
            prefix: DEFAULT_PREFIX.to_owned(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Keeps everything under `prefix` (a `/` is added if it does not end with one), so several
    /// fleets, or tests, can share a cluster.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, EtcdConfigError> {
        if prefix.is_empty() || prefix.contains('\0') {
            return Err(EtcdConfigError::BadPrefix(prefix.to_owned()));
        }
        self.prefix = if prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Ok(self)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// [`Store`] on etcd.
pub struct EtcdStore {
    /// Runs every etcd call.
    runtime: BackgroundRuntime,
    client: Client,
    keys: Keys,
    timeout: Duration,
    changes: broadcast::Sender<(Revision, Change)>,
    /// Appends of this process one at a time: the sequence guard then only fails against
    /// another writer.
    audit_append: Mutex<()>,
}

impl EtcdStore {
    /// Connects and reads the cluster's revision once (so an unreachable cluster fails here, not
    /// at the first write); starts watching the prefix from that revision on.
    pub fn connect(config: EtcdConfig) -> Result<EtcdStore, StoreError> {
        let runtime = BackgroundRuntime::new()?;
        let options = connect_options(&config)?;
        let endpoints = config.endpoints.clone();
        let keys = Keys {
            prefix: config.prefix.clone(),
        };
        let timeout = config.request_timeout;
        let prefix = keys.prefix.clone();
        let (client, revision) = runtime
            .run(async move {
                let client = Client::connect(&endpoints, Some(options))
                    .await
                    .map_err(|e| etcd_error("connect", &e))?;
                let revision = retrying("read the revision", timeout, || {
                    let mut kv = client.kv_client();
                    let prefix = prefix.clone();
                    async move {
                        let response = kv
                            .get(
                                prefix,
                                Some(GetOptions::new().with_prefix().with_count_only()),
                            )
                            .await?;
                        Ok(header_revision(response.header()))
                    }
                })
                .await?;
                Ok((client, revision))
            })
            .map_err(|e| {
                StoreError::Backend(format!(
                    "{e} (endpoints {}, tried for {timeout:?})",
                    config.endpoints.join(",")
                ))
            })?;
        let (changes, _) = broadcast::channel(256);
        runtime.0.spawn(feed_changes(
            client.clone(),
            keys.clone(),
            revision + 1,
            changes.clone(),
        ));
        tracing::info!(endpoints = ?config.endpoints, prefix = %keys.prefix, revision, "etcd store connected");
        Ok(EtcdStore {
            runtime,
            client,
            keys,
            timeout,
            changes,
            audit_append: Mutex::new(()),
        })
    }

    /// Campaigns for leadership of this prefix as `name`, with leases of `ttl` (see
    /// [`crate::leader`]); the campaign runs on this store's runtime until resigned or the store
    /// is dropped.
    pub fn elect(&self, name: String, ttl: Duration) -> (Leadership, Resign) {
        leader::campaign(
            &self.runtime.0,
            self.client.clone(),
            self.keys.leader(),
            name,
            ttl,
        )
    }

    /// Joins the coordinators sharing this prefix as `name`, with a membership lease of `ttl`
    /// (see [`crate::relay`]); its tasks run on this store's runtime.
    pub fn relay(&self, name: String, ttl: Duration) -> std::sync::Arc<crate::relay::Relay> {
        crate::relay::Relay::start(
            self.runtime.0.clone(),
            self.client.clone(),
            &self.keys.prefix,
            name,
            ttl,
        )
    }

    /// Compacts etcd's history every `every` while `leadership` leads: each time up to the
    /// revision seen one interval before, so the last interval of history stays for watchers
    /// that lag (every watcher here reads everything again when its history is gone). Without
    /// it etcd keeps every revision of every key (agents' reports, relayed events) until its
    /// space quota stops all writes.
    pub fn compact_history(&self, leadership: Leadership, every: Duration) {
        let client = self.client.clone();
        let prefix = self.keys.prefix.clone();
        self.runtime.0.spawn(async move {
            let mut kept_from: Option<i64> = None;
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let now = match client.kv_client().get(prefix.as_str(), None).await {
                    Ok(response) => response.header().map(|h| h.revision()).unwrap_or(0),
                    Err(e) => {
                        tracing::debug!("etcd revision unknown, nothing compacted: {e}");
                        continue;
                    }
                };
                if let Some(revision) = kept_from
                    && leadership.role().leads()
                {
                    match client.kv_client().compact(revision, None).await {
                        Ok(_) => tracing::info!(revision, "etcd history compacted"),
                        Err(e) => tracing::debug!(revision, "etcd history not compacted: {e}"),
                    }
                }
                kept_from = Some(now);
            }
        });
    }

    /// Runs `call` on the store's runtime and waits for it.
    fn run<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.runtime.run(call)
    }

    /// One idempotent request (a read, or a write that may be repeated), retried while the
    /// cluster is transiently unavailable.
    fn request<T, F, Fut>(&self, what: &'static str, request: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send,
    {
        let client = self.client.clone();
        let timeout = self.timeout;
        self.run(async move { retrying(what, timeout, || request(client.clone())).await })
    }

    /// The values of every key starting with `prefix`, by key (read page by page).
    fn range_all(&self, prefix: String) -> Result<Vec<KeyValue>, StoreError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        self.run(async move {
            let end = prefix_end(prefix.as_bytes());
            let mut from = prefix.clone().into_bytes();
            let mut out = Vec::new();
            // Every page at the first page's revision: one consistent view.
            let mut at = 0;
            loop {
                let (start, revision) = (from.clone(), at);
                let end = end.clone();
                let mut response = retrying("read a range", timeout, || {
                    let mut kv = client.kv_client();
                    let (start, end) = (start.clone(), end.clone());
                    async move {
                        let options = GetOptions::new()
                            .with_range(end)
                            .with_limit(PAGE)
                            .with_revision(revision);
                        kv.get(start, Some(options)).await
                    }
                })
                .await?;
                if at == 0 {
                    at = header_revision(response.header()) as i64;
                }
                let more = response.more();
                let kvs = response.take_kvs();
                let last = kvs.last().map(|kv| kv.key().to_vec());
                out.extend(kvs.into_iter().map(|kv| kv.into_key_value()));
                match last {
                    Some(mut key) if more => {
                        key.push(0);
                        from = key;
                    }
                    _ => return Ok(out),
                }
            }
        })
    }

    /// The newest `limit` values under `prefix` (keys are zero-padded numbers), newest first.
    fn newest<T>(&self, prefix: String, limit: usize) -> Result<Vec<T>, StoreError>
    where
        T: for<'de> serde::Deserialize<'de>,
    {
        self.newest_raw(prefix, limit)?
            .iter()
            .map(|value| decode(value))
            .collect()
    }

    /// A config version from what `P config/<version>` holds: the record, or the header of its
    /// parts (read and put together).
    fn version_from(&self, value: &[u8]) -> Result<ConfigVersionRecord, StoreError> {
        let Some(parts) = parts::header(value) else {
            return decode(value);
        };
        let (client, keys, timeout) = (self.client.clone(), self.keys.clone(), self.timeout);
        let bytes = self.run(async move { parts::read(&client, &keys, &parts, timeout).await })?;
        decode(&bytes)
    }

    /// The newest `limit` raw values under `prefix`, newest first.
    fn newest_raw(&self, prefix: String, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut response = self.request("read the newest entries", move |client| {
            let mut kv = client.kv_client();
            let prefix = prefix.clone();
            async move {
                let options = GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Descend)
                    .with_limit(limit);
                kv.get(prefix, Some(options)).await
            }
        })?;
        Ok(response
            .take_kvs()
            .into_iter()
            .map(|kv| kv.into_key_value().1)
            .collect())
    }

    /// Puts `puts` in transactions of at most [`MAX_TXN_OPS`] operations; the last one's
    /// revision. Idempotent, so retried as a whole.
    fn put_all(&self, puts: Vec<(String, Vec<u8>)>) -> Result<Revision, StoreError> {
        let mut revision = 0;
        for chunk in puts.chunks(MAX_TXN_OPS) {
            let chunk = chunk.to_vec();
            revision = self.request("write", move |client| {
                let mut kv = client.kv_client();
                let ops: Vec<TxnOp> = chunk
                    .iter()
                    .map(|(key, value)| TxnOp::put(key.clone(), value.clone(), None))
                    .collect();
                async move {
                    let response = kv.txn(Txn::new().and_then(ops)).await?;
                    Ok(header_revision(response.header()))
                }
            })?;
        }
        Ok(revision)
    }
}

/// The store's own tokio runtime (one worker thread), shut down without waiting when dropped:
/// a store may be dropped on another runtime's thread, where waiting is not allowed.
struct BackgroundRuntime(tokio::runtime::Handle, Option<tokio::runtime::Runtime>);

impl BackgroundRuntime {
    fn new() -> Result<BackgroundRuntime, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hav-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("etcd client runtime: {e}")))?;
        Ok(BackgroundRuntime(runtime.handle().clone(), Some(runtime)))
    }

    /// Runs `call` here and blocks the calling thread until it is done. Safe from any thread but
    /// this runtime's own, including another runtime's worker.
    fn run<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.0.spawn(async move {
            let _ = reply.send(call.await);
        });
        answer
            .recv()
            .map_err(|_| StoreError::Backend("etcd store closed during the call".into()))?
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.1.take() {
            runtime.shutdown_background();
        }
    }
}

impl Store for EtcdStore {
    fn put_config_version(&self, record: &ConfigVersionRecord) -> Result<Revision, StoreError> {
        let version = record.version;
        let whole = encode(record)?;
        let (key, latest) = (self.keys.config(version), self.keys.config_latest());
        let client = self.client.clone();
        let timeout = self.timeout;
        let keys = self.keys.clone();
        self.run(async move {
            // Larger than one request: the parts first, the header is what commits.
            let parts =
                (whole.len() > parts::PART_BYTES).then(|| parts::Parts::new(version, whole.len()));
            let bytes = match &parts {
                Some(parts) => {
                    parts::write(&client, &keys, parts, &whole, timeout).await?;
                    encode(&parts::Header {
                        parts: parts.clone(),
                    })?
                }
                None => whole,
            };
            let result = commit_version(&client, &key, &latest, version, &bytes, timeout).await;
            if let (Err(_), Some(parts)) = (&result, &parts) {
                parts::remove(&client, &keys, parts).await;
            }
            result
        })
    }

    fn config_version(&self, version: u64) -> Result<Option<ConfigVersionRecord>, StoreError> {
        let key = self.keys.config(version);
        let mut response = self.request("read a config version", move |client| {
            let mut kv = client.kv_client();
            let key = key.clone();
            async move { kv.get(key, None).await }
        })?;
        response
            .take_kvs()
            .first()
            .map(|kv| self.version_from(kv.value()))
            .transpose()
    }

    fn latest_config_version(&self) -> Result<Option<ConfigVersionRecord>, StoreError> {
        self.newest_raw(self.keys.configs(), 1)?
            .first()
            .map(|value| self.version_from(value))
            .transpose()
    }

    fn latest_config_version_number(&self) -> Result<u64, StoreError> {
        let prefix = self.keys.configs();
        let mut response = self.request("read the latest version number", {
            let prefix = prefix.clone();
            move |client| {
                let mut kv = client.kv_client();
                let prefix = prefix.clone();
                async move {
                    let options = GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(1);
                    kv.get(prefix, Some(options)).await
                }
            }
        })?;
        let Some(kv) = response.take_kvs().into_iter().next() else {
            return Ok(0);
        };
        (kv.key().strip_prefix(prefix.as_bytes()))
            .and_then(|number| std::str::from_utf8(number).ok())
            .and_then(|number| number.parse().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("config version key {:?}", kv.key())))
    }

    fn config_history(&self, limit: usize) -> Result<Vec<ConfigVersionRecord>, StoreError> {
        self.newest_raw(self.keys.configs(), limit)?
            .iter()
            .map(|value| self.version_from(value))
            .collect()
    }

    fn append_audits(&self, records: &[AuditRecord]) -> Result<Revision, StoreError> {
        if records.is_empty() {
            return self.revision();
        }
        // Sequence + one put per record must fit in one transaction.
        if records.len() >= MAX_TXN_OPS {
            let mut revision = 0;
            for chunk in records.chunks(MAX_TXN_OPS - 1) {
                revision = self.append_audits(chunk)?;
            }
            return Ok(revision);
        }
        let encoded = records.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let _one_at_a_time = self
            .audit_append
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let client = self.client.clone();
        let keys = self.keys.clone();
        let timeout = self.timeout;
        self.run(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut retry = Retry::new(deadline);
            // The sequence as read, and whether a try may have committed at it.
            let mut uncertain: Option<u64> = None;
            loop {
                let error = match append_once(&client, &keys, &encoded, uncertain).await {
                    Ok(Appended::Done(revision)) => return Ok(revision),
                    Ok(Appended::Moved) => continue,
                    Err((at, error)) => {
                        uncertain = at.or(uncertain);
                        error
                    }
                };
                retry.after("append to the audit log", error).await?;
            }
        })
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.newest(self.keys.audits(), limit)
    }

    fn put_node_state(&self, node: &str, record: &NodeStateRecord) -> Result<Revision, StoreError> {
        self.put_node_states(&[(node.to_owned(), record.clone())])
    }

    fn put_node_states(
        &self,
        states: &[(String, NodeStateRecord)],
    ) -> Result<Revision, StoreError> {
        let puts = states
            .iter()
            .map(|(node, record)| Ok((self.keys.node(node), encode(record)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        if puts.is_empty() {
            return self.revision();
        }
        self.put_all(puts)
    }

    fn node_states(&self) -> Result<BTreeMap<String, NodeStateRecord>, StoreError> {
        let prefix = self.keys.nodes();
        let mut out = BTreeMap::new();
        for (key, value) in self.range_all(prefix.clone())? {
            let node = key
                .strip_prefix(prefix.as_bytes())
                .and_then(|node| std::str::from_utf8(node).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("node key {key:?}")))?;
            out.insert(node.to_owned(), decode(&value)?);
        }
        Ok(out)
    }

    fn put_record(&self, space: &str, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        self.put_all(vec![(self.keys.record(space, key)?, value.to_vec())])
    }

    fn put_records_fenced(
        &self,
        fence: &Fence,
        space: &str,
        records: &[(String, Vec<u8>)],
    ) -> Result<Revision, StoreError> {
        let puts = (records.iter())
            .map(|(key, value)| Ok((self.keys.record(space, key)?, value.clone())))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let Fence::Key {
            key: leader,
            revision,
        } = fence.clone()
        else {
            return self.put_all(puts);
        };
        let mut at = 0;
        // Each transaction checks the fence: one refused leaves the later ones unwritten.
        for chunk in puts.chunks(MAX_TXN_OPS) {
            let (chunk, guard) = (chunk.to_vec(), leader.clone());
            let (written, revision_now) = self.request("write as the leader", move |client| {
                let mut kv = client.kv_client();
                let ops: Vec<TxnOp> = (chunk.iter())
                    .map(|(key, value)| TxnOp::put(key.as_str(), value.clone(), None))
                    .collect();
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        guard.as_str(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then(ops);
                async move {
                    let response = kv.txn(txn).await?;
                    Ok((response.succeeded(), header_revision(response.header())))
                }
            })?;
            if !written {
                return Err(StoreError::Deposed { key: leader });
            }
            at = revision_now;
        }
        if puts.is_empty() {
            return self.revision();
        }
        Ok(at)
    }

    fn delete_record(&self, space: &str, key: &str) -> Result<Revision, StoreError> {
        let key = self.keys.record(space, key)?;
        self.request("delete a record", move |client| {
            let mut kv = client.kv_client();
            let key = key.clone();
            async move {
                let response = kv.delete(key, None).await?;
                Ok(header_revision(response.header()))
            }
        })
    }

    fn records(&self, space: &str) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let prefix = self.keys.records(space)?;
        let mut out = BTreeMap::new();
        for (key, value) in self.range_all(prefix.clone())? {
            let name = key
                .strip_prefix(prefix.as_bytes())
                .and_then(|name| std::str::from_utf8(name).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("record key {key:?}")))?;
            out.insert(name.to_owned(), value);
        }
        Ok(out)
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        let prefix = self.keys.prefix.clone();
        self.request("read the revision", move |client| {
            let mut kv = client.kv_client();
            let prefix = prefix.clone();
            async move {
                let options = GetOptions::new().with_prefix().with_count_only();
                let response = kv.get(prefix, Some(options)).await?;
                Ok(header_revision(response.header()))
            }
        })
    }

    fn watch(&self) -> broadcast::Receiver<(Revision, Change)> {
        self.changes.subscribe()
    }
}

/// Commits `bytes` (a whole version or the header of its parts) as config `version` if the
/// latest is exactly `version - 1`, with `latest` moved in the same transaction; retried while
/// etcd is transiently unavailable, a try that may have committed checked before the next.
async fn commit_version(
    client: &Client,
    key: &str,
    latest: &str,
    version: u64,
    bytes: &[u8],
    timeout: std::time::Duration,
) -> Result<Revision, StoreError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut retry = Retry::new(deadline);
    loop {
        // The guard: the latest version is exactly `version - 1` (absent for 1).
        let guard = match version.checked_sub(1) {
            Some(0) | None => Compare::version(latest, CompareOp::Equal, 0),
            Some(previous) => Compare::value(latest, CompareOp::Equal, previous.to_string()),
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([
                TxnOp::put(key, bytes.to_vec(), None),
                TxnOp::put(latest, version.to_string(), None),
            ])
            .or_else([TxnOp::get(latest, None)]);
        let error = match client.kv_client().txn(txn).await {
            Ok(response) if response.succeeded() => {
                return Ok(header_revision(response.header()));
            }
            Ok(response) => {
                let actual = txn_latest(&response)?;
                // A try that failed in transit may have committed: then this is ours.
                if retry.tried && actual == version && stored(client, key, bytes).await {
                    return Ok(header_revision(response.header()));
                }
                return Err(StoreError::Conflict {
                    expected: version,
                    actual,
                });
            }
            Err(e) => e,
        };
        retry.after("write a config version", error).await?;
    }
}

/// The outcome of one append try.
enum Appended {
    Done(Revision),
    /// Someone else appended in between: read the sequence again.
    Moved,
}

/// Reads the sequence and appends `encoded` after it in one transaction guarded by the
/// sequence's modification revision. `uncertain` is the sequence a failed earlier try read: if
/// that try did commit, the entries are found there and not written again. On an error, the
/// sequence this try read, if it got that far.
async fn append_once(
    client: &Client,
    keys: &Keys,
    encoded: &[Vec<u8>],
    uncertain: Option<u64>,
) -> Result<Appended, (Option<u64>, etcd_client::Error)> {
    let mut kv = client.kv_client();
    let response = kv
        .get(keys.audit_last(), None)
        .await
        .map_err(|e| (None, e))?;
    let (last, guard) = match response.kvs().first() {
        Some(kv) => {
            let last = std::str::from_utf8(kv.value())
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| {
                    (
                        None,
                        etcd_client::Error::InvalidArgs(format!(
                            "{} holds {:?}, not a number",
                            keys.audit_last(),
                            kv.value()
                        )),
                    )
                })?;
            (last, kv.mod_revision())
        }
        None => (0, 0),
    };
    if let Some(before) = uncertain
        && last == before + encoded.len() as u64
    {
        let mut all_there = true;
        for (sequence, bytes) in (before + 1..).zip(encoded) {
            all_there &= stored(client, &keys.audit(sequence), bytes).await;
        }
        if all_there {
            return Ok(Appended::Done(header_revision(response.header())));
        }
    }
    let mut ops: Vec<TxnOp> = (last + 1..)
        .zip(encoded)
        .map(|(sequence, bytes)| TxnOp::put(keys.audit(sequence), bytes.clone(), None))
        .collect();
    let next = last + encoded.len() as u64;
    ops.push(TxnOp::put(keys.audit_last(), next.to_string(), None));
    let txn = Txn::new()
        .when([Compare::mod_revision(
            keys.audit_last(),
            CompareOp::Equal,
            guard,
        )])
        .and_then(ops);
    match kv.txn(txn).await {
        Ok(response) if response.succeeded() => {
            Ok(Appended::Done(header_revision(response.header())))
        }
        Ok(_) => Ok(Appended::Moved),
        Err(e) => Err((Some(last), e)),
    }
}

/// Whether `key` holds exactly `value` (false on any error: the caller then does not assume).
async fn stored(client: &Client, key: &str, value: &[u8]) -> bool {
    match client.kv_client().get(key, None).await {
        Ok(response) => response.kvs().first().is_some_and(|kv| kv.value() == value),
        Err(_) => false,
    }
}

/// The latest version a failed config guard read (`or_else` get of `meta/config-latest`).
fn txn_latest(response: &etcd_client::TxnResponse) -> Result<u64, StoreError> {
    for op in response.op_responses() {
        if let etcd_client::TxnOpResponse::Get(get) = op {
            return match get.kvs().first() {
                None => Ok(0),
                Some(kv) => std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt("meta/config-latest is not a number".into())
                    }),
            };
        }
    }
    Err(StoreError::Backend(
        "etcd answered a failed transaction without its read".into(),
    ))
}

/// Feeds [`Store::watch`] from etcd's watch of the prefix, from `revision` on, for as long as
/// the store's runtime runs; a broken watch is resumed after the last revision seen, and one
/// whose history was compacted from what is left (those changes are not reported).
async fn feed_changes(
    client: Client,
    keys: Keys,
    revision: u64,
    changes: broadcast::Sender<(Revision, Change)>,
) {
    let mut from = revision as i64;
    loop {
        let compacted = follow_prefix(&client, &keys.prefix, from, |events| {
            // One change per key and revision, and one audit change per revision (an append of
            // several records is one transaction).
            let mut audit_at = None;
            for event in events {
                let Some(kv) = event.kv() else { continue };
                let at = kv.mod_revision() as u64;
                let change = match keys.change(kv.key()) {
                    Some(Change::ConfigVersion(_)) if event.event_type() == EventType::Delete => {
                        continue;
                    }
                    Some(Change::Audit) if audit_at == Some(at) => continue,
                    Some(Change::Audit) => {
                        audit_at = Some(at);
                        Change::Audit
                    }
                    Some(change) => change,
                    None => continue,
                };
                // No receivers is fine: nobody is watching.
                let _ = changes.send((at, change));
            }
        })
        .await;
        tracing::warn!(
            from,
            compacted,
            "etcd compacted changes the watch had not seen; they are not reported"
        );
        from = compacted;
    }
}

/// Follows etcd's watch of every key under `prefix` from revision `from`, handing each
/// response's events to `on_events` in etcd's order. A broken or refused watch is resumed after
/// the last revision seen (retried with backoff), so nothing is skipped; returns only when the
/// history it needs was compacted, with the revision the history now starts at. Responses are
/// fragmented, so none exceeds the client's decoding limit (a batch of large values, the parts
/// of a config version, a watch catching up).
pub(crate) async fn follow_prefix(
    client: &Client,
    prefix: &str,
    mut from: i64,
    mut on_events: impl FnMut(&[etcd_client::Event]),
) -> i64 {
    let mut backoff = Duration::from_millis(50);
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_fragment()
            .with_start_revision(from);
        let mut stream = match client.watch_client().watch(prefix, Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("etcd watch: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("etcd watch broken: {e}");
                    break;
                }
            };
            backoff = Duration::from_millis(50);
            if response.compact_revision() > 0 {
                return response.compact_revision();
            }
            if response.canceled() {
                tracing::debug!(reason = response.cancel_reason(), "etcd watch canceled");
                break;
            }
            let events = response.events();
            if let Some(last) = events
                .iter()
                .filter_map(|e| e.kv())
                .map(|kv| kv.mod_revision())
                .max()
            {
                from = from.max(last + 1);
            }
            on_events(events);
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Retries `request` while etcd is transiently unavailable, until `timeout` has passed.
async fn retrying<T, F, Fut>(
    what: &'static str,
    timeout: Duration,
    request: F,
) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut retry = Retry::new(tokio::time::Instant::now() + timeout);
    loop {
        match request().await {
            Ok(value) => return Ok(value),
            Err(error) => retry.after(what, error).await?,
        }
    }
}

/// Backoff between tries of one call, bounded by its deadline.
struct Retry {
    deadline: tokio::time::Instant,
    delay: Duration,
    /// Whether a try has failed already.
    tried: bool,
}

impl Retry {
    fn new(deadline: tokio::time::Instant) -> Retry {
        Retry {
            deadline,
            delay: Duration::from_millis(25),
            tried: false,
        }
    }

    /// Waits before the next try if `error` is transient and time is left; else the error.
    async fn after(
        &mut self,
        what: &'static str,
        error: etcd_client::Error,
    ) -> Result<(), StoreError> {
        self.tried = true;
        let now = tokio::time::Instant::now();
        if !transient(&error) || now + self.delay > self.deadline {
            return Err(etcd_error(what, &error));
        }
        tracing::debug!(
            "etcd: cannot {what} yet ({error}); retrying in {:?}",
            self.delay
        );
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_millis(500));
        Ok(())
    }
}

/// Whether trying again may succeed: the cluster or a member was unreachable or without a
/// leader, not a refusal of the request itself.
fn transient(error: &etcd_client::Error) -> bool {
    use tonic::Code;
    match error {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

fn etcd_error(what: &str, error: &etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd: cannot {what}: {error}"))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map(|h| h.revision().max(0) as u64).unwrap_or(0)
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the key space.
    vec![0]
}

fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions, StoreError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(config.request_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        // A member without a leader answers at once instead of holding the request.
        .with_require_leader(true);
    if let Some(tls) = &config.tls {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| StoreError::Backend(format!("etcd TLS: {}: {e}", path.display())))
        };
        let mut tls_options =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
        if let Some((cert, key)) = &tls.identity {
            tls_options = tls_options.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls_options);
    }
    Ok(options)
}

/// The keys of the layout in the module doc.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn configs(&self) -> String {
        format!("{}config/", self.prefix)
    }

    fn config(&self, version: u64) -> String {
        format!("{}{version:020}", self.configs())
    }

    /// Where the parts of one write of `version` go.
    fn config_parts(&self, version: u64, token: &str) -> String {
        format!("{}config-parts/{version:020}/{token}/", self.prefix)
    }

    fn config_part(&self, version: u64, token: &str, index: usize) -> String {
        format!("{}{index:06}", self.config_parts(version, token))
    }

    fn config_latest(&self) -> String {
        format!("{}meta/config-latest", self.prefix)
    }

    fn audits(&self) -> String {
        format!("{}audit/", self.prefix)
    }

    fn audit(&self, sequence: u64) -> String {
        format!("{}{sequence:020}", self.audits())
    }

    fn audit_last(&self) -> String {
        format!("{}meta/audit-last", self.prefix)
    }

    fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }

    fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    fn node(&self, node: &str) -> String {
        format!("{}{node}", self.nodes())
    }

    fn records(&self, space: &str) -> Result<String, StoreError> {
        self.record(space, "")
    }

    fn record(&self, space: &str, key: &str) -> Result<String, StoreError> {
        Ok(format!(
            "{}records/{}",
            self.prefix,
            record_key(space, key)?
        ))
    }

    /// What a changed key under the prefix is (`None` for the guards under `meta/`).
    fn change(&self, key: &[u8]) -> Option<Change> {
        let rest = std::str::from_utf8(key.strip_prefix(self.prefix.as_bytes())?).ok()?;
        if let Some(version) = rest.strip_prefix("config/") {
            return version.parse().ok().map(Change::ConfigVersion);
        }
        if rest.starts_with("audit/") {
            return Some(Change::Audit);
        }
        if let Some(node) = rest.strip_prefix("nodes/") {
            return Some(Change::NodeState(node.to_owned()));
        }
        let (space, key) = rest.strip_prefix("records/")?.split_once('\0')?;
        Some(Change::Record(space.to_owned(), key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_tls_must_agree() {
        let tls = || {
            Some(EtcdTls {
                ca: "ca.pem".into(),
                identity: None,
            })
        };
        let http = vec!["http://127.0.0.1:2379".to_owned()];
        let https = vec![
            "https://etcd-1:2379".to_owned(),
            "https://etcd-2:2379/".into(),
        ];
        assert!(EtcdConfig::new(http.clone(), None).is_ok());
        assert!(EtcdConfig::new(https.clone(), tls()).is_ok());
        assert!(matches!(
            EtcdConfig::new(Vec::new(), None),
            Err(EtcdConfigError::NoEndpoints)
        ));
        assert!(matches!(
            EtcdConfig::new(https, None),
            Err(EtcdConfigError::NoCa)
        ));
        assert!(matches!(
            EtcdConfig::new(http, tls()),
            Err(EtcdConfigError::TlsWithoutHttps)
        ));
        assert!(matches!(
            EtcdConfig::new(vec!["http://a:1".into(), "https://b:2".into()], tls()),
            Err(EtcdConfigError::MixedSchemes)
        ));
        for bad in [
            "127.0.0.1:2379",
            "http://",
            "http://host",
            "http://h:1/path",
            "unix:///x",
        ] {
            assert!(
                matches!(
                    EtcdConfig::new(vec![bad.into()], None),
                    Err(EtcdConfigError::BadEndpoint(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_prefix_always_ends_with_a_slash() {
        let config = EtcdConfig::new(vec!["http://127.0.0.1:2379".into()], None).expect("config");
        assert_eq!(config.prefix(), DEFAULT_PREFIX);
        let config = config.with_prefix("/fleet-a").expect("prefix");
        assert_eq!(config.prefix(), "/fleet-a/");
        assert!(config.clone().with_prefix("").is_err());
        assert!(config.with_prefix("a\0b").is_err());
    }

    #[test]
    fn keys_sort_by_number_and_name_their_change() {
        let keys = Keys {
            prefix: "/hav/".into(),
        };
        assert!(keys.config(9) < keys.config(10));
        assert!(keys.audit(99) < keys.audit(100));
        assert_eq!(
            keys.change(keys.config(12).as_bytes()),
            Some(Change::ConfigVersion(12))
        );
        assert_eq!(keys.change(keys.audit(3).as_bytes()), Some(Change::Audit));
        assert_eq!(
            keys.change(keys.node("lb-1").as_bytes()),
            Some(Change::NodeState("lb-1".into()))
        );
        let record = keys.record("sla", "vip/10.0.0.1").expect("key");
        assert_eq!(
            keys.change(record.as_bytes()),
            Some(Change::Record("sla".into(), "vip/10.0.0.1".into()))
        );
        assert_eq!(keys.change(keys.config_latest().as_bytes()), None);
        assert_eq!(keys.change(b"/other/config/1"), None);
    }

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"/hav/"), b"/hav0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
