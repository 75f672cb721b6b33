//! The fleet view: what agents report, in the order the registry saw it, turned into presence
//! ([`crate::presence`]), availability ([`crate::sla`]), split brains ([`crate::splitbrain`])
//! and DNS reconciles.
//!
//! Guarantees: the fleet view never believes a dead node. A node whose session ended claims
//! nothing for split brain from that moment; its last report stays believed for availability
//! and DNS only for its presence lease, and when the lease runs out without a reconnect the node
//! is `unknown` and stopped holding its VIPs when its session ended. DNS follows holders (the
//! snapshots' `vips_held`), not states: every change of holders and every transition wakes the
//! reconciler at once, and a change during a reconcile schedules another, so no result is lost.
//! Split brains are raised after one advert interval of their instance and published, raise
//! before end, in the order the detector decided them; a demotion is sent only while the raised
//! masters, all with live sessions, still claim the VIP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hav_proto::v1::{
    FleetEvent, NodePresence, Presence, SetPriorityOverride, SplitBrain, StateSnapshot, VrrpState,
    command, fleet_event,
};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::Instant;

use super::{Orchestrator, lock};
use crate::leader::Fence;
use crate::node_state_writer::Batch;
use crate::registry::Report;
use crate::sla::{Accounting, Ledger};
use crate::splitbrain::{self, Claim, Detector, Finding, InstanceReport};
use crate::store::{Store, StoreError};
use crate::unix_ms;

/// What the split-brain announcer publishes, in order.
#[derive(Debug)]
pub(super) enum Announcement {
    /// A split brain outlasted its grace: resolve it (if enabled) and publish it.
    Raised(splitbrain::SplitBrain),
    /// A raised split brain is over.
    Over { vip: String },
}

/// The advert interval of every instance of the latest config version, by (node, instance).
pub(super) type PushedIntervals = BTreeMap<(String, String), Duration>;

