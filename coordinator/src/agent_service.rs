//! `AgentService.Connect`: one long-lived stream per agent. The node's name comes from its
//! verified certificate; the Hello is only cross-checked against it. Snapshots are kept in the
//! registry and persisted; events are fanned out to watchers; commands flow back down the stream
//! and their acks are matched by id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::future::{Fuse, FusedFuture, FutureExt};
use hav_proto::identity::Identity;
use hav_proto::v1::agent_message::Body as AgentBody;
use hav_proto::v1::agent_service_server::AgentService;
use hav_proto::v1::coordinator_message::Body as CoordinatorBody;
use hav_proto::v1::{
    AgentMessage, ApplyConfig, CoordinatorMessage, FleetEvent, NodeConfigDoc, PROTOCOL_VERSION,
    Welcome, command, fleet_event, session_version,
};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::peer_identity;
use crate::command_queue::CommandReceiver;
use crate::error::ControlError;
use crate::state::Shared;
use crate::store::NodeStateRecord;
use crate::tls::Peer;
use crate::unix_ms;

/// How long an agent has to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The `AgentService` implementation.
#[derive(Clone)]
pub struct AgentServiceImpl {
    pub(crate) shared: Arc<Shared>,
}

type OutStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentServiceImpl {
    type ConnectStream = OutStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let node = match peer_identity(&request)? {
            Identity::Node { name } => name,
            other => {
                return Err(ControlError::PermissionDenied {
                    who: other.to_string(),
                    action: "connect as an agent",
                    why: "only hav://node/ certificates may",
                }
                .into());
            }
        };
        // Any coordinator serves any agent while its announcements can live in the shared
        // store; refused here, an agent dials the next coordinator it knows.
        if let Some(relay) = &self.shared.relay
            && !relay.serving()
        {
            return Err(ControlError::NotServing {
                this: self.shared.leadership.name().to_owned(),
            }
            .into());
        }
        let peer = Peer::of(&request)
            .map(|peer| peer.remote.to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                body: Some(AgentBody::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            _ => return Err(ControlError::NoHello.into()),
        };
        let Some(version) = session_version(hello.protocol_version) else {
            return Err(ControlError::ProtocolVersion {
                agent: hello.protocol_version,
                ours: PROTOCOL_VERSION,
            }
            .into());
        };
        if !hello.node_name.is_empty() && hello.node_name != node {
            tracing::warn!(%peer, certified = %node, claimed = %hello.node_name, "agent refused");
            return Err(ControlError::NodeNameMismatch {
                certified: node,
                claimed: hello.node_name,
            }
            .into());
        }
        tracing::info!(%node, %peer, version = %hello.software_version, "agent connected");
        let running_version = hello.config_version;
        let (session, commands) = self
            .shared
            .registry
            .register(&node, hello.clone(), peer.clone());
        // Announced to the other coordinators before the Welcome: every report of this session
        // reaches them after the session itself.
        let announced = match &self.shared.relay {
            None => None,
            Some(relay) => match relay.announce(&node, &hello, &peer).await {
                Ok(revision) => {
                    self.shared.registry.announced(&node, session, revision);
                    Some(revision)
                }
                Err(e) => {
                    self.shared.registry.unregister(&node, session);
                    tracing::warn!(%node, "agent refused: its session could not be announced: {e}");
                    return Err(ControlError::NotServing {
                        this: self.shared.leadership.name().to_owned(),
                    }
                    .into());
                }
            },
        };

        let welcome = CoordinatorMessage {
            body: Some(CoordinatorBody::Welcome(Welcome {
                protocol_version: version,
                node_name: node.clone(),
            })),
        };
        let outbound = Downstream {
            welcome: Some(Box::new(welcome)),
            commands,
            membership_lost: self.shared.relay.as_ref().map(|relay| {
                let mut membership = Some(relay.membership());
                let lost: Pin<Box<dyn Future<Output = ()> + Send>> =
                    Box::pin(async move { membership_lost(&mut membership).await });
                lost.fuse()
            }),
        };

        let shared = self.shared.clone();
        let mut stopping = self.shared.stopping.clone();
        let mut membership = self.shared.relay.as_ref().map(|relay| relay.membership());
        tokio::spawn(async move {
            // Its own task: the ack it waits for arrives through the loop below.
            let (config_shared, config_node) = (shared.clone(), node.clone());
            tokio::spawn(async move {
                send_desired_config(&config_shared, &config_node, running_version).await;
                crate::priority::reapply(&config_shared, &config_node).await;
            });
            loop {
                let message = tokio::select! {
                    message = inbound.message() => message,
                    _ = stopping.wait_for(|stop| *stop) => Ok(None),
                    () = membership_lost(&mut membership) => {
                        tracing::info!(%node, "agent session ended: this coordinator lost its membership in the store");
                        Ok(None)
                    }
                };
                let Ok(Some(message)) = message else { break };
                handle_message(&shared, &node, session, message);
            }
            if shared.registry.unregister(&node, session) {
                tracing::info!(%node, "agent disconnected");
                // A stopping coordinator gives its whole membership up at once instead.
                if let (Some(relay), Some(revision)) = (&shared.relay, announced)
                    && !*shared.stopping.borrow()
                {
                    relay.withdraw(&node, revision);
                }
            }
        });
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// An agent's response stream: the Welcome, then each command as it is queued, polled by the
/// connection itself (no task or future of its own). It ends when the session's command queue
/// closes (the session was replaced, here or elsewhere, or ended) or the coordinator loses its
/// membership in the shared store. The coordinator's stop ends it through the server's
/// [`EndStreamsOnStop`](crate::closing::EndStreamsOnStop) layer, after the commands it had
/// ready.
struct Downstream {
    /// Boxed, so that its room is given back once it is sent.
    welcome: Option<Box<CoordinatorMessage>>,
    commands: CommandReceiver,
    /// Resolves when the membership the session was announced under is lost (a coordinator
    /// sharing a store only); fused, so the stream stays ended if polled again.
    membership_lost: Option<Fuse<Pin<Box<dyn Future<Output = ()> + Send>>>>,
}

impl Stream for Downstream {
    type Item = Result<CoordinatorMessage, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(welcome) = this.welcome.take() {
            return Poll::Ready(Some(Ok(*welcome)));
        }
        if let Some(lost) = &mut this.membership_lost
            && (lost.is_terminated() || Pin::new(lost).poll(cx).is_ready())
        {
            return Poll::Ready(None);
        }
        this.commands.poll_recv(cx).map(|command| {
            command.map(|command| {
                Ok(CoordinatorMessage {
                    body: Some(CoordinatorBody::Command(*command)),
                })
            })
        })
    }
}

/// Resolves when the membership lease in the shared store that the session was announced
/// under is no longer held (lost, even if another was granted since); never for a
/// coordinator alone with its store.
async fn membership_lost(membership: &mut Option<tokio::sync::watch::Receiver<Option<i64>>>) {
    match membership {
        Some(lease) => {
            let announced_under = *lease.borrow();
            if lease.wait_for(|now| *now != announced_under).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Handles one message without waiting: snapshots and transitions' audit records are written
/// behind, in order, so the agent's stream never waits for the disk.
fn handle_message(shared: &Arc<Shared>, node: &str, session: u64, message: AgentMessage) {
    match message.body {
        Some(AgentBody::Snapshot(snapshot)) => {
            let encoded = snapshot.encode_to_vec();
            if let Some(hello) = shared.registry.update_snapshot(node, session, snapshot) {
                let record = NodeStateRecord {
                    software_version: hello.software_version,
                    protocol_version: hello.protocol_version,
                    last_seen_unix_ms: unix_ms(),
                    snapshot: encoded,
                    coordinator: shared.leadership.name().to_owned(),
                };
                shared.node_states.submit((node.to_owned(), record));
            }
        }
        Some(AgentBody::Event(event)) => {
            let audit = match &event.kind {
                Some(hav_proto::v1::event::Kind::Transition(transition)) => {
                    shared.registry.report_transition(
                        node,
                        session,
                        transition.clone(),
                        event.unix_ms,
                    );
                    Some(transition_record(node, event.unix_ms, transition))
                }
                _ => None,
            };
            shared.registry.publish(FleetEvent {
                node: node.to_owned(),
                unix_ms: unix_ms(),
                kind: Some(fleet_event::Kind::Agent(event)),
            });
            // Queued after the publish, so a transition logged as queued is also one every
            // watcher of that moment has in its buffer, even if the stop follows at once.
            if let Some(record) = audit {
                let detail = record.detail.clone();
                // Written behind, in order: the agent's stream never waits for the disk.
                shared.transitions.submit(record);
                tracing::debug!(%node, %detail, "transition queued for the audit log");
            }
        }
        Some(AgentBody::Ack(ack)) => shared.registry.ack(node, session, ack),
        Some(AgentBody::Hello(_)) => tracing::warn!(%node, "second Hello ignored"),
        None => tracing::debug!(%node, "message of an unknown kind ignored"),
    }
}

/// Transitions are kept in the audit log, so one that happened while the coordinator was away
/// (the agent queues its events) is in `havctl history` once it is back, watched or not.
fn transition_record(
    node: &str,
    at_unix_ms: u64,
    transition: &hav_proto::v1::Transition,
) -> crate::store::AuditRecord {
    let state = |value: i32| {
        hav_proto::v1::VrrpState::try_from(value)
            .map(|s| s.as_str_name().trim_start_matches("VRRP_STATE_").to_owned())
            .unwrap_or_else(|_| value.to_string())
    };
    crate::store::AuditRecord {
        unix_ms: at_unix_ms,
        who: format!("node {node}"),
        action: "transition".into(),
        detail: format!(
            "{}: {} -> {}: {}",
            transition.instance,
            state(transition.from),
            state(transition.to),
            transition.cause
        ),
        allowed: true,
    }
}

/// Sends the node its desired config if it runs an older one.
#[tracing::instrument(name = "fleet.apply_on_connect", skip_all, fields(fleet.node = node, fleet.running_version = running_version as i64))]
async fn send_desired_config(shared: &Arc<Shared>, node: &str, running_version: u64) {
    let latest = match shared.latest.get(&shared.store).await {
        Ok(latest) => latest,
        Err(e) => {
            tracing::warn!(%node, "cannot read desired config: {e}");
            return;
        }
    };
    let Some(latest) = latest else { return };
    let (Some(toml), Some(&version)) = (latest.nodes.get(node), latest.node_versions.get(node))
    else {
        return;
    };
    if version == running_version {
        return;
    }
    let action = command::Action::ApplyConfig(ApplyConfig {
        config: Some(NodeConfigDoc {
            version,
            toml: toml.clone(),
        }),
    });
    match shared
        .registry
        .command(node, action, shared.command_timeout)
        .await
    {
        Ok(ack) if ack.ok => tracing::info!(%node, version, "desired config applied on connect"),
        Ok(ack) => tracing::warn!(%node, version, "agent refused config: {}", ack.error),
        Err(e) => tracing::warn!(%node, version, "config not applied on connect: {e}"),
    }
}
