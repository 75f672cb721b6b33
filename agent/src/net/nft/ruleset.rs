//! The text of hav's table: typed sections rendered into one `nft -f -` transaction.
//!
//! Rendering is pure and deterministic (sections in key order, set elements sorted), so the
//! same sections always give the same text and unit tests pin it. The transaction first makes
//! sure the table exists, then deletes it and writes it anew: one atomic replacement of hav's
//! table that touches nothing else, whatever state the table was in.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::TableName;

/// What one feature puts into hav's table: its named sets and chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub sets: Vec<AddressSet>,
    pub chains: Vec<Chain>,
}

impl Section {
    /// Nothing to install: the feature needs no rules now.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.chains.is_empty()
    }
}

/// A named set of IPv4 or IPv6 addresses (`type ipv4_addr` / `type ipv6_addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSet {
    name: &'static str,
    ipv6: bool,
    elements: BTreeSet<IpAddr>,
}

impl AddressSet {
    /// A set of the IPv4 addresses among `addresses`.
    pub fn ipv4<'a>(name: &'static str, addresses: impl IntoIterator<Item = &'a IpAddr>) -> Self {
        Self::of_family(name, false, addresses)
    }

    /// A set of the IPv6 addresses among `addresses`.
    pub fn ipv6<'a>(name: &'static str, addresses: impl IntoIterator<Item = &'a IpAddr>) -> Self {
        Self::of_family(name, true, addresses)
    }

    fn of_family<'a>(
        name: &'static str,
        ipv6: bool,
        addresses: impl IntoIterator<Item = &'a IpAddr>,
    ) -> Self {
        Self {
            name,
            ipv6,
            elements: addresses
                .into_iter()
                .filter(|address| address.is_ipv6() == ipv6)
                .copied()
                .collect(),
        }
    }

    /// The set's name (rules refer to it as `@name`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn render(&self, out: &mut String) {
        let kind = if self.ipv6 { "ipv6_addr" } else { "ipv4_addr" };
        // Writing into a String cannot fail; the results are ignored for that reason.
        let _ = writeln!(out, "\tset {} {{", self.name);
        let _ = writeln!(out, "\t\ttype {kind}");
        if !self.elements.is_empty() {
            let elements: Vec<String> = self.elements.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
        }
        let _ = writeln!(out, "\t}}");
    }
}

/// A chain: a base chain on a netfilter hook, or a regular one that rules jump to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    /// Rule statements in nft syntax, in order; sets are named `@set`.
    pub rules: Vec<String>,
}

/// Where a base chain hooks in and what it does with what no rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    /// Lower runs first; `filter` is 0, `dstnat` -100, `srcnat` 100.
    pub priority: i32,
    /// `false`: policy accept (the host's own rules still apply in their tables).
    pub drop_policy: bool,
}

/// The chain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

/// The netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Chain {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "\tchain {} {{", self.name);
        if let Some(base) = &self.base {
            let kind = match base.kind {
                ChainType::Filter => "filter",
                ChainType::Nat => "nat",
                ChainType::Route => "route",
            };
            let hook = match base.hook {
                Hook::Prerouting => "prerouting",
                Hook::Input => "input",
                Hook::Forward => "forward",
                Hook::Output => "output",
                Hook::Postrouting => "postrouting",
            };
            let policy = if base.drop_policy { "drop" } else { "accept" };
            let _ = writeln!(
                out,
                "\t\ttype {kind} hook {hook} priority {}; policy {policy};",
                base.priority
            );
        }
        for rule in &self.rules {
            let _ = writeln!(out, "\t\t{rule}");
        }
        let _ = writeln!(out, "\t}}");
    }
}

/// The transaction that leaves `table` holding exactly `sections`, or absent when every section
/// is empty. `table X {}` before `delete table X` makes the deletion valid whether or not the
/// table existed (nft 1.0.6 has no `destroy`).
pub fn transaction<'a>(
    table: &TableName,
    sections: impl IntoIterator<Item = &'a Section>,
) -> String {
    let sections: Vec<&Section> = sections.into_iter().filter(|s| !s.is_empty()).collect();
    let mut out = String::new();
    let _ = writeln!(out, "table {table} {{}}");
    let _ = writeln!(out, "delete table {table}");
    if sections.is_empty() {
        return out;
    }
    let _ = writeln!(out, "table {table} {{");
    for section in &sections {
        for set in &section.sets {
            set.render(&mut out);
        }
    }
    for section in &sections {
        for chain in &section.chains {
            chain.render(&mut out);
        }
    }
    let _ = writeln!(out, "}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn no_sections_delete_the_table_and_create_nothing() {
        let text = transaction(&TableName::default(), [&Section::default()]);
        assert_eq!(text, "table inet hav {}\ndelete table inet hav\n");
    }

    #[test]
    fn sets_come_before_chains_and_elements_are_sorted_by_family() {
        let addresses = [
            addr("198.51.100.9"),
            addr("2001:db8::1"),
            addr("198.51.100.1"),
        ];
        let section = Section {
            sets: vec![
                AddressSet::ipv4("v4", &addresses),
                AddressSet::ipv6("v6", &[]),
            ],
            chains: vec![
                Chain {
                    name: "jumped".into(),
                    base: None,
                    rules: vec!["counter".into()],
                },
                Chain {
                    name: "nat".into(),
                    base: Some(BaseChain {
                        kind: ChainType::Nat,
                        hook: Hook::Prerouting,
                        priority: -100,
                        drop_policy: false,
                    }),
                    rules: vec!["ip daddr @v4 jump jumped".into()],
                },
            ],
        };
        let text = transaction(&TableName::new("hav_t").expect("name"), [&section]);
        assert_eq!(
            text,
            "table inet hav_t {}\n\
             delete table inet hav_t\n\
             table inet hav_t {\n\
             \tset v4 {\n\
             \t\ttype ipv4_addr\n\
             \t\telements = { 198.51.100.1, 198.51.100.9 }\n\
             \t}\n\
             \tset v6 {\n\
             \t\ttype ipv6_addr\n\
             \t}\n\
             \tchain jumped {\n\
             \t\tcounter\n\
             \t}\n\
             \tchain nat {\n\
             \t\ttype nat hook prerouting priority -100; policy accept;\n\
             \t\tip daddr @v4 jump jumped\n\
             \t}\n\
             }\n"
        );
    }
}
