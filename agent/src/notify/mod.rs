//! State changes told to the world besides the notify hooks: keepalived's notify FIFO
//! ([`fifo`]) and SMTP alerts ([`mail`], over [`smtp`]).
//!
//! Guarantees: [`Notifiers::notify`] never blocks or awaits (each channel has a task of its own
//! and a bounded queue); a FIFO that cannot be created or opened, or a mail relay that is down,
//! is logged and counted and changes nothing else the agent does. The executor calls it for
//! every state change of an instance and a sync group, in the engine's order, right before the
//! hooks are queued.

pub mod fifo;
pub mod mail;
pub mod smtp;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hav_proto::config::{NodeConfig, Smtp};

use crate::hooks::{HookKind, StateChange};
use crate::track::Program;
use fifo::FifoWriter;
use mail::{MailAlerts, MailCounters};

/// What one config asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyPlan {
    pub fifo: Option<FifoPlan>,
    pub smtp: Option<Smtp>,
    /// The node's name, in mail subjects.
    pub node: String,
    /// Instances and sync groups whose changes are mailed (their `smtp_alert`, else
    /// `[node.smtp] alert`).
    pub mail_instances: BTreeSet<String>,
    pub mail_groups: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoPlan {
    pub path: PathBuf,
    /// The reader program (`notify_fifo_script`), started with the FIFO's path appended.
    pub script: Option<Program>,
}

impl NotifyPlan {
    pub fn of(config: &NodeConfig) -> Self {
        let default = config.node.smtp.as_ref().is_some_and(|smtp| smtp.alert);
        let mails = config.node.smtp.is_some();
        Self {
            fifo: config.node.notify_fifo.as_ref().map(|fifo| FifoPlan {
                path: fifo.path.clone(),
                script: (fifo.script.as_ref())
                    .map(|command| Program::new(command.program.clone(), command.args.clone())),
            }),
            smtp: config.node.smtp.clone(),
            node: config.node.name.clone(),
            mail_instances: (config.instances.iter())
                .filter(|instance| mails && instance.smtp_alert.unwrap_or(default))
                .map(|instance| instance.name.clone())
                .collect(),
            mail_groups: (config.sync_groups.iter())
                .filter(|group| mails && group.smtp_alert.unwrap_or(default))
                .map(|group| group.name.clone())
                .collect(),
        }
    }
}

/// What the host lacks for `plan` (`hav-agent --check` warns; the daemon logs it and runs without
/// the FIFO or its reader): the key and the reason.
pub fn host_problems(plan: &NotifyPlan) -> Vec<(&'static str, String)> {
    use std::os::unix::fs::FileTypeExt;
    let mut problems = Vec::new();
    let Some(fifo) = &plan.fifo else {
        return problems;
    };
    match std::fs::symlink_metadata(&fifo.path) {
        Ok(meta) if !meta.file_type().is_fifo() => problems.push((
            "notify_fifo",
            format!("{} exists and is not a FIFO", fifo.path.display()),
        )),
        Ok(_) => {}
        Err(_) => {
            if let Some(parent) = fifo.path.parent()
                && !parent.is_dir()
            {
                problems.push((
                    "notify_fifo",
                    format!("no directory {} to create the FIFO in", parent.display()),
                ));
            }
        }
    }
    for reason in fifo.script.iter().flat_map(Program::host_problems) {
        problems.push(("notify_fifo_script", reason));
    }
    problems
}

/// The running FIFO writer and mail sender.
#[derive(Debug, Default)]
pub struct Notifiers {
    fifo: Option<(FifoPlan, FifoWriter)>,
    mail: Option<MailAlerts>,
    mail_instances: BTreeSet<String>,
    mail_groups: BTreeSet<String>,
    fifo_dropped: Arc<AtomicU64>,
    mail_counters: Arc<MailCounters>,
}

