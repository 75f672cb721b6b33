//! The live registry of agents: those connected here (their Hello, latest snapshot and command
//! queue) and, on a store shared with other coordinators, those connected to another, as the
//! relay ([`crate::relay`]) mirrors them; plus the event fan-out to watchers. All state is in
//! memory and guarded by one short-held mutex; nothing here awaits while holding it.
//!
//! Guarantees: a slow watcher lags (it is told how many events it missed) and never blocks an
//! agent; a node has one current session: a newer session of the same node, here or on another
//! coordinator (the later in the store's order), replaces the older one, and a replaced session
//! here has its command queue closed, which ends its stream; a command is answered by the ack
//! with its id or fails with a timeout, whichever coordinator holds the node's session. What the
//! fleet view is fed ([`Report`]s: sessions opening and ending, snapshots, transitions) is
//! published in the order the registry changed, each report naming its session, so a report of
//! an ended or replaced session is recognised. Presence events are published here, for local
//! and remote sessions alike, and never relayed: every coordinator derives them itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use hav_proto::v1::{
    Command, CommandAck, FleetEvent, Hello, NodePresence, Presence, StateSnapshot, Transition,
    command, fleet_event,
};
use tokio::sync::{broadcast, oneshot, watch};

use crate::command_queue::{CommandReceiver, CommandSender, TrySendError, command_queue};
use crate::error::ControlError;

/// Events buffered per watcher before it starts to lag.
pub const WATCH_BUFFER: usize = 1024;
/// Reports buffered for the fleet view before it lags and starts again from the registry
/// (a burst of every node's snapshot at a reconnect storm, or relayed in one watch batch).
const REPORT_BUFFER: usize = 16 * 1024;
/// Commands queued per agent before further commands are refused.
const COMMAND_QUEUE: usize = 32;
/// Marks the id of a session held by another coordinator (the rest is the store revision that
/// announced it); local ids count from 1 and never reach it.
const REMOTE_SESSION: u64 = 1 << 62;

/// An agent with an open session, as seen by ListNodes.
#[derive(Debug, Clone)]
pub struct LiveNode {
    pub name: String,
    /// Its session.
    pub session: u64,
    pub hello: Hello,
    pub peer: String,
    pub last_seen_unix_ms: u64,
    pub snapshot: Option<StateSnapshot>,
    /// The coordinator holding the session; `None`: this one.
    pub coordinator: Option<String>,
}

/// How a session is reached.
enum Link {
    /// Connected here.
    Local {
        commands: CommandSender,
        /// Commands sent and not yet acknowledged, by id: a few at most.
        pending: Vec<(u64, oneshot::Sender<CommandAck>)>,
        /// The store revision at which the relay announced it to the other coordinators.
        announced: Option<i64>,
    },
    /// Connected to another coordinator sharing the store, announced at `revision`.
    Remote { coordinator: String, revision: i64 },
}

struct Session {
    id: u64,
    live: LiveNode,
    link: Link,
}

/// How commands for agents connected to other coordinators, and the events this one publishes,
/// reach the other coordinators sharing the store ([`crate::relay`]).
pub trait Relay: Send + Sync {
    /// Sends `command` to `node` through `coordinator`, which holds its session; the ack, or
    /// why there is none, within `timeout`.
    fn command<'a>(
        &'a self,
        coordinator: &'a str,
        node: &'a str,
        command: Command,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CommandAck, ControlError>>;
    /// Passes an event published here on to the other coordinators' watchers.
    fn event(&self, event: &FleetEvent);
}

/// A session held by another coordinator, as the relay announces it.
#[derive(Debug, Clone)]
pub struct RemoteSession {
    pub coordinator: String,
    /// The store revision of the announcement: later ones replace earlier ones.
    pub revision: i64,
    pub hello: Hello,
    pub peer: String,
    pub connected_unix_ms: u64,
}

