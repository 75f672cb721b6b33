//! RFC 5798 `Accept_Mode` off: a master that is not the address owner does not accept packets
//! addressed to its VIPs (section 6.4.3), except IPv6 neighbour discovery, which it must answer
//! for them (section 6.4.3 and RFC 4861). ARP is not IP and never reaches these rules.
//!
//! [`AcceptFilter`] keeps the VIPs held without accept mode in two sets of hav's table and one
//! input-hook chain that drops what is addressed to them. Only packets delivered to this host pass
//! the input hook, so the rule cannot affect forwarded traffic. Operations are idempotent: blocking
//! a blocked VIP or unblocking one that is not blocked runs nothing; when the last VIP is
//! unblocked the section goes, and with it the table if nothing else uses it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::NftError;
use super::ruleset::{AddressSet, BaseChain, Chain, ChainType, Hook, Section};
use super::table::HavTable;

/// The key of this feature's section in hav's table.
pub const SECTION: &str = "accept_mode";
/// The set of IPv4 VIPs held without accept mode.
pub const SET_V4: &str = "vips_no_accept_v4";
/// The set of IPv6 VIPs held without accept mode.
pub const SET_V6: &str = "vips_no_accept_v6";
/// The input-hook chain that drops traffic to them.
pub const CHAIN: &str = "accept_mode";

/// The section that drops packets addressed to `blocked` (empty when nothing is blocked).
pub fn section(blocked: &BTreeSet<IpAddr>) -> Section {
    if blocked.is_empty() {
        return Section::default();
    }
    Section {
        sets: vec![
            AddressSet::ipv4(SET_V4, blocked),
            AddressSet::ipv6(SET_V6, blocked),
        ],
        chains: vec![Chain {
            name: CHAIN.into(),
            base: Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Input,
                priority: 0,
                drop_policy: false,
            }),
            rules: vec![
                format!("ip daddr @{SET_V4} counter drop"),
                // A unicast solicitation (NUD) and an advertisement answering one sent from the
                // VIP are addressed to the VIP itself; multicast NS (to the solicited-node group)
                // never match the set.
                format!(
                    "ip6 daddr @{SET_V6} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept"
                ),
                format!("ip6 daddr @{SET_V6} counter drop"),
            ],
        }],
    }
}

/// The VIPs this agent holds without accept mode, installed in hav's table.
#[derive(Debug, Default)]
pub struct AcceptFilter {
    blocked: BTreeSet<IpAddr>,
}

impl AcceptFilter {
    /// The VIPs blocked now (what the kernel has).
    pub fn blocked(&self) -> &BTreeSet<IpAddr> {
        &self.blocked
    }

    /// Drops packets addressed to `vips` from now on (except IPv6 neighbour discovery).
    pub async fn block(&mut self, table: &mut HavTable, vips: &[IpAddr]) -> Result<(), NftError> {
        let mut next = self.blocked.clone();
        next.extend(vips.iter().copied());
        self.install(table, next, "block", vips).await
    }

    /// Accepts packets addressed to `vips` again.
    pub async fn unblock(&mut self, table: &mut HavTable, vips: &[IpAddr]) -> Result<(), NftError> {
        let mut next = self.blocked.clone();
        for vip in vips {
            next.remove(vip);
        }
        self.install(table, next, "unblock", vips).await
    }

    /// Forgets every blocked VIP (the table was deleted).
    pub fn forget(&mut self) {
        self.blocked.clear();
    }

    async fn install(
        &mut self,
        table: &mut HavTable,
        next: BTreeSet<IpAddr>,
        verb: &str,
        vips: &[IpAddr],
    ) -> Result<(), NftError> {
        if next == self.blocked {
            return Ok(());
        }
        let listed: Vec<String> = vips.iter().map(ToString::to_string).collect();
        let op = format!("{verb} {}", listed.join(" "));
        table.set_section(SECTION, section(&next), &op).await?;
        self.blocked = next;
        tracing::info!(
            table = %table.name(),
            vips = %listed.join(" "),
            blocked = self.blocked.len(),
            "accept mode filter: {verb}ed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::nft::ruleset::transaction;
    use crate::net::nft::{Nft, TableName, TableRemoval};

    fn addresses(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter()
            .map(|a| a.parse().expect("test address"))
            .collect()
    }

    #[test]
    fn blocked_vips_are_dropped_on_input_except_neighbour_discovery() {
        let blocked = addresses(&["2001:db8::10", "198.51.100.10", "203.0.113.7"]);
        let text = transaction(&TableName::default(), [&section(&blocked)]);
        assert_eq!(
            text,
            "table inet hav {}\n\
             delete table inet hav\n\
             table inet hav {\n\
             \tset vips_no_accept_v4 {\n\
             \t\ttype ipv4_addr\n\
             \t\telements = { 198.51.100.10, 203.0.113.7 }\n\
             \t}\n\
             \tset vips_no_accept_v6 {\n\
             \t\ttype ipv6_addr\n\
             \t\telements = { 2001:db8::10 }\n\
             \t}\n\
             \tchain accept_mode {\n\
             \t\ttype filter hook input priority 0; policy accept;\n\
             \t\tip daddr @vips_no_accept_v4 counter drop\n\
             \t\tip6 daddr @vips_no_accept_v6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n\
             \t\tip6 daddr @vips_no_accept_v6 counter drop\n\
             \t}\n\
             }\n"
        );
    }

    #[test]
    fn one_family_alone_still_declares_both_sets() {
        let text = transaction(
            &TableName::default(),
            [&section(&addresses(&["198.51.100.10"]))],
        );
        assert!(text.contains("\tset vips_no_accept_v6 {\n\t\ttype ipv6_addr\n\t}\n"));
        assert!(text.contains("ip6 daddr @vips_no_accept_v6 counter drop"));
    }

    #[test]
    fn nothing_blocked_is_no_section_and_so_no_table() {
        assert!(section(&BTreeSet::new()).is_empty());
        assert_eq!(
            transaction(&TableName::default(), [&section(&BTreeSet::new())]),
            "table inet hav {}\ndelete table inet hav\n"
        );
    }

    #[tokio::test]
    async fn idempotent_calls_run_nothing() {
        // A program that cannot run: any call that reached nft would fail.
        let mut table = HavTable::new(TableName::default(), Nft::with_program("/nonexistent/nft"));
        let mut filter = AcceptFilter::default();
        let vip: IpAddr = "198.51.100.10".parse().expect("address");
        filter
            .unblock(&mut table, &[vip])
            .await
            .expect("unblocking nothing");
        filter
            .block(&mut table, &[])
            .await
            .expect("blocking nothing");
        assert!(
            filter.block(&mut table, &[vip]).await.is_err(),
            "nft was not run"
        );
        assert!(
            filter.blocked().is_empty(),
            "a failed block is not recorded"
        );
        assert_eq!(
            table.remove().await.expect("no nft"),
            TableRemoval::NftMissing
        );
    }
}
