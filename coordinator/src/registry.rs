//! The live registry of connected agents: their Hello, latest snapshot and command queue, plus the
//! event fan-out to watchers. All state is in memory and guarded by one short-held mutex; nothing
//! here awaits while holding it.
//!
//! Guarantees: a slow watcher lags (it is told how many events it missed) and never blocks an
//! agent; a newer session of the same node replaces the older one; a command is answered by the
//! ack with its id or fails with a timeout. What the fleet view is fed ([`Report`]s: sessions
//! opening and ending, snapshots, transitions) is published in the order the registry changed,
//! each report naming its session, so a report of an ended or replaced session is recognised.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hav_proto::v1::{Command, CommandAck, FleetEvent, Hello, StateSnapshot, Transition, command};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::error::ControlError;

/// Events buffered per watcher before it starts to lag.
pub const WATCH_BUFFER: usize = 1024;
/// Commands queued per agent before further commands are refused.
const COMMAND_QUEUE: usize = 32;

/// A connected agent, as seen by ListNodes.
#[derive(Debug, Clone)]
pub struct LiveNode {
    pub name: String,
    /// Its session.
    pub session: u64,
    pub hello: Hello,
    pub peer: String,
    pub last_seen_unix_ms: u64,
    pub snapshot: Option<StateSnapshot>,
}

struct Session {
    id: u64,
    live: LiveNode,
    /// Boxed: a queue's storage is allocated for 32 entries at once, for every agent.
    commands: mpsc::Sender<Box<Command>>,
    pending: HashMap<u64, oneshot::Sender<CommandAck>>,
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

/// Connected agents and the event bus.
pub struct Registry {
    sessions: Mutex<HashMap<String, Session>>,
    next_id: AtomicU64,
    events: broadcast::Sender<FleetEvent>,
    /// Sessions, snapshots and transitions in the order the registry saw them, for the fleet view.
    reports: broadcast::Sender<Report>,
    /// Bumped whenever a session or a snapshot changes: awaiting a fleet state change.
    changes: watch::Sender<u64>,
    /// Events published so far (for the metrics).
    published: AtomicU64,
    /// WatchEvents streams open (for the metrics).
    watchers: Arc<AtomicUsize>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let (reports, _) = broadcast::channel(WATCH_BUFFER);
        Registry {
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            events,
            reports,
            changes: watch::Sender::new(0),
            published: AtomicU64::new(0),
            watchers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Registers a session for `node` (replacing any older one, whose command queue closes) and
    /// returns its id and the receiving end of its command queue.
    pub fn register(
        &self,
        node: &str,
        hello: Hello,
        peer: String,
    ) -> (u64, mpsc::Receiver<Box<Command>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let session = Session {
            id,
            live: LiveNode {
                name: node.to_owned(),
                session: id,
                hello,
                peer,
                last_seen_unix_ms: crate::unix_ms(),
                snapshot: None,
            },
            commands,
            pending: HashMap::new(),
        };
        {
            let mut sessions = self.lock();
            sessions.insert(node.to_owned(), session);
            // Sent under the lock: reports go out in the order the sessions changed.
            let _ = self.reports.send(Report::Connected {
                node: node.to_owned(),
                session: id,
            });
        }
        self.changes.send_modify(|n| *n += 1);
        (id, rx)
    }

    /// Removes the session if it is still the current one for `node`; true if it was.
    pub fn unregister(&self, node: &str, session: u64) -> bool {
        let mut sessions = self.lock();
        if sessions.get(node).is_some_and(|s| s.id == session) {
            sessions.remove(node);
            let _ = self.reports.send(Report::Disconnected {
                node: node.to_owned(),
                session,
                unix_ms: crate::unix_ms(),
            });
            drop(sessions);
            self.changes.send_modify(|n| *n += 1);
            true
        } else {
            false
        }
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
        let waiter = self
            .lock()
            .get_mut(node)
            .filter(|s| s.id == session)
            .and_then(|s| s.pending.remove(&ack.id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(ack);
        }
    }

    /// Sends `action` to `node` and waits up to `timeout` for its ack.
    pub async fn command(
        &self,
        node: &str,
        action: command::Action,
        timeout: Duration,
    ) -> Result<CommandAck, ControlError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let queue = {
            let mut sessions = self.lock();
            let session = sessions
                .get_mut(node)
                .ok_or_else(|| ControlError::NotConnected(node.to_owned()))?;
            session.pending.insert(id, tx);
            session.commands.clone()
        };
        let command = Command {
            id,
            action: Some(action),
            // The caller's span (push, drain, ...) continues on the agent.
            trace_context: crate::telemetry::trace::current_context(),
        };
        queue.try_send(Box::new(command)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ControlError::CommandQueueFull(node.to_owned()),
            mpsc::error::TrySendError::Closed(_) => ControlError::NotConnected(node.to_owned()),
        })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(ack)) => Ok(ack),
            // The session ended (its pending map was dropped) before answering.
            Ok(Err(_)) => Err(ControlError::NotConnected(node.to_owned())),
            Err(_) => {
                if let Some(s) = self.lock().get_mut(node) {
                    s.pending.remove(&id);
                }
                Err(ControlError::CommandTimeout(node.to_owned()))
            }
        }
    }

    /// Every connected agent.
    pub fn connected(&self) -> Vec<LiveNode> {
        self.lock().values().map(|s| s.live.clone()).collect()
    }

    /// How many agents are connected.
    pub fn connected_count(&self) -> usize {
        self.lock().len()
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

    /// Whether `node` is connected.
    pub fn is_connected(&self, node: &str) -> bool {
        self.lock().contains_key(node)
    }

    /// Announces an event to every watcher (no watcher is fine).
    pub fn publish(&self, event: FleetEvent) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(event);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding this lock cannot leave the map half-updated (every critical
        // section is a single map operation), so a poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One open WatchEvents stream, counted until dropped.
pub struct WatcherGuard(Arc<AtomicUsize>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
