//! The agent's link to hav-coordinator: dial out over mTLS, say Hello, stream the daemon's state
//! snapshots and events, and hand the coordinator's commands to the daemon, returning its acks.
//!
//! Guarantees: the daemon never waits on this module. Snapshots go through a `watch` (only the
//! latest matters), events through a bounded queue that drops (and counts) when full, commands
//! arrive on a channel the daemon reads when it likes. If the coordinator is away the link retries
//! with jittered exponential backoff while VRRP carries on; given several coordinators, each
//! retry goes to the next one in the list (round robin) after the shortest delay, the backoff
//! growing once per round through the list, and a session stays with the one that welcomed it. Certificates are re-read from disk on
//! every connection attempt, so a rotated certificate is picked up without a restart.

mod backoff;
mod command;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use backoff::Backoff;
pub use command::{Command, CommandError, ExecRequest};
use hav_proto::transport::{self, ClientTlsFiles, TransportError};
use hav_proto::v1::agent_message::Body as AgentBody;
use hav_proto::v1::agent_service_client::AgentServiceClient;
use hav_proto::v1::coordinator_message::Body as CoordinatorBody;
use hav_proto::v1::{
    AgentMessage, CommandAck, Event, Hello, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, StateSnapshot,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// Events queued while the link is down or slow; more are dropped and counted.
const EVENT_QUEUE: usize = 1024;
/// Commands queued for the daemon; more are refused with a "busy" ack.
const COMMAND_QUEUE: usize = 32;

/// How to reach the coordinator and what to tell it.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Coordinators sharing one store, tried in this order (never empty): each `host:port` or
    /// `https://host:port`.
    pub coordinators: Vec<String>,
    /// This node's name; must match the name in the certificate (the coordinator checks).
    pub node_name: String,
    pub tls: ClientTlsFiles,
    pub software_version: String,
    pub capabilities: Vec<String>,
    pub backoff: Backoff,
}

/// The state of the link, for logs and the daemon's status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    Connecting,
    Connected,
    /// The last attempt failed with `error` (one clear sentence); next try after `retry_in`.
    Disconnected {
        error: String,
        retry_in: Duration,
    },
    /// The daemon side was dropped; the link has stopped.
    Stopped,
}

/// A command from the coordinator, waiting for the daemon's answer. Only commands that parsed
/// into a [`Command`] reach the daemon; the link answers the others itself.
#[derive(Debug)]
pub struct PendingCommand {
    pub id: u64,
    pub command: Command,
    /// The W3C trace context of the coordinator operation that sent it (may be empty).
    pub trace_context: HashMap<String, String>,
    reply: oneshot::Sender<Result<(), String>>,
}

impl PendingCommand {
    /// The `agent.command` span to carry the command out in: a child of the coordinator's span
    /// that sent it (see [`crate::telemetry::propagation`]).
    pub fn span(&self) -> tracing::Span {
        crate::telemetry::propagation::command_span(&self.trace_context, self.command.kind())
    }

    /// Answers the command; `Err` carries the reason it was not carried out (turned into text
    /// only here, for the acknowledgement).
    pub fn ack<E: std::fmt::Display>(self, result: Result<(), E>) {
        // The session may have ended meanwhile; the coordinator then sees a timeout.
        let _ = self.reply.send(result.map_err(|error| error.to_string()));
    }
}

