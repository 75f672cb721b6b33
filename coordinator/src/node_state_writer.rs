//! Write-behind to the store: what agents report, node states (each snapshot replaces the node's
//! pending record) and their transitions (appended to the audit log), and the SLA ledgers the
//! fleet view keeps (each change replaces the VIP's pending ledger). One task writes whatever is
//! pending in a single store transaction, then the next batch, starting commits at least
//! [`COMMIT_INTERVAL`] apart. An agent's stream therefore never waits for the disk, and a burst of
//! N reports (N agents connecting, or a fleet-wide failover) costs one commit per interval
//! instead of N fsyncs in a row; a report after a quiet spell is committed at once.
//!
//! Guarantees: for node states the last record submitted for a node is the one written; audit
//! entries are written in submission order; everything submitted before [`WriteBehind::close`]
//! is written before `close` returns, and before [`WriteBehind::flushed`] returns (or its write
//! failed and was logged). A report may be lost if the process dies before its batch
//! commits: reports are not decisions, and every agent sends a fresh snapshot when it reconnects.
//! Config versions and operators' audit entries do not go through here and stay committed before
//! their call returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::{AuditRecord, NodeStateRecord, Store, StoreError};

/// The least time from one commit's start to the next one's. What arrives meanwhile waits and is
/// written together: each commit rewrites the tree pages it touches and syncs the file, so at
/// 10,000 agents reconnecting, committing as fast as the disk allows cost a fifth of the
/// coordinator's CPU in page writes, page reads and fsyncs.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(50);

/// What a writer keeps pending between commits, and how it commits it.
pub trait Batch: Default + Send + 'static {
    type Item;
    /// What the batch holds, for the log.
    const WHAT: &'static str;
    fn push(&mut self, item: Self::Item);
    /// How many items are pending.
    fn count(&self) -> usize;
    fn write(self, store: &dyn Store) -> Result<(), StoreError>;
}

/// Node states: the latest record per node.
#[derive(Default)]
pub struct NodeStates(HashMap<String, NodeStateRecord>);

impl Batch for NodeStates {
    type Item = (String, NodeStateRecord);
    const WHAT: &'static str = "node states";
    fn push(&mut self, (node, record): Self::Item) {
        self.0.insert(node, record);
    }
    fn count(&self) -> usize {
        self.0.len()
    }
    fn write(self, store: &dyn Store) -> Result<(), StoreError> {
        let batch: Vec<_> = self.0.into_iter().collect();
        store.put_node_states(&batch).map(drop)
    }
}

/// Agents' transitions, as audit entries, in order.
#[derive(Default)]
pub struct Transitions(Vec<AuditRecord>);

impl Batch for Transitions {
    type Item = AuditRecord;
    const WHAT: &'static str = "agents' transitions";
    fn push(&mut self, record: AuditRecord) {
        self.0.push(record);
    }
    fn count(&self) -> usize {
        self.0.len()
    }
    fn write(self, store: &dyn Store) -> Result<(), StoreError> {
        store.append_audits(&self.0)?;
        // Logged once durable: a reader of the log then finds the entry in the history.
        for record in &self.0 {
            tracing::info!(who = %record.who, detail = %record.detail, "transition recorded");
        }
        Ok(())
    }
}

/// Node states reported by agents.
pub type NodeStateWriter = WriteBehind<NodeStates>;
/// Agents' transitions, for the audit log.
pub type TransitionWriter = WriteBehind<Transitions>;

/// Batches writes of `B` to a [`Store`].
pub struct WriteBehind<B: Batch> {
    shared: Arc<Pending<B>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Pending<B> {
    /// What waits for the next commit, and how many items were ever submitted.
    records: Mutex<(B, u64)>,
    closed: AtomicBool,
    wake: Notify,
    /// Asks the writer not to wait out the interval: a flush or a close waits for the commit.
    hurry: Notify,
    /// How many of the submitted items a commit has covered (written, or failed and logged).
    covered: watch::Sender<u64>,
}

impl<B: Batch> WriteBehind<B> {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        Self::with_interval(store, COMMIT_INTERVAL)
    }

