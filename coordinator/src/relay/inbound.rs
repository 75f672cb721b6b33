//! Following the other coordinators: their announcements into this coordinator's registry, the
//! commands they send through this one to its agents, and the answers to this one's.
//!
//! Guarantees: announcements are applied in etcd's order (sessions and node states are under
//! one prefix and one watch); a start, a watch that lost its history to a compaction and a
//! watch that broke are all followed from a consistent point: a whole read at one revision
//! (sessions gone meanwhile end here) then the watch from the next revision, or the watch
//! resumed from the revision after the last one seen. A value that does not decode is skipped
//! and logged, never applied half.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, KeyValue};
use hav_proto::v1::{FleetEvent, StateSnapshot};
use prost::Message;

use super::Relay;
use super::wire::{Envelope, Key, Reply, SessionRecord};
use crate::error::ControlError;
use crate::registry::{Registry, RemoteSession};
use crate::state::Shared;
use crate::store::NodeStateRecord;

/// Keys read per range request.
const PAGE: i64 = 500;

/// Follows until aborted.
pub(super) async fn run(relay: Arc<Relay>, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let revision = match sync(&relay, &shared.registry).await {
            Ok(revision) => revision,
            Err(e) => {
                tracing::debug!("relay: cannot read the announcements: {e}; again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        follow(&relay, &shared, revision + 1).await;
    }
}

/// Reads every session and node state at one revision into the registry; that revision.
async fn sync(relay: &Relay, registry: &Registry) -> Result<i64, etcd_client::Error> {
    let (revision, sessions) = range(&relay.client, relay.keys.sessions(), 0).await?;
    let (_, states) = range(&relay.client, relay.keys.nodes(), revision).await?;
    let mut present = HashSet::new();
    for kv in &sessions {
        if let Some(Key::Session(node)) = relay.keys.parse(kv.key())
            && let Some(session) = remote_session(relay, kv)
        {
            present.insert(node.clone());
            registry.remote_connected(&node, session);
        }
    }
    for (node, _) in registry.remote_sessions() {
        if !present.contains(&node) {
            registry.remote_disconnected(&node);
        }
    }
    for kv in &states {
        if let Some(Key::NodeState(node)) = relay.keys.parse(kv.key()) {
            node_state(relay, registry, &node, kv);
        }
    }
    Ok(revision)
}

/// Follows the watch from `next` until the history it needs was compacted.
async fn follow(relay: &Arc<Relay>, shared: &Arc<Shared>, next: i64) {
    let compacted =
        crate::store_etcd::follow_prefix(&relay.client, relay.keys.prefix(), next, |events| {
            for event in events {
                if let Some(kv) = event.kv() {
                    dispatch(relay, shared, event.event_type(), kv);
                }
            }
        })
        .await;
    tracing::warn!(
        from = next,
        compacted,
        "relay: etcd compacted what the watch had not seen; reading every announcement again"
    );
}

fn dispatch(relay: &Arc<Relay>, shared: &Arc<Shared>, kind: EventType, kv: &KeyValue) {
    let registry = &shared.registry;
    let Some(key) = relay.keys.parse(kv.key()) else {
        return;
    };
    match (key, kind) {
        (Key::Session(node), EventType::Put) => match remote_session(relay, kv) {
            Some(session) => registry.remote_connected(&node, session),
            None => registry.announcement_overwritten(&node, kv.mod_revision()),
        },
        (Key::Session(node), EventType::Delete) => registry.remote_disconnected(&node),
        (Key::NodeState(node), EventType::Put) => node_state(relay, registry, &node, kv),
        (Key::Command { to, from, id }, EventType::Put) if to == relay.name => {
            let command_key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(envelope) = Envelope::decode(kv.value()) else {
                tracing::warn!(%from, id, "relay: a command that does not decode, dropped");
                relay.answer(&from, id, Reply::NotConnected, command_key);
                return;
            };
            let (relay, shared) = (relay.clone(), shared.clone());
            relay.runtime.clone().spawn(async move {
                let reply = deliver(&shared, envelope).await;
                relay.answer(&from, id, reply, command_key);
            });
        }
        (Key::Reply { to, id }, EventType::Put) if to == relay.name => {
            let reply_key = String::from_utf8_lossy(kv.key()).into_owned();
            match Reply::decode(kv.value()) {
                Some(reply) => relay.answered(id, reply, reply_key),
                None => tracing::warn!(id, "relay: an answer that does not decode, dropped"),
            }
        }
        (Key::Event { from }, EventType::Put) if from != relay.name => {
            match FleetEvent::decode(kv.value()) {
                Ok(event) => registry.publish_relayed(event),
                Err(e) => {
                    tracing::warn!(%from, "relay: an event that does not decode, dropped: {e}")
                }
            }
        }
        _ => {}
    }
}

/// Delivers a relayed command to its agent connected here; the answer for its sender.
///
/// An ack is answered only once the node state the agent sent before it (the snapshot showing
/// the command's effect) is in the store: the sender follows both in the store's order, so it
/// never holds an acknowledged command next to the node's old state.
async fn deliver(shared: &Shared, envelope: Envelope) -> Reply {
    let registry = &shared.registry;
    if !registry.is_local(&envelope.node) {
        return Reply::NotConnected;
    }
    match registry
        .deliver(&envelope.node, envelope.command, envelope.timeout)
        .await
    {
        Ok(ack) => {
            shared.node_states.flushed().await;
            Reply::Ack(ack)
        }
        Err(ControlError::CommandTimeout(_)) => Reply::Timeout,
        Err(ControlError::CommandQueueFull(_)) => Reply::QueueFull,
        Err(_) => Reply::NotConnected,
    }
}

/// Another coordinator's session announced in `kv` (`None`: this coordinator's own, or a value
/// that does not decode).
fn remote_session(relay: &Relay, kv: &KeyValue) -> Option<RemoteSession> {
    let record: SessionRecord = match serde_json::from_slice(kv.value()) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "relay: a session that does not decode, ignored: {e}");
            return None;
        }
    };
    if record.coordinator == relay.name {
        return None;
    }
    Some(RemoteSession {
        hello: record.hello().unwrap_or_default(),
        coordinator: record.coordinator,
        revision: kv.mod_revision(),
        peer: record.peer,
        connected_unix_ms: record.connected_unix_ms,
    })
}

