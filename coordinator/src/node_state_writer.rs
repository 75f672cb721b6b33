//! Write-behind for the node states agents report. Each snapshot replaces the node's pending
//! record in memory; one task writes whatever is pending in a single store transaction, then the
//! next batch. An agent's stream therefore never waits for the disk, and a burst of N snapshots
//! (N agents connecting, or a fleet-wide failover) costs a few commits instead of N fsyncs in a
//! row.
//!
//! Guarantees: the last record submitted for a node is the one written; every record submitted
//! before [`NodeStateWriter::close`] is written before `close` returns. A record may be lost if the
//! process dies before its batch commits: snapshots are reports, not decisions, and every agent
//! sends a fresh one when it reconnects. Config versions and the audit log do not go through here
//! and stay committed before their call returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::store::{NodeStateRecord, Store};

/// Batches node-state writes to a [`Store`].
pub struct NodeStateWriter {
    shared: Arc<Pending>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Pending {
    records: Mutex<HashMap<String, NodeStateRecord>>,
    closed: AtomicBool,
    wake: Notify,
}

impl NodeStateWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn Store>) -> NodeStateWriter {
        let shared = Arc::new(Pending {
            records: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let task = tokio::spawn(run(store, shared.clone()));
        NodeStateWriter {
            shared,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues `record` as `node`'s state, replacing any record not yet written. Never waits.
    pub fn submit(&self, node: &str, record: NodeStateRecord) {
        lock(&self.shared.records).insert(node.to_owned(), record);
        self.shared.wake.notify_one();
    }

    /// Writes everything submitted so far and stops the task. Later submissions are ignored.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(store: Arc<dyn Store>, pending: Arc<Pending>) {
    loop {
        pending.wake.notified().await;
        // Read before taking the batch: a close seen here has its records in this batch.
        let closing = pending.closed.load(Ordering::SeqCst);
        let batch: Vec<(String, NodeStateRecord)> = std::mem::take(&mut *lock(&pending.records))
            .into_iter()
            .collect();
        if !batch.is_empty() {
            let store = store.clone();
            let count = batch.len();
            let written = tokio::task::spawn_blocking(move || store.put_node_states(&batch)).await;
            match written {
                Ok(Ok(_)) => tracing::debug!(count, "node states written"),
                Ok(Err(e)) => tracing::warn!(count, "could not persist node states: {e}"),
                Err(e) => tracing::warn!(count, "node state writer failed: {e}"),
            }
        }
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
                writer.submit(&format!("lb-{node}"), record(round));
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_submitted_while_a_batch_commits_are_written_by_close() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).expect("open"));
        let writer = NodeStateWriter::start(store.clone());
        for round in 0..200 {
            writer.submit(&format!("lb-{}", round % 7), record(round));
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
