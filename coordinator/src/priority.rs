//! Priority intents: an operator's wish that an instance (or every instance of a node) run at a
//! priority other than its configured one, for a while or until cleared.
//!
//! Guarantees: an intent is stored (and audited) before it is sent, so a node that is away, or
//! restarts, or reconnects through another coordinator gets it again on connect
//! ([`reapply`]); an expired intent is never sent and is dropped from the store the next time
//! intents are read; a node is told the TTL that remains, so its own copy lapses with the
//! coordinator's; clearing deletes before it tells the node. The agent keeps what it was told
//! in its state dir, so a restart without a coordinator keeps the intent too. A fleet without
//! intents costs a connecting agent no store read ([`IntentsWatch`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hav_proto::v1::{
    ClearOverride, ClearPriorityRequest, PriorityIntent, PriorityResponse, SetPriorityOverride,
    SetPriorityRequest, StateSnapshot, command,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::ControlError;
use crate::state::{Shared, blocking};
use crate::store::{Change, Revision};
use crate::unix_ms;

/// The store space of intents, keyed `<node>/<instance>`.
pub const PRIORITY_SPACE: &str = "priority";
/// The instance name of an intent for every instance of its node.
pub const ALL_INSTANCES: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    node: String,
    instance: String,
    priority: u8,
    /// 0: until cleared.
    expires_unix_ms: u64,
    reason: String,
    who: String,
    since_unix_ms: u64,
}

impl Stored {
    fn key(&self) -> String {
        format!("{}/{}", self.node, self.instance)
    }

    fn expired(&self, now_ms: u64) -> bool {
        self.expires_unix_ms != 0 && self.expires_unix_ms <= now_ms
    }

    /// What remains of its TTL at `now_ms` (`None`: until cleared).
    fn ttl_left(&self, now_ms: u64) -> Option<Duration> {
        (self.expires_unix_ms != 0)
            .then(|| Duration::from_millis(self.expires_unix_ms.saturating_sub(now_ms)))
    }

    fn to_proto(&self) -> PriorityIntent {
        PriorityIntent {
            node: self.node.clone(),
            instance: self.instance.clone(),
            priority: u32::from(self.priority),
            expires_unix_ms: self.expires_unix_ms,
            reason: self.reason.clone(),
            who: self.who.clone(),
            since_unix_ms: self.since_unix_ms,
        }
    }
}

/// Every intent in force, oldest node first; expired ones are deleted on the way.
pub async fn list(shared: &Arc<Shared>) -> Result<Vec<PriorityIntent>, ControlError> {
    Ok(current(shared)
        .await?
        .iter()
        .map(Stored::to_proto)
        .collect())
}

async fn current(shared: &Arc<Shared>) -> Result<Vec<Stored>, ControlError> {
    if shared.intents.known_empty() {
        return Ok(Vec::new());
    }
    let began = shared.intents.changes();
    let records = blocking(&shared.store, |s| s.records(PRIORITY_SPACE)).await?;
    if records.is_empty() {
        shared.intents.found_empty(began);
    }
    let now = unix_ms();
    let mut live = Vec::new();
    let mut expired = Vec::new();
    for (key, bytes) in records {
        match serde_json::from_slice::<Stored>(&bytes) {
            Ok(intent) if intent.expired(now) => expired.push(key),
            Ok(intent) => live.push(intent),
            Err(error) => tracing::warn!(%key, %error, "unreadable priority intent ignored"),
        }
    }
    if !expired.is_empty() {
        let deleted = blocking(&shared.store, move |s| {
            for key in &expired {
                s.delete_record(PRIORITY_SPACE, key)?;
            }
            Ok(())
        })
        .await;
        if let Err(error) = deleted {
            tracing::warn!(%error, "expired priority intents not deleted");
        }
    }
    Ok(live)
}

