//! Checks of `[[virtual_server]]`: the service, its instance, its real servers and their checks.
//!
//! The instance is resolved from the document as written (the instance holding `address` among
//! its VIPs, or the one named), so an instance with an unrelated problem does not also make its
//! virtual servers errors.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::raw_vip_address;
use super::values::{absolute_path, command, duration_or, family_name, family_of, identifier};
use crate::config::error::{Collector, KeyPath, Problem};
use crate::config::node::{
    CheckKind, LbAlgo, LbKind, LbProtocol, RealServer, RealServerCheck, SorryServer, VirtualPorts,
    VirtualServer,
};
use crate::config::raw::{RawInstance, RawRealServer, RawRealServerCheck, RawVirtualServer};

/// keepalived's default `delay_loop`.
pub const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
/// keepalived's default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// keepalived's default `delay_before_retry`.
pub const DEFAULT_DELAY_BEFORE_RETRY: Duration = Duration::from_secs(1);
/// How long a DR flow is remembered after its last packet, by default.
pub const DEFAULT_FLOW_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest weight (IPVS's is a 32-bit int; nftables' numgen ranges stay small with this).
pub const MAX_WEIGHT: u32 = 65_535;
/// The most real servers of one virtual server.
pub const MAX_REAL_SERVERS: usize = 1_024;

