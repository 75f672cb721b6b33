//! The relay's writes to etcd, in the order they were asked for: puts under the membership
//! lease gathered into transactions (at most [`MAX_TXN_OPS`] operations, no key twice), and
//! guarded deletes, each its own transaction (etcd compares guard a whole transaction), sent
//! together so a storm of ended sessions costs round trips in parallel, not in series.
//!
//! Guarantees: a write is applied after every write asked for before it, except that guarded
//! deletes asked one after another may land in any order among themselves (each names a
//! different announcement); a put made while this coordinator holds no membership lease is
//! refused (`NoLease`), never written without one; a write etcd does not take within
//! [`WRITE_TIMEOUT`] is dropped and logged (the lease it was under is then lost too).

use std::collections::HashSet;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::{mpsc, oneshot, watch};

/// etcd refuses a transaction of more operations than its `--max-txn-ops` (128 by default).
const MAX_TXN_OPS: usize = 128;
/// How long one transaction is tried for.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a put was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("this coordinator holds no membership lease (etcd unreachable?)")]
    NoLease,
    #[error("etcd: {0}")]
    Etcd(String),
}

/// One write.
pub(crate) enum Write {
    /// Puts `value` at `key` under the membership lease; the revision it was written at goes to
    /// `done`.
    Put {
        key: String,
        value: Vec<u8>,
        done: Option<oneshot::Sender<Result<i64, WriteError>>>,
    },
    /// Deletes `key`.
    Delete { key: String },
    /// Deletes `key` if it was last written at `revision`.
    DeleteIf { key: String, revision: i64 },
}

impl Write {
    fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key } | Write::DeleteIf { key, .. } => key,
        }
    }
}

/// Writes what `queue` brings until every sender is gone.
pub(crate) async fn run(
    client: Client,
    lease: watch::Receiver<Option<i64>>,
    mut queue: mpsc::UnboundedReceiver<Write>,
) {
    let mut carried: Option<Write> = None;
    loop {
        let first = match carried.take() {
            Some(write) => write,
            None => match queue.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        if matches!(first, Write::DeleteIf { .. }) {
            // A run of guarded deletes, sent together.
            let mut deletes = vec![first];
            while deletes.len() < MAX_TXN_OPS {
                match queue.try_recv() {
                    Ok(write @ Write::DeleteIf { .. }) => deletes.push(write),
                    Ok(other) => {
                        carried = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let sends = deletes.into_iter().map(|write| {
                let client = client.clone();
                async move {
                    if let Write::DeleteIf { key, revision } = write {
                        let txn = Txn::new()
                            .when([Compare::mod_revision(
                                key.as_str(),
                                CompareOp::Equal,
                                revision,
                            )])
                            .and_then([TxnOp::delete(key.as_str(), None)]);
                        if let Err(e) = commit(&client, txn).await {
                            tracing::debug!(%key, "relay: announcement not withdrawn: {e}");
                        }
                    }
                }
            });
            futures::future::join_all(sends).await;
            continue;
        }
        // A batch of puts and plain deletes, no key twice.
        let mut batch = vec![first];
        let mut keys: HashSet<String> = batch.iter().map(|w| w.key().to_owned()).collect();
        while batch.len() < MAX_TXN_OPS {
            match queue.try_recv() {
                Ok(write)
                    if matches!(write, Write::DeleteIf { .. }) || keys.contains(write.key()) =>
                {
                    carried = Some(write);
                    break;
                }
                Ok(write) => {
                    keys.insert(write.key().to_owned());
                    batch.push(write);
                }
                Err(_) => break,
            }
        }
        let held = *lease.borrow();
        write_batch(&client, held, batch).await;
    }
}

/// Writes one batch in one transaction and tells each put's sender how it went.
async fn write_batch(client: &Client, lease: Option<i64>, batch: Vec<Write>) {
    let mut ops = Vec::with_capacity(batch.len());
    let mut done = Vec::new();
    for write in batch {
        match write {
            Write::Put {
                key,
                value,
                done: reply,
            } => match lease {
                Some(lease) => {
                    ops.push(TxnOp::put(
                        key,
                        value,
                        Some(PutOptions::new().with_lease(lease)),
                    ));
                    done.extend(reply);
                }
                None => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(WriteError::NoLease));
                    }
                }
            },
            Write::Delete { key } => ops.push(TxnOp::delete(key, None)),
            Write::DeleteIf { .. } => unreachable!("guarded deletes are never batched"),
        }
    }
    if ops.is_empty() {
        return;
    }
    let result = commit(client, Txn::new().and_then(ops)).await;
    if let Err(e) = &result {
        tracing::warn!("relay: a write to etcd failed: {e}");
    }
    for reply in done {
        let _ = reply.send(result.clone());
    }
}

/// Commits `txn`, tried again on transient errors for up to [`WRITE_TIMEOUT`]; its revision.
async fn commit(client: &Client, txn: Txn) -> Result<i64, WriteError> {
    let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
    let mut backoff = Duration::from_millis(20);
    loop {
        let mut kv = client.kv_client();
        let attempt = tokio::time::timeout_at(deadline, kv.txn(txn.clone())).await;
        match attempt {
            Ok(Ok(response)) => return Ok(response.header().map(|h| h.revision()).unwrap_or(0)),
            Ok(Err(e)) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::debug!("relay: etcd write failed, trying again: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Ok(Err(e)) => return Err(WriteError::Etcd(e.to_string())),
            Err(_) => return Err(WriteError::Etcd("no answer in time".into())),
        }
    }
}
