//! The load balancer's rules: keepalived's `virtual_server` on nftables, in the manner of
//! Zevenet's nftlb (a dispatch verdict map on destination address, protocol and port; one chain
//! per virtual server whose scheduler is `numgen` or `jhash` into a map of real servers).
//!
//! - **NAT** lives in the section [`SECTION`] of `inet hav`: a `nat` chain on prerouting at
//!   `dstnat` priority jumps by `daddr . l4proto . dport` to the virtual server's chain, which
//!   `dnat`s to the scheduled real server. Only a connection's first packet passes nat chains;
//!   conntrack carries the rest, so rewriting the table (when a real server fails or heals) never
//!   moves an established connection.
//! - **DR** cannot be written in an `inet` table (nft refuses `dup` and `fwd` there), so it has a
//!   table of its own, `netdev hav` ([`DrTable`]): an ingress chain on the VIP's interface sends
//!   each packet unchanged to the real server's MAC address with `fwd ... to <real server>` (the
//!   neighbour layer resolves and rewrites the MAC; no copy, no conntrack). The balancer never
//!   sees the replies, so conntrack cannot tell established flows; the table keeps its own flow
//!   map (`saddr . sport . dport → mark`, refreshed by every packet, forgotten after
//!   `flow_timeout` idle) and only a flow without an entry is scheduled, in a small `pick` chain.
//!   Health changes rewrite only the `pick` chains (`flush chain` + `add rule`, one transaction),
//!   so the flow maps and with them established flows survive; a change of the skeleton (the
//!   config) rewrites the table whole.
//!
//! Schedulers: `rr` is `numgen inc mod N`; `wrr` is `numgen inc mod W` into weight-sized ranges;
//! `sh` is `jhash` of the source address into weight-sized ranges with a fixed seed, so both
//! nodes of a pair (and every rewrite) send a source to the same real server while the pool is
//! the same; `fo` is the healthy server of highest weight. An empty pool drops new connections.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use hav_proto::config::{LbAlgo, LbProtocol};

use super::ruleset::{BaseChain, Chain, ChainType, Hook, Section};
use super::{Nft, NftError, TableName};

/// The key of the NAT section in `inet hav`.
pub const SECTION: &str = "lb";
/// The prerouting chain that dispatches to the NAT virtual servers.
pub const NAT_DISPATCH: &str = "lb_dnat";
/// The seed of `sh`'s hash: the same on every node, so a source keeps its server across a
/// failover.
pub const HASH_SEED: u32 = 0x6861_7600;

/// One virtual server as it is programmed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbService {
    /// Its position in the config: names its chains (`lb_vs<id>`).
    pub id: usize,
    pub name: String,
    pub address: IpAddr,
    pub protocol: LbProtocol,
    /// Sorted.
    pub ports: Vec<u16>,
    pub algo: LbAlgo,
    pub forwarding: Forwarding,
    /// The targets of new connections now (each of weight above zero); empty: none.
    pub pool: Vec<Target>,
}

/// How packets reach the real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarding {
    Nat,
    Dr {
        /// Where the VIP's traffic arrives and the real servers are (one arm).
        device: String,
        flow_timeout: Duration,
        /// Every configured target by mark (real servers in config order from 1, then the
        /// sorry server): flows keep their server for as long as the config names it.
        targets: Vec<(u32, IpAddr)>,
    },
}

/// A real server (or the sorry server) that takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub address: IpAddr,
    /// `None`: the client's destination port.
    pub port: Option<u16>,
    /// Above zero.
    pub weight: u32,
    /// DR: the flow mark of this target.
    pub mark: u32,
}

fn ip_keyword(address: IpAddr) -> &'static str {
    if address.is_ipv6() { "ip6" } else { "ip" }
}