/// What the fleet view learns from agents, in order.
#[derive(Debug, Clone)]
pub enum Report {
    /// `session` of `node` opened (replacing any older one).
    Connected { node: String, session: u64 },
    /// A snapshot of the current session of `node`.
    Snapshot {
        node: String,
        session: u64,
        snapshot: StateSnapshot,
    },
    /// A transition the current session of `node` reported (after the snapshot showing it).
    Transition {
        node: String,
        session: u64,
        transition: Transition,
        unix_ms: u64,
    },
    /// The current session of `node` ended at `unix_ms` (not published for a session a newer
    /// one replaced).
    Disconnected {
        node: String,
        session: u64,
        unix_ms: u64,
    },
}

/// Agents (here and elsewhere) and the event bus.
pub struct Registry {
    /// Boxed: the map's table has a slot for every node and more, and a slot holds only a name
    /// and a pointer.
    sessions: Mutex<HashMap<String, Box<Session>>>,
    next_id: AtomicU64,
    /// Command ids, from a random start: unique across the coordinators sharing a store, so a
    /// relayed command keeps its id (its exec output events carry it) on every hop.
    next_command: AtomicU64,
    events: broadcast::Sender<FleetEvent>,
    /// Sessions, snapshots and transitions in the order the registry saw them, for the fleet view.
    reports: broadcast::Sender<Report>,
    /// Bumped whenever a session or a snapshot changes: awaiting a fleet state change.
    changes: watch::Sender<u64>,
    /// Events published so far (for the metrics).
    published: AtomicU64,
    /// Set when the coordinator stops: its watchers end after the events published until then,
    /// so none is published after (a session ended by the stop is not a node's disconnection).
    closed: AtomicBool,
    /// WatchEvents streams open (for the metrics).
    watchers: Arc<AtomicUsize>,
    /// Agents connected here (for the metrics).
    local: AtomicUsize,
    /// The other coordinators sharing the store, once attached.
    relay: OnceLock<Arc<dyn Relay>>,
    /// The latest announcement of each node's session by another coordinator, until withdrawn
    /// or overwritten (whether or not it is the current session here). Locked after `sessions`.
    announcements: Mutex<HashMap<String, RemoteSession>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let (reports, _) = broadcast::channel(REPORT_BUFFER);
        Registry {
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            next_command: AtomicU64::new(random_start()),
            events,
            reports,
            changes: watch::Sender::new(0),
            published: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            watchers: Arc::new(AtomicUsize::new(0)),
            local: AtomicUsize::new(0),
            relay: OnceLock::new(),
            announcements: Mutex::new(HashMap::new()),
        }
    }

    /// Routes commands for agents connected elsewhere, and this coordinator's events, through
    /// `relay` from now on (set once).
    pub fn attach_relay(&self, relay: Arc<dyn Relay>) {
        let _ = self.relay.set(relay);
    }

    /// Registers a session for `node` connected here (replacing any older one, whose command
    /// queue closes) and returns its id and the receiving end of its command queue.
    pub fn register(&self, node: &str, hello: Hello, peer: String) -> (u64, CommandReceiver) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (commands, rx) = command_queue(COMMAND_QUEUE);
        let session = Session {
            id,
            live: LiveNode {
                name: node.to_owned(),
                session: id,
                hello,
                peer,
                last_seen_unix_ms: crate::unix_ms(),
                snapshot: None,
                coordinator: None,
            },
            link: Link::Local {
                commands,
                pending: Vec::new(),
                announced: None,
            },
        };
        self.open(node, session);
        (id, rx)
    }

    /// Makes `session` the current one of `node` and tells the fleet view and the watchers.
    fn open(&self, node: &str, session: Session) {
        let id = session.id;
        let local = matches!(session.link, Link::Local { .. });
        {
            let mut sessions = self.lock();
            if let Some(old) = sessions.insert(node.to_owned(), Box::new(session))
                && matches!(old.link, Link::Local { .. })
            {
                self.local.fetch_sub(1, Ordering::Relaxed);
            }
            if local {
                self.local.fetch_add(1, Ordering::Relaxed);
            }
            // Sent under the lock: reports go out in the order the sessions changed.
            let _ = self.reports.send(Report::Connected {
                node: node.to_owned(),
                session: id,
            });
        }
        self.changes.send_modify(|n| *n += 1);
        self.publish_local(presence(node, true));
    }

    /// Removes the session if it is still the current one for `node`; true if it was. A local
    /// session that another coordinator's later announcement has overtaken is followed by that
    /// session at once (the node moved; it did not go away).
    pub fn unregister(&self, node: &str, session: u64) -> bool {
        let mut sessions = self.lock();
        let Some(current) = sessions.get(node).filter(|s| s.id == session) else {
            return false;
        };
        let successor = match &current.link {
            Link::Local { announced, .. } => self.announcement_after(node, *announced),
            Link::Remote { .. } => None,
        };
        if let Some(old) = sessions.remove(node)
            && matches!(old.link, Link::Local { .. })
        {
            self.local.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(remote) = successor {
            drop(sessions);
            self.open(node, remote_session(node, remote));
            return true;
        }
        let _ = self.reports.send(Report::Disconnected {
            node: node.to_owned(),
            session,
            unix_ms: crate::unix_ms(),
        });
        drop(sessions);
        self.changes.send_modify(|n| *n += 1);
        self.publish_local(presence(node, false));
        true
    }

    /// Records that the relay announced the local `session` of `node` at `revision`; false if
    /// it is no longer the current one, or if another coordinator announced the node later
    /// meanwhile (the agent left this one: its session is replaced by that one).
    pub fn announced(&self, node: &str, session: u64, revision: i64) -> bool {
        let mut sessions = self.lock();
        match sessions.get_mut(node).map(Box::as_mut) {
            Some(Session {
                id,
                link: Link::Local { announced, .. },
                ..
            }) if *id == session => *announced = Some(revision),
            _ => return false,
        }
        let Some(later) = self.announcement_after(node, Some(revision)) else {
            return true;
        };
        drop(sessions);
        self.open(node, remote_session(node, later));
        false
    }

    /// A session of `node` another coordinator holds, as the relay announced it at
    /// `remote.revision`. It replaces the current session unless that one is newer: a local
    /// session whose announcement is still to be committed (decided then) or was committed
    /// later; a remote one announced at the same revision or later.
    pub fn remote_connected(&self, node: &str, remote: RemoteSession) {
        let sessions = self.lock();
        {
            let mut announcements = self.lock_announcements();
            if announcements
                .get(node)
                .is_some_and(|known| known.revision >= remote.revision)
            {
                return;
            }
            announcements.insert(node.to_owned(), remote.clone());
        }
        let newer_known = sessions.get(node).is_some_and(|s| match &s.link {
            Link::Local { announced, .. } => announced.is_none_or(|at| at > remote.revision),
            Link::Remote { revision, .. } => *revision >= remote.revision,
        });
        drop(sessions);
        if !newer_known {
            self.open(node, remote_session(node, remote));
        }
    }

    /// This coordinator's own announcement of `node` was committed at `revision`: any other's
    /// before it is overwritten.
    pub fn announcement_overwritten(&self, node: &str, revision: i64) {
        let mut announcements = self.lock_announcements();
        if announcements
            .get(node)
            .is_some_and(|known| known.revision < revision)
        {
            announcements.remove(node);
        }
    }

    /// The announcement of `node`'s session was withdrawn (or expired with its coordinator's
    /// lease): a remote current session ends; nothing if the node's current session is here.
    pub fn remote_disconnected(&self, node: &str) {
        let session = {
            let sessions = self.lock();
            self.lock_announcements().remove(node);
            sessions
                .get(node)
                .filter(|s| matches!(s.link, Link::Remote { .. }))
                .map(|s| s.id)
        };
        if let Some(session) = session {
            self.unregister(node, session);
        }
    }

    /// Another coordinator's announcement of `node` later than `revision` (`None`: any).
    fn announcement_after(&self, node: &str, revision: Option<i64>) -> Option<RemoteSession> {
        self.lock_announcements()
            .get(node)
            .filter(|remote| revision.is_none_or(|at| remote.revision > at))
            .cloned()
    }

    /// A snapshot `coordinator` stored for `node`: recorded if that coordinator holds the
    /// node's current session.
    pub fn remote_snapshot(
        &self,
        node: &str,
        coordinator: &str,
        snapshot: StateSnapshot,
        seen_ms: u64,
    ) {
        {
            let mut sessions = self.lock();
            let Some(s) = sessions.get_mut(node) else {
                return;
            };
            if !matches!(&s.link, Link::Remote { coordinator: c, .. } if c == coordinator) {
                return;
            }
            s.live.last_seen_unix_ms = seen_ms;
            s.live.snapshot = Some(snapshot.clone());
            let _ = self.reports.send(Report::Snapshot {
                node: node.to_owned(),
                session: s.id,
                snapshot,
            });
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// The remote sessions known now, by node, with the revision that announced each.
    pub fn remote_sessions(&self) -> Vec<(String, i64)> {
        self.lock()
            .iter()
            .filter_map(|(node, s)| match &s.link {
                Link::Remote { revision, .. } => Some((node.clone(), *revision)),
                Link::Local { .. } => None,
            })
            .collect()
    }

    /// Records a snapshot from the current session of `node` and returns that session's Hello
    /// (None, and nothing recorded, if the session is no longer the current one).
    pub fn update_snapshot(
        &self,
        node: &str,
        session: u64,
        snapshot: StateSnapshot,
    ) -> Option<Hello> {
        let hello = {
            let mut sessions = self.lock();
            let s = sessions.get_mut(node).filter(|s| s.id == session)?;
            s.live.last_seen_unix_ms = crate::unix_ms();
            s.live.snapshot = Some(snapshot.clone());
            let _ = self.reports.send(Report::Snapshot {
                node: node.to_owned(),
                session,
                snapshot,
            });
            s.live.hello.clone()
        };
        self.changes.send_modify(|n| *n += 1);
        Some(hello)
    }

    /// Passes a transition of the current session of `node` on to the fleet view (nothing if
    /// the session is no longer the current one).
    pub fn report_transition(
        &self,
        node: &str,
        session: u64,
        transition: Transition,
        unix_ms: u64,
    ) {
        let sessions = self.lock();
        if sessions.get(node).is_some_and(|s| s.id == session) {
            let _ = self.reports.send(Report::Transition {
                node: node.to_owned(),
                session,
                transition,
                unix_ms,
            });
        }
    }

    /// Delivers an ack to the command waiting for it (an unknown id is ignored).
    pub fn ack(&self, node: &str, session: u64, ack: CommandAck) {
        let waiter = match self.lock().get_mut(node).map(Box::as_mut) {
            Some(Session {
                id,
                link: Link::Local { pending, .. },
                ..
            }) if *id == session => take_pending(pending, ack.id),
            _ => None,
        };
        if let Some(waiter) = waiter {
            let _ = waiter.send(ack);
        }
    }

    /// Sends `action` to `node`, here or through the coordinator holding its session, and
    /// waits up to `timeout` for its ack.
    pub async fn command(
        &self,
        node: &str,
        action: command::Action,
        timeout: Duration,
    ) -> Result<CommandAck, ControlError> {
        let command = Command {
            id: self.next_command.fetch_add(1, Ordering::Relaxed),
            action: Some(action),
            // The caller's span (push, drain, ...) continues on the agent.
            trace_context: crate::telemetry::trace::current_context(),
        };
        let elsewhere = match self.lock().get(node).map(|s| &s.link) {
            None => return Err(ControlError::NotConnected(node.to_owned())),
            Some(Link::Remote { coordinator, .. }) => Some(coordinator.clone()),
            Some(Link::Local { .. }) => None,
        };
        match (elsewhere, self.relay.get()) {
            (Some(coordinator), Some(relay)) => {
                relay.command(&coordinator, node, command, timeout).await
            }
            (Some(_), None) => Err(ControlError::NotConnected(node.to_owned())),
            (None, _) => self.deliver(node, command, timeout).await,
        }
    }

    /// Sends `command` to `node` connected here and waits up to `timeout` for its ack.
    pub async fn deliver(
        &self,
        node: &str,
        command: Command,
        timeout: Duration,
    ) -> Result<CommandAck, ControlError> {
        let id = command.id;
        let (tx, rx) = oneshot::channel();
        let queue = match self.lock().get_mut(node).map(Box::as_mut) {
            Some(Session {
                link: Link::Local {
                    commands, pending, ..
                },
                ..
            }) => {
                take_pending(pending, id);
                pending.push((id, tx));
                commands.clone()
            }
            _ => return Err(ControlError::NotConnected(node.to_owned())),
        };
        queue.try_send(Box::new(command)).map_err(|e| match e {
            TrySendError::Full(_) => ControlError::CommandQueueFull(node.to_owned()),
            TrySendError::Closed(_) => ControlError::NotConnected(node.to_owned()),
        })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(ack)) => Ok(ack),
            // The session ended (its pending map was dropped) before answering.
            Ok(Err(_)) => Err(ControlError::NotConnected(node.to_owned())),
            Err(_) => {
                if let Some(Session {
                    link: Link::Local { pending, .. },
                    ..
                }) = self.lock().get_mut(node).map(Box::as_mut)
                {
                    take_pending(pending, id);
                }
                Err(ControlError::CommandTimeout(node.to_owned()))
            }
        }
    }

    /// Every agent with an open session, here or elsewhere.
    pub fn connected(&self) -> Vec<LiveNode> {
        self.lock().values().map(|s| s.live.clone()).collect()
    }

    /// How many agents are connected here.
    pub fn connected_count(&self) -> usize {
        self.local.load(Ordering::Relaxed)
    }

    /// How many watchers (WatchEvents streams) are open; the coordinator's own subscriptions
    /// (orchestration, drains) are not watchers.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Counts one watcher for as long as the returned guard lives.
    pub fn watcher(&self) -> WatcherGuard {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        WatcherGuard(self.watchers.clone())
    }

    /// How many events were published so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// The address `node` is connected from.
    pub fn peer_of(&self, node: &str) -> Option<String> {
        self.lock().get(node).map(|s| s.live.peer.clone())
    }

    /// Whether `node` has an open session, here or elsewhere.
    pub fn is_connected(&self, node: &str) -> bool {
        self.lock().contains_key(node)
    }

    /// Whether `node` is connected here.
    pub fn is_local(&self, node: &str) -> bool {
        self.lock()
            .get(node)
            .is_some_and(|s| matches!(s.link, Link::Local { .. }))
    }

    /// Announces an event to every watcher (no watcher is fine), here and, through the relay,
    /// on the other coordinators: agents' events and rollout progress. Presence and split
    /// brains are not relayed: every coordinator derives them from its own fleet view.
    pub fn publish(&self, event: FleetEvent) {
        if let Some(relay) = self.relay.get()
            && matches!(
                event.kind,
                Some(fleet_event::Kind::Agent(_) | fleet_event::Kind::Rollout(_))
            )
        {
            relay.event(&event);
        }
        self.publish_local(event);
    }

    /// Announces an event another coordinator published to the watchers here; a transition of
    /// a node whose current session that coordinator holds goes to the fleet view too.
    pub fn publish_relayed(&self, event: FleetEvent) {
        if let Some(fleet_event::Kind::Agent(agent)) = &event.kind
            && let Some(hav_proto::v1::event::Kind::Transition(transition)) = &agent.kind
        {
            let sessions = self.lock();
            if let Some(s) = sessions.get(&event.node)
                && matches!(s.link, Link::Remote { .. })
            {
                let _ = self.reports.send(Report::Transition {
                    node: event.node.clone(),
                    session: s.id,
                    transition: transition.clone(),
                    unix_ms: agent.unix_ms,
                });
            }
        }
        self.publish_local(event);
    }

    fn publish_local(&self, event: FleetEvent) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        self.published.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(event);
    }

    /// The coordinator is stopping: no event is published to the watchers from now on, so the
    /// ones they still receive are those published before.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Every report from now on, in order. A receiver that lags has missed reports: it can
    /// start again from [`Registry::connected`].
    pub fn subscribe_reports(&self) -> broadcast::Receiver<Report> {
        self.reports.subscribe()
    }

    /// Changes (sessions, snapshots) from now on: `changed().await` wakes on the next one.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Box<Session>>> {
        // A panic while holding this lock cannot leave the map half-updated (every critical
        // section is a single map operation), so a poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The announcements' lock, taken after `sessions` when both are held (poisoning as above).
    fn lock_announcements(&self) -> std::sync::MutexGuard<'_, HashMap<String, RemoteSession>> {
        self.announcements.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes the waiter for command `id` from `pending` and returns it.