/// What this coordinator knows of the stored intents without reading them: whether the store
/// holds none. Only a read that found no intent, with no change of an intent since it began,
/// makes the store known to hold none; every change (this coordinator's before and after its
/// write, and every one the store's watch announces, another coordinator's included, or a lag
/// of the watch, which may have hidden one) makes the next read go to the store again. Without
/// a follower of the store's watch ([`follow_intents`]) nothing is ever known.
#[derive(Debug, Default)]
pub struct IntentsWatch {
    /// Intent changes seen so far.
    changes: AtomicU64,
    /// `changes + 1` as it was when a read that then found no intent began; 0: no such read.
    empty_since: AtomicU64,
    /// Whether the store's watch is being followed.
    following: AtomicBool,
}

impl IntentsWatch {
    /// Whether the store holds no intent, known without reading it.
    fn known_empty(&self) -> bool {
        self.following.load(Ordering::SeqCst)
            && self.empty_since.load(Ordering::SeqCst) == self.changes().wrapping_add(1)
    }

    /// The changes seen so far, taken before a read of the store.
    fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// A read that began after `changes` changes found no intent.
    fn found_empty(&self, changes: u64) {
        self.empty_since
            .store(changes.wrapping_add(1), Ordering::SeqCst);
    }

    /// An intent changed (or may have): the next read goes to the store.
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Follows the store's watch from this call on: every intent written or deleted, by any
/// coordinator sharing the store, and every lag, is a change for [`IntentsWatch`]. Once the
/// watch ends, the store is read for every connecting agent again.
pub fn follow_intents(shared: Arc<Shared>) -> impl Future<Output = ()> + Send + 'static {
    let changes = shared.store.watch();
    shared.intents.following.store(true, Ordering::SeqCst);
    async move { shared.intents.follow(changes).await }
}

