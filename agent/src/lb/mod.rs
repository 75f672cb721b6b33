//! The load balancer: keepalived's `virtual_server` semantics over nftables.
//!
//! [`Balancer`] holds every virtual server of the running config, the health of each real server
//! (from [`check`]), each service's quorum, and the instances this node is master of. It does no
//! nftables IO itself: [`Balancer::programmed`] says what the tables must hold now (the virtual
//! servers of the instances this node is master of, each with its pool of healthy real servers,
//! or its sorry server while quorum is lost) and the executor installs it.
//!
//! Guarantees: checks run on every node whatever its VRRP state, so a new master programs a
//! current set at once; a real server starts healthy (keepalived's default); the pool of a
//! service is its healthy servers of weight above zero (a failed `inhibit_on_failure` server has
//! weight 0, which in nftables is the same as being out of the pool: no new connections, the
//! established ones untouched); quorum is the total weight of healthy servers, lost below
//! `quorum - hysteresis` and gained at `quorum + hysteresis`, and each change runs
//! `quorum_down` / `quorum_up` once.

pub mod check;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use hav_proto::config::{Command, LbKind, VirtualPorts, VirtualServer};
use tokio::sync::mpsc;

use crate::net::nft::{Forwarding, LbService, Target};
use check::{CheckReport, Checker};

/// How long a quorum hook may run before its process group is killed.
pub const QUORUM_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// A real server, by what identifies it across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    /// The virtual server's name.
    pub service: String,
    pub address: IpAddr,
    pub port: Option<u16>,
}

impl std::fmt::Display for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(
                f,
                "{} {}",
                self.service,
                std::net::SocketAddr::new(self.address, port)
            ),
            None => write!(f, "{} {}", self.service, self.address),
        }
    }
}

/// A virtual server as planned on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedService {
    /// Its position in the config (names its nftables chains).
    pub id: usize,
    pub config: VirtualServer,
    /// The interface its VIP is on: where DR traffic arrives and real servers are reached.
    pub device: String,
}

/// A quorum change to run a hook for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumChange {
    pub service: String,
    pub up: bool,
    pub command: Option<Command>,
}

/// The virtual servers, their real servers' health, and where they are programmed.
pub struct Balancer {
    services: Vec<PlannedService>,
    /// Only failed servers are recorded: absent means healthy.
    failed: BTreeMap<ServerKey, String>,
    checkers: HashMap<ServerKey, (String, Checker)>,
    /// Per service, whether quorum is held.
    quorum: BTreeMap<String, bool>,
    masters: BTreeSet<String>,
    tx: mpsc::Sender<CheckReport>,
    reports: mpsc::Receiver<CheckReport>,
}

impl Default for Balancer {
    fn default() -> Self {
        Self::new()
    }
}

impl Balancer {
    pub fn new() -> Self {
        let (tx, reports) = mpsc::channel(256);
        Self {
            services: Vec::new(),
            failed: BTreeMap::new(),
            checkers: HashMap::new(),
            quorum: BTreeMap::new(),
            masters: BTreeSet::new(),
            tx,
            reports,
        }
    }

    /// Takes the virtual servers of a new config: checkers whose definition is unchanged keep
    /// running (and their servers' health), the others start anew. Must run inside a runtime.
    pub fn configure(&mut self, services: Vec<PlannedService>) {
        let mut wanted = HashMap::new();
        for service in &services {
            for server in &service.config.real_servers {
                let Some(check) = &server.check else { continue };
                let key = ServerKey {
                    service: service.config.name.clone(),
                    address: server.address,
                    port: server.port,
                };
                let fingerprint = format!("{check:?} {:?}", service.config.delay_loop);
                wanted.insert(key, (fingerprint, check.clone(), service.config.delay_loop));
            }
        }
        self.checkers.retain(|key, (fingerprint, _)| {
            wanted
                .get(key)
                .is_some_and(|(wanted, _, _)| wanted == fingerprint)
        });
        self.failed.retain(|key, _| self.checkers.contains_key(key));
        for (key, (fingerprint, check, delay_loop)) in wanted {
            if self.checkers.contains_key(&key) {
                continue;
            }
            let checker = Checker::spawn(key.clone(), check, delay_loop, self.tx.clone());
            self.checkers.insert(key, (fingerprint, checker));
        }
        self.services = services;
        let quorum = (self.services.iter())
            .map(|service| {
                let name = service.config.name.clone();
                let held = self.quorum.get(&name).copied().unwrap_or_else(|| {
                    self.live_weight(service) >= u64::from(service.config.quorum)
                });
                (name, held)
            })
            .collect();
        self.quorum = quorum;
    }

    /// The next health change of a real server.
    pub async fn next_report(&mut self) -> Option<CheckReport> {
        self.reports.recv().await
    }