pub(super) fn virtual_server(
    raw: &RawVirtualServer,
    path: &KeyPath,
    instances: &[RawInstance],
    errors: &mut Collector,
) -> Option<VirtualServer> {
    let name = match &raw.name {
        Some(name) => identifier(name, &path.key("name"), errors),
        None => {
            errors.missing(path.key("name"), "expected a virtual server name");
            None
        }
    };
    let address = match &raw.address {
        Some(text) => parse_ip(text, &path.key("address"), errors),
        None => {
            errors.missing(path.key("address"), "expected the virtual IP address");
            None
        }
    };
    let protocol = match raw.protocol.as_deref().unwrap_or("tcp") {
        "tcp" => Some(LbProtocol::Tcp),
        "udp" => Some(LbProtocol::Udp),
        other => {
            errors.invalid(
                path.key("protocol"),
                format!("expected \"tcp\" or \"udp\", got {other:?}"),
            );
            None
        }
    };
    let ports = virtual_ports(raw, path, errors);
    let lb_algo = match raw.lb_algo.as_deref().unwrap_or("rr") {
        "rr" => Some(LbAlgo::Rr),
        "wrr" => Some(LbAlgo::Wrr),
        "sh" => Some(LbAlgo::Sh),
        "fo" => Some(LbAlgo::Fo),
        other @ ("lc" | "wlc" | "lblc" | "lblcr" | "sed" | "nq" | "ovf" | "dh" | "mh") => {
            errors.invalid(
                path.key("lb_algo"),
                format!(
                    "{other:?} is not available: nftables has no per-server connection counts \
                     to choose by (lc, wlc, lblc, lblcr, sed, nq, ovf) and dh/mh hash the \
                     destination, which is one address here; expected \"rr\", \"wrr\", \"sh\" or \"fo\""
                ),
            );
            None
        }
        other => {
            errors.invalid(
                path.key("lb_algo"),
                format!("expected \"rr\", \"wrr\", \"sh\" or \"fo\", got {other:?}"),
            );
            None
        }
    };
    let lb_kind = match raw.lb_kind.as_deref().unwrap_or("nat") {
        "nat" | "NAT" => Some(LbKind::Nat),
        "dr" | "DR" => Some(LbKind::Dr),
        "tun" | "TUN" => {
            errors.invalid(
                path.key("lb_kind"),
                "\"tun\" (IP-in-IP) is not available; expected \"nat\" or \"dr\"",
            );
            None
        }
        other => {
            errors.invalid(
                path.key("lb_kind"),
                format!("expected \"nat\" or \"dr\", got {other:?}"),
            );
            None
        }
    };
    let delay_loop = positive(
        raw.delay_loop.as_deref(),
        DEFAULT_DELAY_LOOP,
        &path.key("delay_loop"),
        errors,
    );
    let flow_timeout = positive(
        raw.flow_timeout.as_deref(),
        DEFAULT_FLOW_TIMEOUT,
        &path.key("flow_timeout"),
        errors,
    );
    if raw.flow_timeout.is_some() && lb_kind == Some(LbKind::Nat) {
        errors.push(
            path.key("flow_timeout"),
            Problem::Conflict(
                "`flow_timeout` belongs to lb_kind = \"dr\" (NAT flows live in conntrack)".into(),
            ),
        );
    }
    let quorum = bounded(raw.quorum, 1, 0, u32::MAX, &path.key("quorum"), errors);
    let hysteresis = bounded(
        raw.hysteresis,
        0,
        0,
        u32::MAX,
        &path.key("hysteresis"),
        errors,
    );
    let quorum_up = match &raw.quorum_up {
        Some(argv) => command(argv, &path.key("quorum_up"), errors).map(Some),
        None => Some(None),
    };
    let quorum_down = match &raw.quorum_down {
        Some(argv) => command(argv, &path.key("quorum_down"), errors).map(Some),
        None => Some(None),
    };
    let sorry_server = match &raw.sorry_server {
        Some(text) => sorry_server(text, address, &path.key("sorry_server"), errors).map(Some),
        None => Some(None),
    };
    let instance = resolve_instance(raw, address, path, instances, errors);

    let raw_servers = raw.real_server.as_deref().unwrap_or_default();
    if raw_servers.is_empty() && raw.sorry_server.is_none() {
        errors.missing(
            path.key("real_server"),
            "expected at least one [[virtual_server.real_server]] (or a sorry_server)",
        );
    }
    if raw_servers.len() > MAX_REAL_SERVERS {
        errors.invalid(
            path.key("real_server"),
            format!("at most {MAX_REAL_SERVERS} real servers"),
        );
    }
    let context = ServerContext {
        address,
        ports: ports.as_ref(),
        lb_kind,
    };
    let mut seen: HashMap<(IpAddr, Option<u16>), usize> = HashMap::new();
    let mut real_servers = Vec::new();
    for (index, raw_server) in raw_servers.iter().enumerate() {
        let server_path = path.key("real_server").index(index);
        let server = real_server(raw_server, &server_path, &context, errors);
        if let Some(server) = &server
            && let Some(first) = seen.insert((server.address, server.port), index)
        {
            errors.push(
                server_path.key("address"),
                Problem::Duplicate(format!(
                    "{} is already a real server at {}",
                    server.address,
                    path.key("real_server").index(first)
                )),
            );
        }
        real_servers.push(server);
    }
    if let (Some(LbKind::Dr), Some(sorry)) = (lb_kind, &sorry_server)
        && sorry.is_some_and(|sorry| sorry.port.is_some())
    {
        errors.push(
            path.key("sorry_server"),
            Problem::Conflict("direct routing cannot change the port; leave it out".into()),
        );
    }
    if let (Some(VirtualPorts::Group(_)), Some(Some(SorryServer { port: Some(_), .. }))) =
        (&ports, &sorry_server)
    {
        errors.push(
            path.key("sorry_server"),
            Problem::Conflict(
                "a port group keeps the client's port; leave the sorry server's port out".into(),
            ),
        );
    }

    Some(VirtualServer {
        name: name?,
        address: address?,
        ports: ports?,
        protocol: protocol?,
        instance: instance?,
        lb_algo: lb_algo?,
        lb_kind: lb_kind?,
        delay_loop: delay_loop?,
        flow_timeout: flow_timeout?,
        quorum: quorum?,
        hysteresis: hysteresis?,
        quorum_up: quorum_up?,
        quorum_down: quorum_down?,
        sorry_server: sorry_server?,
        real_servers: real_servers.into_iter().collect::<Option<_>>()?,
    })
}

/// Names unique, and each `(address, protocol, port)` served once on the node.
pub(super) fn check_virtual_servers_together(raw: &[RawVirtualServer], errors: &mut Collector) {
    let path = KeyPath::root().key("virtual_server");
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut services: HashMap<(IpAddr, &str, u16), usize> = HashMap::new();
    for (index, server) in raw.iter().enumerate() {
        if let Some(name) = &server.name
            && let Some(first) = names.insert(name, index)
        {
            errors.push(
                path.index(index).key("name"),
                Problem::Duplicate(format!(
                    "virtual_server name {name:?} is already used by {}",
                    path.index(first)
                )),
            );
        }
        let Some(address) = (server.address.as_deref()).and_then(|a| a.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let protocol = server.protocol.as_deref().unwrap_or("tcp");
        let ports = server.port.iter().chain(server.ports.iter().flatten());
        let mut reported = HashSet::new();
        for port in ports.filter_map(|port| u16::try_from(*port).ok()) {
            if let Some(first) = services.insert((address, protocol, port), index)
                && first != index
                && reported.insert(first)
            {
                errors.push(
                    path.index(index).key("address"),
                    Problem::Duplicate(format!(
                        "{address} {protocol} port {port} is already served by {}",
                        path.index(first)
                    )),
                );
            }
        }
    }
}

struct ServerContext<'a> {
    address: Option<IpAddr>,
    ports: Option<&'a VirtualPorts>,
    lb_kind: Option<LbKind>,
}

