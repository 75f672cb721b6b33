//! The planned hand-over's rules, in tables of their own: `ip <name>` and `ip6 <name>` (second
//! chance: flows this node does not own go to the previous master) and `arp <name>` (silence: a
//! previous master keeps its VIPs without claiming them on the link).
//!
//! - **Second chance** needs conntrack (to tell the flows this node serves) and `dup` (to send a
//!   packet unchanged to another node's MAC); nft offers `dup` in `ip` and `ip6` tables, not in
//!   `inet`. A SYN to a VIP, and any packet of a flow conntrack has seen this node answer
//!   (`established`), stay here; every other TCP packet to a forwarded VIP (a flow begun
//!   elsewhere, which this node never answers, or a packet conntrack finds invalid) is
//!   duplicated to the other node's address on the VIP's device and dropped here. A flow passed
//!   on is never answered here, so it never becomes established here: the rule needs no state of
//!   its own, survives rewrites, and knows flows older than the agent.
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
}

impl HandoverRules {
    pub fn is_empty(&self) -> bool {
        self.forwards.is_empty() && self.silent.is_empty()
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

    /// Makes the tables hold `next` in one transaction; nothing runs if they already do.
    pub async fn apply(&mut self, next: HandoverRules, op: &str) -> Result<(), NftError> {
        if next == self.installed {
            return Ok(());
        }
        let script = transaction(&self.name, &next);
        self.nft.apply(&self.name, op, &script).await?;
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
    let (family, icmp) = if ipv6 {
        (
            "ip6",
            "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert }",
        )
    } else {
        ("ip", "")
    };
    let forwards: Vec<&SecondChance> = (rules.forwards.iter())
        .filter(|f| f.to.is_ipv6() == ipv6 && f.vips.iter().any(|v| v.is_ipv6() == ipv6))
        .collect();
    let silent: Vec<IpAddr> = (rules.silent.iter())
        .filter(|a| a.is_ipv6() == ipv6)
        .copied()
        .collect();
    if forwards.is_empty() && (silent.is_empty() || !ipv6) {
        return None;
    }
    let mut out = String::new();
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
            let vips = elements(&vips);
            // A new connection is this node's; so is a flow this node has answered (conntrack
            // saw its reply); every other TCP packet (begun elsewhere, or invalid here) goes on.
            let _ = writeln!(
                out,
                "\t\t{family} daddr {vips} tcp flags & (syn | ack) == syn accept\n\t\t{family} daddr {vips} ct state established,related accept\n\t\t{family} daddr {vips} meta l4proto tcp counter dup to {} device {:?} drop",
                forward.to, forward.device
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
        };
        let text = transaction(&TableName::default(), &rules);
        assert!(text.contains(
            "ip daddr { 198.51.100.100 } meta l4proto tcp counter dup to 198.51.100.1 device \"eth0\" drop"
        ), "{text}");
        assert!(
            text.contains("ip daddr { 198.51.100.100 } ct state established,related accept"),
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
}
