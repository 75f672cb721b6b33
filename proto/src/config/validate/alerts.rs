//! Checks of the `[node]` keys that say how the agent reports state changes besides its hooks
//! (`notify_fifo`, `notify_fifo_script`, `[node.smtp]`) and how it may raise its own scheduling
//! priority (`max_auto_priority`).

use std::net::{IpAddr, SocketAddr};

use super::values::{absolute_path, command, duration_or, non_zero};
use crate::config::alerts::{
    DEFAULT_SMTP_CONNECT_TIMEOUT, DEFAULT_SMTP_PORT, MailAddress, NotifyFifo, RealtimePriority,
    Smtp, SmtpHost, SmtpServer, is_host_name,
};
use crate::config::error::{Collector, KeyPath};
use crate::config::raw::{RawNode, RawSmtp};

/// The three settings, each `Some(None)` when absent and `None` when invalid.
pub(super) struct NodeAlerts {
    pub notify_fifo: Option<Option<NotifyFifo>>,
    pub smtp: Option<Option<Smtp>>,
    pub max_auto_priority: Option<Option<RealtimePriority>>,
}

pub(super) fn node_alerts(raw: &RawNode, path: &KeyPath, errors: &mut Collector) -> NodeAlerts {
    NodeAlerts {
        notify_fifo: notify_fifo(raw, path, errors),
        smtp: match &raw.smtp {
            None => Some(None),
            Some(smtp) => self::smtp(smtp, &path.key("smtp"), errors).map(Some),
        },
        max_auto_priority: match raw.max_auto_priority {
            None => Some(None),
            Some(priority) => {
                let valid = RealtimePriority::new(priority);
                if valid.is_none() {
                    errors.invalid(
                        path.key("max_auto_priority"),
                        format!("{priority} is not a realtime priority; expected 1 to 99"),
                    );
                }
                valid.map(Some)
            }
        },
    }
}

fn notify_fifo(
    raw: &RawNode,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<Option<NotifyFifo>> {
    let script = match &raw.notify_fifo_script {
        None => Some(None),
        Some(argv) => command(argv, &path.key("notify_fifo_script"), errors).map(Some),
    };
    let Some(fifo) = &raw.notify_fifo else {
        if raw.notify_fifo_script.is_some() {
            errors.missing(
                path.key("notify_fifo"),
                "expected the FIFO's path: notify_fifo_script reads it",
            );
            return None;
        }
        return Some(None);
    };
    let fifo = absolute_path(fifo, &path.key("notify_fifo"), errors);
    Some(Some(NotifyFifo {
        path: fifo?,
        script: script?,
    }))
}

fn smtp(raw: &RawSmtp, path: &KeyPath, errors: &mut Collector) -> Option<Smtp> {
    let server = match &raw.server {
        None => {
            errors.missing(
                path.key("server"),
                "expected the SMTP server, such as \"198.51.100.25\" or \"mail.example.net:25\"",
            );
            None
        }
        Some(text) => {
            let server = smtp_server(text);
            if server.is_none() {
                errors.invalid(
                    path.key("server"),
                    format!(
                        "{text:?} is not an SMTP server; expected an address or a host name, \
                         optionally with :PORT (\"[2001:db8::25]:25\" for IPv6 with a port)"
                    ),
                );
            }
            server
        }
    };
    let connect_timeout = duration_or(
        raw.connect_timeout.as_deref(),
        DEFAULT_SMTP_CONNECT_TIMEOUT,
        &path.key("connect_timeout"),
        errors,
    )
    .and_then(|timeout| non_zero(timeout, &path.key("connect_timeout"), errors));
    let helo_name = match &raw.helo_name {
        None => Some(None),
        Some(name) if is_host_name(name) => Some(Some(name.clone())),
        Some(name) => {
            errors.invalid(
                path.key("helo_name"),
                format!("{name:?} is not a host name"),
            );
            None
        }
    };
    let from = match &raw.from {
        Some(text) => mail_address(text, path.key("from"), errors),
        None => {
            errors.missing(path.key("from"), "expected the sender's mail address");
            None
        }
    };
    let to: Vec<Option<MailAddress>> = (raw.to.iter().flatten().enumerate())
        .map(|(index, text)| mail_address(text, path.key("to").index(index), errors))
        .collect();
    if to.is_empty() {
        errors.missing(
            path.key("to"),
            "expected at least one recipient, such as [\"ops@example.net\"]",
        );
        return None;
    }
    Some(Smtp {
        server: server?,
        connect_timeout: connect_timeout?,
        helo_name: helo_name?,
        from: from?,
        to: to.into_iter().collect::<Option<_>>()?,
        alert: raw.alert.unwrap_or(false),
    })
}

fn mail_address(text: &str, path: KeyPath, errors: &mut Collector) -> Option<MailAddress> {
    let address = MailAddress::new(text);
    if address.is_none() {
        errors.invalid(
            path,
            format!(
                "{text:?} is not a mail address; expected local@domain in printable ASCII \
                 without spaces or <>"
            ),
        );
    }
    address
}

/// `ADDRESS`, `HOST`, `ADDRESS:PORT`, `HOST:PORT`, `[IPV6]:PORT`; port 25 unless given.
fn smtp_server(text: &str) -> Option<SmtpServer> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(SmtpServer {
            host: SmtpHost::Address(address),
            port: DEFAULT_SMTP_PORT,
        });
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return (socket.port() != 0).then(|| SmtpServer {
            host: SmtpHost::Address(socket.ip()),
            port: socket.port(),
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok().filter(|port| *port != 0)?),
        None => (text, DEFAULT_SMTP_PORT),
    };
    is_host_name(host).then(|| SmtpServer {
        host: SmtpHost::Name(host.to_owned()),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_servers_as_written() {
        let server = |text| smtp_server(text).map(|server| server.to_string());
        assert_eq!(server("198.51.100.25").as_deref(), Some("198.51.100.25:25"));
        assert_eq!(
            server("198.51.100.25:2525").as_deref(),
            Some("198.51.100.25:2525")
        );
        assert_eq!(server("2001:db8::25").as_deref(), Some("[2001:db8::25]:25"));
        assert_eq!(
            server("[2001:db8::25]:587").as_deref(),
            Some("[2001:db8::25]:587")
        );
        assert_eq!(
            server("mail.example.net").as_deref(),
            Some("mail.example.net:25")
        );
        assert_eq!(
            server("mail.example.net:587").as_deref(),
            Some("mail.example.net:587")
        );
        for bad in [
            "",
            "mail example",
            "mail.example.net:0",
            "198.51.100.25:0",
            "a:b:c",
        ] {
            assert!(smtp_server(bad).is_none(), "{bad:?}");
        }
    }
}
