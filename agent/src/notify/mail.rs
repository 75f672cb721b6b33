//! SMTP alerts on state changes, worded as keepalived words them: subject
//! `[node] VRRP Instance VI_1 - Entering MASTER state`, body `=> VRRP Instance is now owning VRRP
//! VIPs <=`, then what hav adds (the states before and after, the priority, the cause).
//!
//! Guarantees: [`MailAlerts::alert`] never blocks or awaits; one task sends the queued mails in
//! order, each exchange bounded by `connect_timeout` per step; a failure is logged and counted
//! and the next mail is tried all the same; at most [`QUEUE_MAILS`] wait, more are dropped and
//! counted. Subjects and bodies are 7-bit ASCII (names are; a cause is made so). Nothing here is
//! on the failover path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hav_proto::config::Smtp;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::smtp::{self, Envelope};
use crate::hooks::{HookKind, HookState, StateChange};

/// Mails waiting to be sent, at most.
pub const QUEUE_MAILS: usize = 64;

/// How long a stop waits for queued mail (a dead relay must not hold the stop for long).
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Counts of the alerts, for the status.
#[derive(Debug, Default)]
pub struct MailCounters {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// A composed alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub subject: String,
    pub body: String,
}

/// keepalived's subject and first body line for `change`, with hav's details after it.
pub fn compose(node: &str, change: &StateChange) -> Mail {
    let group = change.kind == HookKind::Group;
    let what = if group { "VRRP Group" } else { "VRRP Instance" };
    let (event, line) = match (change.new, group) {
        (HookState::Master, false) => (
            "Entering MASTER state",
            "=> VRRP Instance is now owning VRRP VIPs <=",
        ),
        (HookState::Backup, false) => (
            "Entering BACKUP state",
            "=> VRRP Instance is no longer owning VRRP VIPs <=",
        ),
        (HookState::Fault, false) => (
            "Entering FAULT state",
            "=> VRRP Instance is no longer owning VRRP VIPs <=",
        ),
        (HookState::Stop | HookState::Init, false) => ("Stopping", "=> VRRP Instance stopping <="),
        (HookState::Master, true) => (
            "Entering MASTER state",
            "=> All VRRP group instances are now in MASTER state <=",
        ),
        (HookState::Backup, true) => (
            "Entering BACKUP state",
            "=> All VRRP group instances are now in BACKUP state <=",
        ),
        (HookState::Fault, true) => (
            "Entering FAULT state",
            "=> All VRRP group instances are now in FAULT state <=",
        ),
        (HookState::Stop | HookState::Init, true) => (
            "Stopping",
            "=> All VRRP group instances are now stopping <=",
        ),
    };
    let subject = format!("[{node}] {what} {} - {event}", change.name);
    let mut body = format!(
        "{line}\n\nnode: {node}\n{kind}: {name}\nstate: {old} -> {new}\n",
        kind = change.kind.keyword().to_lowercase(),
        name = change.name,
        old = change.old,
        new = change.new,
    );
    if change.kind == HookKind::Instance {
        body.push_str(&format!("priority: {}\n", change.priority.get()));
    }
    body.push_str(&format!("cause: {}\n", one_line(&change.cause)));
    Mail { subject, body }
}

/// Text for a body line in 7-bit ASCII: control characters become spaces, others `?` (names are
/// ASCII already; a cause quotes only addresses and numbers).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_ascii_control() || c.is_control() => ' ',
            c if c.is_ascii() => c,
            _ => '?',
        })
        .collect()
}

/// The sender: a task that mails what [`MailAlerts::alert`] queues.
#[derive(Debug)]
pub struct MailAlerts {
    node: String,
    mails: mpsc::Sender<Mail>,
    counters: Arc<MailCounters>,
    task: JoinHandle<()>,
    settings: Smtp,
}

impl MailAlerts {
    /// Starts the sending task (call from within a runtime).
    pub fn start(settings: Smtp, node: &str, counters: Arc<MailCounters>) -> Self {
        let (mails, queue) = mpsc::channel(QUEUE_MAILS);
        let task = tokio::spawn(send_mails(settings.clone(), queue, counters.clone()));
        Self {
            node: node.to_owned(),
            mails,
            counters,
            task,
            settings,
        }
    }

