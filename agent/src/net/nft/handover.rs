//! The planned hand-over's rules, in tables of their own: `ip <name>` and `ip6 <name>` (second
//! chance: flows this node does not own go to the previous master) and `arp <name>` (silence: a
//! previous master keeps its VIPs without claiming them on the link).
//!
//! - **Second chance** needs conntrack (to tell the flows this node serves) and `dup` (to send a
//!   packet unchanged to another node's MAC); nft offers `dup` in `ip` and `ip6` tables, not in
//!   `inet`. Every packet to a forwarded VIP that this node does not hold (`fib daddr type !=
//!   local`: a backup, or a node that let go, reached by a client whose neighbour entry still
//!   names its MAC) goes on, new connections included. Where the VIP is held, a SYN to it
//!   (unless the VIP is parked: a parked node serves the flows it has and no new one), and any
//!   packet of a flow conntrack has seen this node answer
//!   (`established`), stay here; every other TCP packet to a forwarded VIP (a flow begun
//!   elsewhere, which this node never answers, or a packet conntrack finds invalid) is
//!   duplicated to the other node's address on the VIP's device and dropped here. A flow passed
//!   on is never answered here, so it never becomes established here: the rule needs no state of
//!   its own, survives rewrites, and knows flows older than the agent.
//! - **Tracked from the first packet.** While a router drains, the VIPs' flows (and only
//!   theirs) are tracked in every role, so a node that starts passing packets on knows the
//!   flows it serves, however old.
//! - **Once at most.** A copy leaves with a TTL (hop limit) of 0 (set to 1, then lowered by
//!   `dup`), and a packet that arrives with 0 is never passed on: two nodes passing the same VIP
//!   toward each other bounce nothing between them.
//! - **Silence** drops, on output, every ARP packet with a silenced VIP as sender and every
//!   neighbour solicitation or advertisement from a silenced IPv6 VIP: the node keeps serving the
//!   connections it has on those addresses and never draws new traffic to itself.
//!
//! Every change rewrites the three tables in one `nft -f -` transaction; a table exists only
//! while it holds a rule.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::{Nft, NftError, TableName};

/// Priority of the second-chance chains: after conntrack (-200), before NAT and filtering.
const AFTER_CONNTRACK: i32 = -150;

/// Flows to `vips` this node does not own go to `to` on `device`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecondChance {
    pub vips: BTreeSet<IpAddr>,
    pub to: IpAddr,
    pub device: String,
}

/// Everything the hand-over tables hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandoverRules {
    pub forwards: BTreeSet<SecondChance>,
    pub silent: BTreeSet<IpAddr>,
    /// VIPs whose flows conntrack follows from their first packet, whatever this node's role:
    /// those of every router that drains.
    pub tracked: BTreeSet<IpAddr>,
}

impl HandoverRules {
    pub fn is_empty(&self) -> bool {
        self.forwards.is_empty() && self.silent.is_empty() && self.tracked.is_empty()
    }
}

/// The three hand-over tables of one network namespace.
#[derive(Debug)]
pub struct HandoverTables {
    name: TableName,
    nft: Nft,
    installed: HandoverRules,
}

impl HandoverTables {
    pub fn new(name: TableName, nft: Nft) -> Self {
        Self {
            name,
            nft,
            installed: HandoverRules::default(),
        }
    }

    /// What the tables hold now.
    pub fn installed(&self) -> &HandoverRules {
        &self.installed
    }

    /// The same tables, driven by the same `nft`, as yet unchanged by this value.
    pub fn fresh(&self) -> Self {
        Self::new(self.name.clone(), self.nft.clone())
    }

    /// Makes the tables hold `next` in one transaction; nothing runs if they already do.
    pub async fn apply(&mut self, next: HandoverRules, op: &str) -> Result<(), NftError> {
        if next == self.installed {
            return Ok(());
        }
        let script = transaction(&self.name, &next);
        self.nft.apply(&self.name, op, &script).await?;
        tracing::debug!(
            "hand-over rules installed ({op}): {} silent, {} forwarded, {} tracked",
            next.silent.len(),
            next.forwards.len(),
            next.tracked.len()
        );
        self.installed = next;
        Ok(())
    }

