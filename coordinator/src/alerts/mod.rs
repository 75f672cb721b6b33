//! Alerts from the coordinator to webhook receivers, in Alertmanager's format: a node gone (its
//! lease ran out), a VIP without a holder, a split brain, a rollout that failed, a certificate
//! near expiry; each also when it ends.
//!
//! Guarantees: only the leading coordinator alerts (a fleet with several coordinators pages
//! once), and one that stops leading forgets its alerts for the next leader to raise; the
//! alert task reads fleet events and never blocks their publisher (a lagging reader is told so
//! and goes on); receivers are fed by [`sender`], which never blocks this task.

pub mod payload;
pub mod rules;
pub mod sender;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hav_proto::v1::{NodePresence, fleet_event};
use hyper::body::Bytes;
use tokio::sync::broadcast::error::RecvError;

use crate::state::Shared;
use crate::unix_ms;
use rules::{Alert, Rules};
use sender::{Sender, Webhook};

/// How often held VIPs are compared with the fleet's.
const HOLDER_CHECK: Duration = Duration::from_secs(1);
/// How often certificates are read again.
const CERT_CHECK: Duration = Duration::from_secs(3600);

/// What to alert on and whom to tell.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub webhooks: Vec<Webhook>,
    /// How long a VIP may stay without a holder before it is an alert.
    pub hold: Duration,
    /// Certificates expiring within this many days are an alert.
    pub certificate_days: u32,
    /// The certificates watched, by name (`coordinator`, `ca`).
    pub certificates: Vec<(String, PathBuf)>,
    /// Where a receiver can reach this coordinator (Alertmanager's `externalURL`).
    pub external_url: String,
}

/// Starts the alert task (nothing when no receiver is configured).
pub fn spawn(shared: Arc<Shared>, settings: AlertSettings) {
    if settings.webhooks.is_empty() {
        return;
    }
    let senders: Vec<Sender> = settings
        .webhooks
        .iter()
        .cloned()
        .map(Sender::spawn)
        .collect();
    tokio::spawn(run(shared, settings, senders));
}

async fn run(shared: Arc<Shared>, settings: AlertSettings, senders: Vec<Sender>) {
    let mut events = shared.registry.subscribe();
    let mut stopping = shared.stopping.clone();
    let mut holders = tokio::time::interval(HOLDER_CHECK);
    holders.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut certificates = tokio::time::interval(CERT_CHECK);
    let mut rules = Rules::default();
    let mut leading = false;
    loop {
        let mut told: Vec<Alert> = Vec::new();
        tokio::select! {
            () = async { let _ = stopping.wait_for(|stop| *stop).await; } => return,
            event = events.recv() => match event {
                Ok(event) => {
                    let now = unix_ms();
                    match event.kind {
                        Some(fleet_event::Kind::Presence(presence)) => {
                            let state = NodePresence::try_from(presence.state).ok();
                            if state == Some(NodePresence::Unknown) {
                                told.extend(rules.node(&event.node, true, now));
                            } else if state == Some(NodePresence::Connected) || presence.connected {
                                told.extend(rules.node(&event.node, false, now));
                            }
                        }
                        Some(fleet_event::Kind::SplitBrain(split)) => {
                            told.extend(rules.split_brain(&split.vip, &split.masters, split.resolved, now));
                        }
                        Some(fleet_event::Kind::Rollout(job)) if job.status == "failed" => {
                            told.extend(rules.rollout_failed(job.id, &job.error, now));
                        }
                        _ => {}
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "alerts missed fleet events");
                }
                Err(RecvError::Closed) => return,
            },
            _ = holders.tick() => {
                let vips = fleet_vips(&shared).await;
                let held = held_vips(&shared);
                told.extend(rules.holders(&vips, &held, millis(settings.hold), unix_ms()));
            }
            _ = certificates.tick() => {
                for (name, path) in &settings.certificates {
                    let left = days_left(path).filter(|days| *days <= i64::from(settings.certificate_days));
                    told.extend(rules.certificate(name, left, unix_ms()));
                }
            }
        }
        let leads = shared.leadership.role().leads();
        if !leads {
            if leading {
                tracing::info!("not leading: alerts left to the leader");
            }
            leading = false;
            rules.clear();
            continue;
        }
        leading = true;
        if told.is_empty() {
            continue;
        }
        for alert in &told {
            tracing::info!(
                alert = alert.labels.get("alertname").map(String::as_str).unwrap_or_default(),
                resolved = alert.resolved,
                labels = %alert.key(),
                "alert"
            );
        }
        let body = payload::webhook("hav-coordinator", &settings.external_url, &told);
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        for sender in &senders {
            sender.send(body.clone());
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Every VIP of the latest config's groups.
async fn fleet_vips(shared: &Arc<Shared>) -> BTreeSet<String> {
    match shared.latest.get(&shared.store).await {
        Ok(Some(latest)) => (latest.layouts.iter().flatten())
            .flat_map(|layout| layout.vips.iter().map(ToString::to_string))
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// The VIPs some connected node reports holding.
fn held_vips(shared: &Arc<Shared>) -> BTreeSet<String> {
    (shared.registry.connected().iter())
        .filter_map(|live| live.snapshot.as_ref())
        .flat_map(|snapshot| snapshot.instances.iter())
        .flat_map(|instance| instance.vips_held.iter())
        .map(|vip| crate::sla::vip_key(vip))
        .collect()
}

/// Days until the first certificate in `path` expires (negative: expired); `None` when it
/// cannot be read (said in the log).
fn days_left(path: &std::path::Path) -> Option<i64> {
    let certs = match hav_proto::transport::load_certs(path, "certificate") {
        Ok(certs) => certs,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "certificate not checked for expiry");
            return None;
        }
    };
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let now = i64::try_from(unix_ms() / 1000).unwrap_or(i64::MAX);
    Some((not_after - now).div_euclid(86_400))
}