    /// Records a health change; the quorum changes it causes, for their hooks.
    pub fn record(&mut self, report: CheckReport) -> Vec<QuorumChange> {
        if !self.checkers.contains_key(&report.server) {
            // From a checker a reload stopped.
            return Vec::new();
        }
        if report.healthy {
            tracing::info!(server = %report.server, "real server {}: healthy", report.server);
            self.failed.remove(&report.server);
        } else {
            tracing::warn!(server = %report.server, reason = %report.reason, "real server {}: failed: {}", report.server, report.reason);
            self.failed.insert(report.server.clone(), report.reason);
        }
        let mut changes = Vec::new();
        for service in &self.services {
            if service.config.name != report.server.service {
                continue;
            }
            let config = &service.config;
            let live = self.live_weight(service);
            let held = self.quorum.get(&config.name).copied().unwrap_or(true);
            let up_at = u64::from(config.quorum) + u64::from(config.hysteresis);
            let down_below = u64::from(config.quorum).saturating_sub(u64::from(config.hysteresis));
            let now = if held {
                live >= down_below
            } else {
                live >= up_at
            };
            if now != held {
                tracing::warn!(service = %config.name, live_weight = live, quorum = config.quorum, "virtual server {}: quorum {}", config.name, if now { "gained" } else { "lost" });
                changes.push(QuorumChange {
                    service: config.name.clone(),
                    up: now,
                    command: if now {
                        config.quorum_up.clone()
                    } else {
                        config.quorum_down.clone()
                    },
                });
            }
        }
        for change in &changes {
            self.quorum.insert(change.service.clone(), change.up);
        }
        changes
    }

    /// Whether this node is master of `instance`; `true` if that changed.
    pub fn set_master(&mut self, instance: &str, master: bool) -> bool {
        if master {
            self.masters.insert(instance.to_owned())
        } else {
            self.masters.remove(instance)
        }
    }

    /// Whether any virtual server is programmed now.
    pub fn is_programmed(&self) -> bool {
        self.services
            .iter()
            .any(|s| self.masters.contains(&s.config.instance))
    }

    /// Whether the config has any virtual server.
    pub fn has_services(&self) -> bool {
        !self.services.is_empty()
    }

    /// The health of every checked real server: `None` when healthy, else the reason.
    pub fn health(&self) -> impl Iterator<Item = (&ServerKey, Option<&str>)> {
        let mut keys: Vec<&ServerKey> = self.checkers.keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|key| (key, self.failed.get(key).map(String::as_str)))
    }

    /// What the tables must hold now: the virtual servers of the instances this node is master
    /// of, each with its pool.
    pub fn programmed(&self) -> Vec<LbService> {
        (self.services.iter())
            .filter(|service| self.masters.contains(&service.config.instance))
            .map(|service| self.service(service))
            .collect()
    }

    fn is_healthy(&self, service: &str, address: IpAddr, port: Option<u16>) -> bool {
        !self.failed.contains_key(&ServerKey {
            service: service.to_owned(),
            address,
            port,
        })
    }

    /// The total weight of the healthy real servers of `service`.
    fn live_weight(&self, service: &PlannedService) -> u64 {
        (service.config.real_servers.iter())
            .filter(|s| self.is_healthy(&service.config.name, s.address, s.port))
            .map(|s| u64::from(s.weight))
            .sum()
    }

    fn service(&self, planned: &PlannedService) -> LbService {
        let config = &planned.config;
        let dr = config.lb_kind == LbKind::Dr;
        let single_port = match &config.ports {
            VirtualPorts::Single(port) if !dr => Some(*port),
            _ => None,
        };
        let real_servers = &config.real_servers;
        let sorry_mark = u32::try_from(real_servers.len() + 1).unwrap_or(u32::MAX);
        let held = self.quorum.get(&config.name).copied().unwrap_or(true);
        let pool: Vec<Target> = match (&config.sorry_server, held) {
            (Some(sorry), false) => vec![Target {
                address: sorry.address,
                port: if dr { None } else { sorry.port.or(single_port) },
                weight: 1,
                mark: sorry_mark,
            }],
            _ => (real_servers.iter().zip(1u32..))
                .filter(|(s, _)| s.weight > 0 && self.is_healthy(&config.name, s.address, s.port))
                .map(|(s, mark)| Target {
                    address: s.address,
                    port: if dr { None } else { s.port.or(single_port) },
                    weight: s.weight,
                    mark,
                })
                .collect(),
        };
        let forwarding = if dr {
            let mut targets: Vec<(u32, IpAddr)> = (real_servers.iter().zip(1u32..))
                .map(|(s, mark)| (mark, s.address))
                .collect();
            if let Some(sorry) = &config.sorry_server {
                targets.push((sorry_mark, sorry.address));
            }
            Forwarding::Dr {
                device: planned.device.clone(),
                flow_timeout: config.flow_timeout,
                targets,
            }
        } else {
            Forwarding::Nat
        };
        LbService {
            id: planned.id,
            name: config.name.clone(),
            address: config.address,
            protocol: config.protocol,
            ports: config.ports.ports().to_vec(),
            algo: config.lb_algo,
            forwarding,
            pool,
        }
    }
}