fn address_text(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The chain of virtual server `id`.
fn service_chain(id: usize) -> String {
    format!("lb_vs{id}")
}

/// The expression that picks among `pool` by `algo`, mapping each to `value`; `None` for an
/// empty pool.
fn pick(
    algo: LbAlgo,
    family: &str,
    pool: &[Target],
    value: impl Fn(&Target) -> String,
) -> Option<String> {
    let first = pool.first()?;
    if algo == LbAlgo::Fo {
        let best = pool.iter().fold(
            first,
            |best, t| if t.weight > best.weight { t } else { best },
        );
        return Some(value(best));
    }
    if pool.len() == 1 {
        return Some(value(first));
    }
    let (selector, weighted) = match algo {
        LbAlgo::Rr => ("numgen inc".to_owned(), false),
        LbAlgo::Wrr => ("numgen inc".to_owned(), true),
        LbAlgo::Sh => (format!("jhash {family} saddr"), true),
        LbAlgo::Fo => unreachable!("handled above"),
    };
    let mut entries = Vec::with_capacity(pool.len());
    let mut next = 0u64;
    for target in pool {
        let size = if weighted {
            u64::from(target.weight)
        } else {
            1
        };
        let last = next + size - 1;
        let key = if size == 1 {
            next.to_string()
        } else {
            format!("{next}-{last}")
        };
        entries.push(format!("{key} : {}", value(target)));
        next = last + 1;
    }
    let seed = if algo == LbAlgo::Sh {
        format!(" seed {HASH_SEED:#x}")
    } else {
        String::new()
    };
    Some(format!(
        "{selector} mod {next}{seed} map {{ {} }}",
        entries.join(", ")
    ))
}

/// The dispatch element of `service`: `198.51.100.10 . tcp . 80 : jump lb_vs0` per port.
fn dispatch_elements(service: &LbService) -> impl Iterator<Item = String> + '_ {
    service.ports.iter().map(move |port| {
        format!(
            "{} . {} . {port} : jump {}",
            service.address,
            service.protocol.as_str(),
            service_chain(service.id)
        )
    })
}

/// The `inet hav` section of the NAT virtual servers among `services` (empty when none).
pub fn nat_section(services: &[LbService]) -> Section {
    let nat: Vec<&LbService> = (services.iter())
        .filter(|s| s.forwarding == Forwarding::Nat)
        .collect();
    if nat.is_empty() {
        return Section::default();
    }
    let mut rules = Vec::new();
    for family in ["ip", "ip6"] {
        let elements: Vec<String> = (nat.iter())
            .filter(|s| ip_keyword(s.address) == family)
            .flat_map(|s| dispatch_elements(s))
            .collect();
        if !elements.is_empty() {
            rules.push(format!(
                "{family} daddr . meta l4proto . th dport vmap {{ {} }}",
                elements.join(", ")
            ));
        }
    }
    let mut chains = vec![Chain {
        name: NAT_DISPATCH.into(),
        base: Some(BaseChain {
            kind: ChainType::Nat,
            hook: Hook::Prerouting,
            priority: -100,
            drop_policy: false,
        }),
        rules,
    }];
    for service in nat {
        let family = ip_keyword(service.address);
        let rule = match pick(service.algo, family, &service.pool, |target| {
            match target.port {
                Some(port) => format!("{} . {port}", address_text(target.address)),
                None => address_text(target.address),
            }
        }) {
            // A port in the map needs the protocol known first (nft's rule).
            Some(choice) if service.pool.iter().any(|t| t.port.is_some()) => format!(
                "meta l4proto {} counter dnat {family} to {choice}",
                service.protocol.as_str()
            ),
            Some(choice) => format!("counter dnat {family} to {choice}"),
            None => "counter drop".to_owned(),
        };
        chains.push(Chain {
            name: service_chain(service.id),
            base: None,
            rules: vec![rule],
        });
    }
    Section {
        sets: Vec::new(),
        chains,
    }
}

/// What the `netdev hav` table holds: the skeleton (flow maps, ingress dispatch, per-service
/// chains) and the `pick` chains, which alone change with health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrRuleset {
    /// Everything but the rules of the pick chains (which it declares, empty).
    pub skeleton: String,
    /// Pick chain name → its rules.
    pub picks: BTreeMap<String, Vec<String>>,
}

impl DrRuleset {
    /// Whether no DR service is programmed (then the table is absent).
    pub fn is_empty(&self) -> bool {
        self.skeleton.is_empty()
    }
}

/// A DR service with its device, flow timeout and targets by mark.
type DrService<'a> = (&'a LbService, &'a str, &'a Duration, &'a Vec<(u32, IpAddr)>);

