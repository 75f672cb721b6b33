//! Checks of `[node]` and the definitions instances refer to: scripts, processes, track files,
//! probes, sync groups, and `[coordinator]`.

use std::net::SocketAddr;

use rustls::pki_types::ServerName;

use super::DEFAULT_STATE_DIR;
use super::values::{
    absolute_path, address_of_family, count, identifier, interval_and_timeout, non_empty,
    not_for_kind, notify, optional, required, track_weight,
};
use crate::config::error::{Collector, KeyPath, Problem};
use crate::config::node::{
    Command, CoordinatorLink, NodeSettings, Probe, ProbeKind, ProcessMatch, Script, SyncGroup,
    TrackFile, TrackedProcess,
};
use crate::config::probe_url::ProbeUrl;
use crate::config::raw::{
    OneOrMany, RawCoordinator, RawNode, RawProbe, RawProcess, RawScript, RawSyncGroup, RawTrackFile,
};

pub(super) fn node_settings(
    raw: &RawNode,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<NodeSettings> {
    let name = required(raw.name.as_ref(), &path.key("name"), "a node name", errors)
        .and_then(|name| identifier(name, &path.key("name"), errors));
    let state_dir = absolute_path(
        raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR),
        &path.key("state_dir"),
        errors,
    );
    let status_socket = optional(raw.status_socket.as_deref(), |socket| {
        absolute_path(socket, &path.key("status_socket"), errors)
    })?;
    let handover_port = match raw.handover_port {
        Some(0) => {
            errors.push(
                path.key("handover_port"),
                Problem::Invalid("must be a port, 1..=65535".into()),
            );
            None
        }
        port => Some(port.unwrap_or(crate::config::node::DEFAULT_HANDOVER_PORT)),
    };
    let alerts = super::alerts::node_alerts(raw, path, errors);
    Some(NodeSettings {
        name: name?,
        state_dir: state_dir?,
        status_socket,
        handover_port: handover_port?,
        strict: raw.strict.unwrap_or(false),
        notify_fifo: alerts.notify_fifo?,
        smtp: alerts.smtp?,
        max_auto_priority: alerts.max_auto_priority?,
    })
}

/// `[coordinator]`: every key required; the address is `host:port` (optionally `https://`).
pub(super) fn coordinator_link(
    raw: &RawCoordinator,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<CoordinatorLink> {
    let addresses = required(
        raw.address.as_ref(),
        &path.key("address"),
        "the coordinator's host:port (or a list of them)",
        errors,
    )
    .and_then(|address| {
        let listed: Vec<(KeyPath, &String)> = match address {
            OneOrMany::One(one) => vec![(path.key("address"), one)],
            OneOrMany::Many(many) => many
                .iter()
                .enumerate()
                .map(|(index, one)| (path.key("address").index(index), one))
                .collect(),
        };
        if listed.is_empty() {
            errors.invalid(
                path.key("address"),
                "an empty list: name at least one coordinator",
            );
            return None;
        }
        let mut valid = true;
        for (key, address) in &listed {
            let bare = address.strip_prefix("https://").unwrap_or(address);
            let ok = bare.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                errors.invalid(
                    key.clone(),
                    format!("{address:?} is not host:port (e.g. \"198.51.100.1:7400\")"),
                );
            }
            valid &= ok;
        }
        valid.then(|| listed.into_iter().map(|(_, a)| a.clone()).collect())
    });
    let file = |value: Option<&String>, key: &str, what: &str, errors: &mut Collector| {
        required(value, &path.key(key), what, errors)
            .and_then(|text| absolute_path(text, &path.key(key), errors))
    };
    let ca = file(
        raw.ca.as_ref(),
        "ca",
        "the fleet CA certificate path",
        errors,
    );
    let cert = file(
        raw.cert.as_ref(),
        "cert",
        "this node's certificate path",
        errors,
    );
    let key = file(
        raw.key.as_ref(),
        "key",
        "this node's private key path",
        errors,
    );
    Some(CoordinatorLink {
        addresses: addresses?,
        ca: ca?,
        cert: cert?,
        key: key?,
    })
}

pub(super) fn script(raw: &RawScript, path: &KeyPath, errors: &mut Collector) -> Option<Script> {
    let name = required(
        raw.name.as_ref(),
        &path.key("name"),
        "a script name",
        errors,
    )
    .and_then(|name| identifier(name, &path.key("name"), errors));
    let program = required(
        raw.program.as_ref(),
        &path.key("program"),
        "an absolute program path",
        errors,
    )
    .and_then(|program| absolute_path(program, &path.key("program"), errors));
    let (interval, timeout) = interval_and_timeout(
        raw.interval.as_deref(),
        raw.timeout.as_deref(),
        path,
        errors,
    );
    let fall = count(raw.fall, &path.key("fall"), errors);
    let rise = count(raw.rise, &path.key("rise"), errors);
    let weight = track_weight(raw.weight.unwrap_or(0), &path.key("weight"), errors);
    let user = optional(raw.user.as_deref(), |user| {
        non_empty(user, &path.key("user"), errors)
    });
    let group = optional(raw.group.as_deref(), |group| {
        non_empty(group, &path.key("group"), errors)
    });
    Some(Script {
        name: name?,
        command: Command {
            program: program?,
            args: raw.args.clone().unwrap_or_default(),
        },
        interval: interval?,
        timeout: timeout?,
        fall: fall?,
        rise: rise?,
        weight: weight?,
        user: user?,
        group: group?,
    })
}