/// Runs a quorum hook in the background (no shell; `HAV_VIRTUAL_SERVER` and `HAV_QUORUM`
/// set), killed with its process group after [`QUORUM_HOOK_TIMEOUT`].
pub fn run_quorum_hook(change: QuorumChange) {
    let Some(command) = change.command else {
        return;
    };
    tokio::spawn(async move {
        let mut program = tokio::process::Command::new(&command.program);
        program
            .args(&command.args)
            .env("HAV_VIRTUAL_SERVER", &change.service)
            .env("HAV_QUORUM", if change.up { "up" } else { "down" });
        let outcome = crate::track::exec::run(program, QUORUM_HOOK_TIMEOUT).await;
        if !outcome.succeeded() {
            tracing::warn!(service = %change.service, program = %command.program.display(), %outcome, "quorum hook failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hav_proto::config::parse_node_config;

    fn services(extra: &str) -> Vec<PlannedService> {
        let text = format!(
            "[node]\nname = \"n\"\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 1\nvips = [\"198.51.100.10/24\"]\n{extra}"
        );
        let config = parse_node_config(&text, "test").unwrap_or_else(|e| panic!("{e}"));
        (config.virtual_servers.into_iter().enumerate())
            .map(|(id, config)| PlannedService {
                id,
                config,
                device: "eth0".into(),
            })
            .collect()
    }

    // Loopback real servers on a port nothing serves: the checkers the test starts only ever
    // reach this host's loopback (and are refused); the test feeds the reports itself.
    const WEB: &str = r#"
[[virtual_server]]
name = "web"
address = "198.51.100.10"
port = 80
lb_algo = "wrr"
quorum = 3
hysteresis = 1
quorum_down = ["/bin/true"]
sorry_server = "127.0.0.99:8080"
[[virtual_server.real_server]]
address = "127.0.0.21"
port = 9
weight = 2
[virtual_server.real_server.check]
kind = "tcp"
delay_before_retry = "60s"
[[virtual_server.real_server]]
address = "127.0.0.22"
port = 9
weight = 2
[virtual_server.real_server.check]
kind = "tcp"
delay_before_retry = "60s"
"#;

    fn report(address: &str, healthy: bool) -> CheckReport {
        CheckReport {
            server: ServerKey {
                service: "web".into(),
                address: address.parse().expect("address"),
                port: Some(9),
            },
            healthy,
            reason: if healthy {
                String::new()
            } else {
                "refused".into()
            },
        }
    }

    fn pool(balancer: &Balancer) -> Vec<(String, Option<u16>)> {
        balancer.programmed()[0]
            .pool
            .iter()
            .map(|t| (t.address.to_string(), t.port))
            .collect()
    }

    #[tokio::test]
    async fn only_a_master_programs_and_failures_leave_the_pool_until_quorum_calls_the_sorry_server()
     {
        let mut balancer = Balancer::new();
        balancer.configure(services(WEB));
        assert!(balancer.programmed().is_empty(), "not master yet");
        assert!(balancer.set_master("VI_1", true));
        assert_eq!(
            pool(&balancer),
            [
                ("127.0.0.21".into(), Some(9)),
                ("127.0.0.22".into(), Some(9))
            ]
        );
        // Live weight 2 of quorum 3 with hysteresis 1: still held (lost below 2).
        assert!(balancer.record(report("127.0.0.21", false)).is_empty());
        assert_eq!(pool(&balancer), [("127.0.0.22".into(), Some(9))]);
        let lost = balancer.record(report("127.0.0.22", false));
        assert_eq!(lost.len(), 1);
        assert!(!lost[0].up && lost[0].command.is_some());
        assert_eq!(pool(&balancer), [("127.0.0.99".into(), Some(8080))]);
        // Weight 2 is not enough to regain it (needs 4).
        assert!(balancer.record(report("127.0.0.21", true)).is_empty());
        assert_eq!(pool(&balancer), [("127.0.0.99".into(), Some(8080))]);
        // A reload with the same checks keeps them and the health they found.
        balancer.configure(services(WEB));
        assert_eq!(pool(&balancer), [("127.0.0.99".into(), Some(8080))]);
        let gained = balancer.record(report("127.0.0.22", true));
        assert!(gained[0].up && gained[0].command.is_none());
        assert_eq!(pool(&balancer).len(), 2);
        assert!(balancer.set_master("VI_1", false));
        assert!(balancer.programmed().is_empty());
    }
}
