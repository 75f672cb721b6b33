//! `FleetService` (havctl's API): callers are checked in [`crate::auth`], shared state is in
//! [`crate::state`]. Every change and every refused change is written to the audit log.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use hav_proto::v1::fleet_service_server::FleetService;
use hav_proto::v1::{
    ApplyConfig, ApplyOutcome, AuditEntry, ConfigVersion, DrainRequest, DrainResponse, FleetEvent,
    HistoryRequest, HistoryResponse, ListNodesRequest, ListNodesResponse, NodeChange,
    NodeConfigDoc, NodeConfigEntry, NodeResult, NodeStatus, PushConfigRequest, PushConfigResponse,
    RollbackRequest, StateSnapshot, ValidateRequest, ValidateResponse, ValidationError,
    WatchEventsRequest, command, fleet_event,
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
use tracing::Instrument;

use crate::auth;
use crate::diff::line_diff;
use crate::error::ControlError;
use crate::state::{Shared, blocking};
use crate::store::ConfigVersionRecord;
use crate::telemetry::trace;
use crate::unix_ms;

/// Checks that a config text is acceptable for `node`: the node schema (`hav_proto::config`),
/// the same code the agent loads it with, and `[node] name` equal to `node`. The error lists
/// every problem, `origin: key.path: reason`, separated by `; `. On success: the config's
/// canonical text, which is what the coordinator stores and sends (so diffs show real changes).
pub fn validate_node_config(node: &str, toml_text: &str) -> Result<String, String> {
    if !hav_proto::identity::valid_name(node) {
        return Err(format!("`{node}` is not a valid node name"));
    }
    let config = hav_proto::config::parse_node_config(toml_text, &format!("config of {node}"))
        .map_err(|errors| errors.lines().join("; "))?;
    if config.node.name != node {
        return Err(format!(
            "config of {node}: node.name: is {:?}; a node's config must name the node itself",
            config.node.name
        ));
    }
    Ok(config.to_toml())
}

/// A fleet file's node configs and rollout groups (name → members in order).
pub type ExpandedFleet = (Vec<NodeConfigEntry>, BTreeMap<String, Vec<String>>);

/// Expands and validates a fleet file (`hav_proto::fleet`) into node configs and rollout groups.
pub fn expand_fleet(name: &str, text: &str) -> Result<ExpandedFleet, Vec<ValidationError>> {
    let name = if name.is_empty() { "fleet" } else { name };
    match hav_proto::fleet::expand(name, text) {
        Ok(fleet) => Ok((
            fleet
                .nodes
                .into_iter()
                .map(|(node, config)| NodeConfigEntry {
                    node,
                    toml: config.to_toml(),
                })
                .collect(),
            fleet
                .groups
                .into_iter()
                .map(|group| (group.name, group.nodes))
                .collect(),
        )),
        Err(errors) => Err(errors
            .0
            .into_iter()
            .map(|error| ValidationError {
                node: error.node.clone().unwrap_or_default(),
                message: error.to_string(),
            })
            .collect()),
    }
}

/// The `FleetService` implementation.
#[derive(Clone)]
pub struct FleetServiceImpl {
    pub(crate) shared: Arc<Shared>,
    /// Drains, rollouts, SLA, DNS (issue 5).
    pub(crate) orchestrator: Arc<crate::orchestrate::Orchestrator>,
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
        let mut nodes: BTreeMap<String, NodeStatus> = states
            .into_iter()
            .map(|(name, record)| {
                let status = NodeStatus {
                    desired_config_version: desired(&name),
                    name: name.clone(),
                    connected: false,
                    software_version: record.software_version,
                    protocol_version: record.protocol_version,
                    last_seen_unix_ms: record.last_seen_unix_ms,
                    snapshot: StateSnapshot::decode(record.snapshot.as_slice()).ok(),
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
            };
        }
        // Nodes that have a config but never reported.
        if let Some(latest) = &latest {
            for name in latest.nodes.keys() {
                nodes.entry(name.clone()).or_insert_with(|| NodeStatus {
                    name: name.clone(),
                    desired_config_version: desired(name),
                    ..NodeStatus::default()
                });
            }
        }
        Ok(Response::new(ListNodesResponse {
            nodes: nodes.into_values().collect(),
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
        let mut request = request.into_inner();
        // A fleet file is the whole intent: its nodes replace every node config.
        let whole_fleet = !request.fleet.is_empty();
        let (fleet_name, fleet_text) = (request.fleet_name.clone(), request.fleet.clone());
        if whole_fleet {
            let (configs, groups) = expand_fleet(&request.fleet_name, &request.fleet)
                .map_err(|errors| ControlError::InvalidConfig(join_errors(&errors)))?;
            request.configs = configs;
            request.groups = groups
                .into_iter()
                .map(|(name, nodes)| hav_proto::v1::RolloutGroup { name, nodes })
                .collect();
        }
        let errors = validation_errors(&request.configs);
        if !errors.is_empty() {
            return Err(ControlError::InvalidConfig(join_errors(&errors)).into());
        }
        for entry in &mut request.configs {
            if let Ok(canonical) = validate_node_config(&entry.node, &entry.toml) {
                entry.toml = canonical;
            }
        }
        let latest = blocking(&self.shared.store, |s| s.latest_config_version()).await?;
        let mut nodes = if whole_fleet {
            BTreeMap::new()
        } else {
            latest.as_ref().map(|l| l.nodes.clone()).unwrap_or_default()
        };
        for entry in request.configs {
            nodes.insert(entry.node, entry.toml);
        }
        let groups = if request.groups.is_empty() {
            latest
                .as_ref()
                .map(|l| l.groups.clone())
                .unwrap_or_default()
        } else {
            request
                .groups
                .into_iter()
                .map(|g| (g.name, g.nodes))
                .collect()
        };
        check_groups(&groups, &nodes)?;
        let change = Change {
            nodes,
            groups,
            comment: request.comment,
            rollback_of: 0,
        };
        let response = self.apply(&who, latest, change, dry_run).await?;
        push_trace.finish(&response);
        if whole_fleet && !dry_run {
            crate::orchestrate::store_layouts(&self.shared.store, &fleet_name, &fleet_text).await;
        }
        Ok(Response::new(response))
    }

    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        self.caller(&request, None).await?;
        let request = request.into_inner();
        let errors = if request.fleet.is_empty() {
            validation_errors(&request.configs)
        } else {
            match expand_fleet(&request.fleet_name, &request.fleet) {
                Ok((configs, _)) => validation_errors(&configs),
                Err(errors) => errors,
            }
        };
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
        let change = Change {
            nodes: target.nodes,
            groups: target.groups,
            comment,
            rollback_of: version,
        };
        let response = self.apply(&who, latest, change, false).await?;
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

    // ---- Orchestration (issue 5): thin calls into crate::orchestrate. ----

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
                            let job = crate::orchestrate::job_proto(&job);
                            let end = ended(&job.status);
                            return Some((Ok(job), (rx, end)));
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
        let stream = futures::stream::once(std::future::ready(Ok(first))).chain(rest);
        let mut stopping = self.shared.stopping.clone();
        let stream = stream.take_until(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

impl FleetServiceImpl {
    /// The caller's name, checked to be an operator's (with the operator role for a `change`).
    async fn caller<T>(
        &self,
        request: &Request<T>,
        change: Option<&'static str>,
    ) -> Result<String, ControlError> {
        auth::operator(&self.shared, request, change).await
    }

    async fn audit(&self, who: &str, action: &str, detail: String, allowed: bool) {
        self.shared.audit(who, action, detail, allowed).await;
    }

    /// Makes `nodes` the desired config (a new version unless nothing changed or `dry_run`), then
    /// sends each changed, connected node its config and waits for the acks.
    async fn apply(
        &self,
        who: &str,
        latest: Option<ConfigVersionRecord>,
        change: Change,
        dry_run: bool,
    ) -> Result<PushConfigResponse, ControlError> {
        let Change {
            nodes,
            groups,
            comment,
            rollback_of,
        } = change;
        let empty = BTreeMap::new();
        let current = latest.as_ref().map(|l| &l.nodes).unwrap_or(&empty);
        let latest_nodes = latest
            .as_ref()
            .map(|l| (l.nodes.clone(), l.node_versions.clone()))
            .unwrap_or_default();
        let mut results = Vec::new();
        let mut changed = Vec::new();
        // The per-node diff is what a dry run is for; a real push answers with outcomes only, so
        // that the answer for a 10,000-node fleet stays far below the message limit.
        let diff = |old: &str, new: &str| {
            if dry_run {
                line_diff(old, new)
            } else {
                String::new()
            }
        };
        for (node, toml) in &nodes {
            let (change, diff) = match current.get(node) {
                None => (NodeChange::Added, diff("", toml)),
                Some(old) if old == toml => (NodeChange::Unchanged, String::new()),
                Some(old) => (NodeChange::Changed, diff(old, toml)),
            };
            if change != NodeChange::Unchanged {
                changed.push(node.clone());
            }
            let outcome = match (dry_run, change) {
                (true, _) => ApplyOutcome::DryRun,
                (false, NodeChange::Unchanged) => ApplyOutcome::Unchanged,
                (false, _) => ApplyOutcome::Unspecified, // set after sending
            };
            results.push(NodeResult {
                node: node.clone(),
                change: change as i32,
                diff,
                outcome: outcome as i32,
                error: String::new(),
            });
        }
        if dry_run || changed.is_empty() {
            return Ok(PushConfigResponse {
                version: 0,
                nodes: results,
            });
        }
        let version = latest.as_ref().map(|l| l.version).unwrap_or(0) + 1;
        let mut node_versions = latest.map(|l| l.node_versions).unwrap_or_default();
        node_versions.retain(|node, _| nodes.contains_key(node));
        for node in &changed {
            node_versions.insert(node.clone(), version);
        }
        let record = ConfigVersionRecord {
            version,
            unix_ms: unix_ms(),
            author: who.to_owned(),
            comment,
            nodes: nodes.clone(),
            node_versions,
            nodes_changed: changed.clone(),
            rollback_of,
            groups: groups.clone(),
            layouts: None,
        };
        let stored = record.clone();
        blocking(&self.shared.store, move |s| s.put_config_version(&stored)).await?;
        self.shared.latest.offer(record.clone());
        let action = if rollback_of == 0 {
            "push config"
        } else {
            "rollback"
        };
        self.audit(
            who,
            action,
            format!("version {version}: nodes {}", changed.join(", ")),
            true,
        )
        .await;

        let docs: BTreeMap<String, NodeConfigDoc> = results
            .iter()
            .filter(|r| r.outcome == ApplyOutcome::Unspecified as i32)
            .map(|r| {
                let doc = NodeConfigDoc {
                    version,
                    toml: nodes.get(&r.node).cloned().unwrap_or_default(),
                };
                (r.node.clone(), doc)
            })
            .collect();
        let outcomes = self.roll_out(&groups, docs).await;
        for result in &mut results {
            if let Some((outcome, error)) = outcomes.get(&result.node) {
                result.outcome = *outcome as i32;
                result.error = error.clone();
            }
        }
        let not_applied: Vec<String> = outcomes
            .iter()
            .filter(|(_, (outcome, _))| {
                matches!(
                    outcome,
                    ApplyOutcome::Failed | ApplyOutcome::Timeout | ApplyOutcome::Held
                )
            })
            .map(|(node, _)| node.clone())
            .collect();
        if !not_applied.is_empty() {
            self.record_kept(who, latest_nodes, record, &not_applied)
                .await?;
        }
        Ok(PushConfigResponse {
            version,
            nodes: results,
        })
    }

    /// After a push that some nodes did not apply (refused, no answer, or held back), records
    /// what the fleet really runs as a new version: those nodes at their previous config and
    /// version (the agent kept it), the others at the pushed one. Every version stays in the
    /// history; the pushed one is never rewritten.
    async fn record_kept(
        &self,
        who: &str,
        (old_nodes, old_versions): (BTreeMap<String, String>, BTreeMap<String, u64>),
        pushed: ConfigVersionRecord,
        not_applied: &[String],
    ) -> Result<(), ControlError> {
        let mut record = pushed.clone();
        record.version = pushed.version + 1;
        record.unix_ms = unix_ms();
        record.rollback_of = 0;
        record.comment = format!(
            "version {} stopped: {} kept the previous config",
            pushed.version,
            not_applied.join(", ")
        );
        record.nodes_changed = not_applied.to_vec();
        for node in not_applied {
            match (old_nodes.get(node), old_versions.get(node)) {
                (Some(text), Some(version)) => {
                    record.nodes.insert(node.clone(), text.clone());
                    record.node_versions.insert(node.clone(), *version);
                }
                _ => {
                    record.nodes.remove(node);
                    record.node_versions.remove(node);
                }
            }
        }
        let detail = record.comment.clone();
        blocking(&self.shared.store, move |s| s.put_config_version(&record)).await?;
        self.audit(who, "push stopped", detail, true).await;
        Ok(())
    }

    /// Sends each doc to its node: the members of a rollout group one after the other; the
    /// first failure anywhere stops the push (nodes not yet sent are held back); nodes in no
    /// group go in parallel with the groups.
    async fn roll_out(
        &self,
        groups: &BTreeMap<String, Vec<String>>,
        mut docs: BTreeMap<String, NodeConfigDoc>,
    ) -> BTreeMap<String, (ApplyOutcome, String)> {
        let mut sequences: Vec<Vec<(String, NodeConfigDoc)>> = Vec::new();
        for members in groups.values() {
            let sequence: Vec<_> = members
                .iter()
                .filter_map(|node| docs.remove(node).map(|doc| (node.clone(), doc)))
                .collect();
            sequences.push(sequence);
        }
        sequences.extend(docs.into_iter().map(|entry| vec![entry]));
        let failed: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let failed = &failed;
        let first_failure = || failed.lock().map(|f| f.clone()).unwrap_or(None);
        let runs = sequences.into_iter().map(|sequence| {
            let pair_span = trace::pair_span(sequence.iter().map(|(node, _)| node.as_str()));
            async move {
                let mut out = Vec::new();
                for (node, doc) in sequence {
                    if let Some(first) = first_failure() {
                        let why = format!("not sent: {first} failed first");
                        out.push((node, (ApplyOutcome::Held, why)));
                        continue;
                    }
                    let (metrics, version) = (&self.shared.metrics, doc.version);
                    let send = self.send_config(&node, doc);
                    let (outcome, error) = trace::apply_node(metrics, &node, version, send).await;
                    if matches!(outcome, ApplyOutcome::Failed | ApplyOutcome::Timeout)
                        && let Ok(mut first) = failed.lock()
                    {
                        first.get_or_insert_with(|| node.clone());
                    }
                    out.push((node, (outcome, error)));
                }
                out
            }
            .instrument(pair_span)
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn send_config(&self, node: &str, doc: NodeConfigDoc) -> (ApplyOutcome, String) {
        if !self.shared.registry.is_connected(node) {
            return (ApplyOutcome::Offline, String::new());
        }
        let action = command::Action::ApplyConfig(ApplyConfig { config: Some(doc) });
        match self
            .shared
            .registry
            .command(node, action, self.shared.command_timeout)
            .await
        {
            Ok(ack) if ack.ok => (ApplyOutcome::Applied, String::new()),
            Ok(ack) => (ApplyOutcome::Failed, ack.error),
            Err(ControlError::CommandTimeout(_)) => {
                (ApplyOutcome::Timeout, "no ack in time".into())
            }
            Err(ControlError::NotConnected(_)) => (ApplyOutcome::Offline, String::new()),
            Err(e) => (ApplyOutcome::Failed, e.to_string()),
        }
    }
}

/// One watcher's stream: the events of the nodes in `filter` (all if empty), a `lagged` marker
/// where the watcher fell more than the broadcast buffer behind, ending when `stopping` turns
/// true.
fn watch_stream(
    events: broadcast::Receiver<FleetEvent>,
    filter: Vec<String>,
    mut stopping: watch::Receiver<bool>,
) -> impl Stream<Item = Result<FleetEvent, Status>> + Send + 'static {
    BroadcastStream::new(events)
        .filter_map(move |item| {
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
        })
        .take_until(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        })
}

/// What a push or rollback makes the desired state.
struct Change {
    nodes: BTreeMap<String, String>,
    groups: BTreeMap<String, Vec<String>>,
    comment: String,
    rollback_of: u64,
}

/// Every group member must have a config, and be in one group only.
fn check_groups(
    groups: &BTreeMap<String, Vec<String>>,
    nodes: &BTreeMap<String, String>,
) -> Result<(), ControlError> {
    let mut seen = std::collections::BTreeSet::new();
    for (name, members) in groups {
        for node in members {
            if !nodes.contains_key(node) {
                return Err(ControlError::InvalidConfig(format!(
                    "rollout group `{name}` names `{node}`, which has no config"
                )));
            }
            if !seen.insert(node) {
                return Err(ControlError::InvalidConfig(format!(
                    "`{node}` is in more than one rollout group"
                )));
            }
        }
    }
    Ok(())
}

/// One line per error: `node: message` (the message alone when it names the node already).
fn join_errors(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(|e| {
            if e.node.is_empty() || e.message.contains(&e.node) {
                e.message.clone()
            } else {
                format!("{}: {}", e.node, e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn validation_errors(configs: &[NodeConfigEntry]) -> Vec<ValidationError> {
    configs
        .iter()
        .filter_map(|entry| {
            validate_node_config(&entry.node, &entry.toml)
                .err()
                .map(|message| ValidationError {
                    node: entry.node.clone(),
                    message,
                })
        })
        .collect()
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
        // The remaining buffered events may still be yielded; the stream then ends.
        while stream.next().await.is_some() {}
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