    pub fn settings(&self) -> &Smtp {
        &self.settings
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Queues the alert for `change`; returns at once.
    pub fn alert(&self, change: &StateChange) {
        let mail = compose(&self.node, change);
        if self.mails.try_send(mail).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(name = %change.name, "SMTP alert dropped: {QUEUE_MAILS} already wait for the server");
        }
    }

    /// Sends what is queued, waiting a few seconds at most.
    pub async fn close(self) {
        let Self {
            mails, mut task, ..
        } = self;
        drop(mails);
        if tokio::time::timeout(CLOSE_WAIT, &mut task).await.is_err() {
            task.abort();
            tracing::warn!("SMTP alerts still queued at stop were not sent");
        }
    }
}

async fn send_mails(settings: Smtp, mut queue: mpsc::Receiver<Mail>, counters: Arc<MailCounters>) {
    let helo = settings.helo_name.clone().unwrap_or_else(host_name);
    let to = settings
        .to
        .iter()
        .map(|address| address.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    while let Some(mail) = queue.recv().await {
        let now = SystemTime::now();
        let message = format!(
            "Date: {date}\nFrom: {from}\nTo: {to}\nSubject: {subject}\nMessage-ID: <{id}.{pid}@{helo}>\n\
             X-Mailer: hav-agent\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\
             Content-Transfer-Encoding: 7bit\n\n{body}",
            date = rfc5322_date(now),
            from = settings.from,
            subject = mail.subject,
            id = now
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
            pid = std::process::id(),
            body = mail.body,
        );
        let envelope = Envelope {
            helo: &helo,
            from: &settings.from,
            to: &settings.to,
            message: &message,
        };
        match smtp::send(&settings.server, settings.connect_timeout, &envelope).await {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                tracing::info!(server = %settings.server, subject = %mail.subject, "SMTP alert sent");
            }
            Err(error) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, subject = %mail.subject, "SMTP alert not sent");
            }
        }
    }
}

/// The host's name for EHLO when `helo_name` is not set (`localhost` if it has none).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `Wed, 02 Dec 2026 22:10:00 +0000` (RFC 5322 section 3.3), in UTC.
pub fn rfc5322_date(at: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = seconds / 86_400;
    let (year, month, day) = civil_from_days(days);
    let of_day = seconds % 86_400;
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Year, month (1..=12) and day (1..=31) of a count of days since 1970-01-01 (the proleptic
/// Gregorian calendar: 400-year eras of 146,097 days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hav_vrrp::Priority;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        // 2000-02-29 12:34:56 UTC, a leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 12:34:56 +0000");
        // 2026-12-02 22:10:00 UTC.
        let later = UNIX_EPOCH + Duration::from_secs(1_796_249_400);
        assert_eq!(rfc5322_date(later), "Wed, 02 Dec 2026 22:10:00 +0000");
    }

    #[test]
    fn subjects_and_bodies_are_keepalived_s() {
        let change = StateChange {
            kind: HookKind::Instance,
            name: "VI_1".into(),
            old: HookState::Backup,
            new: HookState::Master,
            priority: Priority(100),
            cause: "master-down timer".into(),
        };
        let mail = compose("lb1", &change);
        assert_eq!(
            mail.subject,
            "[lb1] VRRP Instance VI_1 - Entering MASTER state"
        );
        assert!(
            mail.body
                .starts_with("=> VRRP Instance is now owning VRRP VIPs <=\n\nnode: lb1\ninstance: VI_1\nstate: BACKUP -> MASTER\npriority: 100\ncause: master-down timer\n"),
            "{}",
            mail.body
        );
        let group = StateChange {
            kind: HookKind::Group,
            name: "G1".into(),
            new: HookState::Stop,
            ..change
        };
        let mail = compose("lb1", &group);
        assert_eq!(mail.subject, "[lb1] VRRP Group G1 - Stopping");
        assert!(
            mail.body
                .starts_with("=> All VRRP group instances are now stopping <=\n")
        );
        assert!(!mail.body.contains("priority"));
    }
}