pub(super) fn process(
    raw: &RawProcess,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<TrackedProcess> {
    let name = required(
        raw.name.as_ref(),
        &path.key("name"),
        "a process entry name",
        errors,
    )
    .and_then(|name| identifier(name, &path.key("name"), errors));
    let matcher = match (&raw.process, &raw.pid_file) {
        (Some(_), Some(_)) => {
            errors.push(
                path.key("pid_file"),
                Problem::Conflict("give either `process` or `pid_file`, not both".into()),
            );
            None
        }
        (None, None) => {
            errors.missing(
                path.key("process"),
                "expected `process` (a command name) or `pid_file`",
            );
            None
        }
        (Some(comm), None) => {
            if comm.is_empty() || comm.len() > 15 {
                errors.invalid(
                    path.key("process"),
                    format!("expected a command name of 1 to 15 bytes as in /proc/PID/comm, got {} bytes", comm.len()),
                );
                None
            } else {
                Some(ProcessMatch::Name(comm.clone()))
            }
        }
        (None, Some(file)) => {
            absolute_path(file, &path.key("pid_file"), errors).map(ProcessMatch::PidFile)
        }
    };
    let min_procs = count(raw.min_procs, &path.key("min_procs"), errors);
    let weight = track_weight(raw.weight.unwrap_or(0), &path.key("weight"), errors);
    Some(TrackedProcess {
        name: name?,
        matcher: matcher?,
        min_procs: min_procs?,
        weight: weight?,
    })
}

pub(super) fn track_file(
    raw: &RawTrackFile,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<TrackFile> {
    let name = required(
        raw.name.as_ref(),
        &path.key("name"),
        "a track file name",
        errors,
    )
    .and_then(|name| identifier(name, &path.key("name"), errors));
    let file = required(
        raw.path.as_ref(),
        &path.key("path"),
        "an absolute file path",
        errors,
    )
    .and_then(|file| absolute_path(file, &path.key("path"), errors));
    let weight = track_weight(raw.weight.unwrap_or(1), &path.key("weight"), errors);
    Some(TrackFile {
        name: name?,
        path: file?,
        weight: weight?,
    })
}

pub(super) fn probe(raw: &RawProbe, path: &KeyPath, errors: &mut Collector) -> Option<Probe> {
    let name = required(raw.name.as_ref(), &path.key("name"), "a probe name", errors)
        .and_then(|name| identifier(name, &path.key("name"), errors));
    let kind = match raw.kind.as_deref() {
        None => {
            errors.missing(path.key("kind"), "expected \"tcp\" or \"http\"");
            None
        }
        Some("tcp") => tcp_probe(raw, path, errors),
        Some("http") => http_probe(raw, path, errors),
        Some(other) => {
            errors.invalid(
                path.key("kind"),
                format!("expected \"tcp\" or \"http\", got {other:?}"),
            );
            None
        }
    };
    let (interval, timeout) = interval_and_timeout(
        raw.interval.as_deref(),
        raw.timeout.as_deref(),
        path,
        errors,
    );
    let fall = count(raw.fall, &path.key("fall"), errors);
    let rise = count(raw.rise, &path.key("rise"), errors);
    let weight = track_weight(raw.weight.unwrap_or(0), &path.key("weight"), errors);
    Some(Probe {
        name: name?,
        kind: kind?,
        interval: interval?,
        timeout: timeout?,
        fall: fall?,
        rise: rise?,
        weight: weight?,
    })
}

fn tcp_probe(raw: &RawProbe, path: &KeyPath, errors: &mut Collector) -> Option<ProbeKind> {
    let mut ok = not_for_kind(raw.url.is_some(), path, "url", "http", errors);
    ok &= not_for_kind(
        raw.expect_status.is_some(),
        path,
        "expect_status",
        "http",
        errors,
    );
    ok &= not_for_kind(raw.proxy.is_some(), path, "proxy", "http", errors);
    ok &= not_for_kind(raw.ca_file.is_some(), path, "ca_file", "http", errors);
    ok &= not_for_kind(
        raw.server_name.is_some(),
        path,
        "server_name",
        "http",
        errors,
    );
    let address = required(
        raw.address.as_ref(),
        &path.key("address"),
        "an IP address",
        errors,
    )
    .and_then(|text| address_of_family(text, None, &path.key("address"), errors));
    let port = required(
        raw.port.as_ref(),
        &path.key("port"),
        "a port 1..=65535",
        errors,
    )
    .and_then(|port| {
        let checked = u16::try_from(*port).ok().filter(|port| *port > 0);
        if checked.is_none() {
            errors.invalid(
                path.key("port"),
                format!("expected a port 1..=65535, got {port}"),
            );
        }
        checked
    });
    ok.then_some(ProbeKind::Tcp {
        address: SocketAddr::new(address?, port?),
    })
}

fn http_probe(raw: &RawProbe, path: &KeyPath, errors: &mut Collector) -> Option<ProbeKind> {
    let mut ok = not_for_kind(raw.address.is_some(), path, "address", "tcp", errors);
    ok &= not_for_kind(raw.port.is_some(), path, "port", "tcp", errors);
    let url = required(
        raw.url.as_ref(),
        &path.key("url"),
        "an http:// or https:// URL",
        errors,
    )
    .and_then(|url| match ProbeUrl::parse(url) {
        Ok(parsed) => Some(parsed),
        Err(reason) => {
            errors.invalid(
                path.key("url"),
                format!("expected an http:// or https:// URL with a host, got {url:?}: {reason}"),
            );
            None
        }
    });
    let mut expect_status = Vec::new();
    for (index, status) in raw
        .expect_status
        .as_deref()
        .unwrap_or(&[200])
        .iter()
        .enumerate()
    {
        match u16::try_from(*status)
            .ok()
            .filter(|status| (100..=599).contains(status))
        {
            Some(status) => expect_status.push(status),
            None => {
                errors.invalid(
                    path.key("expect_status").index(index),
                    format!("expected an HTTP status 100..=599, got {status}"),
                );
                ok = false;
            }
        }
    }
    if expect_status.is_empty() && ok {
        errors.invalid(
            path.key("expect_status"),
            "expected at least one HTTP status",
        );
        ok = false;
    }
    let proxy = optional(raw.proxy.as_deref(), |text| {
        match text.parse::<SocketAddr>() {
            Ok(proxy) => Some(proxy),
            Err(_) => {
                errors.invalid(
                    path.key("proxy"),
                    format!(
                        "expected an IP address and port such as \"127.0.0.1:3128\", got {text:?}"
                    ),
                );
                None
            }
        }
    });
    let tls = url.as_ref().is_none_or(ProbeUrl::is_tls);
    for (key, present) in [
        ("ca_file", raw.ca_file.is_some()),
        ("server_name", raw.server_name.is_some()),
    ] {
        if present && !tls {
            errors.push(
                path.key(key),
                Problem::Conflict(format!("`{key}` belongs to https:// URLs")),
            );
            ok = false;
        }
    }
    let ca_file = optional(raw.ca_file.as_deref(), |file| {
        absolute_path(file, &path.key("ca_file"), errors)
    });
    let server_name = optional(raw.server_name.as_deref(), |name| {
        tls_server_name(name, &path.key("server_name"), errors)
    });
    // Without an override the URL's host is the name the certificate is checked against.
    if let (Some(url), Some(None)) = (&url, &server_name)
        && url.is_tls()
        && let Err(reason) = url.default_server_name()
    {
        errors.invalid(path.key("url"), format!("{reason}; set server_name"));
        ok = false;
    }
    ok.then_some(ProbeKind::Http {
        url: url?,
        expect_status,
        proxy: proxy?,
        ca_file: ca_file?,
        server_name: server_name?,
    })
}

/// A DNS name or an IP address a server certificate can be valid for.
fn tls_server_name(
    name: &str,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<ServerName<'static>> {
    match ServerName::try_from(name) {
        Ok(parsed) => Some(parsed.to_owned()),
        Err(_) => {
            errors.invalid(
                path.clone(),
                format!("expected a DNS name or an IP address, got {name:?}"),
            );
            None
        }
    }
}

pub(super) fn sync_group(
    raw: &RawSyncGroup,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<SyncGroup> {
    let name = required(
        raw.name.as_ref(),
        &path.key("name"),
        "a sync group name",
        errors,
    )
    .and_then(|name| identifier(name, &path.key("name"), errors));
    let instances = raw.instances.clone().unwrap_or_default();
    if instances.is_empty() {
        errors.missing(
            path.key("instances"),
            "expected the names of at least one instance",
        );
    }
    let notify = notify(
        [
            &raw.notify,
            &raw.notify_master,
            &raw.notify_backup,
            &raw.notify_fault,
            &raw.notify_stop,
        ],
        path,
        errors,
    );
    if instances.is_empty() {
        return None;
    }
    Some(SyncGroup {
        name: name?,
        instances,
        notify: notify?,
        smtp_alert: raw.smtp_alert,
    })
}