/// The netdev ruleset of the DR virtual servers among `services`, inside `table` (`netdev hav`).
pub fn dr_ruleset(services: &[LbService]) -> DrRuleset {
    let dr: Vec<DrService<'_>> = (services.iter())
        .filter_map(|s| match &s.forwarding {
            Forwarding::Dr {
                device,
                flow_timeout,
                targets,
            } => Some((s, device.as_str(), flow_timeout, targets)),
            Forwarding::Nat => None,
        })
        .collect();
    if dr.is_empty() {
        return DrRuleset::default();
    }
    let mut out = String::new();
    let mut picks = BTreeMap::new();
    for (service, _, timeout, _) in &dr {
        let kind = if service.address.is_ipv6() {
            "ipv6_addr"
        } else {
            "ipv4_addr"
        };
        let _ = writeln!(out, "\tmap lb_vs{}_flows {{", service.id);
        let _ = writeln!(out, "\t\ttype {kind} . inet_service . inet_service : mark");
        let _ = writeln!(out, "\t\tflags dynamic,timeout");
        let _ = writeln!(out, "\t\ttimeout {}s", timeout.as_secs().max(1));
        let _ = writeln!(out, "\t}}");
    }
    let mut by_device: BTreeMap<&str, Vec<&LbService>> = BTreeMap::new();
    for (service, device, _, _) in &dr {
        by_device.entry(device).or_default().push(service);
    }
    for (index, (device, services)) in by_device.iter().enumerate() {
        let _ = writeln!(out, "\tchain lb_ingress{index} {{");
        let _ = writeln!(
            out,
            "\t\ttype filter hook ingress device {device:?} priority 0; policy accept;"
        );
        for family in ["ip", "ip6"] {
            let elements: Vec<String> = (services.iter())
                .filter(|s| ip_keyword(s.address) == family)
                .flat_map(|s| dispatch_elements(s))
                .collect();
            if !elements.is_empty() {
                let _ = writeln!(
                    out,
                    "\t\t{family} daddr . meta l4proto . th dport vmap {{ {} }}",
                    elements.join(", ")
                );
            }
        }
        let _ = writeln!(out, "\t}}");
    }
    for (service, device, _, targets) in &dr {
        let family = ip_keyword(service.address);
        let chain = service_chain(service.id);
        let flows = format!("@{chain}_flows");
        let key = format!("{family} saddr . th sport . th dport");
        let pick_chain = format!("{chain}_pick");
        let _ = writeln!(out, "\tchain {chain} {{");
        let _ = writeln!(out, "\t\tmeta mark set 0");
        let _ = writeln!(out, "\t\tmeta mark set {key} map {flows}");
        let _ = writeln!(out, "\t\tmeta mark 0 jump {pick_chain}");
        let _ = writeln!(out, "\t\tupdate {flows} {{ {key} : meta mark }}");
        let servers: Vec<String> = (targets.iter())
            .map(|(mark, address)| format!("{mark} : {address}"))
            .collect();
        let _ = writeln!(
            out,
            "\t\tfwd {family} to meta mark map {{ {} }} device {device:?}",
            servers.join(", ")
        );
        let _ = writeln!(out, "\t\tcounter drop");
        let _ = writeln!(out, "\t}}");
        let _ = writeln!(out, "\tchain {pick_chain} {{");
        let _ = writeln!(out, "\t}}");
        let rule = match pick(service.algo, family, &service.pool, |t| t.mark.to_string()) {
            Some(choice) => format!("meta mark set {choice}"),
            None => "counter drop".to_owned(),
        };
        picks.insert(pick_chain, vec![rule]);
    }
    DrRuleset {
        skeleton: out,
        picks,
    }
}

/// `netdev hav`: the DR virtual servers' table. What it holds is always what the kernel has: a
/// change is recorded only after nft applied it.
#[derive(Debug)]
pub struct DrTable {
    name: TableName,
    nft: Nft,
    installed: DrRuleset,
}

impl DrTable {
    pub fn new(name: TableName, nft: Nft) -> Self {
        Self {
            name,
            nft,
            installed: DrRuleset::default(),
        }
    }

    /// `netdev hav`.
    pub fn display_name(&self) -> String {
        format!("netdev {}", self.name.as_str())
    }

