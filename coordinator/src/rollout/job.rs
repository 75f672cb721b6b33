//! Rollout jobs: drain one node of each pair at a time (waves from [`super::plan`]), optionally
//! run a command on it through its agent, wait until it is healthy, undrain it, move on.
//!
//! Guarantees: a wave starts only when the previous one is complete, so two nodes of a pair are
//! never out together; the job stops after the wave in which a node failed (drain refused,
//! command failed, not healthy in time) and keeps that node drained for the operator; every
//! step is persisted (`rollouts` records in the store) before the next begins, so a coordinator
//! restart loses nothing: a job found running at start-up is marked `interrupted` and continues
//! with `resume` from its first unfinished node (drain and undrain are idempotent). `abort`
//! stops at the next step boundary and undrains the node it interrupted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hav_proto::v1::{Exec, FleetEvent, command, event, fleet_event};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::drain::{Move, restored};
use super::{
    DrainSettings, Fleet, drain_node, healthy, settle_connections, undrain_node, wait_until,
};

/// Output lines kept per node.
const OUTPUT_LINES: usize = 20;

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub max_parallel: usize,
    pub canary: usize,
    /// Run on each drained node; empty: nothing.
    pub exec: Vec<String>,
    pub health_timeout_seconds: u64,
    /// How long a drained node's remaining connections may last (0: the drain default; jobs
    /// recorded before this field read as 0).
    #[serde(default)]
    pub connection_deadline_seconds: u64,
}

/// Where a node is in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Pending,
    Draining,
    Executing,
    WaitingHealthy,
    Undraining,
    Done,
    Failed,
}

/// Where the job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Running,
    Failed,
    Aborted,
    Done,
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub wave: usize,
    pub step: Step,
    pub detail: String,
    pub output: Vec<String>,
    /// The moves of its drain (to undrain after a restart).
    pub moves: Vec<Move>,
}

/// A job, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    pub status: Status,
    pub who: String,
    pub reason: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub spec: JobSpec,
    pub waves: Vec<Vec<String>>,
    pub nodes: BTreeMap<String, NodeRecord>,
    pub error: String,
}

impl JobRecord {
    /// A new job over `waves`.
    pub fn new(
        id: u64,
        who: String,
        reason: String,
        spec: JobSpec,
        waves: Vec<Vec<String>>,
        now_ms: u64,
    ) -> JobRecord {
        let nodes = waves
            .iter()
            .enumerate()
            .flat_map(|(wave, nodes)| {
                nodes.iter().map(move |node| {
                    let record = NodeRecord {
                        wave,
                        step: Step::Pending,
                        detail: String::new(),
                        output: Vec::new(),
                        moves: Vec::new(),
                    };
                    (node.clone(), record)
                })
            })
            .collect();
        JobRecord {
            id,
            status: Status::Running,
            who,
            reason,
            created_ms: now_ms,
            updated_ms: now_ms,
            spec,
            waves,
            nodes,
            error: String::new(),
        }
    }

    /// Whether the job has ended for good.
    pub fn finished(&self) -> bool {
        matches!(self.status, Status::Done | Status::Aborted)
    }
}

/// Called with the job after every change (persist it, tell watchers).
pub type OnChange = Arc<dyn Fn(&JobRecord) + Send + Sync>;

/// Runs `job` from its first unfinished node until it is done, fails or is aborted.
pub async fn run(
    fleet: Arc<dyn Fleet>,
    job: JobRecord,
    settings: DrainSettings,
    abort: watch::Receiver<bool>,
    on_change: OnChange,
) -> JobRecord {
    let job = Arc::new(Mutex::new(job));
    let update = |f: &dyn Fn(&mut JobRecord)| {
        let snapshot = {
            let mut job = lock(&job);
            f(&mut job);
            job.updated_ms = crate::unix_ms();
            job.clone()
        };
        on_change(&snapshot);
    };
    update(&|j| {
        j.status = Status::Running;
        j.error.clear();
    });
    let waves = lock(&job).waves.clone();
    for wave in waves {
        if *abort.borrow() {
            update(&|j| j.status = Status::Aborted);
            break;
        }
        let pending: Vec<String> = {
            let job = lock(&job);
            wave.into_iter()
                .filter(|n| job.nodes.get(n).is_some_and(|r| r.step != Step::Done))
                .collect()
        };
        let runs = pending.iter().map(|node| {
            run_node(
                fleet.clone(),
                node.clone(),
                job.clone(),
                settings,
                abort.clone(),
                &update,
            )
        });
        let results = futures::future::join_all(runs).await;
        if let Some(error) = results.into_iter().find_map(|r| r.err()) {
            let aborted = *abort.borrow();
            update(&|j| {
                j.status = if aborted {
                    Status::Aborted
                } else {
                    Status::Failed
                };
                j.error = error.clone();
            });
            break;
        }
    }
    update(&|j| {
        if j.status == Status::Running {
            j.status = Status::Done;
        }
    });
    lock(&job).clone()
}

/// Applies a change to the job record (and reports it).
type Update<'a> = dyn Fn(&dyn Fn(&mut JobRecord)) + Sync + 'a;

