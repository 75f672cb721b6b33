//! `AgentService.Connect`: one long-lived stream per agent. The node's name comes from its
//! verified certificate; the Hello is only cross-checked against it. Snapshots are kept in the
//! registry and persisted; events are fanned out to watchers; commands flow back down the stream
//! and their acks are matched by id.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use hav_proto::identity::Identity;
use hav_proto::v1::agent_message::Body as AgentBody;
use hav_proto::v1::agent_service_server::AgentService;
use hav_proto::v1::coordinator_message::Body as CoordinatorBody;
use hav_proto::v1::{
    AgentMessage, ApplyConfig, Command, CoordinatorMessage, FleetEvent, NodeConfigDoc,
    NodePresence, PROTOCOL_VERSION, Presence, Welcome, command, fleet_event, session_version,
};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::peer_identity;
use crate::error::ControlError;
use crate::state::Shared;
use crate::store::NodeStateRecord;
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
        // Agents are served by the leader only, so that its fleet view, which the singletons act
        // on, is the whole fleet; refused here, an agent dials the next coordinator it knows.
        let leadership = &self.shared.leadership;
        if !leadership.role().leads() {
            return Err(ControlError::NotLeader {
                this: leadership.name().to_owned(),
                leader: leadership.leader(),
            }
            .into());
        }
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
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
        let (session, commands) = self.shared.registry.register(&node, hello, peer);
        self.shared.registry.publish(presence(&node, true));

        let welcome = CoordinatorMessage {
            body: Some(CoordinatorBody::Welcome(Welcome {
                protocol_version: version,
                node_name: node.clone(),
            })),
        };
        // The response stream: the Welcome, then each command as it is queued, polled by the
        // connection itself (no task or queue of its own per agent). It ends when the session
        // is replaced or ended, or the coordinator stops or no longer leads.
        let downstream = Downstream {
            welcome: Some(welcome),
            commands,
            stopping: self.shared.stopping.clone(),
            role: self.shared.leadership.subscribe(),
        };
        let outbound = futures::stream::unfold(downstream, |mut down| async move {
            if let Some(welcome) = down.welcome.take() {
                return Some((Ok(welcome), down));
            }
            let command = tokio::select! {
                command = down.commands.recv() => command,
                _ = down.stopping.wait_for(|stop| *stop) => None,
                () = lead_lost(&mut down.role) => None,
            }?;
            let message = CoordinatorMessage {
                body: Some(CoordinatorBody::Command(*command)),
            };
            Some((Ok(message), down))
        });

        let shared = self.shared.clone();
        let mut stopping = self.shared.stopping.clone();
        let mut role = self.shared.leadership.subscribe();
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
                    () = lead_lost(&mut role) => {
                        tracing::info!(%node, "agent session ended: this coordinator no longer leads");
                        Ok(None)
                    }
                };
                let Ok(Some(message)) = message else { break };
                handle_message(&shared, &node, session, message).await;
            }
            if shared.registry.unregister(&node, session) {
                tracing::info!(%node, "agent disconnected");
                shared.registry.publish(presence(&node, false));
            }
        });
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// What an agent's response stream still has to send.
struct Downstream {
    welcome: Option<CoordinatorMessage>,
    commands: mpsc::Receiver<Box<Command>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    role: tokio::sync::watch::Receiver<crate::leader::Role>,
}

/// Resolves when this coordinator stops leading; never for one that always leads.
async fn lead_lost(role: &mut tokio::sync::watch::Receiver<crate::leader::Role>) {
    if role.wait_for(|role| !role.leads()).await.is_err() {
        // The role can no longer change (a coordinator alone with its store).
        std::future::pending::<()>().await;
    }
}

/// Handles one message. Snapshots never wait for the disk (they are written behind); a
/// transition waits for its audit record to commit, so the agent's next message queues behind
/// that fsync.
async fn handle_message(shared: &Arc<Shared>, node: &str, session: u64, message: AgentMessage) {
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
            if let Some(hav_proto::v1::event::Kind::Transition(transition)) = &event.kind {
                record_transition(shared, node, event.unix_ms, transition);
                shared
                    .registry
                    .report_transition(node, session, transition.clone(), event.unix_ms);
            }
            shared.registry.publish(FleetEvent {
                node: node.to_owned(),
                unix_ms: unix_ms(),
                kind: Some(fleet_event::Kind::Agent(event)),
            })
        }
        Some(AgentBody::Ack(ack)) => shared.registry.ack(node, session, ack),
        Some(AgentBody::Hello(_)) => tracing::warn!(%node, "second Hello ignored"),
        None => tracing::debug!(%node, "message of an unknown kind ignored"),
    }
}

/// Transitions are kept in the audit log, so one that happened while the coordinator was away
/// (the agent queues its events) is in `havctl history` once it is back, watched or not.
fn record_transition(
    shared: &Arc<Shared>,
    node: &str,
    at_unix_ms: u64,
    transition: &hav_proto::v1::Transition,
) {
    let state = |value: i32| {
        hav_proto::v1::VrrpState::try_from(value)
            .map(|s| s.as_str_name().trim_start_matches("VRRP_STATE_").to_owned())
            .unwrap_or_else(|_| value.to_string())
    };
    let record = crate::store::AuditRecord {
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
    };
    tracing::debug!(%node, detail = %record.detail, "transition queued for the audit log");
    // Written behind, in order: the agent's stream never waits for the disk.
    shared.transitions.submit(record);
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

fn presence(node: &str, connected: bool) -> FleetEvent {
    let state = if connected {
        NodePresence::Connected
    } else {
        NodePresence::Disconnected
    };
    FleetEvent {
        node: node.to_owned(),
        unix_ms: unix_ms(),
        kind: Some(fleet_event::Kind::Presence(Presence {
            connected,
            state: state as i32,
        })),
    }
}