impl IntentsWatch {
    /// Counts every intent change (and lag) on `changes` until it ends; then nothing is known.
    async fn follow(&self, mut changes: broadcast::Receiver<(Revision, Change)>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match changes.recv().await {
                Ok((_, Change::Record(space, _))) if space == PRIORITY_SPACE => self.changed(),
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => self.changed(),
                Err(RecvError::Closed) => {
                    self.following.store(false, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// The instances `node` is known to run: from its session, else from its last stored report.
/// `None`: the fleet has never heard of the node.
async fn known_instances(
    shared: &Arc<Shared>,
    node: &str,
) -> Result<Option<BTreeSet<String>>, ControlError> {
    let live = shared
        .registry
        .connected()
        .into_iter()
        .find(|live| live.name == node);
    let snapshot = match live {
        Some(live) => live.snapshot,
        None => {
            let name = node.to_owned();
            let record =
                blocking(&shared.store, move |s| Ok(s.node_states()?.remove(&name))).await?;
            let Some(record) = record else {
                return Ok(None);
            };
            StateSnapshot::decode(record.snapshot.as_slice()).ok()
        }
    };
    Ok(Some(
        snapshot
            .map(|s| s.instances.into_iter().map(|i| i.name).collect())
            .unwrap_or_default(),
    ))
}

/// Stores the intent, audits it, and applies it to the node if it is connected.
pub async fn set(
    shared: &Arc<Shared>,
    who: &str,
    request: SetPriorityRequest,
) -> Result<PriorityResponse, ControlError> {
    let priority = u8::try_from(request.priority)
        .ok()
        .filter(|p| (1..=254).contains(p))
        .ok_or_else(|| ControlError::InvalidArgument {
            argument: "priority",
            reason: format!(
                "{} is not 1..254 (255 is the address owner's, 0 means resign)",
                request.priority
            ),
        })?;
    let instance = if request.instance.is_empty() {
        ALL_INSTANCES.to_owned()
    } else {
        request.instance.clone()
    };
    let Some(known) = known_instances(shared, &request.node).await? else {
        return Err(ControlError::InvalidArgument {
            argument: "node",
            reason: format!("no node `{}` has ever reported to the fleet", request.node),
        });
    };
    if instance != ALL_INSTANCES && !known.contains(&instance) {
        return Err(ControlError::InvalidArgument {
            argument: "instance",
            reason: format!(
                "node `{}` runs no instance `{instance}` (it runs: {})",
                request.node,
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let now = unix_ms();
    let intent = Stored {
        node: request.node.clone(),
        instance,
        priority,
        expires_unix_ms: match request.ttl_seconds {
            0 => 0,
            ttl => now + u64::from(ttl) * 1000,
        },
        reason: request.reason.clone(),
        who: who.to_owned(),
        since_unix_ms: now,
    };
    let (key, bytes) = (
        intent.key(),
        serde_json::to_vec(&intent).unwrap_or_default(),
    );
    shared.intents.changed();
    let written = blocking(&shared.store, move |s| {
        s.put_record(PRIORITY_SPACE, &key, &bytes)
    })
    .await;
    shared.intents.changed();
    written?;
    shared
        .audit(
            who,
            "priority-set",
            format!(
                "node {} instance {} priority {priority} ttl {}; reason: {}",
                intent.node,
                intent.instance,
                match request.ttl_seconds {
                    0 => "until cleared".to_owned(),
                    ttl => format!("{ttl}s"),
                },
                request.reason
            ),
            true,
        )
        .await;
    let (applied, error) = apply(shared, &intent, &known).await;
    Ok(PriorityResponse {
        intents: vec![intent.to_proto()],
        applied,
        error,
    })
}

/// Deletes the node's intent for `instance` (every intent of the node when empty), audits it,
/// and lifts the overrides on the node if it is connected.
pub async fn clear(
    shared: &Arc<Shared>,
    who: &str,
    request: ClearPriorityRequest,
) -> Result<PriorityResponse, ControlError> {
    let intents: Vec<Stored> = current(shared)
        .await?
        .into_iter()
        .filter(|intent| intent.node == request.node)
        .filter(|intent| request.instance.is_empty() || intent.instance == request.instance)
        .collect();
    if intents.is_empty() {
        return Err(ControlError::InvalidArgument {
            argument: "instance",
            reason: format!(
                "node `{}` has no priority intent{}",
                request.node,
                match request.instance.as_str() {
                    "" => String::new(),
                    instance => format!(" for instance `{instance}`"),
                }
            ),
        });
    }
    let keys: Vec<String> = intents.iter().map(Stored::key).collect();
    shared.intents.changed();
    let deleted = blocking(&shared.store, move |s| {
        for key in &keys {
            s.delete_record(PRIORITY_SPACE, key)?;
        }
        Ok(())
    })
    .await;
    shared.intents.changed();
    deleted?;
    for intent in &intents {
        shared
            .audit(
                who,
                "priority-clear",
                format!(
                    "node {} instance {} (was {}); reason: {}",
                    intent.node, intent.instance, intent.priority, request.reason
                ),
                true,
            )
            .await;
    }
    let known = known_instances(shared, &request.node)
        .await?
        .unwrap_or_default();
    let mut applied = true;
    let mut error = String::new();
    for intent in &intents {
        for instance in targets(intent, &known) {
            let action = command::Action::ClearOverride(ClearOverride { instance });
            match shared
                .registry
                .command(&intent.node, action, shared.command_timeout)
                .await
            {
                Ok(ack) if ack.ok => {}
                Ok(ack) => error = ack.error,
                Err(_) => applied = false,
            }
        }
    }
    Ok(PriorityResponse {
        intents: intents.iter().map(Stored::to_proto).collect(),
        applied: applied && error.is_empty(),
        error,
    })
}

/// The instances an intent applies to.
fn targets(intent: &Stored, known: &BTreeSet<String>) -> Vec<String> {
    if intent.instance == ALL_INSTANCES {
        known.iter().cloned().collect()
    } else {
        vec![intent.instance.clone()]
    }
}

/// Sends `intent` to its node: (whether it has it now, the node's refusal if any).
async fn apply(shared: &Arc<Shared>, intent: &Stored, known: &BTreeSet<String>) -> (bool, String) {
    let ttl = intent.ttl_left(unix_ms());
    let mut applied = true;
    let mut error = String::new();
    for instance in targets(intent, known) {
        let action = command::Action::SetPriorityOverride(SetPriorityOverride {
            instance,
            priority: u32::from(intent.priority),
            // At least a second: 0 would mean "until cleared".
            ttl_seconds: ttl.map_or(0, |ttl| {
                u32::try_from(ttl.as_secs().max(1)).unwrap_or(u32::MAX)
            }),
        });
        match shared
            .registry
            .command(&intent.node, action, shared.command_timeout)
            .await
        {
            Ok(ack) if ack.ok => {}
            Ok(ack) => error = ack.error,
            Err(_) => applied = false,
        }
    }
    (applied && error.is_empty(), error)
}

/// Sends `node` every intent in force for it (after it connected).
pub async fn reapply(shared: &Arc<Shared>, node: &str) {
    let intents = match current(shared).await {
        Ok(intents) => intents,
        Err(error) => {
            tracing::warn!(%node, %error, "priority intents not read");
            return;
        }
    };
    let intents: Vec<Stored> = intents.into_iter().filter(|i| i.node == node).collect();
    if intents.is_empty() {
        return;
    }
    // The instances come from the node's first report, which follows its Hello.
    let mut changes = shared.registry.watch_changes();
    let reported = |shared: &Shared| {
        (shared.registry.connected().iter())
            .any(|live| live.name == node && live.snapshot.is_some())
    };
    let waited = tokio::time::timeout(shared.command_timeout, async {
        while !reported(shared) {
            if changes.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    if waited.is_err() {
        tracing::warn!(%node, "no report from the node: priority intents not applied");
        return;
    }
    let known = match known_instances(shared, node).await {
        Ok(known) => known.unwrap_or_default(),
        Err(error) => {
            tracing::warn!(%node, %error, "priority intents not applied");
            return;
        }
    };
    for intent in &intents {
        match apply(shared, intent, &known).await {
            (true, _) => tracing::info!(
                %node,
                instance = %intent.instance,
                priority = intent.priority,
                "priority intent applied on connect"
            ),
            (false, error) => tracing::warn!(
                %node,
                instance = %intent.instance,
                %error,
                "priority intent not applied on connect"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(expires_unix_ms: u64) -> Stored {
        Stored {
            node: "a".into(),
            instance: ALL_INSTANCES.into(),
            priority: 50,
            expires_unix_ms,
            reason: String::new(),
            who: "ops".into(),
            since_unix_ms: 0,
        }
    }

    #[test]
    fn expiry_and_the_ttl_left() {
        assert!(!stored(0).expired(u64::MAX), "until cleared");
        assert_eq!(stored(0).ttl_left(5), None);
        assert!(stored(10_000).expired(10_000));
        assert_eq!(stored(10_000).ttl_left(4_000), Some(Duration::from_secs(6)));
        assert_eq!(stored(10_000).ttl_left(12_000), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn the_store_is_known_to_hold_no_intent_only_until_one_changes_anywhere() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::RedbStore::open(dir.path()).expect("open");
        let watch = Arc::new(IntentsWatch::default());
        // Without a follower of the store's watch, nothing is ever known.
        watch.found_empty(watch.changes());
        assert!(!watch.known_empty());
        let changes = crate::store::Store::watch(&store);
        watch.following.store(true, Ordering::SeqCst);
        let follower = tokio::spawn({
            let watch = watch.clone();
            async move { watch.follow(changes).await }
        });
        watch.found_empty(watch.changes());
        assert!(watch.known_empty());
        // A read that began before a change (this coordinator's write) proves nothing.
        let began = watch.changes();
        watch.changed();
        watch.found_empty(began);
        assert!(!watch.known_empty());
        // An intent written by another coordinator sharing the store, seen on the watch.
        watch.found_empty(watch.changes());
        crate::store::Store::put_record(&store, PRIORITY_SPACE, "a/VI_1", b"{}").expect("put");
        tokio::time::timeout(Duration::from_secs(5), async {
            while watch.known_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the watch announces the intent");
        follower.abort();
    }

    #[test]
    fn an_intent_for_every_instance_targets_each_known_one() {
        let known: BTreeSet<String> = ["VI_1".to_owned(), "VI_2".to_owned()].into();
        assert_eq!(targets(&stored(0), &known), ["VI_1", "VI_2"]);
        let mut one = stored(0);
        one.instance = "VI_2".into();
        assert_eq!(targets(&one, &known), ["VI_2"]);
        assert_eq!(one.key(), "a/VI_2");
    }
}