async fn run_node(
    fleet: Arc<dyn Fleet>,
    node: String,
    job: Arc<Mutex<JobRecord>>,
    settings: DrainSettings,
    abort: watch::Receiver<bool>,
    update: &Update<'_>,
) -> Result<(), String> {
    let set = |step: Step, detail: String| {
        update(&|j| {
            if let Some(r) = j.nodes.get_mut(&node) {
                r.step = step;
                r.detail.clone_from(&detail);
            }
        })
    };
    let fail = |detail: String| {
        set(Step::Failed, detail.clone());
        Err(format!("{node}: {detail}"))
    };
    let spec = lock(&job).spec.clone();

    set(Step::Draining, String::new());
    // A node resumed after a failure may still be drained: keep the moves of that drain, so
    // that undraining it also clears those peers' overrides.
    let mut moves = lock(&job)
        .nodes
        .get(&node)
        .map(|r| r.moves.clone())
        .unwrap_or_default();
    match drain_node(fleet.as_ref(), &node, settings).await {
        Ok(new) => {
            for m in new {
                if !moves.contains(&m) {
                    moves.push(m);
                }
            }
        }
        Err(e) => return fail(e.to_string()),
    }
    // The node counts as drained once the connections it still serves have ended (or were
    // broken at the deadline).
    let mut settle = settings;
    if spec.connection_deadline_seconds > 0 {
        settle.connection_deadline = Duration::from_secs(spec.connection_deadline_seconds);
    }
    match settle_connections(fleet.as_ref(), &node, false, settle).await {
        Ok(connections) if connections.at_move > 0 => tracing::info!(
            %node,
            at_move = connections.at_move,
            broken = connections.broken,
            "drained node's connections settled"
        ),
        Ok(_) => {}
        Err(e) => return fail(e.to_string()),
    }
    let moves = moves;
    let described = moves
        .iter()
        .map(|m| format!("{} -> {}", m.vips.join(","), m.peer))
        .collect::<Vec<_>>()
        .join("; ");
    update(&|j| {
        if let Some(r) = j.nodes.get_mut(&node) {
            r.moves.clone_from(&moves);
        }
    });
    let undrain_on_abort = || async {
        if *abort.borrow() {
            let _ = undrain_node(fleet.as_ref(), &node, &moves, settings).await;
            set(Step::Pending, "aborted: undrained".into());
            return Err(format!("{node}: aborted"));
        }
        Ok(())
    };
    undrain_on_abort().await?;

    let health_timeout = Duration::from_secs(spec.health_timeout_seconds.max(1));
    if !spec.exec.is_empty() {
        set(Step::Executing, described.clone());
        let mut events = fleet.events();
        let action = command::Action::Exec(Exec {
            argv: spec.exec.clone(),
            timeout_seconds: u32::try_from(health_timeout.as_secs()).unwrap_or(u32::MAX),
        });
        let keep_output = |event: FleetEvent| {
            if event.node != node {
                return;
            }
            if let Some(fleet_event::Kind::Agent(agent)) = event.kind
                && let Some(event::Kind::ExecOutput(out)) = agent.kind
            {
                let mut job = lock(&job);
                if let Some(r) = job.nodes.get_mut(&node) {
                    r.output.push(out.line);
                    let excess = r.output.len().saturating_sub(OUTPUT_LINES);
                    r.output.drain(..excess);
                }
            }
        };
        // The agent sends every line of output before the command's ack, and the fleet
        // publishes each event before it resolves the ack: once the command is answered, what
        // is left of its output is already queued here.
        let command = fleet.command(&node, action, health_timeout + settings.command_timeout);
        tokio::pin!(command);
        let result = loop {
            tokio::select! {
                biased;
                event = events.recv() => match event {
                    Ok(event) => keep_output(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break command.await,
                },
                result = &mut command => break result,
            }
        };
        loop {
            match events.try_recv() {
                Ok(event) => keep_output(event),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        match result {
            Ok(ack) if ack.ok => {}
            Ok(ack) => return fail(format!("command failed: {}", ack.error)),
            Err(e) => return fail(format!("command failed: {e}")),
        }
    }
    undrain_on_abort().await?;

    set(Step::WaitingHealthy, described.clone());
    if !wait_until(fleet.as_ref(), health_timeout, |views| {
        healthy(&node, views)
    })
    .await
    {
        return fail(format!(
            "not healthy within {health_timeout:?} (left drained)"
        ));
    }

    set(Step::Undraining, described.clone());
    if let Err(e) = undrain_node(fleet.as_ref(), &node, &moves, settings).await {
        return fail(e.to_string());
    }
    // The next wave may drain this node's peer: only once this node serves its share again.
    let back = wait_until(fleet.as_ref(), health_timeout, |views| {
        restored(&node, &moves, views)
    })
    .await;
    if !back {
        return fail(format!(
            "did not take its VIPs back within {health_timeout:?} (is preempt off?)"
        ));
    }
    set(Step::Done, described);
    Ok(())
}

fn lock(job: &Mutex<JobRecord>) -> std::sync::MutexGuard<'_, JobRecord> {
    // Every critical section is a plain field update: a poisoned lock holds a usable record.
    job.lock().unwrap_or_else(|p| p.into_inner())
}