fn virtual_ports(
    raw: &RawVirtualServer,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<VirtualPorts> {
    match (&raw.port, &raw.ports) {
        (Some(_), Some(_)) => {
            errors.push(
                path.key("ports"),
                Problem::Conflict("give either `port` or `ports`, not both".into()),
            );
            None
        }
        (None, None) => {
            errors.missing(
                path.key("port"),
                "expected `port` (one port) or `ports` (a group of ports)",
            );
            None
        }
        (Some(port), None) => {
            port_number(*port, &path.key("port"), errors).map(VirtualPorts::Single)
        }
        (None, Some(list)) => {
            let mut ports = Vec::new();
            let mut ok = true;
            for (index, port) in list.iter().enumerate() {
                match port_number(*port, &path.key("ports").index(index), errors) {
                    Some(port) if ports.contains(&port) => {
                        errors.push(
                            path.key("ports").index(index),
                            Problem::Duplicate(format!("port {port} is listed twice")),
                        );
                        ok = false;
                    }
                    Some(port) => ports.push(port),
                    None => ok = false,
                }
            }
            if ok && ports.len() < 2 {
                errors.invalid(
                    path.key("ports"),
                    "expected at least two ports in a group (use `port` for one)",
                );
                ok = false;
            }
            ports.sort_unstable();
            ok.then_some(VirtualPorts::Group(ports))
        }
    }
}

fn resolve_instance(
    raw: &RawVirtualServer,
    address: Option<IpAddr>,
    path: &KeyPath,
    instances: &[RawInstance],
    errors: &mut Collector,
) -> Option<String> {
    let holder = address.and_then(|address| {
        instances.iter().find(|instance| {
            (instance.vips.as_deref().unwrap_or_default().iter())
                .any(|vip| raw_vip_address(vip) == Some(address))
        })
    });
    match (&raw.instance, holder) {
        (Some(named), holder) => {
            if !instances.iter().any(|i| i.name.as_ref() == Some(named)) {
                errors.push(
                    path.key("instance"),
                    Problem::Undefined(format!("no [[instance]] named {named:?}")),
                );
                return None;
            }
            if let Some(holder) = holder
                && holder.name.as_ref() != Some(named)
            {
                errors.push(
                    path.key("instance"),
                    Problem::Conflict(format!(
                        "{} is a virtual address of instance {:?}, not of {named:?}",
                        address.map(|a| a.to_string()).unwrap_or_default(),
                        holder.name.as_deref().unwrap_or_default()
                    )),
                );
                return None;
            }
            Some(named.clone())
        }
        (None, Some(holder)) => holder.name.clone(),
        (None, None) => {
            if let Some(address) = address {
                errors.missing(
                    path.key("instance"),
                    format!(
                        "{address} is no instance's virtual address; name the instance whose \
                         mastership programs this virtual server with `instance`"
                    ),
                );
            }
            None
        }
    }
}

fn real_server(
    raw: &RawRealServer,
    path: &KeyPath,
    context: &ServerContext<'_>,
    errors: &mut Collector,
) -> Option<RealServer> {
    let address = match &raw.address {
        Some(text) => parse_ip(text, &path.key("address"), errors).and_then(|address| {
            same_family(address, context.address, &path.key("address"), errors)
        }),
        None => {
            errors.missing(path.key("address"), "expected the real server's IP address");
            None
        }
    };
    let port = match raw.port {
        None => Some(None),
        Some(port) => port_number(port, &path.key("port"), errors).and_then(|port| {
            if matches!(context.ports, Some(VirtualPorts::Group(_))) {
                errors.push(
                    path.key("port"),
                    Problem::Conflict(
                        "a port group keeps the client's port; leave the real server's port out"
                            .into(),
                    ),
                );
                return None;
            }
            if context.lb_kind == Some(LbKind::Dr)
                && context.ports.map(VirtualPorts::ports) != Some(&[port][..])
            {
                errors.push(
                    path.key("port"),
                    Problem::Conflict(
                        "direct routing sends the packet unchanged: the port must be the \
                         virtual server's (or left out)"
                            .into(),
                    ),
                );
                return None;
            }
            Some(Some(port))
        }),
    };
    let weight = bounded(raw.weight, 1, 0, MAX_WEIGHT, &path.key("weight"), errors);
    let default_port = port.flatten().or(match context.ports {
        Some(VirtualPorts::Single(port)) => Some(*port),
        _ => None,
    });
    let check = match &raw.check {
        None => Some(None),
        Some(check) => {
            real_server_check(check, address, default_port, &path.key("check"), errors).map(Some)
        }
    };
    Some(RealServer {
        address: address?,
        port: port?,
        weight: weight?,
        inhibit_on_failure: raw.inhibit_on_failure.unwrap_or(false),
        check: check?,
    })
}

fn real_server_check(
    raw: &RawRealServerCheck,
    server: Option<IpAddr>,
    server_port: Option<u16>,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<RealServerCheck> {
    let connect_timeout = positive(
        raw.connect_timeout.as_deref(),
        DEFAULT_CONNECT_TIMEOUT,
        &path.key("connect_timeout"),
        errors,
    );
    let delay_before_retry = duration_or(
        raw.delay_before_retry.as_deref(),
        DEFAULT_DELAY_BEFORE_RETRY,
        &path.key("delay_before_retry"),
        errors,
    );
    let retry = bounded(raw.retry, 1, 0, 100, &path.key("retry"), errors);
    let kind_name = raw.kind.as_deref();
    let http = matches!(kind_name, Some("http" | "https"));
    let mut ok = true;
    let mut only = |present: bool, key: &str, kinds: &str, errors: &mut Collector| {
        if present {
            errors.push(
                path.key(key),
                Problem::Conflict(format!("`{key}` belongs to kind = {kinds} checks")),
            );
            ok = false;
        }
    };
    if !http {
        only(raw.path.is_some(), "path", "\"http\" or \"https\"", errors);
        only(
            raw.virtualhost.is_some(),
            "virtualhost",
            "\"http\" or \"https\"",
            errors,
        );
        only(
            raw.status_code.is_some(),
            "status_code",
            "\"http\" or \"https\"",
            errors,
        );
        only(
            raw.digest.is_some(),
            "digest",
            "\"http\" or \"https\"",
            errors,
        );
    }
    if kind_name != Some("https") {
        only(raw.ca_file.is_some(), "ca_file", "\"https\"", errors);
        only(
            raw.server_name.is_some(),
            "server_name",
            "\"https\"",
            errors,
        );
    }
    if kind_name != Some("misc") {
        only(raw.program.is_some(), "program", "\"misc\"", errors);
    } else {
        only(
            raw.connect_ip.is_some(),
            "connect_ip",
            "\"tcp\", \"http\" or \"https\"",
            errors,
        );
        only(
            raw.connect_port.is_some(),
            "connect_port",
            "\"tcp\", \"http\" or \"https\"",
            errors,
        );
    }
    let connect = |errors: &mut Collector| -> Option<SocketAddr> {
        let address = match &raw.connect_ip {
            Some(text) => parse_ip(text, &path.key("connect_ip"), errors)?,
            None => server?,
        };
        let port = match raw.connect_port {
            Some(port) => port_number(port, &path.key("connect_port"), errors)?,
            None => match server_port {
                Some(port) => port,
                None => {
                    errors.missing(
                        path.key("connect_port"),
                        "expected the port to check (the real server keeps the client's port)",
                    );
                    return None;
                }
            },
        };
        Some(SocketAddr::new(address, port))
    };
    let kind = match kind_name {
        None => {
            errors.missing(
                path.key("kind"),
                "expected \"tcp\", \"http\", \"https\" or \"misc\"",
            );
            None
        }
        Some("tcp") => connect(errors).map(|connect| CheckKind::Tcp { connect }),
        Some(scheme @ ("http" | "https")) => {
            let connect = connect(errors);
            let check_path = raw.path.clone().unwrap_or_else(|| "/".to_owned());
            if !check_path.starts_with('/')
                || check_path
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                errors.invalid(
                    path.key("path"),
                    format!("expected a path starting with / without spaces, got {check_path:?}"),
                );
                ok = false;
            }
            if let Some(host) = &raw.virtualhost
                && (host.is_empty()
                    || host
                        .bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()))
            {
                errors.invalid(
                    path.key("virtualhost"),
                    format!("{host:?} is not a host name"),
                );
                ok = false;
            }
            let mut status_code = Vec::new();
            for (index, status) in raw
                .status_code
                .as_deref()
                .unwrap_or(&[200])
                .iter()
                .enumerate()
            {
                match u16::try_from(*status)
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                {
                    Some(status) => status_code.push(status),
                    None => {
                        errors.invalid(
                            path.key("status_code").index(index),
                            format!("expected an HTTP status 100..=599, got {status}"),
                        );
                        ok = false;
                    }
                }
            }
            if status_code.is_empty() && ok {
                errors.invalid(path.key("status_code"), "expected at least one HTTP status");
                ok = false;
            }
            let digest = raw
                .digest
                .as_ref()
                .map(|digest| digest.to_ascii_lowercase());
            if let Some(digest) = &digest
                && (digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                errors.invalid(
                    path.key("digest"),
                    "expected the SHA-256 of the body as 64 hex digits (`sha256sum`)",
                );
                ok = false;
            }
            let ca_file = match &raw.ca_file {
                Some(file) => absolute_path(file, &path.key("ca_file"), errors).map(Some),
                None => Some(None),
            };
            let server_name = match &raw.server_name {
                Some(name) => match ServerName::try_from(name.as_str()) {
                    Ok(parsed) => Some(Some(parsed.to_owned())),
                    Err(_) => {
                        errors.invalid(
                            path.key("server_name"),
                            format!("expected a DNS name or an IP address, got {name:?}"),
                        );
                        None
                    }
                },
                None => Some(None),
            };
            (ok).then_some(()).and_then(|()| {
                Some(CheckKind::Http {
                    connect: connect?,
                    tls: scheme == "https",
                    path: check_path,
                    virtualhost: raw.virtualhost.clone(),
                    status_code,
                    digest,
                    ca_file: ca_file?,
                    server_name: server_name?,
                })
            })
        }
        Some("misc") => match &raw.program {
            Some(argv) => command(argv, &path.key("program"), errors)
                .map(|command| CheckKind::Misc { command }),
            None => {
                errors.missing(
                    path.key("program"),
                    "expected the program and its arguments, such as [\"/usr/local/bin/check\", \"198.51.100.21\"]",
                );
                None
            }
        },
        Some(other) => {
            errors.invalid(
                path.key("kind"),
                format!("expected \"tcp\", \"http\", \"https\" or \"misc\", got {other:?}"),
            );
            None
        }
    };
    if !ok {
        return None;
    }
    Some(RealServerCheck {
        kind: kind?,
        connect_timeout: connect_timeout?,
        retry: retry?,
        delay_before_retry: delay_before_retry?,
    })
}