impl Notifiers {
    /// Follows `plan` (call from within a runtime): an unchanged FIFO and relay are kept; a
    /// changed or removed one is closed in the background (what it has queued still goes out).
    pub fn configure(&mut self, plan: &NotifyPlan) {
        if self.fifo.as_ref().map(|(running, _)| running) != plan.fifo.as_ref() {
            if let Some((_, old)) = self.fifo.take() {
                tokio::spawn(old.close());
            }
            self.fifo = plan.fifo.as_ref().and_then(|wanted| {
                match FifoWriter::open(&wanted.path, wanted.script.as_ref(), self.fifo_dropped.clone()) {
                    Ok(writer) => {
                        tracing::info!(fifo = %wanted.path.display(), "notify FIFO open");
                        Some((wanted.clone(), writer))
                    }
                    Err(error) => {
                        tracing::error!(%error, "no notify FIFO: state changes are not written to it");
                        None
                    }
                }
            });
        }
        let same_mail = match (&self.mail, &plan.smtp) {
            (Some(running), Some(wanted)) => {
                running.settings() == wanted && running.node() == plan.node
            }
            (None, None) => true,
            _ => false,
        };
        if !same_mail {
            if let Some(old) = self.mail.take() {
                tokio::spawn(old.close());
            }
            self.mail = (plan.smtp.clone())
                .map(|smtp| MailAlerts::start(smtp, &plan.node, self.mail_counters.clone()));
        }
        self.mail_instances = plan.mail_instances.clone();
        self.mail_groups = plan.mail_groups.clone();
    }

    /// Writes the FIFO line and queues the mail for `change`; returns at once.
    pub fn notify(&self, change: &StateChange) {
        if let Some((_, fifo)) = &self.fifo {
            fifo.write(change);
        }
        let mailed = match change.kind {
            HookKind::Instance => &self.mail_instances,
            HookKind::Group => &self.mail_groups,
        };
        if let Some(mail) = &self.mail
            && mailed.contains(&change.name)
        {
            mail.alert(change);
        }
    }

    /// Counters for the status: FIFO lines dropped, alerts sent, failed and dropped.
    pub fn counters(&self) -> [(&'static str, u64); 4] {
        [
            (
                "notify_fifo_lines_dropped",
                self.fifo_dropped.load(Ordering::Relaxed),
            ),
            (
                "smtp_alerts_sent",
                self.mail_counters.sent.load(Ordering::Relaxed),
            ),
            (
                "smtp_alerts_failed",
                self.mail_counters.failed.load(Ordering::Relaxed),
            ),
            (
                "smtp_alerts_dropped",
                self.mail_counters.dropped.load(Ordering::Relaxed),
            ),
        ]
    }

    /// Writes and sends what is queued (each within a bound), stops the FIFO's reader program.
    pub async fn close(&mut self) {
        if let Some((_, fifo)) = self.fifo.take() {
            fifo.close().await;
        }
        if let Some(mail) = self.mail.take() {
            mail.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hav_proto::config::parse_node_config;

    fn plan(node: &str, smtp_alert_of_vi_2: &str) -> NotifyPlan {
        let text = format!(
            "[node]\nname = \"lb1\"\n{node}\n\
             [[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 1\nvips = [\"198.51.100.1\"]\n\
             [[instance]]\nname = \"VI_2\"\ninterface = \"eth0\"\nvrid = 2\nvips = [\"198.51.100.2\"]\n{smtp_alert_of_vi_2}\n\
             [[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\"]\n"
        );
        let config = parse_node_config(&text, "test").unwrap_or_else(|errors| panic!("{errors}"));
        NotifyPlan::of(&config)
    }

    const SMTP: &str = "[node.smtp]\nserver = \"198.51.100.25\"\nfrom = \"hav@example.net\"\n\
                        to = [\"ops@example.net\"]\n";

    #[test]
    fn instances_and_groups_mail_by_their_own_key_else_the_node_default() {
        let off = plan(SMTP, "smtp_alert = true");
        assert_eq!(off.mail_instances, BTreeSet::from(["VI_2".to_owned()]));
        assert!(off.mail_groups.is_empty());
        let on = plan(&format!("{SMTP}alert = true\n"), "smtp_alert = false");
        assert_eq!(on.mail_instances, BTreeSet::from(["VI_1".to_owned()]));
        assert_eq!(on.mail_groups, BTreeSet::from(["G1".to_owned()]));
        // Without [node.smtp] nothing is mailed, whatever the instances say.
        let none = plan("", "smtp_alert = true");
        assert!(none.smtp.is_none() && none.mail_instances.is_empty());
    }

    #[test]
    fn the_fifo_and_its_reader() {
        let with = plan(
            "notify_fifo = \"/run/hav/notify.fifo\"\nnotify_fifo_script = [\"/usr/local/sbin/reader\", \"-v\"]",
            "",
        );
        assert_eq!(
            with.fifo,
            Some(FifoPlan {
                path: PathBuf::from("/run/hav/notify.fifo"),
                script: Some(Program::new("/usr/local/sbin/reader", ["-v"])),
            })
        );
        assert_eq!(plan("", "").fifo, None);
    }
}
