//! The crash-safe VIP journal: which VIPs this agent may hold, on disk.
//!
//! Invariant: at every instant, including after a `kill -9` or power loss at any point, the
//! journal file lists every VIP the agent may have added and not yet removed. It is kept by
//! ordering: a VIP is written to the journal (temporary file, `fsync`, `rename`, `fsync` of the
//! directory) *before* it is added to an interface, and struck from it only *after* it was
//! removed. The journal may therefore list VIPs that are not present (a crash between journal and
//! netlink); recovery removes those too, which is harmless because removal is idempotent.
//!
//! The journal lists what the agent *may* hold, not what it holds: the daemon journals every VIP
//! of its config ahead of need ([`JournaledVips::reserve`]), so a takeover writes nothing, and
//! those entries stay while the VIPs come and go. Only the kernel knows what is on an interface,
//! so recovery asks it: each removal reports whether the address was there.
//!
//! On start, [`JournaledVips::recover`] removes every journaled VIP (the state machine starts in
//! Backup, where no VIP may be held) and resets the journal; a clean stop does the same after the
//! engine released its VIPs. [`Recovery::removed`] lists only the VIPs that were still on an
//! interface (left behind by a crash, or not released at a stop); the journaled entries that
//! were already absent are [`Recovery::cleared`] and nothing to report. A journal that cannot be read is
//! not trusted in any part: it is kept aside as `<name>.corrupt` for the operator, and recovery
//! removes the VIPs the caller passes as fallback (the daemon passes every VIP of its current
//! configuration) instead; VIPs of an older configuration that only the lost journal knew of may
//! then remain, and the [`Recovery`] says so. Failing to start would leave the node out of the
//! cluster for a reason the peers do not care about, so a corrupt journal is not fatal.
//!
//! The same file lists the instances' other network state ([`NetworkEntries`]: virtual MAC
//! interfaces, routes and policy rules), journaled ahead of need in the same way
//! ([`JournaledVips::reserve_network`]) and removed by the same recovery: routes and rules
//! first, then the VIPs, then the macvlans.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::routes::{RouteError, RouteManager, RouteSpec, RuleSpec};
use super::vip::{Vip, VipError, VipManager};
use super::vmac::{VmacError, VmacManager, VmacSpec};

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "vips.journal";
/// Format version written in the file.
const FORMAT_VERSION: u32 = 1;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Writing or syncing the journal failed; the VIP operation was not attempted.
    #[error("VIP journal {path}: {op} failed")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// `write`, `fsync`, `rename`, `read`, ...
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A VIP operation failed (the journal still covers every VIP that may be held).
    #[error(transparent)]
    Vip(#[from] VipError),
    /// A route or rule could not be removed (the journal still lists it).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A macvlan could not be removed (the journal still lists it).
    #[error(transparent)]
    Vmac(#[from] VmacError),
}

/// The network state besides VIPs that the agent may have added: what the journal lists of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntries {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub vmacs: BTreeSet<VmacSpec>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub routes: BTreeSet<RouteSpec>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub rules: BTreeSet<RuleSpec>,
}

impl NetworkEntries {
    pub fn is_empty(&self) -> bool {
        self.vmacs.is_empty() && self.routes.is_empty() && self.rules.is_empty()
    }

    /// Adds `other`'s entries; whether anything was new.
    fn extend(&mut self, other: &NetworkEntries) -> bool {
        let before = (self.vmacs.len(), self.routes.len(), self.rules.len());
        self.vmacs.extend(other.vmacs.iter().cloned());
        self.routes.extend(other.routes.iter().cloned());
        self.rules.extend(other.rules.iter().cloned());
        before != (self.vmacs.len(), self.routes.len(), self.rules.len())
    }
}

/// What [`JournaledVips::recover`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Every VIP recovery made sure is absent: the journaled ones, or the fallback.
    pub cleared: Vec<Vip>,
    /// The VIPs of `cleared` that were still on an interface and are removed now, as the kernel
    /// answered each deletion: what was really left behind.
    pub removed: Vec<Vip>,
    /// Set when the journal file could not be read and the fallback was used instead.
    pub corrupt: Option<Corruption>,
    /// The routes, rules and macvlans that were still there and are removed now.
    pub removed_network: Vec<String>,
}