fn sorry_server(
    text: &str,
    address: Option<IpAddr>,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<SorryServer> {
    let parsed = if let Ok(socket) = text.parse::<SocketAddr>() {
        if socket.port() == 0 {
            errors.invalid(path.clone(), "expected a port 1..=65535");
            return None;
        }
        SorryServer {
            address: socket.ip(),
            port: Some(socket.port()),
        }
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        SorryServer {
            address: ip,
            port: None,
        }
    } else {
        errors.invalid(
            path.clone(),
            format!(
                "expected an address and optional port such as \"198.51.100.99:8080\" or \
                 \"[2001:db8::99]:8080\", got {text:?}"
            ),
        );
        return None;
    };
    same_family(parsed.address, address, path, errors).map(|_| parsed)
}

fn parse_ip(text: &str, path: &KeyPath, errors: &mut Collector) -> Option<IpAddr> {
    match text.parse::<IpAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            errors.invalid(path.clone(), format!("{text:?} is not an IP address"));
            None
        }
    }
}

fn same_family(
    address: IpAddr,
    service: Option<IpAddr>,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<IpAddr> {
    match service {
        Some(service) if family_of(service) != family_of(address) => {
            errors.push(
                path.clone(),
                Problem::Conflict(format!(
                    "{address} is {} but the virtual server's address {service} is {}",
                    family_name(family_of(address)),
                    family_name(family_of(service)),
                )),
            );
            None
        }
        _ => Some(address),
    }
}

fn port_number(port: i64, path: &KeyPath, errors: &mut Collector) -> Option<u16> {
    let checked = u16::try_from(port).ok().filter(|port| *port > 0);
    if checked.is_none() {
        errors.invalid(
            path.clone(),
            format!("expected a port 1..=65535, got {port}"),
        );
    }
    checked
}

fn bounded(
    value: Option<i64>,
    default: u32,
    min: u32,
    max: u32,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<u32> {
    let value = value.unwrap_or(i64::from(default));
    let checked = u32::try_from(value)
        .ok()
        .filter(|v| (min..=max).contains(v));
    if checked.is_none() {
        errors.invalid(path.clone(), format!("expected {min}..={max}, got {value}"));
    }
    checked
}

fn positive(
    text: Option<&str>,
    default: Duration,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<Duration> {
    let duration = duration_or(text, default, path, errors)?;
    if duration.is_zero() {
        errors.invalid(path.clone(), "expected a duration above zero");
        return None;
    }
    Some(duration)
}