    /// Deletes the tables whatever they hold (also what a crashed run left). `Ok(true)` when one
    /// held a rule of this run, or `nft` found one to delete.
    pub async fn remove(&mut self) -> Result<bool, NftError> {
        if self.nft.locate().is_err() {
            self.installed = HandoverRules::default();
            return Ok(false);
        }
        let mut existed = false;
        for family in ["ip", "ip6", "arp"] {
            existed |= self.nft.family_table_exists(family, &self.name).await?;
        }
        self.nft
            .apply(
                &self.name,
                "delete hand-over tables",
                &transaction(&self.name, &HandoverRules::default()),
            )
            .await?;
        self.installed = HandoverRules::default();
        Ok(existed)
    }
}

/// Keeps the hand-over tables in line with the latest rules asked for, from a task of its own, so
/// that whoever asks never waits for `nft` (a loaded host can take hundreds of milliseconds to
/// run it, and the event loop must keep sending adverts meanwhile).
///
/// Guarantees: transactions run one at a time in the order asked; rules asked while one runs
/// supersede any asked before them that has not started (each transaction replaces the tables
/// whole, so only the latest matters); a failed transaction is retried every
/// [`HandoverApplier::RETRY`] until it succeeds or newer rules are asked for;
/// [`HandoverApplier::close`] returns once the last rules asked were tried and nothing runs.
pub struct HandoverApplier {
    desired: Option<tokio::sync::watch::Sender<Desired>>,
    task: Option<tokio::task::JoinHandle<()>>,
    asked: HandoverRules,
}

#[derive(Debug, Clone, Default)]
struct Desired {
    rules: HandoverRules,
    op: String,
}

impl HandoverApplier {
    /// Between two tries of a failed transaction.
    pub const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

    /// Starts the applier of `tables` on the current runtime (nothing runs until rules are asked).
    pub fn spawn(tables: HandoverTables) -> Self {
        let (sender, receiver) = tokio::sync::watch::channel(Desired::default());
        Self {
            desired: Some(sender),
            task: Some(tokio::spawn(apply_latest(tables, receiver))),
            asked: HandoverRules::default(),
        }
    }

    /// The rules asked for last (installed, or about to be).
    pub fn asked(&self) -> &HandoverRules {
        &self.asked
    }

    /// Asks for `rules`; returns at once. Nothing is asked when they are the last asked.
    pub fn set(&mut self, rules: HandoverRules, op: &str) {
        if rules == self.asked {
            return;
        }
        self.asked = rules.clone();
        if let Some(desired) = &self.desired {
            let _ = desired.send(Desired {
                rules,
                op: op.to_owned(),
            });
        }
    }

