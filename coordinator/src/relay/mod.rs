//! Coordinators sharing an etcd store serve any agent: each announces in etcd the sessions it
//! holds, and follows what the others announce, so every coordinator's registry (and so its
//! fleet view, which the leader's singletons act on) holds the whole fleet; a command for an
//! agent connected elsewhere, and the agents' events, pass through etcd (`wire.rs` has the
//! keys).
//!
//! Guarantees:
//! - What a coordinator announces lives under its membership lease (`lease.rs`): if it dies or
//!   loses etcd, everything it announced is gone within the lease's TTL, and its agents' nodes
//!   are disconnected in every other coordinator's view from that moment. A coordinator
//!   without a lease serves no agent: it ends their sessions, and they move to another.
//! - A session is announced (committed) before the agent is welcomed, so every report that
//!   agent makes reaches the others after its session; a session's end withdraws the
//!   announcement only if it is still this session's (a newer one elsewhere is left alone).
//! - Every coordinator follows every announcement in etcd's order (`inbound.rs`), from a read
//!   of all sessions and node states at one revision, then the watch from that revision; a
//!   history compacted under it is read whole again, so nothing is missed for good.
//! - A relayed command is answered exactly once: with the agent's ack, or with why there is
//!   none (not connected there, no answer in time, queue full); the sender waits its own
//!   timeout plus the time the relay needs, and gives up with a timeout.

mod inbound;
mod lease;
mod wire;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use futures::future::BoxFuture;
use hav_proto::v1::{Command, CommandAck, FleetEvent, Hello};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::ControlError;
use crate::state::Shared;
use wire::{Envelope, RelayKeys, Reply, SessionRecord};
use writer::Write;

pub use writer::WriteError;

/// What a relayed command's sender waits beyond its own timeout: two etcd writes and two watch
/// deliveries.
const RELAY_MARGIN: Duration = Duration::from_secs(2);

/// This coordinator's side of the relay.
pub struct Relay {
    name: String,
    keys: RelayKeys,
    client: Client,
    /// The store's runtime, where the relay's tasks run.
    runtime: tokio::runtime::Handle,
    writes: mpsc::UnboundedSender<Write>,
    lease: watch::Receiver<Option<i64>>,
    /// Commands sent through another coordinator, by id, waiting for their answer.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_event: AtomicU64,
    stop: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
    inbound: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Relay {
    /// Starts holding a membership lease of `ttl` as `name` on `runtime` (the store's), and the
    /// writer. Nothing is followed until [`Relay::follow`].
    pub(crate) fn start(
        runtime: tokio::runtime::Handle,
        client: Client,
        prefix: &str,
        name: String,
        ttl: Duration,
    ) -> Arc<Relay> {
        let (lease_tx, lease) = watch::channel(None);
        let (stop, stop_rx) = oneshot::channel();
        runtime.spawn(lease::hold(
            client.clone(),
            name.clone(),
            ttl,
            lease_tx,
            stop_rx,
        ));
        let (writes, queue) = mpsc::unbounded_channel();
        runtime.spawn(writer::run(client.clone(), lease.clone(), queue));
        Arc::new(Relay {
            name,
            keys: RelayKeys::new(prefix),
            client,
            runtime,
            writes,
            lease,
            waiting: Mutex::new(HashMap::new()),
            next_event: AtomicU64::new(0),
            stop: Mutex::new(Some(stop)),
            inbound: Mutex::new(None),
        })
    }

    /// Follows the other coordinators' announcements into `shared`'s registry until
    /// [`Relay::shutdown`].
    pub fn follow(self: &Arc<Self>, shared: Arc<Shared>) {
        let task = self.runtime.spawn(inbound::run(self.clone(), shared));
        *lock(&self.inbound) = Some(task);
    }

    /// Whether this coordinator holds its membership lease (and so may serve agents).
    pub fn serving(&self) -> bool {
        self.lease.borrow().is_some()
    }

    /// The membership lease now and each change (`None`: not serving).
    pub fn membership(&self) -> watch::Receiver<Option<i64>> {
        self.lease.clone()
    }

    /// Waits until the membership lease is held, or `within` has passed; whether it is.
    pub async fn await_serving(&self, within: Duration) -> bool {
        let mut lease = self.lease.clone();
        tokio::time::timeout(within, lease.wait_for(Option::is_some))
            .await
            .is_ok_and(|held| held.is_ok())
    }

    /// Announces that this coordinator holds `node`'s session; the revision it was committed
    /// at.
    pub async fn announce(&self, node: &str, hello: &Hello, peer: &str) -> Result<i64, WriteError> {
        let record = SessionRecord {
            coordinator: self.name.clone(),
            peer: peer.to_owned(),
            connected_unix_ms: crate::unix_ms(),
            hello: hello.encode_to_vec(),
        };
        let value = serde_json::to_vec(&record).map_err(|e| WriteError::Etcd(e.to_string()))?;
        let (done, written) = oneshot::channel();
        self.write(Write::Put {
            key: self.keys.session(node),
            value,
            done: Some(done),
        });
        written.await.unwrap_or(Err(WriteError::NoLease))
    }

    /// Withdraws the announcement of `node`'s session made at `revision`, unless a newer one
    /// replaced it.
    pub fn withdraw(&self, node: &str, revision: i64) {
        self.write(Write::DeleteIf {
            key: self.keys.session(node),
            revision,
        });
    }

    /// Gives the membership lease up (every announcement ends at once) and stops following.
    pub async fn shutdown(&self) {
        let stop = lock(&self.stop).take();
        if let Some(stop) = stop {
            let (done, given_up) = oneshot::channel();
            if stop.send(done).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), given_up).await;
            }
        }
        if let Some(task) = lock(&self.inbound).take() {
            task.abort();
        }
    }

    fn write(&self, write: Write) {
        // The writer lives as long as the store's runtime, which outlives this relay.
        let _ = self.writes.send(write);
    }

    /// Answers command `id` of `to`, and removes the command.
    fn answer(&self, to: &str, id: u64, reply: Reply, command_key: String) {
        self.write(Write::Put {
            key: self.keys.reply(to, id),
            value: reply.encode(),
            done: None,
        });
        self.write(Write::Delete { key: command_key });
    }

    /// Hands an answer to the command waiting for it, and removes the answer.
    fn answered(&self, id: u64, reply: Reply, reply_key: String) {
        if let Some(waiter) = lock(&self.waiting).remove(&id) {
            let _ = waiter.send(reply);
        }
        self.write(Write::Delete { key: reply_key });
    }
}