impl Orchestrator {
    /// Reports in; presence, availability, split brains and DNS requests out, until the
    /// coordinator stops.
    pub(super) async fn feed(self: Arc<Self>, mut reports: broadcast::Receiver<Report>) {
        let mut stopping = self.shared.stopping.clone();
        let stop = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stop);
        let mut recheck = tokio::time::interval(super::DNS_RECHECK);
        loop {
            let expiry = lock(&self.presence).next_expiry();
            let lease_ends = async {
                match expiry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break,
                report = reports.recv() => match report {
                    Ok(report) => self.on_report(report).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "fleet view lagged; starting again from the registry");
                        self.resync().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = lease_ends => self.end_leases().await,
                _ = recheck.tick() => self.request_dns(),
            }
        }
    }

    async fn on_report(self: &Arc<Self>, report: Report) {
        match report {
            Report::Connected { node, session } => lock(&self.presence).connected(&node, session),
            Report::Snapshot {
                node,
                session,
                snapshot,
            } => {
                if lock(&self.presence).is_current(&node, session) {
                    self.on_snapshot(&node, &snapshot).await;
                }
            }
            Report::Transition { node, session, .. } => {
                // The snapshot showing it came first; the reconcile reads the holders.
                if lock(&self.presence).is_current(&node, session) {
                    self.request_dns();
                }
            }
            Report::Disconnected {
                node,
                session,
                unix_ms,
            } => self.on_disconnected(&node, session, unix_ms).await,
        }
    }

    /// Starts again from the registry after missed reports: sessions it no longer has ended
    /// now; every open session's latest snapshot is observed again.
    async fn resync(self: &Arc<Self>) {
        let live = self.shared.registry.connected();
        let open: std::collections::HashMap<&str, u64> =
            live.iter().map(|l| (l.name.as_str(), l.session)).collect();
        let believed_open: Vec<(String, u64)> = lock(&self.presence)
            .sessions()
            .map(|(node, session)| (node.to_owned(), session))
            .collect();
        for (node, session) in believed_open {
            if open.get(node.as_str()) != Some(&session) {
                self.on_disconnected(&node, session, unix_ms()).await;
            }
        }
        for node in live {
            lock(&self.presence).connected(&node.name, node.session);
            if let Some(snapshot) = &node.snapshot {
                self.on_snapshot(&node.name, snapshot).await;
            }
        }
    }

    async fn on_snapshot(self: &Arc<Self>, node: &str, snapshot: &StateSnapshot) {
        let at = if snapshot.unix_ms == 0 {
            unix_ms()
        } else {
            snapshot.unix_ms
        };
        let held: Vec<String> = snapshot
            .instances
            .iter()
            .flat_map(|i| i.vips_held.iter().cloned())
            .collect();
        let changed = {
            let mut sla = lock(&self.sla);
            let changed = sla.observe_snapshot(node, &held, at);
            ledgers(&sla, changed)
        };
        let reports: Vec<InstanceReport<'_>> = snapshot
            .instances
            .iter()
            .map(|i| InstanceReport {
                instance: &i.name,
                vrid: i.vrid,
                master: i.state == VrrpState::Master as i32,
                priority: i.effective_priority,
                vips: &i.vips_held,
                advert_interval: (i.advert_interval_ms > 0)
                    .then(|| Duration::from_millis(u64::from(i.advert_interval_ms))),
            })
            .collect();
        let address = self
            .shared
            .registry
            .peer_of(node)
            .and_then(|peer| peer.parse::<SocketAddr>().ok())
            .map(|a| a.ip());
        {
            let mut detector = lock(&self.detector);
            let findings = detector.observe_node(node, address, &reports, unix_ms());
            self.on_findings(findings);
        }
        if !changed.is_empty() {
            self.persist_ledgers(changed);
            self.request_dns();
        }
    }

    /// The end of a session: the node claims nothing for split brain from now on; for
    /// availability and DNS what it last reported is believed until its lease runs out.
    /// `ended_ms`: when the registry saw the session end (the feed may handle it later, after
    /// a peer's takeover it reported meanwhile).
    async fn on_disconnected(self: &Arc<Self>, node: &str, session: u64, ended_ms: u64) {
        // A stopping coordinator ends every session itself: not the nodes' doing. The next
        // start gives every node a lease of its own.
        if *self.shared.stopping.borrow() {
            return;
        }
        let now_ms = ended_ms;
        if !lock(&self.presence).disconnected(node, session, now_ms, Instant::now()) {
            return;
        }
        tracing::info!(
            %node,
            ttl = ?self.config.presence_ttl,
            "session ended: no split brain counts it; its last report is believed until it \
             reconnects or its lease runs out"
        );
        {
            let mut detector = lock(&self.detector);
            let findings = detector.forget_node(node, now_ms);
            self.on_findings(findings);
        }
        let changed = {
            let mut sla = lock(&self.sla);
            let changed = sla.session_ended(node, now_ms);
            ledgers(&sla, changed)
        };
        if !changed.is_empty() {
            self.persist_ledgers(changed);
        }
    }

    /// Ends the leases that ran out: those nodes are unknown, and stopped holding their VIPs
    /// when their sessions ended.
    async fn end_leases(&self) {
        let expired = lock(&self.presence).expire(Instant::now());
        for (node, since_ms) in expired {
            tracing::warn!(
                %node,
                since_ms,
                "unknown: no session for the whole presence lease; what it last reported is no \
                 longer believed"
            );
            let changed = {
                let mut sla = lock(&self.sla);
                let changed = sla.lease_ended(&node);
                ledgers(&sla, changed)
            };
            if !changed.is_empty() {
                self.persist_ledgers(changed);
                self.request_dns();
            }
            self.shared.registry.publish(FleetEvent {
                node,
                unix_ms: unix_ms(),
                kind: Some(fleet_event::Kind::Presence(Presence {
                    connected: false,
                    state: NodePresence::Unknown as i32,
                })),
            });
        }
    }

    /// Acts on what the detector found; called with the detector locked, so that the
    /// announcements queue up in the order it decided them.
    fn on_findings(self: &Arc<Self>, findings: Vec<Finding>) {
        for finding in findings {
            match finding {
                Finding::Detected(split) => self.confirm_split_brain(split),
                Finding::Resolved { vip, .. } => {
                    let _ = self.announcements.send(Announcement::Over { vip });
                }
            }
        }
    }

    /// Raises `split` if the same masters still claim its VIP once its grace is over.
    fn confirm_split_brain(self: &Arc<Self>, split: splitbrain::SplitBrain) {
        let this = self.clone();
        self.spawn(async move {
            let pushed = this.pushed_intervals().await;
            let grace = splitbrain::grace(
                &split,
                |claim: &Claim| {
                    pushed
                        .get(&(claim.node.clone(), claim.instance.clone()))
                        .copied()
                },
                this.config.split_brain_grace_floor,
            );
            tokio::time::sleep(grace).await;
            let mut detector = lock(&this.detector);
            if let Some(split) = detector.raise(&split.vip, &split.masters) {
                let _ = this.announcements.send(Announcement::Raised(split));
            }
        });
    }

    /// Publishes split brains and their ends in the order they were decided; resolves raised
    /// ones first when the operator enabled it.
    pub(super) async fn announce(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<Announcement>,
    ) {
        while let Some(announcement) = queue.recv().await {
            match announcement {
                Announcement::Raised(split) => self.raise_split_brain(split).await,
                Announcement::Over { vip } => self.publish_split_brain(SplitBrain {
                    vip,
                    resolved: true,
                    ..SplitBrain::default()
                }),
            }
        }
    }

    async fn raise_split_brain(&self, split: splitbrain::SplitBrain) {
        let masters: Vec<&str> = split.masters.iter().map(|c| c.node.as_str()).collect();
        tracing::warn!(vip = %split.vip, ?masters, "split brain");
        let mut action = String::new();
        if self.config.resolve_split_brain && !self.shared.leadership.role().leads() {
            action = format!(
                "none here: resolved by the leading coordinator ({})",
                self.shared
                    .leadership
                    .leader()
                    .unwrap_or_else(|| "none yet".into())
            );
        } else if self.config.resolve_split_brain {
            // Only while these masters, every one with a live session, still claim the VIP:
            // never demote the survivor of a master that died meanwhile.
            if lock(&self.detector).is_raised(&split.vip, &split.masters) {
                for loser in Detector::losers(&split) {
                    let outcome = self.demote(loser).await;
                    action.push_str(&format!(
                        "{} {} ({}): {outcome}; ",
                        loser.node, loser.instance, loser.priority
                    ));
                    self.audit(
                        "coordinator",
                        "resolve split brain",
                        format!("{}: {action}", split.vip),
                    )
                    .await;
                }
            } else {
                action = "none: over before it could be resolved".into();
            }
        }
        self.publish_split_brain(SplitBrain {
            vip: split.vip.clone(),
            vrid: split.masters.first().map(|c| c.vrid).unwrap_or(0),
            masters: split.masters.iter().map(|c| c.node.clone()).collect(),
            resolved: false,
            action: action.trim_end_matches("; ").to_owned(),
        });
    }

    /// Gives `loser`'s instance priority 1 for the drain TTL; says how that went.
    async fn demote(&self, loser: &Claim) -> String {
        let demote = command::Action::SetPriorityOverride(SetPriorityOverride {
            instance: loser.instance.clone(),
            priority: 1,
            ttl_seconds: u32::try_from(self.config.drain.ttl.as_secs()).unwrap_or(u32::MAX),
        });
        let outcome = self
            .shared
            .registry
            .command(&loser.node, demote, self.shared.command_timeout)
            .await;
        match outcome {
            Ok(ack) if ack.ok => "demoted".to_owned(),
            Ok(ack) => format!("demotion refused: {}", ack.error),
            Err(e) => format!("demotion failed: {e}"),
        }
    }

    fn publish_split_brain(&self, event: SplitBrain) {
        self.shared.registry.publish(FleetEvent {
            node: String::new(),
            unix_ms: unix_ms(),
            kind: Some(fleet_event::Kind::SplitBrain(event)),
        });
    }

    /// The advert intervals of the latest config version, parsed once per version.
    async fn pushed_intervals(&self) -> Arc<PushedIntervals> {
        let latest = match self.shared.latest.get(&self.shared.store).await {
            Ok(Some(latest)) => latest,
            Ok(None) => return Arc::default(),
            Err(e) => {
                tracing::warn!("config unreadable, advert intervals unknown: {e}");
                return Arc::default();
            }
        };
        // Parsing every node's config of a version costs seconds at 10,000 nodes: done once
        // per version, off the runtime's workers, while the split brains found meanwhile wait.
        let mut cached = self.intervals.lock().await;
        if let Some((version, intervals)) = &*cached
            && *version == latest.version
        {
            return intervals.clone();
        }
        let record = latest.clone();
        let intervals = tokio::task::spawn_blocking(move || intervals_of(&record))
            .await
            .unwrap_or_default();
        let intervals = Arc::new(intervals);
        *cached = Some((latest.version, intervals.clone()));
        intervals
    }

    /// Wakes the DNS reconciler (a no-op without DNS).
    pub(super) fn request_dns(&self) {
        self.dns_wanted.notify_one();
    }

    /// Reconciles the DNS each time it is asked to (see [`on_every_request`]).
    pub(super) async fn reconcile_dns_on_request(self: Arc<Self>) {
        on_every_request(&self.dns_wanted, || self.reconcile_dns()).await
    }

    /// The VIPs some node is believed to hold now.
    pub(super) fn held(&self) -> BTreeSet<std::net::IpAddr> {
        lock(&self.sla)
            .held()
            .iter()
            .filter_map(|vip| vip.parse().ok())
            .collect()
    }

    /// Queues `ledgers` to be written as the leader (behind: the feed never waits for the
    /// disk, and a burst of changes is one commit); a coordinator that does not lead writes none.
    pub(super) fn persist_ledgers(&self, ledgers: Vec<(String, Ledger)>) {
        let Some(fence) = self.shared.leadership.role().fence() else {
            return;
        };
        if !ledgers.is_empty() {
            self.ledger_writer.submit((fence, ledgers));
        }
    }
}

