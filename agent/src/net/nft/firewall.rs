//! [`Firewall`]: every nftables object the agent owns, and the one place that changes them: the
//! table `inet hav` (accept mode, the load balancer's NAT), the table `netdev hav` (the load
//! balancer's direct routing, which nft cannot express in an `inet` table) and the planned
//! hand-over's tables `ip hav`, `ip6 hav` and `arp hav`.
//!
//! All share the name and the crash cleanup: start-up and a clean stop delete them all, whatever
//! a previous run left in them.

use std::net::IpAddr;

use super::accept::AcceptFilter;
use super::handover::HandoverTables;
use super::lb::{self, DrTable, LbService};
use super::table::{HavTable, TableRemoval};
use super::{Nft, NftError, TableName};

/// hav's tables in one network namespace.
#[derive(Debug)]
pub struct Firewall {
    inet: HavTable,
    netdev: DrTable,
    handover: HandoverTables,
    accept: AcceptFilter,
}

impl Firewall {
    /// The tables named `table`, with `nft` from `PATH`. Runs nothing: a config that needs no
    /// filter and no balancer never needs nftables.
    pub fn open(table: TableName) -> Self {
        Self::with_nft(table, Nft::default())
    }

    /// The tables named `table`, driven by `nft`.
    pub fn with_nft(table: TableName, nft: Nft) -> Self {
        Self {
            inet: HavTable::new(table.clone(), nft.clone()),
            netdev: DrTable::new(table.clone(), nft.clone()),
            handover: HandoverTables::new(table, nft),
            accept: AcceptFilter::default(),
        }
    }

    /// The `inet` table's name.
    pub fn table(&self) -> &TableName {
        self.inet.name()
    }

    /// The VIPs dropped for accept mode now.
    pub fn blocked(&self) -> &std::collections::BTreeSet<IpAddr> {
        self.accept.blocked()
    }

    /// Drops packets addressed to `vips` (accept mode off).
    pub async fn block(&mut self, vips: &[IpAddr]) -> Result<(), NftError> {
        self.accept.block(&mut self.inet, vips).await
    }

    /// Accepts packets addressed to `vips` again.
    pub async fn unblock(&mut self, vips: &[IpAddr]) -> Result<(), NftError> {
        self.accept.unblock(&mut self.inet, vips).await
    }

    /// Drops the IGMP reports leaving by exactly `interfaces` (the virtual MAC interfaces that
    /// carry a VRRP socket, see [`super::vmac`]); nothing runs when that is what the table holds.
    pub async fn quiet_vmacs(
        &mut self,
        interfaces: &std::collections::BTreeSet<String>,
    ) -> Result<(), NftError> {
        let listed: Vec<&str> = interfaces.iter().map(String::as_str).collect();
        let op = format!("silence the virtual MAC interfaces {}", listed.join(" "));
        (self.inet)
            .set_section(super::vmac::SECTION, super::vmac::section(interfaces), &op)
            .await
    }

    /// Programs exactly `services` (NAT in `inet hav`, DR in `netdev hav`); both tables change
    /// only where their part changed.
    pub async fn set_virtual_servers(
        &mut self,
        services: &[LbService],
        op: &str,
    ) -> Result<(), NftError> {
        let nat = self
            .inet
            .set_section(lb::SECTION, lb::nat_section(services), op);
        nat.await?;
        self.netdev.apply(lb::dr_ruleset(services), op).await
    }

    /// The hand-over tables, for an applier of their own ([`super::HandoverApplier`]); this
    /// value keeps only their removal.
    pub fn handover_tables(&self) -> HandoverTables {
        self.handover.fresh()
    }

    /// Deletes both tables whatever they hold (this run's, or a crashed run's) and forgets what
    /// was installed. `Removed` when either was there.
    pub async fn remove_tables(&mut self) -> Result<TableRemoval, NftError> {
        let inet = self.inet.remove().await?;
        self.accept.forget();
        let netdev = self.netdev.remove().await?;
        let handover = self.handover.remove().await?;
        Ok(match (inet, netdev || handover) {
            (TableRemoval::Removed, _) | (_, true) => TableRemoval::Removed,
            (other, false) => other,
        })
    }
}
