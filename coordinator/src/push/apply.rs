//! From a [`Desired`] state to a new config version and the nodes running it: the per-node change
//! against the latest version (with a diff on a dry run), the version committed before anything
//! is sent, then each changed, connected node sent its config, one node at a time per rollout
//! group, the first failure anywhere holding back what was not sent yet. What the fleet then
//! really runs is stored as one more version when a node did not apply its config.

use std::collections::BTreeMap;

use hav_proto::v1::{
    ApplyConfig, ApplyOutcome, NodeChange, NodeConfigDoc, NodeResult, PushConfigResponse, command,
};
use tracing::Instrument;

use super::validate::{ValidatedPush, check_groups};
use crate::diff::{line_diff, pushed_part};
use crate::error::ControlError;
use crate::state::{Shared, blocking};
use crate::store::{ConfigVersionRecord, GroupLayout};
use crate::telemetry::trace;
use crate::unix_ms;

/// What a push or a rollback makes the fleet run: every node's canonical config, the rollout
/// groups and the group layouts, and why.
#[derive(Debug, Clone)]
pub struct Desired {
    pub nodes: BTreeMap<String, String>,
    pub groups: BTreeMap<String, Vec<String>>,
    pub layouts: Option<Vec<GroupLayout>>,
    pub comment: String,
    /// Non-zero for a rollback: the version restored.
    pub rollback_of: u64,
}

impl Desired {
    /// `push` set against the latest version: a fleet file replaces every node config, node
    /// configs are merged in; rollout groups and layouts not given stay the latest's. Refused if
    /// a rollout group names a node without a config, or a node twice.
    pub fn push(
        push: ValidatedPush,
        latest: Option<&ConfigVersionRecord>,
        comment: String,
    ) -> Result<Desired, ControlError> {
        let mut nodes = match (push.whole_fleet, latest) {
            (false, Some(latest)) => latest.nodes.clone(),
            _ => BTreeMap::new(),
        };
        nodes.extend(push.nodes.into_iter().map(|(node, v)| (node, v.text)));
        let groups = match push.groups {
            Some(groups) => groups,
            None => latest.map(|l| l.groups.clone()).unwrap_or_default(),
        };
        check_groups(&groups, &nodes)?;
        let layouts = push
            .layouts
            .or_else(|| latest.and_then(|l| l.layouts.clone()));
        Ok(Desired {
            nodes,
            groups,
            layouts,
            comment,
            rollback_of: 0,
        })
    }

    /// The configs and rollout groups of `target` again. The layouts stay the latest version's:
    /// DNS and availability follow the fleet file pushed last, as they did before versions kept
    /// layouts.
    pub fn rollback(
        target: ConfigVersionRecord,
        latest: Option<&ConfigVersionRecord>,
        comment: String,
    ) -> Desired {
        Desired {
            nodes: target.nodes,
            groups: target.groups,
            layouts: latest.and_then(|l| l.layouts.clone()),
            comment,
            rollback_of: target.version,
        }
    }
}

