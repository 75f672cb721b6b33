//! keepalived's `virtual_server` (IPVS) as hav's `[[virtual_server]]` (nftables): the service,
//! its scheduler and forwarding method, quorum and sorry server, the real servers and their
//! checks.
//!
//! Only what the schema accepts is written: every value the validator would refuse (a method or
//! scheduler nftables cannot run, a port direct routing cannot change, a real server of the other
//! family, a second checker) is left out or replaced by the nearest equivalent, each with a
//! finding saying what hav does instead. A service with no real server left is not converted.

use std::net::IpAddr;

use super::{Converter, block, first_arg, parse_int};
use crate::import::draft::{CheckDraft, Draft, RealServerDraft, VirtualServerDraft};
use crate::import::keywords::is_checker;
use crate::import::parser::Statement;

/// The largest real server weight hav takes.
const MAX_WEIGHT: i64 = 65_535;
/// Status codes a `status_code` range may expand to.
const MAX_STATUS_CODES: usize = 100;

impl Converter {
    pub(super) fn virtual_server(&mut self, statement: &Statement, draft: &mut Draft) {
        let words: Vec<&str> = statement.words().collect();
        let (address, port) = match words.as_slice() {
            ["fwmark", _] => {
                return self.not_converted(
                    statement,
                    "a fwmark service is chosen by firewall marks set outside keepalived, which \
                     hav does not read; hav balances several ports of one address as one \
                     service: write a [[virtual_server]] with `ports = [...]` (real servers \
                     then keep the client's port)",
                );
            }
            ["group", _] => {
                return self.not_converted(
                    statement,
                    "hav has no virtual_server_group: write one [[virtual_server]] per address \
                     and port of the group",
                );
            }
            [address, port] => match (address.parse::<IpAddr>(), port.parse::<u16>()) {
                (Ok(address), Ok(port)) if port > 0 => (address, port),
                _ => {
                    return self.not_converted(statement, "expected an IP address and a port");
                }
            },
            _ => return self.not_converted(statement, "expected an IP address and a port"),
        };
        let name = self.service_name(address, port, draft);
        let mut service = VirtualServerDraft {
            name,
            location: statement.location.clone(),
            address,
            port,
            protocol: None,
            instance: None,
            lb_algo: None,
            lb_kind: None,
            delay_loop_ms: None,
            quorum: None,
            hysteresis: None,
            quorum_up: None,
            quorum_down: None,
            sorry_server: None,
            real_servers: Vec::new(),
        };
        // Defaults for the checks, when a real server or checker does not set them.
        let mut shared = SharedCheck::default();
        let mut servers = Vec::new();
        let mut sorry: Option<&Statement> = None;
        for item in block(statement) {
            let word = first_arg(item);
            match item.keyword.as_str() {
                "protocol" => match word {
                    Some("TCP" | "tcp") => service.protocol = None,
                    Some("UDP" | "udp") => service.protocol = Some("udp"),
                    _ => {
                        return self.not_converted(
                            statement,
                            &format!(
                                "protocol {}: hav balances TCP and UDP only; the service is not \
                                 converted",
                                word.unwrap_or_default()
                            ),
                        );
                    }
                },
                "lb_algo" | "lvs_sched" => service.lb_algo = self.scheduler(item),
                "lb_kind" | "lvs_method" => match word.map(str::to_ascii_uppercase).as_deref() {
                    Some("NAT") => service.lb_kind = None,
                    Some("DR") => service.lb_kind = Some("dr"),
                    Some("TUN") => {
                        return self.not_converted(
                            statement,
                            "lb_kind TUN: hav forwards by NAT or direct routing only (no \
                             IP-in-IP tunnels); real servers that are not on the balancer's LAN \
                             stay with keepalived; the service is not converted",
                        );
                    }
                    _ => {
                        return self.not_converted(
                            statement,
                            "expected lb_kind NAT, DR or TUN; the service is not converted",
                        );
                    }
                },
                "delay_loop" => service.delay_loop_ms = self.positive_seconds(item),
                "quorum" => service.quorum = self.count(item, i64::from(u32::MAX)),
                "hysteresis" => service.hysteresis = self.count(item, i64::from(u32::MAX)),
                "quorum_up" => service.quorum_up = self.notify(item),
                "quorum_down" => service.quorum_down = self.notify(item),
                "sorry_server" => sorry = Some(item),
                "real_server" => servers.push(item),
                "persistence_timeout" | "persistence_granularity" | "persistence_engine" => self
                    .not_converted(
                        item,
                        "hav keeps no persistence table: each new connection is scheduled on \
                         its own. lb_algo sh sends one client address to the same real server \
                         while the healthy set is unchanged; use it where clients must stick",
                    ),
                "ha_suspend" => self.note(
                    item,
                    "hav programs the service only on the master of its instance; checks run \
                     on every node so a new master starts with a current set",
                ),
                "virtualhost" => shared.virtualhost = word.map(str::to_owned),
                "connect_timeout" => shared.connect_timeout_ms = self.positive_seconds(item),
                "retry" => shared.retry = self.count(item, 100),
                "delay_before_retry" => {
                    shared.delay_before_retry_ms = word.and_then(|text| self.seconds(item, text))
                }
                "inhibit_on_failure" => shared.inhibit_on_failure = flag(item),
                "ops" => self.not_converted(
                    item,
                    "hav schedules UDP per flow (conntrack), not per packet",
                ),
                "alpha" | "omega" => self.not_converted(
                    item,
                    "hav starts every real server as healthy until its check fails, and \
                     removes nothing at stop but its own table",
                ),
                "smtp_alert" => self.not_converted(
                    item,
                    "hav mails VRRP state changes only ([node.smtp]); quorum_up and quorum_down \
                     run a program",
                ),
                "sorry_server_inhibit" | "sorry_server_lvs_method" => self.not_converted(
                    item,
                    "hav sends new connections to the sorry server while quorum is lost, with \
                     the service's own method",
                ),
                _ => self.not_converted(item, "no hav equivalent"),
            }
        }
        let kind_is_dr = service.lb_kind == Some("dr");
        if let Some(item) = sorry {
            service.sorry_server = self.sorry_server(item, address, kind_is_dr);
        }
        for item in servers {
            if let Some(server) = self.real_server(item, &service, &shared) {
                let duplicate = (service.real_servers.iter())
                    .any(|known| (known.address, known.port) == (server.address, server.port));
                if duplicate {
                    self.not_converted(item, "the same real server is listed twice; left out");
                } else {
                    service.real_servers.push(server);
                }
            }
        }
        if service.real_servers.is_empty() && service.sorry_server.is_none() {
            return self.not_converted(
                statement,
                "no real server (or sorry_server) could be converted; the service is left out",
            );
        }
        let served_already = (draft.virtual_servers.iter()).any(|known| {
            (known.address, known.port, known.protocol)
                == (service.address, service.port, service.protocol)
        });
        if served_already {
            return self.not_converted(
                statement,
                "the same address, protocol and port is already a virtual server; left out",
            );
        }
        let holder = (draft.instances.iter())
            .find(|instance| instance.vips.iter().any(|vip| vip.address == address));
        if holder.is_none() {
            let same_family: Vec<&str> = (draft.instances.iter())
                .filter(|instance| {
                    instance
                        .vips
                        .first()
                        .is_some_and(|vip| vip.address.is_ipv4() == address.is_ipv4())
                })
                .map(|instance| instance.name.as_str())
                .collect();
            match same_family.as_slice() {
                [only] => {
                    service.instance = Some((*only).to_owned());
                    self.note(
                        statement,
                        &format!(
                            "{address} is no virtual address of any instance: programmed while \
                             this node is master of instance {only}, the only one of its family; \
                             check that the address reaches the node then"
                        ),
                    );
                }
                _ => {
                    return self.not_converted(
                        statement,
                        "hav programs a service on the master of the instance holding its \
                         address, and no single instance holds or can take this one; add the \
                         address to an instance (or name one with `instance`) by hand",
                    );
                }
            }
        }
        draft.virtual_servers.push(service);
    }

