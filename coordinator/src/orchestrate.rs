//! The orchestration runtime: feeds what agents report into availability accounting
//! ([`crate::sla`]), split-brain detection ([`crate::splitbrain`]) and DNS publishing
//! ([`crate::dns`]), and runs drains and rollouts ([`crate::rollout`]) for `FleetService`.
//!
//! The fleet view ([`view`]) is fed by the registry's reports, in order, and never believes a
//! dead node: see its guarantees.
//!
//! Guarantees: SLA ledgers, drain records and rollout jobs are persisted in the store after each
//! change and reloaded at start-up (a job found running is marked `interrupted`, to be resumed by
//! the operator); every node known from before a start is on a presence lease long enough for
//! every live agent to reconnect; the feed never blocks an agent (it reads the registry's
//! broadcast and lags rather than waits); DNS is reconciled whenever a VIP's holders change, on
//! every transition and every [`DNS_RECHECK`], which also finds drift made behind our back.
//! Group layouts (DNS name, VIPs, nodes) are those of the latest config version (what the last
//! fleet file pushed laid out).

mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hav_proto::v1::{
    AGENT_RECONNECT_MAX, Availability, ControlRolloutRequest, DnsRecordSet, DnsShowResponse,
    DrainRequest, DrainResponse, FleetEvent, RolloutJob, RolloutNode, SlaResponse,
    StartRolloutRequest, command, control_rollout_request, fleet_event,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::dns::{self, Desired, DnsClient};
use crate::error::ControlError;
use crate::leader::Role;
use crate::presence::{Leases, Presence};
use crate::rollout::drain::{Move, plan_drain};
use crate::rollout::job::{self, JobRecord, JobSpec, Status};
use crate::rollout::plan::{self, Group};
use crate::rollout::{DrainSettings, Fleet, drain_node, settle_connections, undrain_node};
use crate::sla::{Accounting, Ledger, Month};
use crate::splitbrain::Detector;
use crate::state::{Shared, blocking};
use crate::store::GroupLayout;
use crate::unix_ms;

/// How often the DNS is read back even when nothing changed (drift repair).
pub const DNS_RECHECK: Duration = Duration::from_secs(30);
const SLA_SPACE: &str = "sla";
const DRAIN_SPACE: &str = "drains";
const JOB_SPACE: &str = "rollouts";
/// Where group layouts were kept before config versions kept them; read for such a version only.
const LEGACY_LAYOUT_SPACE: &str = "layouts";

/// Orchestration settings of a coordinator.
#[derive(Debug, Clone)]
pub struct OrchestrationConfig {
    pub dns: Option<DnsSettings>,
    /// Resolve split brains by demoting the loser (off: only report them).
    pub resolve_split_brain: bool,
    pub drain: DrainSettings,
    /// Two masters are raised as a split brain once they outlast one advert interval of their
    /// instance (a preemption or a make-before-break handover has two for a few milliseconds),
    /// and never sooner than this: their two reports cross the coordinator within a few
    /// milliseconds, this covers a loaded coordinator with an order of magnitude to spare.
    pub split_brain_grace_floor: Duration,
    /// How long the last report of a node whose session ended is still believed (`--presence-ttl`).
    pub presence_ttl: Duration,
}

/// The default `--presence-ttl`: longer than an agent takes to reconnect after a dropped session
/// (its first retry comes within 200 ms, the next within 400 ms) or to be restarted by systemd
/// (`RestartSec=1s`), so neither makes a node unknown; short next to the 30 s TTL of the DNS
/// records, so a dead pair leaves DNS within seconds. The availability figures do not depend on
/// it: a node that does not come back stopped holding its VIPs when its session ended.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(5);

impl Default for OrchestrationConfig {
    fn default() -> OrchestrationConfig {
        OrchestrationConfig {
            dns: None,
            resolve_split_brain: false,
            drain: DrainSettings::default(),
            split_brain_grace_floor: Duration::from_millis(100),
            presence_ttl: DEFAULT_PRESENCE_TTL,
        }
    }
}

/// The zone's authoritative server and the TSIG key file (BIND `key` syntax).
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub server: SocketAddr,
    pub zone: String,
    pub key_file: PathBuf,
    pub ttl: u32,
}

