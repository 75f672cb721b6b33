//! keepalived's notify FIFO, SMTP alert and realtime-priority settings of `global_defs` as hav's
//! `[node] notify_fifo`, `notify_fifo_script`, `max_auto_priority` and `[node.smtp]`.
//!
//! Only what the schema accepts is written: mail goes out only with a server and at least one
//! recipient (keepalived sends nothing otherwise either), every address is one the schema takes,
//! and keepalived's default sender (`keepalived@<host name>`) is written out with a note. hav
//! writes one FIFO with the VRRP lines: a second FIFO and the checker's are findings.

use std::net::IpAddr;

use hav_proto::config::{MailAddress, RealtimePriority, is_host_name};

use super::{Converter, block, first_arg, parse_bool, parse_int};
use crate::import::FindingKind;
use crate::import::command::split_command;
use crate::import::draft::{NodeAlertsDraft, SmtpDraft};
use crate::import::parser::Statement;

/// What `global_defs` said, before it is checked as a whole.
#[derive(Debug, Default)]
pub(super) struct AlertGlobals {
    /// `(path, keyword)` of the FIFO converted.
    fifo: Option<(String, String)>,
    /// `(argv, keyword)` of each FIFO script given.
    scripts: Vec<(Vec<String>, String, Statement)>,
    max_auto_priority: Option<i64>,
    server: Option<(String, Statement)>,
    recipients: Vec<String>,
    recipients_at: Option<Statement>,
    from: Option<String>,
    helo_name: Option<String>,
    connect_timeout_ms: Option<u64>,
    alert: Option<bool>,
}

impl Converter {
    /// One `global_defs` statement about notification or scheduling; `false` when `item` is
    /// none of them.
    pub(super) fn global_alert(&mut self, item: &Statement) -> bool {
        let word = first_arg(item);
        match item.keyword.as_str() {
            "notification_email" => {
                for entry in block(item) {
                    let words = std::iter::once(entry.keyword.as_str()).chain(entry.words());
                    for recipient in words {
                        if MailAddress::new(recipient).is_some() {
                            self.globals.alerts.recipients.push(recipient.to_owned());
                        } else {
                            self.push(
                                FindingKind::NotConverted,
                                &entry.location,
                                format!("notification_email {recipient}"),
                                "not a mail address hav takes (local@domain, printable ASCII \
                                 without spaces or <>)",
                            );
                        }
                    }
                }
                self.globals.alerts.recipients_at = Some(item.clone());
            }
            "notification_email_from" => match word {
                Some(from) if MailAddress::new(from).is_some() => {
                    self.globals.alerts.from = Some(from.to_owned());
                }
                _ => self.not_converted(
                    item,
                    "not a mail address hav takes (local@domain, printable ASCII without spaces \
                     or <>); keepalived's default sender is used",
                ),
            },
            "smtp_server" => {
                let words: Vec<&str> = item.words().collect();
                let port = match words.get(1) {
                    None => Some(None),
                    Some(port) => port.parse::<u16>().ok().filter(|p| *p > 0).map(Some),
                };
                match (words.first(), port) {
                    (Some(host), Some(port)) if host_or_address(host) => {
                        let server = match (port, host.parse::<IpAddr>()) {
                            (None, _) => (*host).to_owned(),
                            (Some(port), Ok(IpAddr::V6(address))) => format!("[{address}]:{port}"),
                            (Some(port), _) => format!("{host}:{port}"),
                        };
                        self.globals.alerts.server = Some((server, item.clone()));
                    }
                    _ => self.not_converted(item, "expected an address or host name and a port"),
                }
            }
            "smtp_helo_name" => match word {
                Some(name) if is_host_name(name) => {
                    self.globals.alerts.helo_name = Some(name.to_owned())
                }
                _ => self.not_converted(
                    item,
                    "not a host name; hav greets with the host's name (the default)",
                ),
            },
            "smtp_connect_timeout" => match word.and_then(parse_int) {
                Some(seconds) if seconds > 0 => {
                    self.globals.alerts.connect_timeout_ms = u64::try_from(seconds * 1000).ok();
                }
                _ => self.not_converted(item, "expected seconds; hav's default is 30s"),
            },
            "smtp_alert" | "smtp_alert_vrrp" => {
                self.globals.alerts.alert = Some(word.is_none_or(|w| parse_bool(w) == Some(true)));
            }
            "smtp_alert_checker" => self.not_converted(
                item,
                "hav mails VRRP state changes only; a real server's health change runs the \
                 virtual server's quorum_up / quorum_down programs when it changes the quorum",
            ),
            "no_email_faults" => self.not_converted(
                item,
                "hav mails every state change, FAULT included; leave smtp_alert off for the \
                 instances whose faults should not mail",
            ),
            "notify_fifo" | "vrrp_notify_fifo" => match (word, &self.globals.alerts.fifo) {
                (Some(path), None) if path.starts_with('/') => {
                    self.globals.alerts.fifo = Some((path.to_owned(), item.keyword.clone()));
                    if item.args.len() > 1 {
                        self.note(
                            item,
                            "hav creates the FIFO with mode 0600, owned by hav-agent's user",
                        );
                    }
                }
                (Some(_), Some((converted, keyword))) => {
                    let reason = format!(
                        "hav writes one FIFO, with keepalived's VRRP lines: {keyword} {converted} \
                         is the one converted"
                    );
                    self.not_converted(item, &reason);
                }
                _ => self.not_converted(item, "expected an absolute path"),
            },
            "notify_fifo_script" | "vrrp_notify_fifo_script" => {
                match item.args.first().map(|arg| split_command(&arg.text)) {
                    Some(Ok(argv)) if argv.first().is_some_and(|p| p.starts_with('/')) => {
                        (self.globals.alerts.scripts).push((
                            argv,
                            item.keyword.clone(),
                            item.clone(),
                        ));
                    }
                    Some(Err(reason)) => self.not_converted(item, &reason),
                    _ => self.not_converted(
                        item,
                        "hav runs the program without a shell or PATH search: give its absolute \
                         path",
                    ),
                }
            }
            "lvs_notify_fifo" | "lvs_notify_fifo_script" => self.not_converted(
                item,
                "hav's FIFO has the VRRP lines only (instances and sync groups); a real \
                 server's health is in `hav-agent status` and the metrics",
            ),
            "max_auto_priority" => {
                // Without a value keepalived goes up to the highest realtime priority.
                let value = match word {
                    None => Some(99),
                    Some(text) => parse_int(text),
                };
                match value.and_then(RealtimePriority::new) {
                    Some(priority) => {
                        self.globals.alerts.max_auto_priority = Some(priority.get().into());
                        self.note(
                            item,
                            "hav raises itself when it wakes a quarter of its fastest advert \
                             interval late (at least 10 ms); the shipped unit needs a drop-in \
                             for it (deploy/README.md: RestrictRealtime=no, CAP_SYS_NICE)",
                        );
                    }
                    None => self.not_converted(item, "expected a realtime priority, 1 to 99"),
                }
            }
            "vrrp_rt_priority" => self.not_converted(
                item,
                "hav has no key for a fixed realtime priority: give its unit \
                 CPUSchedulingPolicy=rr and CPUSchedulingPriority= (deploy/README.md), or set \
                 max_auto_priority",
            ),
            "vrrp_priority" => self.not_converted(
                item,
                "hav-agent runs at the nice value it is started with: set Nice= in its unit",
            ),
            "min_auto_priority_delay" => self.not_converted(
                item,
                "hav's threshold is a quarter of the fastest advert interval, at least 10 ms",
            ),
            _ => return false,
        }
        true
    }