/// A journal that could not be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Where the unreadable journal was kept for inspection.
    pub kept_as: PathBuf,
    /// Why it could not be read.
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalFile {
    version: u32,
    vips: Vec<Vip>,
    #[serde(default, skip_serializing_if = "NetworkEntries::is_empty")]
    network: NetworkEntries,
}

/// The journal file alone: the set of VIPs it lists, written durably on every change.
#[derive(Debug)]
pub struct VipJournal {
    path: PathBuf,
    dir: PathBuf,
    vips: BTreeSet<Vip>,
    network: NetworkEntries,
}

impl VipJournal {
    /// A journal in `state_dir` (created if missing). The file is not read here: call
    /// [`JournaledVips::recover`] (or [`VipJournal::load`]) first.
    pub fn new(state_dir: &Path) -> Result<Self, JournalError> {
        fs::create_dir_all(state_dir).map_err(|source| JournalError::Io {
            path: state_dir.to_owned(),
            op: "create directory",
            source,
        })?;
        Ok(Self {
            path: state_dir.join(JOURNAL_FILE),
            dir: state_dir.to_owned(),
            vips: BTreeSet::new(),
            network: NetworkEntries::default(),
        })
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The VIPs the journal lists now.
    pub fn vips(&self) -> impl Iterator<Item = &Vip> {
        self.vips.iter()
    }

    /// Reads the file: `Ok(Ok(vips))` if it is absent (empty) or valid, `Ok(Err(reason))` if it
    /// exists but cannot be trusted, `Err` if it cannot be read at all.
    pub fn load(&self) -> Result<Result<Vec<Vip>, String>, JournalError> {
        Ok(self.load_all()?.map(|(vips, _)| vips))
    }

    /// The network entries the journal lists now.
    pub fn network(&self) -> &NetworkEntries {
        &self.network
    }

    /// As [`VipJournal::load`], with the network entries.
    #[allow(clippy::type_complexity)]
    pub fn load_all(&self) -> Result<Result<(Vec<Vip>, NetworkEntries), String>, JournalError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Ok((Vec::new(), NetworkEntries::default())));
            }
            Err(source) => {
                return Err(JournalError::Io {
                    path: self.path.clone(),
                    op: "read",
                    source,
                });
            }
        };
        Ok(match serde_json::from_slice::<JournalFile>(&bytes) {
            Ok(file) if file.version == FORMAT_VERSION => Ok((file.vips, file.network)),
            Ok(file) => Err(format!("unknown format version {}", file.version)),
            Err(e) => Err(format!("not a valid journal: {e}")),
        })
    }

    /// Adds `vips` to the journal and makes that durable (before they are added anywhere).
    pub fn record(&mut self, vips: &[Vip]) -> Result<(), JournalError> {
        let before = self.vips.len();
        self.vips.extend(vips.iter().cloned());
        if self.vips.len() == before && self.path.exists() {
            return Ok(());
        }
        self.persist()
    }

    /// Strikes `vips` from the journal (after they were removed) and makes that durable.
    pub fn forget(&mut self, vips: &[Vip]) -> Result<(), JournalError> {
        let keys: BTreeSet<_> = vips.iter().map(Vip::key).collect();
        let before = self.vips.len();
        self.vips.retain(|vip| !keys.contains(&vip.key()));
        if self.vips.len() == before {
            return Ok(());
        }
        self.persist()
    }

    /// Adds `entries` to the journal and makes that durable (before they are added anywhere).
    pub fn record_network(&mut self, entries: &NetworkEntries) -> Result<(), JournalError> {
        if !self.network.extend(entries) && self.path.exists() {
            return Ok(());
        }
        self.persist()
    }

    /// Empties the journal durably.
    pub fn reset(&mut self) -> Result<(), JournalError> {
        self.vips.clear();
        self.network = NetworkEntries::default();
        self.persist()
    }

    /// Writes the current set: temporary file, `fsync`, `rename` over the journal, `fsync` of the
    /// directory. A crash leaves either the old or the new file, both complete.
    fn persist(&self) -> Result<(), JournalError> {
        let file = JournalFile {
            version: FORMAT_VERSION,
            vips: self.vips.iter().cloned().collect(),
            network: self.network.clone(),
        };
        let temporary = self.path.with_extension("journal.tmp");
        // Plain strings, addresses and integers always serialise; never write an empty journal
        // in place of a full one should that ever change.
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| io_error(&temporary, "serialise")(io::Error::other(e)))?;
        fn io_error(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> JournalError {
            move |source| JournalError::Io {
                path: path.to_owned(),
                op,
                source,
            }
        }
        let mut out = File::create(&temporary).map_err(io_error(&temporary, "create"))?;
        out.write_all(&bytes)
            .map_err(io_error(&temporary, "write"))?;
        out.sync_all().map_err(io_error(&temporary, "fsync"))?;
        drop(out);
        fs::rename(&temporary, &self.path).map_err(io_error(&self.path, "rename"))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&self.dir, "fsync directory"))
    }

    fn keep_corrupt(&self) -> Result<PathBuf, JournalError> {
        let kept_as = self.path.with_extension("journal.corrupt");
        fs::rename(&self.path, &kept_as).map_err(|source| JournalError::Io {
            path: self.path.clone(),
            op: "rename corrupt journal",
            source,
        })?;
        Ok(kept_as)
    }
}