    /// The transaction that takes the table from what is installed to `next`.
    pub fn transaction(&self, next: &DrRuleset) -> Option<String> {
        if *next == self.installed {
            return None;
        }
        let table = self.display_name();
        let mut out = String::new();
        if next.is_empty() || next.skeleton != self.installed.skeleton {
            let _ = writeln!(out, "table {table} {{}}");
            let _ = writeln!(out, "delete table {table}");
            if next.is_empty() {
                return Some(out);
            }
            let _ = writeln!(out, "table {table} {{");
            out.push_str(&next.skeleton);
            let _ = writeln!(out, "}}");
            for (chain, rules) in &next.picks {
                for rule in rules {
                    let _ = writeln!(out, "add rule {table} {chain} {rule}");
                }
            }
            return Some(out);
        }
        for (chain, rules) in &next.picks {
            if self.installed.picks.get(chain) == Some(rules) {
                continue;
            }
            let _ = writeln!(out, "flush chain {table} {chain}");
            for rule in rules {
                let _ = writeln!(out, "add rule {table} {chain} {rule}");
            }
        }
        Some(out)
    }

    /// Makes the table hold `next` in one transaction; nothing runs if it already does.
    pub async fn apply(&mut self, next: DrRuleset, op: &str) -> Result<(), NftError> {
        let Some(script) = self.transaction(&next) else {
            return Ok(());
        };
        self.nft.apply(&self.name, op, &script).await?;
        self.installed = next;
        Ok(())
    }