/// Makes `desired` the next version after `latest` (unless nothing changed, or `dry_run`), then
/// sends each changed, connected node its config and waits for the acks.
pub async fn apply(
    shared: &Shared,
    who: &str,
    latest: Option<ConfigVersionRecord>,
    desired: Desired,
    dry_run: bool,
) -> Result<PushConfigResponse, ControlError> {
    let Desired {
        nodes,
        groups,
        layouts,
        comment,
        rollback_of,
    } = desired;
    let empty = BTreeMap::new();
    let current = latest.as_ref().map(|l| &l.nodes).unwrap_or(&empty);
    let mut results = Vec::new();
    let mut changed = Vec::new();
    // The per-node diff is what a dry run is for; a real push answers with outcomes only, so
    // that the answer for a 10,000-node fleet stays far below the message limit. Both the change
    // and the diff are of what a push sets: the sections an agent keeps from its local file
    // (`[node]` but its name, `[coordinator]`, `[telemetry]`) are never a change.
    let diff = |old: &str, new: &str| {
        if dry_run {
            line_diff(old, new)
        } else {
            String::new()
        }
    };
    for (node, toml) in &nodes {
        let (change, diff) = match current.get(node) {
            None if dry_run => (NodeChange::Added, diff("", &pushed_part(toml))),
            None => (NodeChange::Added, String::new()),
            Some(old) if old == toml => (NodeChange::Unchanged, String::new()),
            Some(old) => {
                let (old, new) = (pushed_part(old), pushed_part(toml));
                if old == new {
                    (NodeChange::Unchanged, String::new())
                } else {
                    (NodeChange::Changed, diff(&old, &new))
                }
            }
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
    // A fleet file that lays its groups out anew is a new version even when no node config
    // changes: the layouts live in the version.
    let layouts_changed = layouts.as_ref() != latest.as_ref().and_then(|l| l.layouts.as_ref());
    if dry_run || (changed.is_empty() && !layouts_changed) {
        return Ok(PushConfigResponse {
            version: 0,
            nodes: results,
        });
    }
    let version = latest.as_ref().map(|l| l.version).unwrap_or(0) + 1;
    let mut node_versions = (latest.as_ref())
        .map(|l| l.node_versions.clone())
        .unwrap_or_default();
    node_versions.retain(|node, _| nodes.contains_key(node));
    for node in &changed {
        node_versions.insert(node.clone(), version);
    }
    let record = ConfigVersionRecord {
        version,
        unix_ms: unix_ms(),
        author: who.to_owned(),
        comment,
        nodes,
        node_versions,
        nodes_changed: changed.clone(),
        rollback_of,
        groups,
        layouts,
    };
    let record = store_version(shared, record).await?;
    let action = if rollback_of == 0 {
        "push config"
    } else {
        "rollback"
    };
    let detail = if changed.is_empty() {
        format!("version {version}: group layouts")
    } else {
        format!("version {version}: nodes {}", changed.join(", "))
    };
    shared.audit(who, action, detail, true).await;

    let docs: BTreeMap<String, NodeConfigDoc> = (results.iter())
        .filter(|r| r.outcome == ApplyOutcome::Unspecified as i32)
        .map(|r| {
            let doc = NodeConfigDoc {
                version,
                toml: record.nodes.get(&r.node).cloned().unwrap_or_default(),
            };
            (r.node.clone(), doc)
        })
        .collect();
    let outcomes = roll_out(shared, &record.groups, docs).await;
    for result in &mut results {
        if let Some((outcome, error)) = outcomes.get(&result.node) {
            result.outcome = *outcome as i32;
            result.error = error.clone();
        }
    }
    let not_applied: Vec<String> = (outcomes.iter())
        .filter(|(_, (outcome, _))| {
            matches!(
                outcome,
                ApplyOutcome::Failed | ApplyOutcome::Timeout | ApplyOutcome::Held
            )
        })
        .map(|(node, _)| node.clone())
        .collect();
    if !not_applied.is_empty() {
        record_kept(shared, who, latest.as_ref(), &record, &not_applied).await?;
    }
    Ok(PushConfigResponse {
        version,
        nodes: results,
    })
}

/// Commits `record` as the next version and makes it the cached latest.
async fn store_version(
    shared: &Shared,
    record: ConfigVersionRecord,
) -> Result<std::sync::Arc<ConfigVersionRecord>, ControlError> {
    let stored = record.clone();
    blocking(&shared.store, move |s| s.put_config_version(&stored)).await?;
    Ok(shared.latest.offer(record))
}

/// After a push that some nodes did not apply (refused, no answer, or held back), records what
/// the fleet really runs as a new version: those nodes at their previous config and version (the
/// agent kept it), the others at the pushed one. Every version stays in the history; the pushed
/// one is never rewritten.
async fn record_kept(
    shared: &Shared,
    who: &str,
    before: Option<&ConfigVersionRecord>,
    pushed: &ConfigVersionRecord,
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
        let previous = before.and_then(|b| Some((b.nodes.get(node)?, b.node_versions.get(node)?)));
        match previous {
            Some((text, version)) => {
                record.nodes.insert(node.clone(), text.clone());
                record.node_versions.insert(node.clone(), *version);
            }
            None => {
                record.nodes.remove(node);
                record.node_versions.remove(node);
            }
        }
    }
    let detail = record.comment.clone();
    store_version(shared, record).await?;
    shared.audit(who, "push stopped", detail, true).await;
    Ok(())
}

/// Sends each doc to its node: the members of a rollout group one after the other; the first
/// failure anywhere stops the push (nodes not yet sent are held back); nodes in no group go in
/// parallel with the groups.
async fn roll_out(
    shared: &Shared,
    groups: &BTreeMap<String, Vec<String>>,
    mut docs: BTreeMap<String, NodeConfigDoc>,
) -> BTreeMap<String, (ApplyOutcome, String)> {
    let mut sequences: Vec<Vec<(String, NodeConfigDoc)>> = Vec::new();
    for members in groups.values() {
        let sequence: Vec<_> = (members.iter())
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
                let version = doc.version;
                let send = send_config(shared, &node, doc);
                let (outcome, error) =
                    trace::apply_node(&shared.metrics, &node, version, send).await;
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

async fn send_config(shared: &Shared, node: &str, doc: NodeConfigDoc) -> (ApplyOutcome, String) {
    if !shared.registry.is_connected(node) {
        return (ApplyOutcome::Offline, String::new());
    }
    let action = command::Action::ApplyConfig(ApplyConfig { config: Some(doc) });
    match shared
        .registry
        .command(node, action, shared.command_timeout)
        .await
    {
        Ok(ack) if ack.ok => (ApplyOutcome::Applied, String::new()),
        Ok(ack) => (ApplyOutcome::Failed, ack.error),
        Err(ControlError::CommandTimeout(_)) => (ApplyOutcome::Timeout, "no ack in time".into()),
        Err(ControlError::NotConnected(_)) => (ApplyOutcome::Offline, String::new()),
        Err(e) => (ApplyOutcome::Failed, e.to_string()),
    }
}