    /// Stops the applier once it has tried the last rules asked; later requests are ignored.
    pub async fn close(&mut self) {
        self.desired = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HandoverApplier {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Applies each newest request; ends when the asking side is gone and nothing is left to try.
async fn apply_latest(
    mut tables: HandoverTables,
    mut desired: tokio::sync::watch::Receiver<Desired>,
) {
    // An unseen request wins over the channel's close: the last one asked is always tried.
    while desired.changed().await.is_ok() {
        loop {
            let Desired { rules, op } = desired.borrow_and_update().clone();
            let Err(error) = tables.apply(rules, &op).await else {
                break;
            };
            tracing::error!(%error, op, "hand-over rules not installed; trying again");
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(HandoverApplier::RETRY) => {}
            }
        }
    }
}

/// The transaction that replaces the three tables with `rules`.
pub fn transaction(name: &TableName, rules: &HandoverRules) -> String {
    let name = name.as_str();
    let mut out = String::new();
    for family in ["ip", "ip6", "arp"] {
        let _ = writeln!(out, "table {family} {name} {{}}");
        let _ = writeln!(out, "delete table {family} {name}");
    }
    for ipv6 in [false, true] {
        if let Some(table) = second_chance_table(rules, ipv6) {
            let family = if ipv6 { "ip6" } else { "ip" };
            let _ = writeln!(out, "table {family} {name} {{\n{table}}}");
        }
    }
    let silent4: Vec<IpAddr> = rules
        .silent
        .iter()
        .filter(|a| a.is_ipv4())
        .copied()
        .collect();
    if !silent4.is_empty() {
        let _ = writeln!(
            out,
            "table arp {name} {{\n\tchain silence {{\n\t\ttype filter hook output priority 0; policy accept;\n\t\tarp saddr ip {} drop\n\t}}\n}}",
            elements(&silent4)
        );
    }
    out
}

/// The body of the `ip` (or `ip6`) table, `None` when it would hold nothing.
fn second_chance_table(rules: &HandoverRules, ipv6: bool) -> Option<String> {
    let (family, icmp, ttl) = if ipv6 {
        (
            "ip6",
            "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert }",
            "ip6 hoplimit",
        )
    } else {
        ("ip", "", "ip ttl")
    };
    let forwards: Vec<&SecondChance> = (rules.forwards.iter())
        .filter(|f| f.to.is_ipv6() == ipv6 && f.vips.iter().any(|v| v.is_ipv6() == ipv6))
        .collect();
    let silent: Vec<IpAddr> = (rules.silent.iter())
        .filter(|a| a.is_ipv6() == ipv6)
        .copied()
        .collect();
    let tracked: Vec<IpAddr> = (rules.tracked.iter())
        .filter(|a| a.is_ipv6() == ipv6)
        .copied()
        .collect();
    if forwards.is_empty() && tracked.is_empty() && (silent.is_empty() || !ipv6) {
        return None;
    }
    let mut out = String::new();
    if !tracked.is_empty() {
        // Conntrack must know a flow from its first packet, or the first packet it sees of an
        // older one is `new` and would be passed on (to a node that resets it) the moment this
        // node starts passing packets on. The `ct` expression keeps it on in this namespace
        // while a router drains; everything but the VIPs' traffic stays untracked (a proxy's
        // upstream connections never fill the conntrack table).
        let tracked = elements(&tracked);
        let _ = writeln!(
            out,
            "\tchain track {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\t{family} daddr != {tracked} notrack\n\t\tct state new counter\n\t}}\n\tchain track_out {{\n\t\ttype filter hook output priority raw; policy accept;\n\t\t{family} saddr != {tracked} notrack\n\t}}"
        );
    }
    if !forwards.is_empty() {
        let _ = writeln!(
            out,
            "\tchain pre {{\n\t\ttype filter hook prerouting priority {AFTER_CONNTRACK}; policy accept;"
        );
        for forward in &forwards {
            let vips: Vec<IpAddr> = (forward.vips.iter())
                .filter(|v| v.is_ipv6() == ipv6)
                .copied()
                .collect();
            // A new connection is this node's only where it holds the VIP and has not parked it:
            // a parked VIP serves the flows it has and no other, so its count of connections
            // only falls.
            let serving: Vec<IpAddr> = (vips.iter())
                .filter(|v| !rules.silent.contains(v))
                .copied()
                .collect();
            let vips = elements(&vips);
            // A packet arriving with TTL 0 was passed on once and stays. A node that does not
            // hold a VIP serves nothing on it: every packet to it goes on (a client still sends
            // here after a brief takeover). Where it is held, so is a flow this node has
            // answered (conntrack saw its reply); every other TCP packet (begun elsewhere, a new
            // one to a parked VIP, or invalid here) goes on. A copy leaves with TTL 1, which
            // `dup` lowers to 0; `dup` never drops a copy and its TTL wraps below 0, so without
            // this two nodes passing a VIP toward each other bounce a stray packet for good.
            let (to, device) = (forward.to, &forward.device);
            let pass_on = format!("counter {ttl} set 1 dup to {to} device {device:?} drop");
            let _ = writeln!(
                out,
                "\t\t{family} daddr {vips} {ttl} 0 accept\n\t\t{family} daddr {vips} fib daddr type != local {pass_on}"
            );
            if !serving.is_empty() {
                let serving = elements(&serving);
                let _ = writeln!(
                    out,
                    "\t\t{family} daddr {serving} tcp flags & (syn | ack) == syn accept"
                );
            }
            let _ = writeln!(
                out,
                "\t\t{family} daddr {vips} ct state established,related accept\n\t\t{family} daddr {vips} meta l4proto tcp {pass_on}",
            );
        }
        let _ = writeln!(out, "\t}}");
    }
    if ipv6 && !silent.is_empty() {
        let _ = writeln!(
            out,
            "\tchain silence {{\n\t\ttype filter hook output priority 0; policy accept;\n\t\tip6 saddr {} {icmp} drop\n\t}}",
            elements(&silent)
        );
    }
    Some(out)
}

/// `{ a, b }` in sorted order.
fn elements(addresses: &[IpAddr]) -> String {
    let sorted: BTreeSet<&IpAddr> = addresses.iter().collect();
    let list: Vec<String> = sorted.iter().map(|a| a.to_string()).collect();
    format!("{{ {} }}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn silencing(address: &str) -> HandoverRules {
        HandoverRules {
            forwards: BTreeSet::new(),
            silent: [ip(address)].into(),
            tracked: BTreeSet::new(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_applier_retries_a_failure_and_applies_only_the_latest_rules_asked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (nft, log, gate) = crate::net::nft::testing::fake_nft(dir.path());
        std::fs::write(dir.path().join("fail"), "").expect("fail marker");
        let name = TableName::new("havtest").expect("name");
        let mut applier = HandoverApplier::spawn(HandoverTables::new(name, nft));
        applier.set(silencing("198.51.100.11"), "first");
        // Opening the FIFO for writing returns once the first run reads it: it is under way.
        let writer = tokio::task::spawn_blocking(move || std::fs::File::create(gate))
            .await
            .expect("joined")
            .expect("gate opened by the first run");
        // Asked back to back while it runs: the second is superseded before it starts.
        applier.set(silencing("198.51.100.22"), "second");
        applier.set(silencing("198.51.100.33"), "third");
        assert_eq!(applier.asked(), &silencing("198.51.100.33"));
        // The first run fails now.
        drop(writer);
        applier.close().await;
        let ran = std::fs::read_to_string(&log).expect("log");
        let transactions: Vec<&str> = ran
            .split("-- end")
            .filter(|t| !t.trim().is_empty())
            .collect();
        assert_eq!(transactions.len(), 2, "{ran}");
        assert!(transactions[0].contains("198.51.100.11"), "{ran}");
        assert!(transactions[1].contains("198.51.100.33"), "{ran}");
        assert!(!ran.contains("198.51.100.22"), "{ran}");
        // Closed: later requests run nothing.
        applier.set(silencing("198.51.100.44"), "late");
        assert!(
            !std::fs::read_to_string(&log)
                .expect("log")
                .contains("198.51.100.44")
        );
    }

    #[test]
    fn nothing_to_hold_deletes_the_three_tables() {
        let text = transaction(&TableName::default(), &HandoverRules::default());
        assert_eq!(
            text,
            "table ip hav {}\ndelete table ip hav\n\
             table ip6 hav {}\ndelete table ip6 hav\n\
             table arp hav {}\ndelete table arp hav\n"
        );
    }

    #[test]
    fn unowned_flows_go_to_the_previous_master_and_silenced_vips_claim_nothing() {
        let rules = HandoverRules {
            forwards: [SecondChance {
                vips: [ip("198.51.100.100")].into(),
                to: ip("198.51.100.1"),
                device: "eth0".into(),
            }]
            .into(),
            silent: [ip("198.51.100.101"), ip("2001:db8::100")].into(),
            tracked: [ip("198.51.100.100")].into(),
        };
        let text = transaction(&TableName::default(), &rules);
        assert!(text.contains(
            "ip daddr { 198.51.100.100 } meta l4proto tcp counter ip ttl set 1 dup to 198.51.100.1 device \"eth0\" drop"
        ), "{text}");
        assert!(text.contains(
            "ip daddr { 198.51.100.100 } fib daddr type != local counter ip ttl set 1 dup to 198.51.100.1 device \"eth0\" drop"
        ), "{text}");
        assert!(
            text.contains("ip daddr { 198.51.100.100 } ct state established,related accept"),
            "{text}"
        );
        assert!(
            text.contains("ip daddr { 198.51.100.100 } tcp flags & (syn | ack) == syn accept"),
            "{text}"
        );
        assert!(
            text.contains("ip daddr != { 198.51.100.100 } notrack")
                && text.contains("ip saddr != { 198.51.100.100 } notrack")
                && text.contains("ct state new counter"),
            "{text}"
        );
        assert!(
            text.contains("arp saddr ip { 198.51.100.101 } drop"),
            "{text}"
        );
        assert!(text.contains(
            "ip6 saddr { 2001:db8::100 } icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } drop"
        ), "{text}");
    }

    #[test]
    fn a_new_connection_to_a_parked_vip_goes_to_the_successor() {
        let rules = HandoverRules {
            forwards: [SecondChance {
                vips: [ip("198.51.100.100"), ip("198.51.100.101")].into(),
                to: ip("198.51.100.1"),
                device: "eth0".into(),
            }]
            .into(),
            silent: [ip("198.51.100.101")].into(),
            tracked: BTreeSet::new(),
        };
        let text = transaction(&TableName::default(), &rules);
        let syn: Vec<&str> = (text.lines())
            .filter(|line| line.contains("== syn accept"))
            .collect();
        assert_eq!(
            syn,
            ["\t\tip daddr { 198.51.100.100 } tcp flags & (syn | ack) == syn accept"],
            "{text}"
        );
        assert!(text.contains(
            "ip daddr { 198.51.100.100, 198.51.100.101 } meta l4proto tcp counter ip ttl set 1 dup to 198.51.100.1 device \"eth0\" drop"
        ), "{text}");
    }
}
