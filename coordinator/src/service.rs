//! `FleetService`, havctl's API: each call checks the caller ([`crate::auth`]), turns the request
//! into domain values, calls the module that does the work (the push pipeline in
//! [`crate::push`], drains, rollouts, SLA and DNS in [`crate::orchestrate`]) and turns the answer
//! back into a response. Every error becomes a `tonic::Status` in one place
//! ([`ControlError`]'s conversion); every change and every refused change is in the audit log.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use hav_proto::v1::fleet_service_server::FleetService;
use hav_proto::v1::{
    AuditEntry, ConfigVersion, CoordinatorStatus, DrainRequest, DrainResponse, FleetEvent,
    HistoryRequest, HistoryResponse, ListNodesRequest, ListNodesResponse, NodePresence, NodeStatus,
    PushConfigRequest, PushConfigResponse, RollbackRequest, StateSnapshot, ValidateRequest,
    ValidateResponse, WatchEventsRequest, fleet_event,
};
use hav_proto::v1::{
    ClearPriorityRequest, ListPrioritiesRequest, ListPrioritiesResponse, PriorityResponse,
    SetPriorityRequest,
};
use hav_proto::v1::{
    ControlRolloutRequest, DnsShowRequest, DnsShowResponse, RolloutJob, SlaRequest, SlaResponse,
    StartRolloutRequest,
};
use prost::Message;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::closing::until_stopped;
use crate::error::ControlError;
use crate::orchestrate::{self, Orchestrator};
use crate::presence::Presence;
use crate::push::{self, Desired, Proposed};
use crate::state::{Shared, blocking};
use crate::telemetry::trace;
use crate::unix_ms;