fn take_pending(
    pending: &mut Vec<(u64, oneshot::Sender<CommandAck>)>,
    id: u64,
) -> Option<oneshot::Sender<CommandAck>> {
    let at = pending.iter().position(|(waiting, _)| *waiting == id)?;
    Some(pending.swap_remove(at).1)
}

/// The registry's session for a node another coordinator holds.
fn remote_session(node: &str, remote: RemoteSession) -> Session {
    let id = REMOTE_SESSION | remote.revision.unsigned_abs();
    Session {
        id,
        live: LiveNode {
            name: node.to_owned(),
            session: id,
            hello: remote.hello,
            peer: remote.peer,
            last_seen_unix_ms: remote.connected_unix_ms,
            snapshot: None,
            coordinator: Some(remote.coordinator.clone()),
        },
        link: Link::Remote {
            coordinator: remote.coordinator,
            revision: remote.revision,
        },
    }
}

/// A start for command ids that another coordinator's is most unlikely to come near (the
/// standard library's per-process random hash keys), never 0.
fn random_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(crate::unix_ms());
    (hasher.finish() >> 2).max(1)
}

/// The presence event of `node`'s session opening or ending.
fn presence(node: &str, connected: bool) -> FleetEvent {
    let state = if connected {
        NodePresence::Connected
    } else {
        NodePresence::Disconnected
    };
    FleetEvent {
        node: node.to_owned(),
        unix_ms: crate::unix_ms(),
        kind: Some(fleet_event::Kind::Presence(Presence {
            connected,
            state: state as i32,
        })),
    }
}