    /// Starts the writer task with commits at least `interval` apart.
    fn with_interval(store: Arc<dyn Store>, interval: Duration) -> Self {
        let shared = Arc::new(Pending {
            records: Mutex::new((B::default(), 0)),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            hurry: Notify::new(),
            covered: watch::Sender::new(0),
        });
        let task = tokio::spawn(run(store, shared.clone(), interval));
        Self {
            shared,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues `item` for the next commit. Never waits.
    pub fn submit(&self, item: B::Item) {
        {
            let mut records = lock(&self.shared.records);
            records.0.push(item);
            records.1 += 1;
        }
        self.shared.wake.notify_one();
    }

    /// Returns once everything submitted before the call was committed (or its commit failed,
    /// which is logged): what a caller answers after is never ahead of what the store shows.
    /// The interval does not hold it up: the writer commits at once what it holds then.
    /// Returns at once after [`WriteBehind::close`].
    pub async fn flushed(&self) {
        let submitted = lock(&self.shared.records).1;
        let mut covered = self.shared.covered.subscribe();
        if *covered.borrow() < submitted {
            self.shared.hurry.notify_one();
        }
        let closed = &self.shared.closed;
        let _ = covered
            .wait_for(|covered| *covered >= submitted || closed.load(Ordering::SeqCst))
            .await;
    }

    /// Writes everything submitted so far and stops the task. Later submissions are ignored.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        self.shared.hurry.notify_one();
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run<B: Batch>(store: Arc<dyn Store>, pending: Arc<Pending<B>>, interval: Duration) {
    let mut last_commit: Option<Instant> = None;
    loop {
        pending.wake.notified().await;
        if let Some(last) = last_commit
            && !pending.closed.load(Ordering::SeqCst)
        {
            tokio::select! {
                () = tokio::time::sleep_until(last + interval) => {}
                () = pending.hurry.notified() => {}
            }
        }
        // Read before taking the batch: a close seen here has its records in this batch.
        let closing = pending.closed.load(Ordering::SeqCst);
        let (batch, submitted) = {
            let mut records = lock(&pending.records);
            (std::mem::take(&mut records.0), records.1)
        };
        let count = batch.count();
        if count > 0 {
            last_commit = Some(Instant::now());
            let store = store.clone();
            let written = tokio::task::spawn_blocking(move || batch.write(store.as_ref())).await;
            match written {
                Ok(Ok(())) => tracing::debug!(count, "{} written", B::WHAT),
                Ok(Err(e)) => tracing::warn!(count, "could not persist {}: {e}", B::WHAT),
                Err(e) => tracing::warn!(count, "writer of {} failed: {e}", B::WHAT),
            }
        }
        pending.covered.send_replace(submitted);
        if closing {
            return;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single insert, take or assignment: a panic cannot leave the
    // value half-updated, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;

    fn record(round: u64) -> NodeStateRecord {
        NodeStateRecord {
            software_version: "test".into(),
            protocol_version: 1,
            last_seen_unix_ms: round,
            snapshot: vec![round as u8],
            coordinator: "coord-a".into(),
        }
    }

    #[tokio::test]
    async fn a_burst_is_one_transaction_keeping_each_nodes_last_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).expect("open"));
        let writer = NodeStateWriter::start(store.clone());
        // Single-threaded runtime: the writer task runs only once this loop has submitted all.
        for round in 0..20 {
            for node in 0..50 {
                writer.submit((format!("lb-{node}"), record(round)));
            }
        }
        writer.close().await;
        let states = store.node_states().expect("states");
        assert_eq!(states.len(), 50);
        assert!(states.values().all(|s| *s == record(19)));
        assert_eq!(
            store.revision().expect("revision"),
            1,
            "one commit for the burst"
        );
    }

    #[tokio::test]
    async fn flushed_returns_once_what_was_submitted_before_is_in_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).expect("open"));
        let writer = NodeStateWriter::start(store.clone());
        writer.flushed().await;
        assert!(store.node_states().expect("states").is_empty());
        for round in 0..3 {
            writer.submit(("lb-1".into(), record(round)));
            writer.flushed().await;
            let states = store.node_states().expect("states");
            assert_eq!(states.get("lb-1"), Some(&record(round)), "round {round}");
        }
        writer.close().await;
        // Closed: a later submission is ignored and a flush does not wait for it.
        writer.submit(("lb-2".into(), record(9)));
        tokio::time::timeout(std::time::Duration::from_secs(5), writer.flushed())
            .await
            .expect("a flush after the close returns");
        assert!(!store.node_states().expect("states").contains_key("lb-2"));
    }

    #[tokio::test]
    async fn audit_entries_are_written_in_order_in_one_transaction() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).expect("open"));
        let writer = TransitionWriter::start(store.clone());
        for n in 0..30u64 {
            writer.submit(AuditRecord {
                unix_ms: n,
                who: "node lb-1".into(),
                action: "transition".into(),
                detail: format!("#{n}"),
                allowed: true,
            });
        }
        writer.close().await;
        let log = store.audit_log(100).expect("log");
        let order: Vec<u64> = log.iter().rev().map(|r| r.unix_ms).collect();
        assert_eq!(order, (0..30).collect::<Vec<_>>());
        assert_eq!(store.revision().expect("revision"), 1, "one commit");
    }

    #[tokio::test]
    async fn a_stream_of_reports_is_committed_once_per_interval_and_a_quiet_writer_at_once() {
        // Long enough that a slow host cannot stretch the 100 ms of reports below over it.
        let interval = Duration::from_secs(1);
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).expect("open"));
        let writer = NodeStateWriter::with_interval(store.clone(), interval);
        let started = Instant::now();
        writer.submit(("lb-1".into(), record(0)));
        writer.flushed().await;
        assert!(
            started.elapsed() < interval,
            "the first report waits for nothing"
        );
        assert_eq!(store.revision().expect("revision"), 1);
        // A report every 10 ms for 100 ms: committed as they came, that would be ten commits.
        for round in 1..=10 {
            writer.submit(("lb-1".into(), record(round)));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        writer.flushed().await;
        let commits = store.revision().expect("revision") - 1;
        assert!(
            (1..=2).contains(&commits),
            "{commits} commits for 100 ms of reports"
        );
        assert_eq!(store.node_states().expect("states")["lb-1"], record(10));
        // After a quiet spell, a report is committed at once again.
        tokio::time::sleep(interval).await;
        let quiet = Instant::now();
        writer.submit(("lb-2".into(), record(11)));
        writer.flushed().await;
        assert!(quiet.elapsed() < interval, "waited {:?}", quiet.elapsed());
        writer.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_submitted_while_a_batch_commits_are_written_by_close() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).expect("open"));
        let writer = NodeStateWriter::start(store.clone());
        for round in 0..200 {
            writer.submit((format!("lb-{}", round % 7), record(round)));
            // Let the writer take batches in between.
            tokio::task::yield_now().await;
        }
        writer.close().await;
        let states = store.node_states().expect("states");
        for node in 0..7u64 {
            let last = (0..200).rev().find(|r| r % 7 == node).expect("a round");
            assert_eq!(states[&format!("lb-{node}")], record(last));
        }
        let revision = store.revision().expect("revision");
        assert!((1..=200).contains(&revision), "{revision} commits");
    }
}