    /// `virtual_server` names are unique hav names made of the protocol-free address and port.
    fn service_name(&mut self, address: IpAddr, port: u16, draft: &Draft) -> String {
        let base = format!("{address}-{port}").replace(':', "_");
        let mut name = base.clone();
        let mut suffix = 2;
        while draft.virtual_servers.iter().any(|known| known.name == name) {
            name = format!("{base}-{suffix}");
            suffix += 1;
        }
        name
    }

    /// `lb_algo`: rr, wrr, sh and fo as they are; the others as the nearest scheduler nftables
    /// can run, with a finding.
    fn scheduler(&mut self, item: &Statement) -> Option<&'static str> {
        let algo = first_arg(item).unwrap_or_default();
        let (hav, reason) = match algo {
            "rr" => return None,
            "wrr" => return Some("wrr"),
            "sh" => return Some("sh"),
            "fo" => return Some("fo"),
            "lc" | "wlc" | "sed" | "nq" | "lblc" | "lblcr" | "ovf" => (
                "wrr",
                "schedules by active connection counts, which nftables cannot choose by; \
                 converted to lb_algo wrr (shares by weight)",
            ),
            "mh" => (
                "sh",
                "maglev hashing of the source: converted to lb_algo sh (source hashing, \
                 weighted), which also keeps a client address on one server",
            ),
            "dh" => (
                "wrr",
                "hashes the destination, which is the one virtual address here; converted to \
                 lb_algo wrr",
            ),
            _ => (
                "wrr",
                "unknown scheduler; converted to lb_algo wrr (shares by weight)",
            ),
        };
        self.not_converted(item, reason);
        Some(hav)
    }

    fn sorry_server(&mut self, item: &Statement, service: IpAddr, dr: bool) -> Option<String> {
        let words: Vec<&str> = item.words().collect();
        let address = words.first().and_then(|word| word.parse::<IpAddr>().ok());
        let port = words
            .get(1)
            .map(|word| word.parse::<u16>().ok().filter(|p| *p > 0));
        let Some(address) = address else {
            self.not_converted(item, "expected an IP address and a port; left out");
            return None;
        };
        if address.is_ipv4() != service.is_ipv4() {
            self.not_converted(
                item,
                "hav forwards to an address of the service's family only; left out",
            );
            return None;
        }
        let port = match port {
            None => None,
            Some(None) => {
                self.not_converted(item, "expected a port 1 to 65535; left out");
                return None;
            }
            Some(Some(_)) if dr => {
                self.note(
                    item,
                    "direct routing sends the packet unchanged: the port is the client's",
                );
                None
            }
            Some(port) => port,
        };
        Some(match (address, port) {
            (address, None) => address.to_string(),
            (IpAddr::V4(address), Some(port)) => format!("{address}:{port}"),
            (IpAddr::V6(address), Some(port)) => format!("[{address}]:{port}"),
        })
    }

    fn real_server(
        &mut self,
        statement: &Statement,
        service: &VirtualServerDraft,
        shared: &SharedCheck,
    ) -> Option<RealServerDraft> {
        let words: Vec<&str> = statement.words().collect();
        let address = words.first().and_then(|word| word.parse::<IpAddr>().ok());
        let Some(address) = address else {
            self.not_converted(statement, "expected an IP address and a port; left out");
            return None;
        };
        if address.is_ipv4() != service.address.is_ipv4() {
            self.not_converted(
                statement,
                "hav forwards to real servers of the service's family only; left out",
            );
            return None;
        }
        let mut port = match words.get(1).map(|word| word.parse::<u16>()) {
            None => None,
            Some(Ok(port)) if port > 0 => Some(port),
            Some(_) => {
                self.not_converted(statement, "expected a port 1 to 65535; left out");
                return None;
            }
        };
        if service.lb_kind == Some("dr") {
            if port.is_some_and(|port| port != service.port) {
                self.note(
                    statement,
                    "direct routing sends the packet unchanged (so does IPVS): the real \
                     server gets the virtual server's port",
                );
            }
            port = None;
        } else if port == Some(service.port) {
            port = None;
        }
        let mut server = RealServerDraft {
            location: statement.location.clone(),
            address,
            port,
            weight: None,
            inhibit_on_failure: shared.inhibit_on_failure,
            check: None,
        };
        let mut shared = shared.clone();
        let mut checkers = Vec::new();
        for item in block(statement) {
            let word = first_arg(item);
            match item.keyword.as_str() {
                "weight" => match word.and_then(parse_int) {
                    Some(weight) if (0..=MAX_WEIGHT).contains(&weight) => {
                        server.weight = (weight != 1).then_some(weight)
                    }
                    _ => self.not_converted(item, "expected a weight 0 to 65535; weight 1 used"),
                },
                "inhibit_on_failure" => server.inhibit_on_failure = flag(item),
                "virtualhost" => shared.virtualhost = word.map(str::to_owned),
                "connect_timeout" => shared.connect_timeout_ms = self.positive_seconds(item),
                "retry" => shared.retry = self.count(item, 100),
                "delay_before_retry" => {
                    shared.delay_before_retry_ms = word.and_then(|text| self.seconds(item, text))
                }
                keyword if is_checker(keyword) => checkers.push(item),
                "notify_up" | "notify_down" => self.not_converted(
                    item,
                    "hav runs no program per real server; it logs and counts each change (and \
                     quorum_up / quorum_down run programs)",
                ),
                "delay_loop" => self.not_converted(
                    item,
                    "hav checks every real server of a service every delay_loop of the \
                     service; set it there",
                ),
                "uthreshold" | "lthreshold" => self.not_converted(
                    item,
                    "hav keeps no per-server connection limits (nftables does not count them \
                     per real server)",
                ),
                "smtp_alert" => self.not_converted(
                    item,
                    "hav mails VRRP state changes only ([node.smtp]), not real servers' health",
                ),
                _ => self.not_converted(item, "no hav equivalent"),
            }
        }
        let mut checkers = checkers.into_iter();
        if let Some(first) = checkers.next() {
            server.check = self.check(first, &server, &shared);
        }
        for other in checkers {
            self.not_converted(
                other,
                "hav runs one check per real server (the first one is converted); combine \
                 them in a MISC_CHECK program if all must pass",
            );
        }
        Some(server)
    }

    fn check(
        &mut self,
        statement: &Statement,
        server: &RealServerDraft,
        shared: &SharedCheck,
    ) -> Option<CheckDraft> {
        let kind = match statement.keyword.as_str() {
            "TCP_CHECK" => "tcp",
            "HTTP_GET" => "http",
            "SSL_GET" => {
                self.note(
                    statement,
                    "hav verifies the real server's certificate (system CAs, or ca_file) and \
                     keepalived does not: add ca_file for a private CA",
                );
                "https"
            }
            "MISC_CHECK" => "misc",
            other => {
                self.not_converted(
                    statement,
                    &format!(
                        "hav checks real servers with TCP_CHECK, HTTP_GET, SSL_GET and \
                         MISC_CHECK; {other} is not converted, so the server counts as healthy \
                         (rewrite it as a MISC_CHECK program)"
                    ),
                );
                return None;
            }
        };
        let mut check = CheckDraft {
            kind,
            connect_timeout_ms: shared.connect_timeout_ms,
            retry: shared.retry,
            delay_before_retry_ms: shared.delay_before_retry_ms,
            ..CheckDraft::default()
        };
        // The service's or real server's virtualhost is the Host header of web checks only.
        let web = matches!(kind, "http" | "https");
        if web {
            check.virtualhost = shared.virtualhost.clone();
        }
        let mut urls = Vec::new();
        for item in block(statement) {
            let word = first_arg(item);
            let keyword = item.keyword.as_str();
            match keyword {
                "connect_ip" | "connect_port" if kind == "misc" => {
                    self.not_converted(item, "a MISC_CHECK program is given its own target");
                }
                "connect_ip" => match word.and_then(|text| text.parse::<IpAddr>().ok()) {
                    Some(ip) if ip == server.address => {}
                    Some(ip) => check.connect_ip = Some(ip),
                    None => self.not_converted(item, "expected an IP address; left out"),
                },
                "connect_port" => match word.and_then(|text| text.parse::<u16>().ok()) {
                    Some(port) if port > 0 => check.connect_port = Some(port),
                    _ => self.not_converted(item, "expected a port 1 to 65535; left out"),
                },
                "connect_timeout" => check.connect_timeout_ms = self.positive_seconds(item),
                "misc_timeout" if kind == "misc" => {
                    check.connect_timeout_ms = self.positive_seconds(item)
                }
                "retry" | "nb_get_retry" => check.retry = self.count(item, 100),
                "delay_before_retry" => {
                    check.delay_before_retry_ms = word.and_then(|text| self.seconds(item, text))
                }
                "virtualhost" if web => check.virtualhost = word.map(str::to_owned),
                "url" if web => urls.push(item),
                "misc_path" if kind == "misc" => check.program = self.misc_program(item),
                "misc_dynamic" => self.not_converted(
                    item,
                    "hav reads a MISC_CHECK's exit status as healthy (0) or failed only; the \
                     weight stays as configured",
                ),
                "user" => {
                    self.not_converted(item, "hav runs MISC_CHECK programs as hav-agent's user")
                }
                "bindto" | "bind_port" | "bind_if" => self.not_converted(
                    item,
                    "hav's checks connect from the address the kernel chooses",
                ),
                "warmup" => {
                    self.not_converted(item, "hav starts checking at once, every delay_loop")
                }
                "delay_loop" => self.not_converted(
                    item,
                    "hav checks every delay_loop of the service; set it there",
                ),
                "enable_sni" => self.note(
                    item,
                    "hav always sends SNI (virtualhost, or server_name) with a host name",
                ),
                _ => self.not_converted(item, "no hav equivalent"),
            }
        }
        if kind == "misc" && check.program.is_none() {
            self.not_converted(
                statement,
                "no convertible misc_path, so the check is left out and the server counts as \
                 healthy",
            );
            return None;
        }
        if check.virtualhost.as_deref().is_some_and(|host| {
            host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            self.not_converted(
                statement,
                "virtualhost is not a host name; the check sends the address as Host",
            );
            check.virtualhost = None;
        }
        let mut urls = urls.into_iter();
        if let Some(url) = urls.next() {
            self.url(url, &mut check);
        } else if web {
            self.note(statement, "no url: hav asks GET / and expects status 200");
        }
        for other in urls {
            self.not_converted(
                other,
                "hav checks one url per real server; the first is converted",
            );
        }
        Some(check)
    }

    fn url(&mut self, statement: &Statement, check: &mut CheckDraft) {
        let mut digest = None;
        for item in block(statement) {
            let word = first_arg(item);
            match item.keyword.as_str() {
                "path" => match word {
                    Some(path)
                        if path.starts_with('/')
                            && !path.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                    {
                        check.path = Some(path.to_owned())
                    }
                    _ => self.not_converted(
                        item,
                        "expected a path starting with / without spaces; GET / is checked",
                    ),
                },
                "status_code" => {
                    let mut codes = Vec::new();
                    for text in item.words() {
                        match status_codes(text) {
                            Some(range) if codes.len() + range.len() <= MAX_STATUS_CODES => {
                                codes.extend(range)
                            }
                            _ => {
                                self.not_converted(
                                    item,
                                    "expected HTTP status codes 100 to 599 (or ranges of them); \
                                     hav's default 200 is checked",
                                );
                                codes.clear();
                                break;
                            }
                        }
                    }
                    codes.sort_unstable();
                    codes.dedup();
                    check.status_code = codes;
                }
                "digest" => digest = Some(item),
                "virtualhost" => check.virtualhost = word.map(str::to_owned),
                _ => self.not_converted(item, "no hav equivalent"),
            }
        }
        if let Some(item) = digest {
            self.not_converted(
                item,
                "keepalived's digest is the MD5 of the body and hav checks a SHA-256: add \
                 `digest = \"<sha256sum of the body>\"` to the check by hand (curl -s URL | \
                 sha256sum); the status code is checked meanwhile",
            );
        }
        if check.status_code.is_empty() && digest.is_none() {
            self.note(
                statement,
                "no status_code: hav expects 200 where keepalived accepts any 2xx; add \
                 status_code if the server answers another",
            );
        }
    }

    fn misc_program(&mut self, item: &Statement) -> Option<Vec<String>> {
        let argv = if item.args.len() == 1 {
            super::split_command(&item.args[0].text)
        } else {
            Ok(item.words().map(str::to_owned).collect())
        };
        match argv {
            Ok(argv) if argv.first().is_some_and(|program| program.starts_with('/')) => Some(argv),
            Ok(_) => {
                self.not_converted(
                    item,
                    "hav runs the program without a shell or PATH search: give its absolute path",
                );
                None
            }
            Err(reason) => {
                self.not_converted(item, &reason);
                None
            }
        }
    }

    /// Seconds above zero as milliseconds; `None` with a finding otherwise.
    fn positive_seconds(&mut self, item: &Statement) -> Option<u64> {
        let word = first_arg(item).unwrap_or_default();
        match self.seconds(item, word) {
            Some(ms) if ms > 0 => Some(ms),
            _ => {
                self.not_converted(item, "expected seconds above zero; hav's default is used");
                None
            }
        }
    }

    /// A whole number from 0 to `max`; `None` with a finding otherwise.
    fn count(&mut self, item: &Statement, max: i64) -> Option<i64> {
        match first_arg(item).and_then(parse_int) {
            Some(value) if (0..=max).contains(&value) => Some(value),
            _ => {
                self.not_converted(
                    item,
                    &format!("expected a whole number 0 to {max}; hav's default is used"),
                );
                None
            }
        }
    }
}

