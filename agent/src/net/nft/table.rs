//! [`HavTable`]: the sections of hav's table this agent has installed, and the one way to change
//! them (rewrite the whole table atomically).
//!
//! The sections held here are always what the kernel has: a change is recorded only after nft
//! applied it, so a refused change leaves both the kernel and this value as they were.

use std::collections::BTreeMap;

use super::ruleset::{self, Section};
use super::{Nft, NftError, TableName};

/// What [`HavTable::remove`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableRemoval {
    /// The table was there and is gone.
    Removed,
    /// There was no table.
    Absent,
    /// `nft` is not installed, so nothing was checked. No hav agent can have made a table
    /// without it; a table left by a run from before nftables was uninstalled stays.
    NftMissing,
}

/// hav's table in one network namespace, by feature section.
#[derive(Debug)]
pub struct HavTable {
    name: TableName,
    nft: Nft,
    sections: BTreeMap<&'static str, Section>,
}

impl HavTable {
    /// The table `name`, driven by `nft`. Nothing is read or changed until the first call.
    pub fn new(name: TableName, nft: Nft) -> Self {
        Self {
            name,
            nft,
            sections: BTreeMap::new(),
        }
    }

    /// The table's name.
    pub fn name(&self) -> &TableName {
        &self.name
    }

    /// The section installed under `key`, if any.
    pub fn section(&self, key: &str) -> Option<&Section> {
        self.sections.get(key)
    }

    /// The transaction that would install `sections` (for logs and tests).
    pub fn render(&self) -> String {
        ruleset::transaction(&self.name, self.sections.values())
    }

    /// Makes section `key` hold `section` (an empty one removes it), rewriting the whole table in
    /// one transaction; `op` names the change in errors. Nothing runs if the section is unchanged.
    pub async fn set_section(
        &mut self,
        key: &'static str,
        section: Section,
        op: &str,
    ) -> Result<(), NftError> {
        let current = self.sections.get(key);
        if current == Some(&section) || (current.is_none() && section.is_empty()) {
            return Ok(());
        }
        self.check_names(key, &section)?;
        let mut next = self.sections.clone();
        if section.is_empty() {
            next.remove(key);
        } else {
            next.insert(key, section);
        }
        let script = ruleset::transaction(&self.name, next.values());
        self.nft.apply(&self.name, op, &script).await?;
        self.sections = next;
        Ok(())
    }

    /// Deletes the table whatever it holds (including what a previous run left) and forgets
    /// every section.
    pub async fn remove(&mut self) -> Result<TableRemoval, NftError> {
        if let Err(NftError::NotInstalled { .. }) = self.nft.locate() {
            self.sections.clear();
            return Ok(TableRemoval::NftMissing);
        }
        let existed = self.nft.table_exists(&self.name).await?;
        let script = ruleset::transaction(&self.name, []);
        self.nft.apply(&self.name, "delete table", &script).await?;
        self.sections.clear();
        Ok(if existed {
            TableRemoval::Removed
        } else {
            TableRemoval::Absent
        })
    }

    /// Set and chain names are unique across sections.
    fn check_names(&self, key: &'static str, section: &Section) -> Result<(), NftError> {
        let others = || self.sections.iter().filter(|(k, _)| **k != key);
        let clash = |kind, name: &str| NftError::NameClash {
            table: self.name.to_string(),
            section: key,
            kind,
            name: name.to_owned(),
        };
        for set in &section.sets {
            if others().any(|(_, s)| s.sets.iter().any(|o| o.name() == set.name())) {
                return Err(clash("set", set.name()));
            }
        }
        for chain in &section.chains {
            if others().any(|(_, s)| s.chains.iter().any(|o| o.name == chain.name)) {
                return Err(clash("chain", &chain.name));
            }
        }
        Ok(())
    }
}