    /// Deletes the table whatever it holds (also what a crashed run left). `Ok(true)` when it
    /// was there.
    pub async fn remove(&mut self) -> Result<bool, NftError> {
        if self.nft.locate().is_err() {
            self.installed = DrRuleset::default();
            return Ok(false);
        }
        let existed = self.nft.netdev_table_exists(&self.name).await?;
        let table = self.display_name();
        let script = format!("table {table} {{}}\ndelete table {table}\n");
        self.nft
            .apply(&self.name, "delete netdev table", &script)
            .await?;
        self.installed = DrRuleset::default();
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::nft::ruleset::transaction;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn target(address: &str, port: Option<u16>, weight: u32, mark: u32) -> Target {
        Target {
            address: ip(address),
            port,
            weight,
            mark,
        }
    }

    fn nat(id: usize, algo: LbAlgo, pool: Vec<Target>) -> LbService {
        LbService {
            id,
            name: format!("vs{id}"),
            address: ip("198.51.100.10"),
            protocol: LbProtocol::Tcp,
            ports: vec![80],
            algo,
            forwarding: Forwarding::Nat,
            pool,
        }
    }

    fn rule_of(section: &Section, chain: &str) -> String {
        (section.chains.iter())
            .find(|c| c.name == chain)
            .map(|c| c.rules.join("\n"))
            .unwrap_or_default()
    }

    #[test]
    fn round_robin_maps_each_server_once_and_weighted_ones_by_weight() {
        let pool = vec![
            target("198.51.100.21", Some(8080), 3, 1),
            target("198.51.100.22", Some(8080), 1, 2),
        ];
        let rr = nat_section(&[nat(0, LbAlgo::Rr, pool.clone())]);
        assert_eq!(
            rule_of(&rr, "lb_vs0"),
            "meta l4proto tcp counter dnat ip to numgen inc mod 2 map { 0 : 198.51.100.21 . 8080, 1 : 198.51.100.22 . 8080 }"
        );
        let wrr = nat_section(&[nat(0, LbAlgo::Wrr, pool.clone())]);
        assert_eq!(
            rule_of(&wrr, "lb_vs0"),
            "meta l4proto tcp counter dnat ip to numgen inc mod 4 map { 0-2 : 198.51.100.21 . 8080, 3 : 198.51.100.22 . 8080 }"
        );
        let sh = nat_section(&[nat(0, LbAlgo::Sh, pool.clone())]);
        assert_eq!(
            rule_of(&sh, "lb_vs0"),
            "meta l4proto tcp counter dnat ip to jhash ip saddr mod 4 seed 0x68617600 map { 0-2 : 198.51.100.21 . 8080, 3 : 198.51.100.22 . 8080 }"
        );
        let fo = nat_section(&[nat(0, LbAlgo::Fo, pool)]);
        assert_eq!(
            rule_of(&fo, "lb_vs0"),
            "meta l4proto tcp counter dnat ip to 198.51.100.21 . 8080"
        );
    }

    #[test]
    fn the_nat_section_dispatches_by_address_protocol_and_port() {
        let mut group = nat(1, LbAlgo::Rr, vec![target("2001:db8::21", None, 1, 1)]);
        group.address = ip("2001:db8::10");
        group.protocol = LbProtocol::Udp;
        group.ports = vec![53, 5353];
        let empty = nat(0, LbAlgo::Rr, vec![]);
        let text = transaction(&TableName::default(), [&nat_section(&[empty, group])]);
        assert_eq!(
            text,
            "table inet hav {}\n\
             delete table inet hav\n\
             table inet hav {\n\
             \tchain lb_dnat {\n\
             \t\ttype nat hook prerouting priority -100; policy accept;\n\
             \t\tip daddr . meta l4proto . th dport vmap { 198.51.100.10 . tcp . 80 : jump lb_vs0 }\n\
             \t\tip6 daddr . meta l4proto . th dport vmap { 2001:db8::10 . udp . 53 : jump lb_vs1, 2001:db8::10 . udp . 5353 : jump lb_vs1 }\n\
             \t}\n\
             \tchain lb_vs0 {\n\
             \t\tcounter drop\n\
             \t}\n\
             \tchain lb_vs1 {\n\
             \t\tcounter dnat ip6 to [2001:db8::21]\n\
             \t}\n\
             }\n"
        );
    }

    fn dr(pool: Vec<Target>) -> LbService {
        LbService {
            forwarding: Forwarding::Dr {
                device: "eth0".into(),
                flow_timeout: Duration::from_secs(300),
                targets: vec![(1, ip("198.51.100.21")), (2, ip("198.51.100.22"))],
            },
            ..nat(0, LbAlgo::Rr, pool)
        }
    }

    #[test]
    fn direct_routing_remembers_flows_and_forwards_to_the_servers_mac() {
        let pool = vec![
            target("198.51.100.21", None, 1, 1),
            target("198.51.100.22", None, 1, 2),
        ];
        let ruleset = dr_ruleset(&[dr(pool)]);
        let table = DrTable::new(TableName::default(), Nft::with_program("/nonexistent/nft"));
        assert_eq!(
            table.transaction(&ruleset).expect("a change"),
            "table netdev hav {}\n\
             delete table netdev hav\n\
             table netdev hav {\n\
             \tmap lb_vs0_flows {\n\
             \t\ttype ipv4_addr . inet_service . inet_service : mark\n\
             \t\tflags dynamic,timeout\n\
             \t\ttimeout 300s\n\
             \t}\n\
             \tchain lb_ingress0 {\n\
             \t\ttype filter hook ingress device \"eth0\" priority 0; policy accept;\n\
             \t\tip daddr . meta l4proto . th dport vmap { 198.51.100.10 . tcp . 80 : jump lb_vs0 }\n\
             \t}\n\
             \tchain lb_vs0 {\n\
             \t\tmeta mark set 0\n\
             \t\tmeta mark set ip saddr . th sport . th dport map @lb_vs0_flows\n\
             \t\tmeta mark 0 jump lb_vs0_pick\n\
             \t\tupdate @lb_vs0_flows { ip saddr . th sport . th dport : meta mark }\n\
             \t\tfwd ip to meta mark map { 1 : 198.51.100.21, 2 : 198.51.100.22 } device \"eth0\"\n\
             \t\tcounter drop\n\
             \t}\n\
             \tchain lb_vs0_pick {\n\
             \t}\n\
             }\n\
             add rule netdev hav lb_vs0_pick meta mark set numgen inc mod 2 map { 0 : 1, 1 : 2 }\n"
        );
    }

    #[test]
    fn a_health_change_rewrites_only_the_pick_chain_and_keeps_the_flows() {
        let both = vec![
            target("198.51.100.21", None, 1, 1),
            target("198.51.100.22", None, 1, 2),
        ];
        let mut table = DrTable::new(TableName::default(), Nft::with_program("/nonexistent/nft"));
        table.installed = dr_ruleset(&[dr(both.clone())]);
        let one = dr_ruleset(&[dr(both[1..].to_vec())]);
        assert_eq!(
            table.transaction(&one).expect("a change"),
            "flush chain netdev hav lb_vs0_pick\n\
             add rule netdev hav lb_vs0_pick meta mark set 2\n"
        );
        let none = dr_ruleset(&[dr(vec![])]);
        assert_eq!(
            table.transaction(&none).expect("a change"),
            "flush chain netdev hav lb_vs0_pick\n\
             add rule netdev hav lb_vs0_pick counter drop\n"
        );
        assert_eq!(table.transaction(&dr_ruleset(&[dr(both)])), None);
        assert_eq!(
            table.transaction(&DrRuleset::default()).expect("removal"),
            "table netdev hav {}\ndelete table netdev hav\n"
        );
    }
}
