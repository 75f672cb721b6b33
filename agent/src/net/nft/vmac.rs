//! Silence of the virtual MAC interfaces: a macvlan carrying the virtual router MAC must send
//! nothing while its node is a backup, or switches learn the MAC at the backup's port and send it
//! the master's traffic. A backup's macvlan sends nothing of its own (no address, IPv6 off) except
//! the IGMP reports of the VRRP group its socket joins on it (224.0.0.18: the kernel reports
//! link-local groups, on joining and to every querier). Those are dropped as they leave: a
//! snooping switch floods link-local groups whatever it heard (RFC 4541), so nothing needs them.
//!
//! One chain on the output hook of `inet hav`, section `vmac_quiet`, rewritten whole when the
//! set of macvlans changes and absent when there is none.

use std::collections::BTreeSet;

use super::ruleset::{BaseChain, Chain, ChainType, Hook, Section};

/// The key of this feature's section in hav's table.
pub const SECTION: &str = "vmac_quiet";
/// The output-hook chain that drops the macvlans' IGMP.
pub const CHAIN: &str = "vmac_quiet";

/// The section that drops IGMP leaving by any of `interfaces` (empty: none).
pub fn section(interfaces: &BTreeSet<String>) -> Section {
    if interfaces.is_empty() {
        return Section::default();
    }
    let names: Vec<String> = interfaces.iter().map(|name| format!("{name:?}")).collect();
    Section {
        sets: Vec::new(),
        chains: vec![Chain {
            name: CHAIN.into(),
            base: Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Output,
                priority: 0,
                drop_policy: false,
            }),
            rules: vec![format!(
                "oifname {{ {} }} meta l4proto igmp counter drop",
                names.join(", ")
            )],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn igmp_out_of_the_macvlans_is_dropped_and_nothing_without_them() {
        let names: BTreeSet<String> = ["vrrp.51".to_owned(), "vrrp.52".to_owned()].into();
        let section = section(&names);
        assert_eq!(
            section.chains[0].rules,
            ["oifname { \"vrrp.51\", \"vrrp.52\" } meta l4proto igmp counter drop"]
        );
        assert_eq!(
            section.chains[0].base.map(|base| base.hook),
            Some(Hook::Output)
        );
        assert!(super::section(&BTreeSet::new()).is_empty());
    }
}
