//! The validated settings of what the agent tells the world besides its hooks: keepalived's
//! notify FIFO, SMTP alerts, and the realtime priority the agent may raise itself to.
//!
//! Every value here has been checked: a mail address cannot carry a line break or an angle
//! bracket into an SMTP command, a host name is a DNS name, a priority is in the kernel's
//! `SCHED_RR` range.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::node::Command;

/// `[node] notify_fifo`: one line per state change of an instance or sync group, in
/// keepalived's format (`INSTANCE "name" MASTER 100`, `GROUP "name" BACKUP 0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyFifo {
    /// An absolute path; the agent creates the FIFO (mode 0600) when nothing is there.
    pub path: PathBuf,
    /// `[node] notify_fifo_script`: a program the agent starts with the FIFO's path appended,
    /// to read it (keepalived's `notify_fifo_script`); stopped when the agent stops.
    pub script: Option<Command>,
}

/// `[node.smtp]`: where state-change mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    pub server: SmtpServer,
    /// Bounds the connection and each reply of the server (default 30 s, keepalived's).
    pub connect_timeout: Duration,
    /// The name given in EHLO/HELO; `None`: the host's name.
    pub helo_name: Option<String>,
    /// The envelope and header sender.
    pub from: MailAddress,
    /// At least one recipient.
    pub to: Vec<MailAddress>,
    /// Whether instances and sync groups without their own `smtp_alert` send mail.
    pub alert: bool,
}

/// The default `[node.smtp] connect_timeout` (keepalived's `smtp_connect_timeout`).
pub const DEFAULT_SMTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default SMTP port.
pub const DEFAULT_SMTP_PORT: u16 = 25;

/// An SMTP server: an address or a DNS name, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: SmtpHost,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpHost {
    Address(IpAddr),
    /// A DNS name, resolved at each sending.
    Name(String),
}

impl fmt::Display for SmtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            SmtpHost::Address(IpAddr::V6(address)) => write!(f, "[{address}]:{}", self.port),
            SmtpHost::Address(address) => write!(f, "{address}:{}", self.port),
            SmtpHost::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// A mail address (`local@domain`): printable ASCII, no spaces, no angle brackets, at most 254
/// characters, so it can be written into `MAIL FROM:<…>` and a header as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAddress(String);

impl MailAddress {
    /// `None` unless `text` is `local@domain` as described above.
    pub fn new(text: &str) -> Option<Self> {
        let (local, domain) = text.rsplit_once('@')?;
        let printable = text
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '(' | ')' | ',' | ';'));
        (printable && !local.is_empty() && !domain.is_empty() && text.len() <= 254)
            .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A `SCHED_RR` priority, 1..=99.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RealtimePriority(u8);

impl RealtimePriority {
    pub const MIN: RealtimePriority = RealtimePriority(1);

    /// `None` outside 1..=99.
    pub fn new(priority: i64) -> Option<Self> {
        u8::try_from(priority)
            .ok()
            .filter(|priority| (1..=99).contains(priority))
            .map(Self)
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

/// The canonical form of `[node.smtp]`: every default written out.
pub(crate) fn canonical_smtp(smtp: &Smtp) -> super::raw::RawSmtp {
    super::raw::RawSmtp {
        server: Some(smtp.server.to_string()),
        connect_timeout: Some(super::duration::format(smtp.connect_timeout)),
        helo_name: smtp.helo_name.clone(),
        from: Some(smtp.from.to_string()),
        to: Some(smtp.to.iter().map(MailAddress::to_string).collect()),
        alert: Some(smtp.alert),
    }
}

/// Whether `name` is a DNS host name: dot-separated labels of 1 to 63 letters, digits and
/// hyphens, at most 253 characters.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mail_address_carries_nothing_into_an_smtp_command() {
        assert!(MailAddress::new("ops@example.net").is_some());
        assert!(MailAddress::new("ops+lb@mail.example.net").is_some());
        for bad in [
            "",
            "ops",
            "@example.net",
            "ops@",
            "ops@example.net>\r\nRCPT TO:<x@y",
            "o ps@example.net",
            "<ops@example.net>",
            "öps@example.net",
        ] {
            assert!(MailAddress::new(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn realtime_priorities_are_the_kernels_range() {
        assert!(RealtimePriority::new(0).is_none());
        assert_eq!(RealtimePriority::new(1).map(RealtimePriority::get), Some(1));
        assert_eq!(
            RealtimePriority::new(99).map(RealtimePriority::get),
            Some(99)
        );
        assert!(RealtimePriority::new(100).is_none());
        assert!(RealtimePriority::new(-5).is_none());
    }

    #[test]
    fn host_names() {
        assert!(is_host_name("mail.example.net"));
        assert!(is_host_name("localhost"));
        assert!(!is_host_name("mail..example.net"));
        assert!(!is_host_name("-mail.example.net"));
        assert!(!is_host_name("mail example"));
    }
}