/// Sends events to the link without ever waiting.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventSender {
    /// Queues an event; if the queue is full the event is dropped and counted.
    pub fn send(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The daemon's ends of the link.
pub struct DaemonSide {
    /// Publish the node's full state here whenever it changes.
    pub snapshots: watch::Sender<StateSnapshot>,
    pub events: EventSender,
    /// Commands to carry out; answer each with [`PendingCommand::ack`].
    pub commands: mpsc::Receiver<PendingCommand>,
    pub link: watch::Receiver<LinkState>,
}

/// Starts the link in the background. It runs until the `DaemonSide` is dropped.
pub fn spawn(config: ControlConfig) -> (DaemonSide, JoinHandle<()>) {
    let (snapshots_tx, snapshots) = watch::channel(StateSnapshot::default());
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (link_tx, link) = watch::channel(LinkState::Connecting);
    let mut link_task = Link {
        tls: transport::ClientTlsCache::new(config.tls.clone()),
        config,
        snapshots,
        events,
        commands: commands_tx,
        state: link_tx,
        current: 0,
    };
    let task = tokio::spawn(async move { link_task.run().await });
    let side = DaemonSide {
        snapshots: snapshots_tx,
        events: EventSender {
            tx: events_tx,
            dropped: Arc::new(AtomicU64::new(0)),
        },
        commands,
        link,
    };
    (side, task)
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("{}", transport::explain_status(.0))]
    Status(#[from] tonic::Status),
    #[error("coordinator closed the stream")]
    Closed,
    #[error("coordinator did not start with Welcome")]
    NoWelcome,
    /// The daemon dropped its side: stop for good.
    #[error("daemon gone")]
    DaemonGone,
}

struct Link {
    config: ControlConfig,
    /// Certificates are read anew for every connection; the same files resume the TLS session.
    tls: transport::ClientTlsCache,
    snapshots: watch::Receiver<StateSnapshot>,
    events: mpsc::Receiver<Event>,
    commands: mpsc::Sender<PendingCommand>,
    state: watch::Sender<LinkState>,
    /// The index in `config.coordinators` of the one dialled now.
    current: usize,
}

impl Link {
    /// The coordinator dialled now.
    fn coordinator(&self) -> &str {
        self.config
            .coordinators
            .get(self.current)
            .map(String::as_str)
            .unwrap_or_default()
    }

    async fn run(&mut self) {
        let mut backoff = self.config.backoff.clone();
        // Coordinators that failed since the last welcome or the last full round.
        let mut failed_in_round = 0;
        let count = self.config.coordinators.len().max(1);
        loop {
            self.state.send_replace(LinkState::Connecting);
            let mut welcomed = false;
            let error = match self.session(&mut welcomed).await {
                Err(SessionError::DaemonGone) | Ok(()) => {
                    self.state.send_replace(LinkState::Stopped);
                    return;
                }
                Err(e) => e.to_string(),
            };
            if welcomed {
                backoff.reset();
                failed_in_round = 0;
            }
            failed_in_round += 1;
            let retry_in = if failed_in_round < count {
                backoff.short_delay()
            } else {
                failed_in_round = 0;
                backoff.next_delay()
            };
            let failed = self.coordinator().to_owned();
            self.current = (self.current + 1) % count;
            tracing::warn!(coordinator = %failed, next = %self.coordinator(), "control link: {error}; retrying in {retry_in:?}");
            self.state
                .send_replace(LinkState::Disconnected { error, retry_in });
            tokio::select! {
                () = tokio::time::sleep(retry_in) => {}
                () = self.commands.closed() => {
                    self.state.send_replace(LinkState::Stopped);
                    return;
                }
            }
        }
    }

    async fn session(&mut self, welcomed: &mut bool) -> Result<(), SessionError> {
        let tls = self.tls.get()?;
        let channel = transport::connect(self.coordinator(), tls).await?;
        let mut client = AgentServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);

        let (out, out_rx) = mpsc::channel::<AgentMessage>(64);
        let snapshot = self.snapshots.borrow_and_update().clone();
        let hello = Hello {
            software_version: self.config.software_version.clone(),
            protocol_version: PROTOCOL_VERSION,
            capabilities: self.config.capabilities.clone(),
            node_name: self.config.node_name.clone(),
            config_version: snapshot.config_version,
        };
        // Fresh channel with room for both: these cannot fail.
        let _ = out.try_send(message(AgentBody::Hello(hello)));
        let _ = out.try_send(message(AgentBody::Snapshot(snapshot)));
        let mut inbound = client
            .connect(ReceiverStream::new(out_rx))
            .await?
            .into_inner();
        match inbound.message().await? {
            Some(m) if matches!(m.body, Some(CoordinatorBody::Welcome(_))) => {}
            _ => return Err(SessionError::NoWelcome),
        }
        *welcomed = true;
        self.state.send_replace(LinkState::Connected);
        tracing::info!(coordinator = %self.coordinator(), "control link up");

        let (acks, mut answered) = mpsc::channel::<CommandAck>(64);
        loop {
            // Biased, in this order: a snapshot the daemon published before an event is sent
            // before that event, so an observer of the event also sees the state behind it; an
            // event queued before a command was answered (a line of an Exec's output) is sent
            // before that command's ack.
            tokio::select! {
                biased;
                changed = self.snapshots.changed() => {
                    changed.map_err(|_| SessionError::DaemonGone)?;
                    let snapshot = self.snapshots.borrow_and_update().clone();
                    send(&out, AgentBody::Snapshot(snapshot)).await?;
                }
                event = self.events.recv() => {
                    let event = event.ok_or(SessionError::DaemonGone)?;
                    send(&out, AgentBody::Event(event)).await?;
                }
                Some(ack) = answered.recv() => {
                    send(&out, AgentBody::Ack(ack)).await?;
                }
                incoming = inbound.message() => {
                    let Some(incoming) = incoming? else { return Err(SessionError::Closed) };
                    if let Some(CoordinatorBody::Command(command)) = incoming.body {
                        self.dispatch(command, acks.clone())?;
                    }
                }
            }
        }
    }

    /// Hands a command to the daemon and queues its ack for the session when it answers.
    fn dispatch(
        &self,
        command: hav_proto::v1::Command,
        acks: mpsc::Sender<CommandAck>,
    ) -> Result<(), SessionError> {
        let id = command.id;
        let (reply, answer) = oneshot::channel();
        let immediate = match Command::from_proto(command.action) {
            Ok(parsed) => {
                let pending = PendingCommand {
                    id,
                    command: parsed,
                    trace_context: command.trace_context,
                    reply,
                };
                match self.commands.try_send(pending) {
                    Ok(()) => None,
                    Err(mpsc::error::TrySendError::Full(_)) => Some(CommandError::Busy),
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        return Err(SessionError::DaemonGone);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(id, %error, "coordinator command refused");
                Some(error)
            }
        };
        tokio::spawn(async move {
            let result = match immediate {
                Some(error) => Err(error.to_string()),
                None => answer
                    .await
                    .unwrap_or_else(|_| Err("the daemon dropped the command".to_owned())),
            };
            let ack = CommandAck {
                id,
                ok: result.is_ok(),
                error: result.err().unwrap_or_default(),
            };
            let _ = acks.send(ack).await;
        });
        Ok(())
    }
}

fn message(body: AgentBody) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

async fn send(out: &mpsc::Sender<AgentMessage>, body: AgentBody) -> Result<(), SessionError> {
    out.send(message(body))
        .await
        .map_err(|_| SessionError::Closed)
}