/// SLA ledgers waiting to be written: the latest of each VIP, under the newest fence submitted
/// (a coordinator writes what it believes now, as the leader it is now).
#[derive(Default)]
pub(crate) struct LedgerWrites {
    fence: Option<Fence>,
    ledgers: BTreeMap<String, Ledger>,
}

impl Batch for LedgerWrites {
    type Item = (Fence, Vec<(String, Ledger)>);
    const WHAT: &'static str = "SLA ledgers";

    fn push(&mut self, (fence, ledgers): Self::Item) {
        self.fence = Some(fence);
        self.ledgers.extend(ledgers);
    }

    fn count(&self) -> usize {
        self.ledgers.len()
    }

    fn write(self, store: &dyn Store) -> Result<(), StoreError> {
        let Some(fence) = self.fence else {
            return Ok(());
        };
        let records = (self.ledgers.iter())
            .map(|(vip, ledger)| {
                let bytes =
                    serde_json::to_vec(ledger).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((vip.clone(), bytes))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        store
            .put_records_fenced(&fence, super::SLA_SPACE, &records)
            .map(drop)
    }
}

/// Runs `work` once per request on `wanted`, one run at a time, forever. Requests made while it
/// runs are kept (one permit) and run it once more, and each run reads its inputs anew: what
/// changed during a run is never lost, and a burst of requests costs one more run, not one each.
async fn on_every_request<F, Fut>(wanted: &Notify, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        wanted.notified().await;
        work().await;
    }
}

/// The ledgers of `vips`, to persist.
pub(super) fn ledgers(sla: &Accounting, vips: Vec<String>) -> Vec<(String, Ledger)> {
    vips.into_iter()
        .filter_map(|vip| sla.ledgers().get(&vip).map(|l| (vip, l.clone())))
        .collect()
}

/// The advert interval of every instance of every node in `latest`.
fn intervals_of(latest: &crate::store::ConfigVersionRecord) -> PushedIntervals {
    let mut intervals = PushedIntervals::new();
    for (node, text) in &latest.nodes {
        let origin = format!("config version {} of {node}", latest.version);
        // Every stored config was validated before it was stored; one that no longer parses
        // (a schema change) only loses its intervals.
        let Ok(config) = hav_proto::config::parse_node_config(text, &origin) else {
            continue;
        };
        for instance in &config.instances {
            intervals.insert(
                (node.clone(), instance.name.clone()),
                instance.advert_interval.as_duration(),
            );
        }
    }
    intervals
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::sync::Semaphore;

    use super::*;

    #[tokio::test]
    async fn a_change_during_a_run_runs_it_again_and_a_burst_runs_it_once_more() {
        let wanted = Arc::new(Notify::new());
        let holders = Arc::new(AtomicU64::new(1));
        // Each run reads the holders, then waits for the test to let it finish.
        let finish = Arc::new(Semaphore::new(0));
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let runner = {
            let (wanted, holders, finish) = (wanted.clone(), holders.clone(), finish.clone());
            tokio::spawn(async move {
                on_every_request(&wanted, || {
                    let (holders, finish, seen_tx) =
                        (holders.clone(), finish.clone(), seen_tx.clone());
                    async move {
                        let _ = seen_tx.send(holders.load(Ordering::SeqCst));
                        if let Ok(permit) = finish.acquire().await {
                            permit.forget();
                        }
                    }
                })
                .await;
            })
        };
        wanted.notify_one();
        assert_eq!(seen.recv().await, Some(1));
        // Changes while that run is under way: three requests.
        for n in 2..=4 {
            holders.store(n, Ordering::SeqCst);
            wanted.notify_one();
        }
        finish.add_permits(1);
        // One more run, which sees the last change.
        assert_eq!(seen.recv().await, Some(4));
        finish.add_permits(1);
        tokio::task::yield_now().await;
        assert!(
            seen.try_recv().is_err(),
            "a burst runs it once more, not once each"
        );
        runner.abort();
    }
}