impl crate::registry::Relay for Relay {
    fn command<'a>(
        &'a self,
        coordinator: &'a str,
        node: &'a str,
        command: Command,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CommandAck, ControlError>> {
        Box::pin(async move {
            let id = command.id;
            let (waiter, answer) = oneshot::channel();
            lock(&self.waiting).insert(id, waiter);
            let key = self.keys.command(coordinator, &self.name, id);
            let envelope = Envelope {
                node: node.to_owned(),
                timeout,
                command,
            };
            let (done, written) = oneshot::channel();
            self.write(Write::Put {
                key: key.clone(),
                value: envelope.encode(),
                done: Some(done),
            });
            if let Err(e) = written.await.unwrap_or(Err(WriteError::NoLease)) {
                lock(&self.waiting).remove(&id);
                return Err(ControlError::Relay {
                    node: node.to_owned(),
                    coordinator: coordinator.to_owned(),
                    why: e.to_string(),
                });
            }
            let answer = tokio::time::timeout(timeout + RELAY_MARGIN, answer).await;
            lock(&self.waiting).remove(&id);
            match answer {
                Ok(Ok(Reply::Ack(ack))) => Ok(ack),
                Ok(Ok(Reply::NotConnected)) => Err(ControlError::NotConnected(node.to_owned())),
                Ok(Ok(Reply::QueueFull)) => Err(ControlError::CommandQueueFull(node.to_owned())),
                Ok(Ok(Reply::Timeout)) => Err(ControlError::CommandTimeout(node.to_owned())),
                Ok(Err(_)) | Err(_) => {
                    self.write(Write::Delete { key });
                    Err(ControlError::CommandTimeout(node.to_owned()))
                }
            }
        })
    }

    fn event(&self, event: &FleetEvent) {
        if !self.serving() {
            return;
        }
        let seq = self.next_event.fetch_add(1, Ordering::Relaxed);
        self.write(Write::Put {
            key: self.keys.event(&self.name, seq),
            value: event.encode_to_vec(),
            done: None,
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is one map or option operation: a poisoned lock is still whole.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