/// A drained node, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    pub who: String,
    pub reason: String,
    pub since_ms: u64,
    pub ttl_seconds: u64,
    pub moves: Vec<Move>,
}

/// The orchestration state of a running coordinator.
pub struct Orchestrator {
    shared: Arc<Shared>,
    config: OrchestrationConfig,
    dns: Option<DnsClient>,
    sla: Mutex<Accounting>,
    detector: Mutex<Detector>,
    /// Whose reports are believed.
    presence: Mutex<Leases>,
    /// Split-brain raises and ends, queued in the order the detector decided them.
    announcements: mpsc::UnboundedSender<view::Announcement>,
    /// Wakes the DNS reconciler.
    dns_wanted: Notify,
    /// The advert intervals of a config version (the split-brain grace), by version. An async
    /// lock held while they are worked out: one pass over a version, whoever else asks waits.
    intervals: tokio::sync::Mutex<Option<(u64, Arc<view::PushedIntervals>)>>,
    /// The jobs running here now.
    running: Mutex<BTreeMap<u64, RunningJob>>,
    job_updates: broadcast::Sender<JobRecord>,
    dns_lock: tokio::sync::Mutex<()>,
    /// Every task orchestration runs (feed, jobs, split-brain confirmations).
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// Writes the SLA ledgers behind the feed.
    ledger_writer: crate::node_state_writer::WriteBehind<view::LedgerWrites>,
}

/// A job this coordinator runs.
struct RunningJob {
    /// Asks the job to stop at its next step boundary and undrain (an operator's abort).
    abort: watch::Sender<bool>,
    /// Stops it where it is (leadership lost: the next leader resumes it).
    task: tokio::task::AbortHandle,
}