/// VIP add/remove through the journal: what the daemon's executor calls.
#[derive(Debug)]
pub struct JournaledVips {
    manager: VipManager,
    journal: VipJournal,
    /// VIPs journaled ahead of need ([`JournaledVips::reserve`]): they stay journaled when
    /// released, so taking them over again writes nothing.
    reserved: BTreeSet<(String, IpAddr, u8)>,
}

impl JournaledVips {
    /// Journal in `state_dir`, VIPs through `manager`.
    pub fn new(manager: VipManager, state_dir: &Path) -> Result<Self, JournalError> {
        Ok(Self {
            manager,
            journal: VipJournal::new(state_dir)?,
            reserved: BTreeSet::new(),
        })
    }

    /// Journals `vips` ahead of need: every VIP the running config can make this node hold.
    /// Adding them later then writes nothing, so a takeover never waits for the disk, and the
    /// guarantee stays the same: whatever may be on an interface is journaled first. Call after
    /// [`JournaledVips::recover`] and with each new config; the journal is emptied by the next
    /// recovery (at a clean stop, or at start).
    pub fn reserve(&mut self, vips: &[Vip]) -> Result<(), JournalError> {
        self.reserved.extend(
            vips.iter()
                .map(|vip| (vip.iface.clone(), vip.addr, vip.prefix_len)),
        );
        self.journal.record(vips)
    }

    /// Journals the macvlans, routes and rules the running config may add, ahead of need (as
    /// [`JournaledVips::reserve`]); they stay journaled until the next recovery.
    pub fn reserve_network(&mut self, entries: &NetworkEntries) -> Result<(), JournalError> {
        self.journal.record_network(entries)
    }

    /// The VIP manager (for [`VipManager::present`]).
    pub fn manager(&self) -> &VipManager {
        &self.manager
    }

    /// The journal.
    pub fn journal(&self) -> &VipJournal {
        &self.journal
    }

    /// On start and at a clean stop: removes every journaled route, rule, VIP and macvlan (or,
    /// if the journal is corrupt, those of `fallback` and `fallback_network`) and resets the
    /// journal, reservations included. If a removal fails
    /// the journal is left listing everything, so a later `recover` tries again.
    pub async fn recover(
        &mut self,
        fallback: &[Vip],
        fallback_network: &NetworkEntries,
    ) -> Result<Recovery, JournalError> {
        // Recovery empties the journal: nothing stays reserved.
        self.reserved.clear();
        let (to_remove, network, corrupt) = match self.journal.load_all()? {
            Ok((vips, network)) => (vips, network, None),
            Err(reason) => {
                let kept_as = self.journal.keep_corrupt()?;
                tracing::warn!(
                    kept_as = %kept_as.display(), %reason,
                    "VIP journal unreadable; removing the configured VIPs instead"
                );
                (
                    fallback.to_vec(),
                    fallback_network.clone(),
                    Some(Corruption { kept_as, reason }),
                )
            }
        };
        // Journal first what is about to be removed, so a failure or crash below keeps it listed.
        self.journal.vips = to_remove.iter().cloned().collect();
        self.journal.network = network.clone();
        self.journal.persist()?;
        let handle = self.manager.handle().clone();
        let rules: Vec<RuleSpec> = network.rules.iter().cloned().collect();
        let routes: Vec<RouteSpec> = network.routes.iter().cloned().collect();
        let mut removed_network = RouteManager::new(handle.clone())
            .remove(&rules, &routes)
            .await?;
        let removed = self.manager.remove(&to_remove).await?;
        let vmacs = VmacManager::new(handle);
        for vmac in &network.vmacs {
            if vmacs.remove(vmac).await? {
                removed_network.push(format!("vmac {vmac}"));
            }
        }
        self.journal.reset()?;
        Ok(Recovery {
            cleared: to_remove,
            removed,
            corrupt,
            removed_network,
        })
    }