    /// The `[node]` settings `global_defs` gave, checked as a whole (`node` names the default
    /// sender).
    pub(super) fn node_alerts(&mut self, node: &str) -> NodeAlertsDraft {
        let alerts = std::mem::take(&mut self.globals.alerts);
        let mut scripts = alerts.scripts.into_iter();
        let script = match (&alerts.fifo, scripts.next()) {
            (_, None) => None,
            // keepalived pairs each script with its own FIFO; hav's one FIFO takes the first.
            (Some(_), Some((argv, _, _))) => Some(argv),
            (None, Some((argv, keyword, item))) => {
                let reason = format!(
                    "{keyword} without its FIFO: converted with notify_fifo = \"{DEFAULT_FIFO}\""
                );
                self.note(&item, &reason);
                Some(argv)
            }
        };
        for (_, _, item) in scripts {
            self.not_converted(&item, "hav starts one FIFO reader: the first one given");
        }
        let fifo = alerts
            .fifo
            .map(|(path, _)| path)
            .or_else(|| script.as_ref().map(|_| DEFAULT_FIFO.to_owned()));
        let smtp = match (alerts.server, alerts.recipients.is_empty()) {
            (Some((server, item)), false) => {
                let from = alerts.from.unwrap_or_else(|| {
                    let from = default_sender(node);
                    let reason = format!(
                        "no notification_email_from: keepalived sends from keepalived@<host \
                         name>; written as from = \"{from}\""
                    );
                    self.note(&item, &reason);
                    from
                });
                Some(SmtpDraft {
                    server,
                    connect_timeout_ms: alerts.connect_timeout_ms,
                    helo_name: alerts.helo_name,
                    from,
                    to: alerts.recipients,
                    alert: alerts.alert,
                })
            }
            (Some((_, item)), true) => {
                self.not_converted(
                    &item,
                    "no notification_email to send to: keepalived sends no mail then, and hav \
                     writes no [node.smtp]",
                );
                None
            }
            (None, false) => {
                if let Some(item) = &alerts.recipients_at {
                    self.not_converted(
                        item,
                        "no smtp_server: keepalived sends no mail then, and hav writes no \
                         [node.smtp]",
                    );
                }
                None
            }
            (None, true) => None,
        };
        NodeAlertsDraft {
            notify_fifo: fifo,
            notify_fifo_script: script,
            max_auto_priority: alerts.max_auto_priority,
            smtp,
        }
    }

    /// An instance's or sync group's `smtp_alert [on|off]`.
    pub(super) fn smtp_alert(&mut self, item: &Statement) -> Option<bool> {
        match first_arg(item) {
            None => Some(true),
            Some(word) => {
                let value = parse_bool(word);
                if value.is_none() {
                    self.not_converted(item, "expected on or off");
                }
                value
            }
        }
    }
}

/// Where the FIFO goes when keepalived's config names a reader program but no FIFO.
const DEFAULT_FIFO: &str = "/run/hav/notify.fifo";

fn host_or_address(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok() || is_host_name(text)
}

/// keepalived's default sender, `keepalived@<host name>`, with the node's name for the host's.
fn default_sender(node: &str) -> String {
    let host = if is_host_name(node) {
        node
    } else {
        "localhost"
    };
    format!("keepalived@{host}")
}