/// The `FleetService` implementation.
#[derive(Clone)]
pub struct FleetServiceImpl {
    pub(crate) shared: Arc<Shared>,
    /// Drains, rollouts, SLA, DNS.
    pub(crate) orchestrator: Arc<Orchestrator>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<FleetEvent, Status>> + Send>>;
type RolloutStream = Pin<Box<dyn Stream<Item = Result<RolloutJob, Status>> + Send>>;

#[tonic::async_trait]
impl FleetService for FleetServiceImpl {
    type WatchEventsStream = EventStream;
    type WatchRolloutStream = RolloutStream;

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        self.caller(&request, None).await?;
        let (states, latest) = blocking(&self.shared.store, |s| {
            Ok((s.node_states()?, s.latest_config_version()?))
        })
        .await?;
        let desired = |name: &str| {
            latest
                .as_ref()
                .and_then(|l| l.node_versions.get(name).copied())
                .unwrap_or(0)
        };
        // Not connected: believed while its lease runs, else unknown (its snapshot only what it
        // last said).
        let away = |name: &str| match self.orchestrator.presence(name) {
            Presence::Unknown { since_ms } => (NodePresence::Unknown, since_ms),
            Presence::Disconnected { since_ms, .. } => (NodePresence::Disconnected, since_ms),
            // Its session just ended; the fleet view has not seen the end yet.
            Presence::Connected { .. } => (NodePresence::Disconnected, 0),
        };
        let mut nodes: BTreeMap<String, NodeStatus> = states
            .into_iter()
            .map(|(name, record)| {
                let (presence, since_ms) = away(&name);
                let status = NodeStatus {
                    desired_config_version: desired(&name),
                    name: name.clone(),
                    connected: false,
                    software_version: record.software_version,
                    protocol_version: record.protocol_version,
                    last_seen_unix_ms: record.last_seen_unix_ms,
                    snapshot: StateSnapshot::decode(record.snapshot.as_slice()).ok(),
                    presence: presence as i32,
                    disconnected_unix_ms: since_ms,
                    ..NodeStatus::default()
                };
                (name, status)
            })
            .collect();
        for live in self.shared.registry.connected() {
            let entry = nodes.entry(live.name.clone()).or_default();
            *entry = NodeStatus {
                desired_config_version: desired(&live.name),
                name: live.name,
                connected: true,
                software_version: live.hello.software_version,
                protocol_version: live.hello.protocol_version,
                capabilities: live.hello.capabilities,
                last_seen_unix_ms: live.last_seen_unix_ms,
                peer_address: live.peer,
                snapshot: live.snapshot.or(entry.snapshot.take()),
                presence: NodePresence::Connected as i32,
                disconnected_unix_ms: 0,
            };
        }
        // Nodes that have a config but never reported.
        if let Some(latest) = &latest {
            for name in latest.nodes.keys() {
                nodes.entry(name.clone()).or_insert_with(|| {
                    let (presence, since_ms) = away(name);
                    NodeStatus {
                        name: name.clone(),
                        desired_config_version: desired(name),
                        presence: presence as i32,
                        disconnected_unix_ms: since_ms,
                        ..NodeStatus::default()
                    }
                });
            }
        }
        Ok(Response::new(ListNodesResponse {
            nodes: nodes.into_values().collect(),
            coordinator: Some(self.coordinator_status()),
        }))
    }

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.caller(&request, None).await?;
        let filter = request.into_inner().nodes;
        let watcher = self.shared.registry.watcher();
        let events = watch_stream(
            self.shared.registry.subscribe(),
            filter,
            self.shared.stopping.clone(),
        )
        // The guard lives as long as the stream: the watcher count falls when it ends.
        .map(move |event| {
            let _counted = &watcher;
            event
        });
        Ok(Response::new(Box::pin(events)))
    }

    #[tracing::instrument(name = "fleet.push", skip_all, fields(fleet.operator, fleet.version, fleet.nodes, fleet.dry_run, fleet.outcome))]
    async fn push_config(
        &self,
        request: Request<PushConfigRequest>,
    ) -> Result<Response<PushConfigResponse>, Status> {
        let dry_run = request.get_ref().dry_run;
        let push_trace = trace::PushTrace::start(&self.shared.metrics, dry_run);
        let needs = (!dry_run).then_some("push config");
        let who = self.caller(&request, needs).await?;
        push_trace.operator(&who);
        let request = request.into_inner();
        let proposed = proposal(
            request.fleet_name,
            request.fleet,
            request.configs,
            request.groups,
        );
        let validated = push::validate(proposed).map_err(|errors| push::refusal(&errors))?;
        let latest = blocking(&self.shared.store, |s| s.latest_config_version()).await?;
        let desired = Desired::push(validated, latest.as_ref(), request.comment)?;
        let response = push::apply(&self.shared, &who, latest, desired, dry_run).await?;
        push_trace.finish(&response);
        Ok(Response::new(response))
    }

    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        self.caller(&request, None).await?;
        let request = request.into_inner();
        let proposed = proposal(
            request.fleet_name,
            request.fleet,
            request.configs,
            Vec::new(),
        );
        let errors = push::validate(proposed).err().unwrap_or_default();
        Ok(Response::new(ValidateResponse {
            ok: errors.is_empty(),
            errors,
        }))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        self.caller(&request, None).await?;
        let limit = match request.get_ref().limit {
            0 => 20,
            n => n.min(1000) as usize,
        };
        let (versions, audit) = blocking(&self.shared.store, move |s| {
            Ok((s.config_history(limit)?, s.audit_log(limit)?))
        })
        .await?;
        Ok(Response::new(HistoryResponse {
            versions: versions
                .into_iter()
                .map(|v| ConfigVersion {
                    version: v.version,
                    unix_ms: v.unix_ms,
                    author: v.author,
                    comment: v.comment,
                    nodes_changed: v.nodes_changed,
                    rollback_of: v.rollback_of,
                })
                .collect(),
            audit: audit
                .into_iter()
                .map(|a| AuditEntry {
                    unix_ms: a.unix_ms,
                    who: a.who,
                    action: a.action,
                    detail: a.detail,
                    allowed: a.allowed,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(name = "fleet.rollback", skip_all)]
    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<PushConfigResponse>, Status> {
        let who = self.caller(&request, Some("roll back config")).await?;
        let RollbackRequest { version, comment } = request.into_inner();
        let (target, latest) = blocking(&self.shared.store, move |s| {
            Ok((s.config_version(version)?, s.latest_config_version()?))
        })
        .await?;
        let target = target.ok_or(ControlError::NoSuchVersion(version))?;
        let comment = if comment.is_empty() {
            format!("rollback to version {version}")
        } else {
            comment
        };
        let desired = Desired::rollback(target, latest.as_ref(), comment);
        let response = push::apply(&self.shared, &who, latest, desired, false).await?;
        Ok(Response::new(response))
    }

    async fn drain(
        &self,
        request: Request<DrainRequest>,
    ) -> Result<Response<DrainResponse>, Status> {
        let who = self.caller(&request, Some("drain nodes")).await?;
        let request = request.into_inner();
        let (node, undrain) = (request.node.clone(), request.undrain);
        let response = trace::drain(
            &self.shared.metrics,
            &node,
            undrain,
            self.orchestrator.drain(&who, request),
            |response: &DrainResponse| response.ok,
        )
        .await?;
        Ok(Response::new(response))
    }

    async fn set_priority(
        &self,
        request: Request<SetPriorityRequest>,
    ) -> Result<Response<PriorityResponse>, Status> {
        let who = self.caller(&request, Some("set priorities")).await?;
        let response = crate::priority::set(&self.shared, &who, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn clear_priority(
        &self,
        request: Request<ClearPriorityRequest>,
    ) -> Result<Response<PriorityResponse>, Status> {
        let who = self.caller(&request, Some("clear priorities")).await?;
        let response = crate::priority::clear(&self.shared, &who, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn list_priorities(
        &self,
        request: Request<ListPrioritiesRequest>,
    ) -> Result<Response<ListPrioritiesResponse>, Status> {
        self.caller(&request, None).await?;
        let intents = crate::priority::list(&self.shared).await?;
        Ok(Response::new(ListPrioritiesResponse { intents }))
    }

    // ---- Orchestration: thin calls into crate::orchestrate. ----

    async fn sla(&self, request: Request<SlaRequest>) -> Result<Response<SlaResponse>, Status> {
        self.caller(&request, None).await?;
        let response = self.orchestrator.sla(&request.get_ref().month).await?;
        Ok(Response::new(response))
    }

    async fn dns_show(
        &self,
        request: Request<DnsShowRequest>,
    ) -> Result<Response<DnsShowResponse>, Status> {
        let repair = request.get_ref().repair;
        self.caller(&request, repair.then_some("repair DNS"))
            .await?;
        Ok(Response::new(self.orchestrator.dns_show(repair).await))
    }

    async fn start_rollout(
        &self,
        request: Request<StartRolloutRequest>,
    ) -> Result<Response<RolloutJob>, Status> {
        let who = self.caller(&request, Some("start a rollout")).await?;
        let job = self
            .orchestrator
            .start_rollout(&who, request.into_inner())
            .await?;
        Ok(Response::new(job))
    }

    async fn control_rollout(
        &self,
        request: Request<ControlRolloutRequest>,
    ) -> Result<Response<RolloutJob>, Status> {
        let change = (request.get_ref().action()
            != hav_proto::v1::control_rollout_request::Action::Status)
            .then_some("control a rollout");
        let who = self.caller(&request, change).await?;
        let job = self
            .orchestrator
            .control_rollout(&who, request.into_inner())
            .await?;
        Ok(Response::new(job))
    }

    async fn about(
        &self,
        request: Request<hav_proto::v1::AboutRequest>,
    ) -> Result<Response<CoordinatorStatus>, Status> {
        self.caller(&request, None).await?;
        Ok(Response::new(self.coordinator_status()))
    }

    async fn watch_rollout(
        &self,
        request: Request<ControlRolloutRequest>,
    ) -> Result<Response<RolloutStream>, Status> {
        self.caller(&request, None).await?;
        let id = request.get_ref().job;
        let (first, updates) = self.orchestrator.watch_rollout(id).await?;
        let ended = |status: &str| matches!(status, "done" | "failed" | "aborted" | "interrupted");
        let first_ended = ended(&first.status);
        // Each update of this job until one that ends it (inclusive); nothing after an ended one.
        let rest =
            futures::stream::unfold((updates, first_ended), move |(mut rx, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match rx.recv().await {
                        Ok(job) if job.id == id => {
                            let job = orchestrate::job_proto(&job);
                            let end = ended(&job.status);
                            return Some((Ok(job), (rx, end)));
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
        let stream = futures::stream::once(std::future::ready(Ok(first))).chain(rest);
        let stream = until_stopped(Box::pin(stream), self.shared.stopping.clone());
        Ok(Response::new(Box::pin(stream)))
    }
}

impl FleetServiceImpl {
    /// The caller's name, checked to be an operator's (with the operator role for a `change`).
    /// This coordinator and its role.
    fn coordinator_status(&self) -> CoordinatorStatus {
        let leadership = &self.shared.leadership;
        let role = leadership.role();
        CoordinatorStatus {
            name: leadership.name().to_owned(),
            leader: role.leads(),
            leader_name: leadership.leader().unwrap_or_default(),
            shared_store: role != crate::leader::Role::Sole,
        }
    }

    async fn caller<T>(
        &self,
        request: &Request<T>,
        change: Option<&'static str>,
    ) -> Result<String, ControlError> {
        auth::operator(&self.shared, request, change).await
    }
}

/// The push in a request: a fleet file when one is given, else node configs and groups.
fn proposal(
    fleet_name: String,
    fleet: String,
    configs: Vec<hav_proto::v1::NodeConfigEntry>,
    groups: Vec<hav_proto::v1::RolloutGroup>,
) -> Proposed {
    if fleet.is_empty() {
        Proposed::Nodes {
            configs: configs.into_iter().map(|c| (c.node, c.toml)).collect(),
            groups: groups.into_iter().map(|g| (g.name, g.nodes)).collect(),
        }
    } else {
        Proposed::Fleet {
            name: fleet_name,
            text: fleet,
        }
    }
}

/// One watcher's stream: the events of the nodes in `filter` (all if empty), a `lagged` marker
/// where the watcher fell more than the broadcast buffer behind, ending when `stopping` turns
/// true after the events published before it.
fn watch_stream(
    events: broadcast::Receiver<FleetEvent>,
    filter: Vec<String>,
    stopping: watch::Receiver<bool>,
) -> impl Stream<Item = Result<FleetEvent, Status>> + Send + 'static {
    let events = BroadcastStream::new(events).filter_map(move |item| {
        let out = match item {
            Ok(event) if filter.is_empty() || filter.contains(&event.node) => Some(Ok(event)),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Ok(FleetEvent {
                node: String::new(),
                unix_ms: unix_ms(),
                kind: Some(fleet_event::Kind::Lagged(missed)),
            })),
        };
        std::future::ready(out)
    });
    until_stopped(Box::pin(events), stopping)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, WATCH_BUFFER};

    fn event(node: &str) -> FleetEvent {
        FleetEvent {
            node: node.into(),
            unix_ms: 0,
            kind: Some(fleet_event::Kind::Presence(hav_proto::v1::Presence {
                connected: true,
                state: NodePresence::Connected as i32,
            })),
        }
    }

    #[tokio::test]
    async fn a_slow_watcher_lags_and_is_told_how_much_it_missed() {
        let registry = Registry::new();
        let (stop, stopping) = watch::channel(false);
        let mut stream = Box::pin(watch_stream(registry.subscribe(), Vec::new(), stopping));
        // Publishing never waits for the watcher, however far behind it is.
        for _ in 0..WATCH_BUFFER + 10 {
            registry.publish(event("lb-1"));
        }
        let first = stream.next().await.expect("item").expect("ok");
        assert_eq!(first.kind, Some(fleet_event::Kind::Lagged(10)));
        let next = stream.next().await.expect("item").expect("ok");
        assert_eq!(next.node, "lb-1");
        stop.send_replace(true);
        // The events published before the stop are all still yielded; the stream then ends.
        let mut rest = 0;
        while stream.next().await.is_some() {
            rest += 1;
        }
        assert_eq!(rest, WATCH_BUFFER - 1);
    }

    #[tokio::test]
    async fn a_watcher_sees_only_the_nodes_it_asked_for() {
        let registry = Registry::new();
        let (_stop, stopping) = watch::channel(false);
        let mut stream = Box::pin(watch_stream(
            registry.subscribe(),
            vec!["lb-2".into()],
            stopping,
        ));
        registry.publish(event("lb-1"));
        registry.publish(event("lb-2"));
        let only = stream.next().await.expect("item").expect("ok");
        assert_eq!(only.node, "lb-2");
    }
}