    /// Marks journaled VIPs deprecated or preferred again, in place (see
    /// [`VipManager::set_deprecated`]); the journal already holds them.
    pub async fn set_deprecated(&self, vips: &[Vip], deprecated: bool) -> Result<(), JournalError> {
        self.manager.set_deprecated(vips, deprecated).await?;
        Ok(())
    }

    /// Journals `vips`, then adds them.
    pub async fn add(&mut self, vips: &[Vip]) -> Result<(), JournalError> {
        self.journal.record(vips)?;
        self.manager.add(vips).await?;
        Ok(())
    }

    /// Removes `vips`, then strikes the ones not reserved from the journal (only if all
    /// removals succeeded).
    pub async fn remove(&mut self, vips: &[Vip]) -> Result<(), JournalError> {
        self.manager.remove(vips).await?;
        let unreserved: Vec<Vip> = vips
            .iter()
            .filter(|vip| {
                !self
                    .reserved
                    .contains(&(vip.iface.clone(), vip.addr, vip.prefix_len))
            })
            .cloned()
            .collect();
        self.journal.forget(&unreserved)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn state_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hav-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn vip(last: u8) -> Vip {
        Vip::new(IpAddr::from([198, 51, 100, last]), 24, "eth0")
    }

    #[test]
    fn record_forget_round_trip_through_the_file() {
        let dir = state_dir("round-trip");
        let mut journal = VipJournal::new(&dir).expect("temp dir");
        assert_eq!(
            journal.load().expect("read"),
            Ok(vec![]),
            "absent file = empty"
        );
        journal
            .record(&[vip(100), vip(101).with_label("eth0:x")])
            .expect("write");
        journal.record(&[vip(100)]).expect("write");
        let reread = VipJournal::new(&dir)
            .expect("temp dir")
            .load()
            .expect("read");
        assert_eq!(reread, Ok(vec![vip(100), vip(101).with_label("eth0:x")]));
        journal.forget(&[vip(101)]).expect("write");
        assert_eq!(
            journal.load().expect("read"),
            Ok(vec![vip(100)]),
            "label not part of identity"
        );
        assert!(
            !dir.join("vips.journal.tmp").exists(),
            "no temporary file left behind"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn network_entries_round_trip_and_a_journal_without_them_still_reads() {
        let dir = state_dir("network");
        let mut journal = VipJournal::new(&dir).expect("temp dir");
        fs::write(
            journal.path(),
            br#"{"version":1,"vips":[{"addr":"198.51.100.100","prefix_len":24,"iface":"eth0"}]}"#,
        )
        .expect("write");
        assert_eq!(
            journal.load_all().expect("read"),
            Ok((vec![vip(100)], NetworkEntries::default())),
            "a journal written before network entries existed"
        );
        let mut entries = NetworkEntries::default();
        entries.vmacs.insert(VmacSpec {
            name: "vrrp.51".into(),
            base: "eth0".into(),
            mac: [0, 0, 0x5e, 0, 1, 51],
            ipv6: false,
        });
        entries.rules.insert(RuleSpec {
            ipv6: false,
            from: Some((IpAddr::from([198, 51, 100, 10]), 32)),
            to: None,
            table: 100,
            priority: None,
            fwmark: None,
            iif: None,
            oif: None,
        });
        journal.record_network(&entries).expect("write");
        let reread = VipJournal::new(&dir)
            .expect("temp dir")
            .load_all()
            .expect("read");
        assert_eq!(reread, Ok((Vec::new(), entries)));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_files_are_reported_not_panicked_on() {
        let dir = state_dir("corrupt");
        let journal = VipJournal::new(&dir).expect("temp dir");
        for bad in [
            &b"{\"version\":1,\"vips\":[{\"addr\":"[..],
            b"\xff\x00",
            b"{\"version\":9,\"vips\":[]}",
        ] {
            fs::write(journal.path(), bad).expect("write");
            assert!(journal.load().expect("read").is_err());
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