/// Why orchestration could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestrationError {
    #[error("TSIG key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl Orchestrator {
    /// Loads the persisted state and starts the feed.
    pub async fn start(
        shared: Arc<Shared>,
        config: OrchestrationConfig,
    ) -> Result<Arc<Orchestrator>, OrchestrationError> {
        let dns = match &config.dns {
            Some(settings) => {
                let text = std::fs::read_to_string(&settings.key_file).map_err(|e| {
                    OrchestrationError::Key {
                        path: settings.key_file.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let signer = dns::parse_bind_key(&text).map_err(|e| OrchestrationError::Key {
                    path: settings.key_file.clone(),
                    reason: e.to_string(),
                })?;
                Some(DnsClient::new(settings.server, &settings.zone, signer)?)
            }
            None => None,
        };
        let (ledgers, jobs, known) = blocking(&shared.store, |s| {
            Ok((
                s.records(SLA_SPACE)?,
                s.records(JOB_SPACE)?,
                s.node_states()?.into_keys().collect::<Vec<String>>(),
            ))
        })
        .await?;
        let mut sla = Accounting::default();
        for (vip, bytes) in ledgers {
            match serde_json::from_slice::<Ledger>(&bytes) {
                Ok(ledger) => sla.restore(vip, ledger),
                Err(e) => tracing::warn!(%vip, "SLA ledger unreadable, starting it afresh: {e}"),
            }
        }
        // Alone with its store, a coordinator that starts knows that a running job's runner
        // died with it. Sharing it, the job may be running on the leader: the leader resumes
        // what nobody runs (`lead`).
        if shared.leadership.role() == Role::Sole {
            for (_, bytes) in jobs {
                let Ok(mut job) = serde_json::from_slice::<JobRecord>(&bytes) else {
                    continue;
                };
                if job.status == Status::Running {
                    job.status = Status::Interrupted;
                    job.error = "the coordinator restarted; resume or abort".into();
                    persist_job(&shared, &job);
                }
            }
        }
        // Every node known from before this start: what it last reported is believed until every
        // live agent has had the time to reconnect; one that does not stopped holding its VIPs
        // at this start (what happened while no coordinator ran is not known).
        let now_ms = unix_ms();
        let until = tokio::time::Instant::now() + config.presence_ttl + AGENT_RECONNECT_MAX;
        let mut presence = Leases::new(config.presence_ttl);
        let mut restored = Vec::new();
        for node in known.iter().chain(sla.holders().iter()) {
            presence.restore(node, now_ms, until);
            restored.extend(sla.session_ended(node, now_ms));
        }
        let restored = view::ledgers(&sla, restored);
        let (job_updates, _) = broadcast::channel(256);
        let (announcements, queue) = mpsc::unbounded_channel();
        let orchestrator = Arc::new(Orchestrator {
            shared: shared.clone(),
            config,
            dns,
            sla: Mutex::new(sla),
            detector: Mutex::new(Detector::default()),
            presence: Mutex::new(presence),
            announcements,
            dns_wanted: Notify::new(),
            intervals: tokio::sync::Mutex::new(None),
            running: Mutex::new(BTreeMap::new()),
            job_updates,
            dns_lock: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            ledger_writer: crate::node_state_writer::WriteBehind::start(shared.store.clone()),
        });
        orchestrator.persist_ledgers(restored);
        // Subscribed before the server accepts any agent: the view misses no report.
        let reports = shared.registry.subscribe_reports();
        orchestrator.spawn(orchestrator.clone().feed(reports));
        orchestrator.spawn(orchestrator.clone().announce(queue));
        if orchestrator.dns.is_some() {
            orchestrator.spawn(orchestrator.clone().reconcile_dns_on_request());
        }
        if orchestrator.shared.leadership.role() != Role::Sole {
            orchestrator.spawn(orchestrator.clone().lead());
        }
        Ok(orchestrator)
    }

    /// The presence of `node`, as the fleet view has it.
    pub fn presence(&self, node: &str) -> Presence {
        lock(&self.presence).get(node)
    }

    /// Follows this coordinator's leadership (on a shared store): on taking it, resumes every
    /// job recorded running that no coordinator runs any more and reconciles the DNS; on losing
    /// it, stops its jobs where they are (their writes would be refused anyway), for the next
    /// leader to resume.
    async fn lead(self: Arc<Self>) {
        let mut role = self.shared.leadership.subscribe();
        let mut leading = false;
        loop {
            let leads = role.borrow_and_update().leads();
            if leads && !leading {
                self.take_over().await;
                self.request_dns();
            } else if !leads && leading {
                for (id, job) in std::mem::take(&mut *lock(&self.running)) {
                    job.task.abort();
                    tracing::warn!(
                        job = id,
                        "rollout job stopped here: this coordinator no longer leads; the next leader resumes it"
                    );
                }
            }
            leading = leads;
            if role.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resumes the jobs recorded running that this coordinator does not run (their runner was
    /// the previous leader), each once the agents of its unfinished nodes have reconnected here
    /// or they have had the time to ([`Orchestrator::await_reconnected`]).
    async fn take_over(self: &Arc<Self>) {
        let jobs = match blocking(&self.shared.store, |s| s.records(JOB_SPACE)).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!("rollout jobs unreadable, none resumed: {e}");
                return;
            }
        };
        let name = self.shared.leadership.name().to_owned();
        for bytes in jobs.values() {
            let Ok(job) = serde_json::from_slice::<JobRecord>(bytes) else {
                continue;
            };
            if job.status != Status::Running || lock(&self.running).contains_key(&job.id) {
                continue;
            }
            let this = self.clone();
            let name = name.clone();
            self.spawn(async move {
                this.await_reconnected(&job).await;
                if !this.shared.leadership.role().leads()
                    || lock(&this.running).contains_key(&job.id)
                {
                    return;
                }
                tracing::info!(
                    job = job.id,
                    "resuming the rollout job of the previous leader"
                );
                this.audit(
                    &format!("coordinator {name}"),
                    "rollout resume",
                    format!("job {}: taken over as the new leader", job.id),
                )
                .await;
                this.spawn_job(job);
            });
        }
    }

    /// Returns once every unfinished node of `job` has a session here, or once an agent that
    /// lost its coordinator has had the time to reconnect (its longest backoff and the presence
    /// TTL): a node still away then fails its step as it would have under the old leader.
    async fn await_reconnected(&self, job: &JobRecord) {
        let waiting: Vec<&String> = job
            .nodes
            .iter()
            .filter(|(_, record)| record.step != job::Step::Done)
            .map(|(node, _)| node)
            .collect();
        let mut changes = self.shared.registry.watch_changes();
        let all_here = async {
            loop {
                let connected = self.shared.registry.connected();
                if waiting
                    .iter()
                    .all(|node| connected.iter().any(|live| &&live.name == node))
                {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let grace = self.config.presence_ttl + AGENT_RECONNECT_MAX;
        if tokio::time::timeout(grace, all_here).await.is_err() {
            tracing::warn!(
                job = job.id,
                "not every node of the job reconnected within {grace:?}; resuming anyway"
            );
        }
    }

    /// Refuses what only the leader may do, naming the leader.
    fn require_leader(&self) -> Result<(), ControlError> {
        let leadership = &self.shared.leadership;
        if leadership.role().leads() {
            return Ok(());
        }
        Err(ControlError::NotLeader {
            this: leadership.name().to_owned(),
            leader: leadership.leader(),
        })
    }

    /// Stops every orchestration task and waits for them. Alone with its store, a job that was
    /// running is recorded as `interrupted` (resume it after the restart); sharing it, the job
    /// stays running for the next leader to resume. Called when the coordinator shuts down.
    pub async fn shutdown(&self) {
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        // Nothing submits any more: what the feed changed is written, still as the leader.
        self.ledger_writer.close().await;
        let running: Vec<u64> = std::mem::take(&mut *lock(&self.running))
            .into_keys()
            .collect();
        if self.shared.leadership.role() != Role::Sole {
            return;
        }
        let shared = self.shared.clone();
        let store = self.shared.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let Ok(records) = store.records(JOB_SPACE) else {
                return;
            };
            for bytes in records.values() {
                let Ok(mut job) = serde_json::from_slice::<JobRecord>(bytes) else {
                    continue;
                };
                if running.contains(&job.id) && !job.finished() {
                    job.status = Status::Interrupted;
                    job.error = "interrupted by a coordinator shutdown; resume or abort".into();
                    persist_job(&shared, &job);
                }
            }
        })
        .await;
    }

    fn spawn(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::AbortHandle {
        let mut tasks = lock(&self.tasks);
        // Forget the tasks that finished (split-brain confirmations, jobs).
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task)
    }

    /// The group layouts in force: the latest config version's; for a version stored before
    /// versions kept layouts, the layout records written then.
    async fn layouts(&self) -> Vec<GroupLayout> {
        let latest = match self.shared.latest.get(&self.shared.store).await {
            Ok(latest) => latest,
            Err(e) => {
                tracing::warn!("layouts unreadable: {e}");
                return Vec::new();
            }
        };
        if let Some(layouts) = latest.as_ref().and_then(|l| l.layouts.as_ref()) {
            return layouts.clone();
        }
        match blocking(&self.shared.store, |s| s.records(LEGACY_LAYOUT_SPACE)).await {
            Ok(records) => records
                .values()
                .filter_map(|bytes| serde_json::from_slice(bytes).ok())
                .collect(),
            Err(e) => {
                tracing::warn!("layouts unreadable: {e}");
                Vec::new()
            }
        }
    }

    /// Reads back every group's DNS name and repairs drift (the leader only).
    async fn reconcile_dns(&self) {
        if self.shared.leadership.role().leads() {
            let _ = self.dns_show(true).await;
        }
    }

    /// What the DNS holds for each group and what it should; with `repair`, fixes drift.
    pub async fn dns_show(&self, repair: bool) -> DnsShowResponse {
        let Some(client) = &self.dns else {
            return DnsShowResponse::default();
        };
        let _serial = self.dns_lock.lock().await;
        // Only the leader writes to the DNS; another coordinator shows what it finds.
        let repair = repair && self.shared.leadership.role().leads();
        let held = self.held();
        let ttl = self.config.dns.as_ref().map(|d| d.ttl).unwrap_or(30);
        let mut records = Vec::new();
        for layout in self.layouts().await {
            let Some(name) = &layout.dns_name else {
                continue;
            };
            let desired = dns::desired_records(&layout.vips, &held);
            let mut record = DnsRecordSet {
                group: layout.name.clone(),
                name: name.clone(),
                vips: layout.vips.iter().map(|v| v.to_string()).collect(),
                held: layout
                    .vips
                    .iter()
                    .filter(|v| held.contains(v))
                    .map(|v| v.to_string())
                    .collect(),
                ..DnsRecordSet::default()
            };
            match &desired {
                Desired::Records(set) => {
                    record.desired = set.iter().map(|v| v.to_string()).collect()
                }
                Desired::KeepAsIs => record.keep_as_is = true,
            }
            let result = async {
                let rr = client.record_name(name, ttl)?;
                if repair {
                    dns::reconcile(client, &rr, &desired).await
                } else {
                    let found = client.lookup(&rr.name).await?;
                    let drift = matches!(&desired, Desired::Records(want) if *want != found);
                    Ok(dns::DnsReport {
                        name: name.clone(),
                        desired: desired.clone(),
                        found,
                        drift,
                        updated: false,
                    })
                }
            }
            .await;
            match result {
                Ok(report) => {
                    record.published = report.found.iter().map(|v| v.to_string()).collect();
                    record.drift = report.drift;
                    record.repaired = report.updated;
                    if report.updated {
                        tracing::info!(group = %layout.name, %name, "DNS record set updated");
                    }
                }
                Err(e) => {
                    tracing::warn!(group = %layout.name, %name, "DNS: {e}");
                    record.error = e.to_string();
                }
            }
            records.push(record);
        }
        DnsShowResponse {
            configured: true,
            records,
        }
    }

    /// The availability report of `month` (empty: the current one).
    pub async fn sla(&self, month: &str) -> Result<SlaResponse, ControlError> {
        let now = unix_ms();
        let month: Month = if month.is_empty() {
            Month::containing(now)
        } else {
            month
                .parse()
                .map_err(|e: crate::sla::MonthError| ControlError::InvalidArgument {
                    argument: "month",
                    reason: e.to_string(),
                })?
        };
        let groups: BTreeMap<String, Vec<String>> = self
            .layouts()
            .await
            .into_iter()
            .map(|l| (l.name, l.vips.iter().map(|v| v.to_string()).collect()))
            .collect();
        let report = lock(&self.sla).report(month, now, &groups);
        let convert = |f: crate::sla::Figures| Availability {
            name: f.name,
            period_ms: f.period_ms,
            unobserved_ms: f.unobserved_ms,
            one_holder_ms: f.tally.one_holder_ms,
            no_holder_ms: f.tally.no_holder_ms,
            split_brain_ms: f.tally.split_brain_ms,
            failovers: f.tally.failovers,
            availability_percent: f.availability_percent.unwrap_or(0.0),
            no_data: f.availability_percent.is_none(),
        };
        Ok(SlaResponse {
            month: report.month.to_string(),
            vips: report.vips.into_iter().map(convert).collect(),
            groups: report.groups.into_iter().map(convert).collect(),
        })
    }

    /// The drain record of `node`, if it is drained (or a drain of it was begun).
    async fn drain_record(&self, node: &str) -> Result<Option<DrainRecord>, ControlError> {
        let name = node.to_owned();
        let record = blocking(&self.shared.store, move |s| {
            Ok(s.records(DRAIN_SPACE)?.remove(&name))
        })
        .await?;
        Ok(record.and_then(|bytes| serde_json::from_slice::<DrainRecord>(&bytes).ok()))
    }

    async fn put_drain_record(&self, node: &str, record: &DrainRecord) -> Result<(), ControlError> {
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        let name = node.to_owned();
        blocking(&self.shared.store, move |s| {
            s.put_record(DRAIN_SPACE, &name, &bytes)
        })
        .await?;
        Ok(())
    }

    /// Drains or undrains a node for `who`.
    pub async fn drain(
        &self,
        who: &str,
        request: DrainRequest,
    ) -> Result<DrainResponse, ControlError> {
        let node = request.node.clone();
        let mut settings = self.config.drain;
        settings.command_timeout = self.shared.command_timeout;
        if request.ttl_seconds > 0 {
            settings.ttl = Duration::from_secs(u64::from(request.ttl_seconds));
        }
        if request.connection_deadline_seconds > 0 {
            settings.connection_deadline =
                Duration::from_secs(u64::from(request.connection_deadline_seconds));
        }
        let fleet: &dyn Fleet = &self.shared.registry;
        let earlier = self.drain_record(&node).await?;
        if request.undrain {
            let moves = earlier.map(|r| r.moves).unwrap_or_default();
            let result = undrain_node(fleet, &node, &moves, settings).await;
            // Lifting the takeover overrides also lifted any intent an operator set on those
            // instances: the peers get theirs again.
            let peers: std::collections::BTreeSet<&str> =
                moves.iter().map(|m| m.peer.as_str()).collect();
            for peer in peers {
                crate::priority::reapply(&self.shared, peer).await;
            }
            let ok = result.is_ok();
            let error = result.err().map(|e| e.to_string()).unwrap_or_default();
            self.audit(
                who,
                "undrain",
                format!("node {node}: ok={ok} {error} reason: {}", request.reason),
            )
            .await;
            if ok {
                let name = node.clone();
                blocking(&self.shared.store, move |s| {
                    s.delete_record(DRAIN_SPACE, &name)
                })
                .await?;
            }
            return Ok(DrainResponse {
                ok,
                error,
                moved: Vec::new(),
                ..DrainResponse::default()
            });
        }
        // Write-ahead: the moves about to be made are recorded, with those of an earlier drain of
        // this node not yet undone, before any override is sent, so an undrain lifts every one of
        // them even when the coordinator running this drain dies before it ends.
        let mut recorded = earlier.map(|r| r.moves).unwrap_or_default();
        if let Ok(planned) = plan_drain(&node, &fleet.views()) {
            merge_moves(&mut recorded, &planned);
            let record = DrainRecord {
                who: who.to_owned(),
                reason: request.reason.clone(),
                since_ms: unix_ms(),
                ttl_seconds: settings.ttl.as_secs(),
                moves: recorded.clone(),
            };
            self.put_drain_record(&node, &record).await?;
        }
        let result = match drain_node(fleet, &node, settings).await {
            Ok(moves) => settle_connections(fleet, &node, request.force, settings)
                .await
                .map(|connections| (moves, connections)),
            Err(e) => Err(e),
        };
        match result {
            Ok((moves, connections)) => {
                let moved = moves
                    .iter()
                    .flat_map(|m| m.vips.iter().map(move |v| format!("{v} -> {}", m.peer)))
                    .collect::<Vec<_>>();
                merge_moves(&mut recorded, &moves);
                let record = DrainRecord {
                    who: who.to_owned(),
                    reason: request.reason.clone(),
                    since_ms: unix_ms(),
                    ttl_seconds: settings.ttl.as_secs(),
                    moves: recorded,
                };
                self.put_drain_record(&node, &record).await?;
                self.audit(
                    who,
                    "drain",
                    format!(
                        "node {node}: moved {}; ttl {}s; connections {} at the move, {} broken; reason: {}",
                        moved.join(", "),
                        settings.ttl.as_secs(),
                        connections.at_move,
                        connections.broken,
                        request.reason
                    ),
                )
                .await;
                Ok(DrainResponse {
                    ok: true,
                    error: String::new(),
                    moved,
                    connections_at_move: connections.at_move,
                    connections_broken: connections.broken,
                })
            }
            Err(e) => {
                self.audit(
                    who,
                    "drain",
                    format!("node {node}: refused: {e}; reason: {}", request.reason),
                )
                .await;
                Ok(DrainResponse {
                    ok: false,
                    error: e.to_string(),
                    ..DrainResponse::default()
                })
            }
        }
    }

    /// Plans and starts a rollout job.
    pub async fn start_rollout(
        self: &Arc<Self>,
        who: &str,
        request: StartRolloutRequest,
    ) -> Result<RolloutJob, ControlError> {
        self.require_leader()?;
        let latest = blocking(&self.shared.store, |s| s.latest_config_version()).await?;
        let all_groups = latest.map(|l| l.groups).unwrap_or_default();
        let groups: Vec<Group> = all_groups
            .into_iter()
            .filter(|(name, _)| request.all || request.groups.contains(name))
            .map(|(name, nodes)| Group { name, nodes })
            .collect();
        for wanted in &request.groups {
            if !groups.iter().any(|g| &g.name == wanted) {
                return Err(ControlError::InvalidConfig(format!(
                    "no rollout group `{wanted}`"
                )));
            }
        }
        let waves = plan::plan(
            &groups,
            request.max_parallel.max(1) as usize,
            request.canary as usize,
        )
        .map_err(|e| ControlError::InvalidConfig(e.to_string()))?;
        let jobs = blocking(&self.shared.store, |s| s.records(JOB_SPACE)).await?;
        let id = jobs
            .keys()
            .filter_map(|k| k.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let spec = JobSpec {
            max_parallel: request.max_parallel.max(1) as usize,
            canary: request.canary as usize,
            exec: request.exec,
            health_timeout_seconds: match request.health_timeout_seconds {
                0 => 120,
                s => u64::from(s),
            },
            connection_deadline_seconds: u64::from(request.connection_deadline_seconds),
        };
        let job = JobRecord::new(id, who.to_owned(), request.reason, spec, waves, unix_ms());
        persist_job(&self.shared, &job);
        self.audit(
            who,
            "rollout start",
            format!("job {id}: {} waves", job.waves.len()),
        )
        .await;
        self.spawn_job(job.clone());
        Ok(job_proto(&job))
    }

    /// Status, resume or abort of a job.
    pub async fn control_rollout(
        self: &Arc<Self>,
        who: &str,
        request: ControlRolloutRequest,
    ) -> Result<RolloutJob, ControlError> {
        let mut job = self.load_job(request.job).await?;
        if request.action() != control_rollout_request::Action::Status {
            self.require_leader()?;
        }
        let running = lock(&self.running)
            .get(&job.id)
            .map(|running| running.abort.clone());
        match request.action() {
            control_rollout_request::Action::Status => {}
            control_rollout_request::Action::Resume => {
                if running.is_none() && !job.finished() {
                    self.audit(who, "rollout resume", format!("job {}", job.id))
                        .await;
                    job.status = Status::Running;
                    // Persisted before the reply: a watch opened right after `resume` must see
                    // the job running, not the `interrupted` record that would end it at once.
                    persist_job(&self.shared, &job);
                    self.spawn_job(job.clone());
                }
            }
            control_rollout_request::Action::Abort => {
                self.audit(who, "rollout abort", format!("job {}", job.id))
                    .await;
                match running {
                    Some(abort) => {
                        abort.send_replace(true);
                    }
                    None if !job.finished() => {
                        job.status = Status::Aborted;
                        persist_job(&self.shared, &job);
                    }
                    None => {}
                }
            }
        }
        Ok(job_proto(&job))
    }

    /// The job now and each change after, until it stops.
    pub async fn watch_rollout(
        &self,
        id: u64,
    ) -> Result<(RolloutJob, broadcast::Receiver<JobRecord>), ControlError> {
        let updates = self.job_updates.subscribe();
        let job = self.load_job(id).await?;
        Ok((job_proto(&job), updates))
    }

    async fn load_job(&self, id: u64) -> Result<JobRecord, ControlError> {
        let key = job_key(id);
        let bytes = blocking(&self.shared.store, move |s| {
            Ok(s.records(JOB_SPACE)?.remove(&key))
        })
        .await?;
        bytes
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ControlError::InvalidConfig(format!("no rollout job {id}")))
    }

    fn spawn_job(self: &Arc<Self>, job: JobRecord) {
        let (abort_tx, abort_rx) = watch::channel(false);
        // Held until the job is registered as running, so that it cannot end before.
        let mut running = lock(&self.running);
        let this = self.clone();
        let mut settings = self.config.drain;
        settings.command_timeout = self.shared.command_timeout;
        let id = job.id;
        let task = self.spawn(async move {
            let shared = this.shared.clone();
            let updates = this.job_updates.clone();
            let registry_this = this.clone();
            let stopping = this.shared.stopping.clone();
            let on_change: job::OnChange = Arc::new(move |job: &JobRecord| {
                // A job that fails because the coordinator is stopping was interrupted; sharing
                // the store, it stays recorded as running, for the next leader to resume.
                let mut job = job.clone();
                if *stopping.borrow() && shared.leadership.role() != Role::Sole {
                    return;
                }
                if *stopping.borrow() && job.status == Status::Failed {
                    job.status = Status::Interrupted;
                    job.error = format!("interrupted by a coordinator shutdown ({})", job.error);
                }
                let job = &job;
                persist_job(&shared, job);
                let _ = updates.send(job.clone());
                registry_this.shared.registry.publish(FleetEvent {
                    node: String::new(),
                    unix_ms: unix_ms(),
                    kind: Some(fleet_event::Kind::Rollout(job_proto(job))),
                });
            });
            let fleet: Arc<dyn Fleet> = Arc::new(RegistryFleet(this.shared.clone()));
            let id = job.id;
            let done = job::run(fleet, job, settings, abort_rx, on_change).await;
            lock(&this.running).remove(&id);
            tracing::info!(job = id, status = ?done.status, "rollout job stopped");
        });
        running.insert(
            id,
            RunningJob {
                abort: abort_tx,
                task,
            },
        );
    }

    async fn audit(&self, who: &str, action: &str, detail: String) {
        self.shared.audit(who, action, detail, true).await;
    }
}

/// The registry of a shared coordinator state, owned (for spawned jobs).
struct RegistryFleet(Arc<Shared>);

impl Fleet for RegistryFleet {
    fn views(&self) -> Vec<crate::rollout::drain::NodeView> {
        Fleet::views(&self.0.registry)
    }
    fn command(
        &self,
        node: &str,
        action: command::Action,
        timeout: Duration,
    ) -> futures::future::BoxFuture<'_, Result<hav_proto::v1::CommandAck, ControlError>> {
        Fleet::command(&self.0.registry, node, action, timeout)
    }
    fn changes(&self) -> watch::Receiver<u64> {
        self.0.registry.watch_changes()
    }
    fn events(&self) -> broadcast::Receiver<FleetEvent> {
        self.0.registry.subscribe()
    }
}

/// Stores a job as the leader (a short synchronous write: jobs change a few times per node);
/// nothing is written by a coordinator that does not lead, nor by one deposed since.
fn persist_job(shared: &Shared, job: &JobRecord) {
    let Some(fence) = shared.leadership.role().fence() else {
        tracing::warn!(
            job = job.id,
            "rollout job not persisted: this coordinator does not lead"
        );
        return;
    };
    match serde_json::to_vec(job) {
        Ok(bytes) => {
            let key = job_key(job.id);
            if let Err(e) = shared
                .store
                .put_record_fenced(&fence, JOB_SPACE, &key, &bytes)
            {
                tracing::error!(job = job.id, "rollout job not persisted: {e}");
            }
        }
        Err(e) => tracing::error!(job = job.id, "rollout job not encodable: {e}"),
    }
}

fn job_key(id: u64) -> String {
    format!("{id:020}")
}

/// A job as the API shows it.
pub fn job_proto(job: &JobRecord) -> RolloutJob {
    let kebab = |v: &dyn erased::Kebab| v.kebab();
    RolloutJob {
        id: job.id,
        status: kebab(&job.status),
        who: job.who.clone(),
        reason: job.reason.clone(),
        created_unix_ms: job.created_ms,
        updated_unix_ms: job.updated_ms,
        waves: u32::try_from(job.waves.len()).unwrap_or(u32::MAX),
        nodes: job
            .waves
            .iter()
            .flatten()
            .filter_map(|n| job.nodes.get(n).map(|r| (n, r)))
            .map(|(node, r)| RolloutNode {
                node: node.clone(),
                wave: u32::try_from(r.wave).unwrap_or(u32::MAX),
                step: kebab(&r.step),
                detail: r.detail.clone(),
                output: r.output.clone(),
            })
            .collect(),
        error: job.error.clone(),
    }
}

mod erased {
    /// The serde (kebab-case) name of a unit enum value.
    pub trait Kebab {
        fn kebab(&self) -> String;
    }
    impl<T: serde::Serialize> Kebab for T {
        fn kebab(&self) -> String {
            serde_json::to_value(self)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections are plain updates of in-memory values: a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds to `recorded` the moves of `more` it lacks (a move is the peer instance raised for one
/// VRID of the node: recorded once, lifted once).
fn merge_moves(recorded: &mut Vec<Move>, more: &[Move]) {
    for m in more {
        let known = recorded
            .iter()
            .any(|r| r.vrid == m.vrid && r.peer == m.peer && r.peer_instance == m.peer_instance);
        if !known {
            recorded.push(m.clone());
        }
    }
}