/// Check settings written above the checker (on the service or the real server).
#[derive(Debug, Clone, Default)]
struct SharedCheck {
    connect_timeout_ms: Option<u64>,
    retry: Option<i64>,
    delay_before_retry_ms: Option<u64>,
    virtualhost: Option<String>,
    inhibit_on_failure: bool,
}

/// A keyword that is on without an argument, or with `on`/`true`/`yes`.
fn flag(item: &Statement) -> bool {
    first_arg(item).is_none_or(|value| super::parse_bool(value) == Some(true))
}

/// `200`, or a range `200-299`, as status codes 100 to 599.
fn status_codes(text: &str) -> Option<Vec<i64>> {
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (low.parse::<i64>().ok()?, high.parse::<i64>().ok()?),
        None => {
            let code = text.parse::<i64>().ok()?;
            (code, code)
        }
    };
    ((100..=599).contains(&low) && (low..=599).contains(&high)).then(|| (low..=high).collect())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use hav_proto::config::{CheckKind, LbAlgo, LbKind, LbProtocol, VirtualPorts, VirtualServer};

    use crate::import::{FindingKind, ImportedNode, import_keepalived_text};

    const INSTANCE: &str = "vrrp_instance VI_1 {\n state MASTER\n interface eth0\n \
                            virtual_router_id 51\n priority 150\n virtual_ipaddress {\n \
                            192.0.2.100/24\n }\n}\n";

    fn import(services: &str) -> ImportedNode {
        import_keepalived_text(
            &format!("{INSTANCE}{services}"),
            Path::new("keepalived.conf"),
        )
        .unwrap_or_else(|error| panic!("{error}"))
    }

    fn service(node: &ImportedNode) -> &VirtualServer {
        match node.config.virtual_servers.as_slice() {
            [service] => service,
            other => panic!("expected one virtual server, got {other:?}\n{}", node.toml),
        }
    }

    /// (line, item start) of the findings of `kind`.
    fn findings(node: &ImportedNode, kind: FindingKind) -> Vec<(usize, String)> {
        (node.findings.iter())
            .filter(|finding| finding.kind == kind)
            .map(|finding| (finding.location.line, finding.item.clone()))
            .collect()
    }

    fn socket(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    #[test]
    fn direct_routing_with_tcp_checks_keeps_keepalived_timing() {
        let node = import(
            "virtual_server 192.0.2.100 80 {\n delay_loop 6\n lb_algo rr\n lb_kind DR\n \
             persistence_timeout 50\n protocol TCP\n virtualhost www.example.org\n\
             real_server 192.0.2.21 80 {\n weight 3\n TCP_CHECK {\n connect_timeout 3\n \
             nb_get_retry 2\n delay_before_retry 2\n connect_port 8080\n }\n }\n\
             real_server 192.0.2.22 80 {\n weight 1\n inhibit_on_failure\n \
             TCP_CHECK {\n connect_timeout 3\n }\n }\n}\n",
        );
        let service = service(&node);
        assert_eq!(service.address.to_string(), "192.0.2.100");
        assert_eq!(service.ports, VirtualPorts::Single(80));
        assert_eq!(service.protocol, LbProtocol::Tcp);
        assert_eq!(service.instance, "VI_1");
        assert_eq!((service.lb_algo, service.lb_kind), (LbAlgo::Rr, LbKind::Dr));
        assert_eq!(service.delay_loop, Duration::from_secs(6));
        let servers: Vec<(String, Option<u16>, u32, bool)> = (service.real_servers.iter())
            .map(|s| {
                (
                    s.address.to_string(),
                    s.port,
                    s.weight,
                    s.inhibit_on_failure,
                )
            })
            .collect();
        assert_eq!(
            servers,
            [
                ("192.0.2.21".into(), None, 3, false),
                ("192.0.2.22".into(), None, 1, true)
            ]
        );
        let check = service.real_servers[0].check.as_ref().map(|check| {
            (
                check.kind.clone(),
                check.connect_timeout,
                check.retry,
                check.delay_before_retry,
            )
        });
        assert_eq!(
            check,
            Some((
                CheckKind::Tcp {
                    connect: socket("192.0.2.21:8080")
                },
                Duration::from_secs(3),
                2,
                Duration::from_secs(2)
            ))
        );
        // No persistence in hav: said so at its line, nothing else left out.
        assert_eq!(
            findings(&node, FindingKind::NotConverted),
            [(14, "persistence_timeout 50".to_owned())]
        );
    }

    #[test]
    fn nat_with_http_checks_sorry_server_and_quorum() {
        let node = import(
            "virtual_server 192.0.2.100 443 {\n delay_loop 10\n lb_algo wlc\n lb_kind NAT\n \
             quorum 2\n hysteresis 1\n quorum_up \"/usr/local/bin/up web\"\n \
             sorry_server 192.0.2.99 8080\n\
             real_server 192.0.2.21 8443 {\n weight 2\n SSL_GET {\n url {\n path /health\n \
             status_code 200-204\n }\n connect_timeout 2\n retry 3\n }\n }\n\
             real_server 192.0.2.22 8443 {\n HTTP_GET {\n url {\n path /\n \
             digest 9b3a0c1ed5e1e6e1e0f1d5a3c2b4e6f7\n }\n url {\n path /other\n }\n }\n }\n\
             real_server 192.0.2.23 8443 {\n MISC_CHECK {\n \
             misc_path \"/usr/local/bin/check 192.0.2.23\"\n misc_timeout 4\n }\n }\n}\n",
        );
        let service = service(&node);
        assert_eq!(
            (service.lb_algo, service.lb_kind),
            (LbAlgo::Wrr, LbKind::Nat)
        );
        assert_eq!((service.quorum, service.hysteresis), (2, 1));
        assert!(service.quorum_up.is_some());
        assert_eq!(
            service
                .sorry_server
                .map(|s| (s.address.to_string(), s.port)),
            Some(("192.0.2.99".into(), Some(8080)))
        );
        let kinds: Vec<CheckKind> = (service.real_servers.iter())
            .filter_map(|s| s.check.as_ref().map(|c| c.kind.clone()))
            .collect();
        match kinds.as_slice() {
            [
                CheckKind::Http {
                    connect,
                    tls: true,
                    path,
                    status_code,
                    digest: None,
                    ..
                },
                CheckKind::Http {
                    tls: false,
                    path: second,
                    ..
                },
                CheckKind::Misc { command },
            ] => {
                assert_eq!(*connect, socket("192.0.2.21:8443"));
                assert_eq!(path, "/health");
                assert_eq!(status_code, &[200, 201, 202, 203, 204]);
                assert_eq!(second, "/");
                assert_eq!(command.program, Path::new("/usr/local/bin/check"));
                assert_eq!(command.args, ["192.0.2.23"]);
            }
            other => panic!("{other:?}"),
        }
        let misc = service.real_servers[2].check.as_ref();
        assert_eq!(
            misc.map(|c| c.connect_timeout),
            Some(Duration::from_secs(4))
        );
        let left_out: Vec<String> = findings(&node, FindingKind::NotConverted)
            .into_iter()
            .map(|(_, item)| item)
            .collect();
        assert_eq!(
            left_out,
            [
                "lb_algo wlc",
                "digest 9b3a0c1ed5e1e6e1e0f1d5a3c2b4e6f7",
                "url { ... }"
            ]
        );
    }

    #[test]
    fn what_nftables_cannot_do_is_left_out_with_the_reason() {
        let node = import(
            "virtual_server fwmark 1 {\n lb_algo rr\n real_server 192.0.2.21 {\n }\n}\n\
             virtual_server 192.0.2.100 25 {\n lb_kind TUN\n real_server 192.0.2.21 25 {\n }\n}\n\
             virtual_server 192.0.2.100 53 {\n protocol UDP\n lb_kind DR\n \
             real_server 192.0.2.21 5353 {\n }\n real_server 2001:db8::21 53 {\n }\n}\n",
        );
        let service = service(&node);
        assert_eq!(service.protocol, LbProtocol::Udp);
        assert_eq!(service.real_servers.len(), 1);
        assert_eq!(service.real_servers[0].port, None);
        let reasons: Vec<(String, String)> = (node.findings.iter())
            .filter(|finding| {
                finding.item.starts_with("virtual_server")
                    || finding.item.starts_with("real_server")
            })
            .map(|finding| (finding.item.clone(), finding.reason.clone()))
            .collect();
        assert!(
            reasons
                .iter()
                .any(|(item, reason)| item.starts_with("virtual_server fwmark 1")
                    && reason.contains("ports = [...]")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(
                |(item, reason)| item.starts_with("virtual_server 192.0.2.100 25")
                    && reason.contains("TUN")
            ),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(
                |(item, reason)| item.starts_with("real_server 2001:db8::21")
                    && reason.contains("family")
            ),
            "{reasons:?}"
        );
    }

    #[test]
    fn a_service_on_no_instance_address_follows_the_only_instance_of_its_family() {
        let node = import("virtual_server 192.0.2.200 80 {\n real_server 192.0.2.21 80 {\n }\n}\n");
        assert_eq!(service(&node).instance, "VI_1");
        assert!(
            node.notes()
                .any(|note| note.reason.contains("instance VI_1")),
            "{:?}",
            node.findings
        );
    }
}