/// A node state another coordinator wrote: the snapshot of that coordinator's session.
fn node_state(relay: &Relay, registry: &Registry, node: &str, kv: &KeyValue) {
    let Ok(record) = crate::store::decode::<NodeStateRecord>(kv.value()) else {
        return;
    };
    if record.coordinator.is_empty() || record.coordinator == relay.name {
        return;
    }
    if let Ok(snapshot) = StateSnapshot::decode(record.snapshot.as_slice()) {
        registry.remote_snapshot(
            node,
            &record.coordinator,
            snapshot,
            record.last_seen_unix_ms,
        );
    }
}

/// Every key under `prefix` at `revision` (0: now), page by page; the revision read.
async fn range(
    client: &Client,
    prefix: String,
    revision: i64,
) -> Result<(i64, Vec<KeyValue>), etcd_client::Error> {
    let end = crate::store_etcd::prefix_end(prefix.as_bytes());
    let mut from = prefix.into_bytes();
    let mut at = revision;
    let mut out = Vec::new();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(PAGE)
            .with_revision(at);
        let mut response = client.kv_client().get(from.clone(), Some(options)).await?;
        if at == 0 {
            at = response.header().map(|h| h.revision()).unwrap_or(0);
        }
        let more = response.more();
        let kvs = response.take_kvs();
        match kvs.last() {
            Some(last) if more => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => {
                out.extend(kvs);
                return Ok((at, out));
            }
        }
        out.extend(kvs);
    }
}