/// One open WatchEvents stream, counted until dropped.
pub struct WatcherGuard(Arc<AtomicUsize>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(coordinator: &str, revision: i64) -> RemoteSession {
        RemoteSession {
            coordinator: coordinator.into(),
            revision,
            hello: Hello::default(),
            peer: "192.0.2.1:5000".into(),
            connected_unix_ms: 1,
        }
    }

    fn drain(reports: &mut broadcast::Receiver<Report>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(report) = reports.try_recv() {
            out.push(match report {
                Report::Connected { node, session } => format!("connected {node} {session:x}"),
                Report::Disconnected { node, session, .. } => {
                    format!("disconnected {node} {session:x}")
                }
                Report::Snapshot { node, session, .. } => format!("snapshot {node} {session:x}"),
                Report::Transition { node, session, .. } => {
                    format!("transition {node} {session:x}")
                }
            });
        }
        out
    }

    /// A relay that answers every command with an ack naming the coordinator it went through.
    struct Answering;

    impl Relay for Answering {
        fn command<'a>(
            &'a self,
            coordinator: &'a str,
            _node: &'a str,
            command: Command,
            _timeout: Duration,
        ) -> BoxFuture<'a, Result<CommandAck, ControlError>> {
            Box::pin(async move {
                Ok(CommandAck {
                    id: command.id,
                    ok: true,
                    error: coordinator.to_owned(),
                })
            })
        }

        fn event(&self, _event: &FleetEvent) {}
    }

    #[test]
    fn the_later_announcement_of_a_node_wins_whichever_coordinator_made_it() {
        let registry = Registry::new();
        let mut reports = registry.subscribe_reports();
        let (local, mut queue) = registry.register("lb-1", Hello::default(), String::new());
        // Announced at 10: an older announcement elsewhere (say, of the session it left) loses.
        assert!(registry.announced("lb-1", local, 10));
        registry.remote_connected("lb-1", remote("coord-b", 7));
        assert!(registry.is_local("lb-1"));
        // A later one elsewhere: the agent moved; the session here is replaced, its queue closed.
        registry.remote_connected("lb-1", remote("coord-b", 12));
        assert!(!registry.is_local("lb-1") && registry.is_connected("lb-1"));
        assert!(queue.try_recv().is_err() && queue.is_closed());
        assert_eq!(
            registry.connected()[0].coordinator.as_deref(),
            Some("coord-b")
        );
        // Its end there (no newer session anywhere) disconnects the node.
        registry.remote_disconnected("lb-1");
        assert!(!registry.is_connected("lb-1"));
        assert_eq!(
            drain(&mut reports),
            vec![
                format!("connected lb-1 {local:x}"),
                format!("connected lb-1 {:x}", REMOTE_SESSION | 12),
                format!("disconnected lb-1 {:x}", REMOTE_SESSION | 12),
            ]
        );
        assert_eq!(registry.connected_count(), 0);
    }

    #[test]
    fn an_announcement_overtaking_one_still_being_committed_replaces_it_when_it_commits() {
        let registry = Registry::new();
        let (local, _queue) = registry.register("lb-1", Hello::default(), String::new());
        // Seen before this coordinator's own commit returned: undecided, so not applied yet.
        registry.remote_connected("lb-1", remote("coord-b", 12));
        assert!(registry.is_local("lb-1"));
        // Committed at 11, before it: the node has moved on.
        assert!(!registry.announced("lb-1", local, 11));
        assert!(!registry.is_local("lb-1") && registry.is_connected("lb-1"));
    }

    #[test]
    fn a_local_session_ending_after_the_node_moved_hands_over_to_the_later_announcement() {
        let registry = Registry::new();
        let mut reports = registry.subscribe_reports();
        let (local, _queue) = registry.register("lb-1", Hello::default(), String::new());
        // Never announced (the commit failed), and another coordinator has the node now.
        registry.remote_connected("lb-1", remote("coord-b", 12));
        assert!(registry.unregister("lb-1", local));
        assert!(registry.is_connected("lb-1"));
        assert_eq!(
            drain(&mut reports),
            vec![
                format!("connected lb-1 {local:x}"),
                format!("connected lb-1 {:x}", REMOTE_SESSION | 12),
            ],
            "no disconnection in between"
        );
        // An announcement this coordinator's own overwrote is not handed over to.
        let (again, _queue) = registry.register("lb-2", Hello::default(), String::new());
        registry.remote_connected("lb-2", remote("coord-b", 20));
        registry.announced("lb-2", again, 21);
        registry.announcement_overwritten("lb-2", 21);
        assert!(registry.unregister("lb-2", again));
        assert!(!registry.is_connected("lb-2"));
    }

    #[tokio::test]
    async fn a_command_for_a_node_held_elsewhere_goes_through_the_relay_to_its_coordinator() {
        let registry = Registry::new();
        registry.remote_connected("lb-1", remote("coord-b", 3));
        let action = command::Action::Drain(hav_proto::v1::Drain::default());
        let unrouted = registry
            .command("lb-1", action.clone(), Duration::from_secs(1))
            .await;
        assert!(
            matches!(unrouted, Err(ControlError::NotConnected(_))),
            "{unrouted:?}"
        );
        registry.attach_relay(Arc::new(Answering));
        let ack = registry
            .command("lb-1", action, Duration::from_secs(1))
            .await
            .expect("answered through the relay");
        assert_eq!(ack.error, "coord-b");
        assert!(ack.id != 0);
    }
}
